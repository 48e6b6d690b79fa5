"""Shared fixtures: an isolated $TENFOLD_HOME, a local HTTP server, CIFAR-10 data, the ssh host and the AWS test
bed (loaded only by the tests that use them). Markers: `cloud` (the AWS or ssh test beds), `browser` (a real
Chromium), `slow` (either, or training for real); `pytest -m "not slow"` is the quick tier."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from helpers import SHARED_CIFAR, Server
from ssh_testbed import free_port, power_off

@pytest.fixture(scope="session")
def testbed():
    """The AWS test bed (moto on 127.0.0.1 plus what moto lacks), one server for the session."""
    from aws_testbed import AwsTestBed
    bed = AwsTestBed()
    yield bed
    bed.close()


@pytest.fixture(scope="session")
def kernel_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("kernels")


@pytest.fixture(scope="session", autouse=True)
def session_home(tmp_path_factory, kernel_cache):
    """$TENFOLD_HOME for what runs outside any test's own (module and session fixtures that train, say): never the
    user's ~/.cache/tenfold. Its fastpath.json gathers the fast path's measurements of this test worker."""
    home = new_home(tmp_path_factory.mktemp("session"), kernel_cache)
    with pytest.MonkeyPatch.context() as session:
        session.setenv("TENFOLD_HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def measured_here(session_home) -> Path:
    """The fast-path choices this test worker has measured so far (fastpath.json, as in a user's $TENFOLD_HOME)."""
    from tenfold.training.fastpath import CACHE
    return session_home / CACHE


@pytest.fixture(autouse=True)
def tenfold_home(tmp_path, monkeypatch, kernel_cache, measured_here) -> Path:
    """Every test gets its own cache, so no test sees another's downloads or decoded data.

    The compiled kernels (keyed by their source and the CPU) are shared, so they are built once per session, and
    so are the fast path's measurements (keyed by the machine and the job's shapes): a test starts with those of
    the tests before it, as a user's second run does (about 1-2 s saved per training process), and what it
    measures is kept for the next. A test of the measuring itself removes $TENFOLD_HOME/fastpath.json first."""
    from tenfold.training import fastpath
    real = dict(vars(fastpath))  # a test that fakes the measuring (monkeypatch) must not pass its fakes on
    home = new_home(tmp_path, kernel_cache)
    if measured_here.exists():
        shutil.copyfile(measured_here, home / fastpath.CACHE)
    monkeypatch.setenv("TENFOLD_HOME", str(home))
    yield home
    if all(vars(fastpath).get(k) is v for k, v in real.items()):  # (torn down before monkeypatch undoes its work)
        keep_measurements(home / fastpath.CACHE, measured_here)


def new_home(parent: Path, kernel_cache: Path) -> Path:
    """PARENT/tenfold-home, empty but for the session's compiled kernels."""
    home = parent / "tenfold-home"
    home.mkdir()
    (home / "kernels").symlink_to(kernel_cache, target_is_directory=True)
    return home


def keep_measurements(source: Path, shared: Path) -> None:
    """Add a test's measured choices to the shared file (a test may have damaged its own on purpose: then none)."""
    try:
        new = json.loads(source.read_text())
        old = json.loads(shared.read_text()) if shared.exists() else {}
    except (OSError, ValueError):
        return
    if isinstance(new, dict) and new.keys() - old.keys():
        shared.write_text(json.dumps({**old, **new}))


@pytest.fixture(autouse=True)
def remote_dir(tmp_path, monkeypatch):
    """tenfold's folder on "the instance" (this machine, through the test sshd), and guardrails made harmless:
    the agent's stop command only writes a file, no boot hook, no metadata service unless a test starts one.
    Afterwards every process the agent started is ended."""
    remote = tmp_path / "remote"
    monkeypatch.setenv("TENFOLD_REMOTE_DIR", str(remote))
    monkeypatch.setenv("TENFOLD_AGENT_OVERRIDES", json.dumps({
        "stop": ["touch", str(tmp_path / "machine-stopped")], "boot_hook": False, "poll": 0.2,
        "imds": "http://127.0.0.1:9"}))  # the discard port: nothing answers
    yield remote
    power_off(remote)


@pytest.fixture
def http_server():
    server = Server()
    yield server
    server.close()


@pytest.fixture(scope="session")
def cifar_subset(tmp_path_factory) -> dict:
    """From the shared CIFAR-10 JPEG copy: a 10,000-image training tar, and an unseen 2,000-image test folder."""
    if not SHARED_CIFAR.is_file():
        pytest.skip(f"the shared CIFAR-10 copy is not at {SHARED_CIFAR}")
    root = tmp_path_factory.mktemp("cifar-subset")
    train_tar, test_dir = root / "cifar-train-10k.tar", root / "unseen"
    with tarfile.open(SHARED_CIFAR) as src, tarfile.open(train_tar, "w") as dst:
        for m in src:
            if not m.isfile():
                continue
            index = int(Path(m.name).stem)
            if index < 1000:       # the first 1,000 of each class train (and validate)
                dst.addfile(m, src.extractfile(m))
            elif index >= 4800:    # the last 200 of each class are never trained on
                out = test_dir / Path(m.name).parent.name / Path(m.name).name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(src.extractfile(m).read())
    return {"train": train_tar, "test": test_dir}


@pytest.fixture
def box(tmp_path, monkeypatch):
    """Any ssh host: a real sshd on 127.0.0.1 as `box` in the test HOME's ~/.ssh/config (`deadbox`: nothing
    listens), and a project folder with a job script, a .gitignore and a data folder."""
    from ssh_testbed import SSHD, SshServer, free_port
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.skip("needs OpenSSH's sshd and root (make test installs it)")
    server = SshServer(tmp_path / "sshd")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    key = home / ".ssh" / "id_test"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    server.authorize(key)
    (home / ".ssh" / "config").write_text(
        f"Host box\n    HostName 127.0.0.1\n    Port {server.port}\n    User root\n    IdentityFile {key}\n"
        "    IdentitiesOnly yes\n    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n    LogLevel ERROR\n"
        f"Host deadbox\n    HostName 127.0.0.1\n    Port {free_port()}\n")  # nothing listens there
    monkeypatch.setenv("HOME", str(home))
    project = tmp_path / "project"
    (project / "mydata").mkdir(parents=True)
    (project / ".gitignore").write_text("secret.txt\nmydata/\n")
    (project / "secret.txt").write_text("not for the instance")
    (project / "mydata" / "numbers.txt").write_text("42")
    yield {"project": project, "remote": tmp_path / "remote", "server": server, "key": key}
    server.close()


@pytest.fixture
def cloud(testbed, tmp_path, monkeypatch):
    """A clean AWS test bed with an 8-vCPU G quota, a spot price and a Deep Learning AMI, and a test HOME."""
    testbed.reset()
    home = tmp_path / "home"
    home.mkdir()
    env = {**testbed.env(tmp_path), "HOME": str(home)}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    testbed.quotas.update({"L-DB2E81BA": 8.0, "L-3819A6DF": 8.0})
    from aws_testbed import ago
    testbed.spot_prices.append(("g4dn.xlarge", "us-east-1a", 0.2104, ago(1)))
    testbed.image = testbed.seed_dlami()
    testbed.home = home
    # Safety: any ssh to tenfold's hosts goes to a closed port on loopback, never to moto's invented addresses.
    (home / ".ssh").mkdir()
    (home / ".ssh" / "config").write_text(f"Host tenfold-*\n    HostName 127.0.0.1\n    Port {free_port()}\n\n")
    return testbed


# ---- markers: the quick tier is `pytest -m "not slow"` --------------------------------------------------
CLOUD_FIXTURES = {"box", "cloud", "testbed", "instance", "aws"}
AUTOUSE = {"tenfold_home", "remote_dir"}  # every test has them: their code says nothing of one test
TRAINING = ("train(", "run_cli(\"train\"", "\"train\",", "run_cli(\"bench\"", "\"bench\",", "finetune", "torchrun",
            "torch.distributed", "run_cli(\"presets\"", "benchmarks", "nbclient", "Popen(", "signal.SIG",
            "--max-restarts")


def pytest_collection_modifyitems(config, items):
    """`cloud`: the AWS or ssh test beds; `browser`: a real Chromium; `slow`: those, and anything that trains
    for real, runs the benchmarks or a notebook, or starts tenfold three times or more (each start imports
    torch), as the code the test runs says: its own, its module's functions it calls, and its fixtures'."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        params = getattr(getattr(item, "callspec", None), "params", {})
        fixtures |= {v for v in params.values() if isinstance(v, str) and definitions(item, v)}  # getfixturevalue
        source = code_of(item, fixtures)
        marks = set()
        if fixtures & CLOUD_FIXTURES or item.module.__name__.startswith("test_cloud"):
            marks.add("cloud")
        if "check_page(" in source or "chromium()" in source:
            marks.add("browser")
        if marks or any(w in source for w in TRAINING) or any(f.endswith("_run") for f in fixtures) \
                or fixtures & {"cifar_subset", "trained", "finetuned"} or source.count("run_cli(") >= 3:
            marks.add("slow")
        for mark in marks:
            item.add_marker(mark)


def definitions(item, name: str) -> tuple:
    """The definitions of fixture `name` that this test sees (none when there is no such fixture)."""
    return tuple(item.session._fixturemanager.getfixturedefs(name, item) or ())


def code_of(item, fixtures: set[str]) -> str:
    """The source of the test, of the functions of its own module it calls (through any depth), and of its
    fixtures that are not autouse (those run for every test)."""
    import inspect
    found: dict[str, str] = {}
    todo = [getattr(item, "function", None)]
    for name in fixtures:
        todo += [d.func for d in definitions(item, name) if name not in AUTOUSE]
    while todo:
        f = todo.pop()
        f = inspect.unwrap(f) if callable(f) else f
        key = getattr(f, "__qualname__", None)
        if key is None or key in found or not hasattr(f, "__code__"):
            continue
        try:
            found[key] = inspect.getsource(f)
        except (OSError, TypeError):
            continue
        module = vars(inspect.getmodule(f) or item.module)
        todo += [module[n] for n in f.__code__.co_names if inspect.isfunction(module.get(n))
                 and module[n].__module__ == f.__module__]
    return "\n".join(found.values())
