"""`tenfold cloud run` and `logs` against a real OpenSSH server on 127.0.0.1 (any ssh host, via --host)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import assert_one_line_error, run_cli
from ssh_testbed import SSHD, SshServer, free_port

pytestmark = pytest.mark.skipif(not os.path.exists(SSHD) or os.geteuid() != 0,
                                reason="needs OpenSSH's sshd and root (make test installs it)")

SCRIPT = '''
import pathlib, sys, time
data = pathlib.Path(sys.argv[sys.argv.index("--data") + 1])
print("epoch 1 of", (data / "numbers.txt").read_text().strip(), flush=True)
out = pathlib.Path("runs/r1")
out.mkdir(parents=True, exist_ok=True)
(out / "result.txt").write_text("trained on " + data.name)
print("done", flush=True)
sys.exit(3)
'''


@pytest.fixture
def box(tmp_path, monkeypatch):
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
    monkeypatch.setenv("TENFOLD_REMOTE_DIR", str(tmp_path / "remote"))  # the "instance's" home is this machine
    project = tmp_path / "project"
    (project / "mydata").mkdir(parents=True)
    (project / "train.py").write_text(SCRIPT)
    (project / ".gitignore").write_text("secret.txt\nmydata/\n")
    (project / "secret.txt").write_text("not for the instance")
    (project / "mydata" / "numbers.txt").write_text("42")
    yield {"project": project, "remote": tmp_path / "remote"}
    server.close()


def test_run_syncs_runs_detached_streams_and_fetches_results(box):
    result = run_cli("cloud", "run", "--host", "box", "--", "python3", "train.py", "--data", "mydata",
                     cwd=box["project"])
    assert result.returncode == 3, result.stderr          # the job's own exit status
    assert result.stdout.splitlines() == ["epoch 1 of 42", "done"]
    assert (box["project"] / "runs" / "r1" / "result.txt").read_text() == "trained on mydata"
    work = box["remote"] / "work"
    assert (work / "train.py").exists() and not (work / "secret.txt").exists()  # .gitignore honoured
    assert (box["remote"] / "data" / "mydata" / "numbers.txt").read_text() == "42"
    logs = run_cli("cloud", "logs", "--host", "box", cwd=box["project"])
    assert logs.returncode == 3 and logs.stdout.splitlines() == ["epoch 1 of 42", "done"]


def test_the_job_outlives_the_laptop_and_logs_reattaches(box):
    (box["project"] / "slow.py").write_text("import time\nprint('start', flush=True)\ntime.sleep(3)\nprint('end')\n")
    proc = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "run", "--host", "box", "--", "python3",
                             "slow.py"], cwd=box["project"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "start"
    os.killpg(proc.pid, signal.SIGKILL)                     # the laptop goes away mid-job
    proc.wait()
    logs = run_cli("cloud", "logs", "--host", "box", cwd=box["project"])
    assert logs.returncode == 0 and logs.stdout.splitlines() == ["start", "end"]


def test_one_job_at_a_time_and_clear_errors(box):
    (box["project"] / "slow.py").write_text("import time\ntime.sleep(5)\n")
    first = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "run", "--host", "box", "--", "python3",
                              "slow.py"], cwd=box["project"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not (box["remote"] / "job" / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    second = run_cli("cloud", "run", "--host", "box", "--", "python3", "slow.py", cwd=box["project"])
    assert_one_line_error(second, "still running")
    first.communicate(timeout=60)
    assert_one_line_error(run_cli("cloud", "run", "--host", "deadbox", "--", "true", cwd=box["project"]),
                          "deadbox")
    assert_one_line_error(run_cli("cloud", "run", "--host", "box", cwd=box["project"]), "nothing to run")
    assert_one_line_error(run_cli("cloud", "run", "--host", "box", "--stop", "--", "true", cwd=box["project"]),
                          "--host")
    # no --host and no instance set up: said at once, never looked up in DNS
    for verb in (["run", "gpu", "--", "true"], ["logs", "gpu"], ["ssh", "gpu"]):
        assert_one_line_error(run_cli("cloud", *verb, cwd=box["project"]), "no instance 'gpu' is set up here")


def test_ssh_opens_a_session_on_the_host(box):
    result = subprocess.run([sys.executable, "-m", "tenfold", "cloud", "ssh", "--host", "box"], input="echo $((6*7))\n",
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip().splitlines()[-1] == "42", result.stderr
