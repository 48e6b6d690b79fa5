"""`tenfold train --devices N`: gloo workers on this machine through PyTorch's elastic launcher."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import REPO, assert_one_line_error, make_tree, run_cli, wait_for
from tenfold.cloud import jobs
from tenfold.training.checkpoint import load_checkpoint


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data", n=40)  # 108 training / 12 validation images, 3 classes


def history(run: Path) -> list[dict]:
    return list(csv.DictReader(open(run / "history.csv")))


def test_two_workers_take_the_same_steps_as_one_device(tree, tmp_path):
    """Full-batch steps (the global batch = all 108 training images) make both runs' gradients the same mean,
    so the weights must agree to float rounding: a test of the sharding, the gradient averaging and the
    all-reduced logs together. Tolerance: 1e-4 relative on the weights, 1e-5 on the logged loss."""
    # SGD: an update proportional to the gradient (Adam's m / sqrt(v) turns rounding noise in a gradient near zero
    # into a whole step of the learning rate, which made this test fail on some CPUs by 7e-6)
    flags = ["--data", tree, "--epochs", "4", "--batch-size", "108", "--keep-prob", "1", "--lr", "0.05",
             "--optimizer", "sgd", "--device", "cpu"]
    one, two = tmp_path / "one", tmp_path / "two"
    same = {"TENFOLD_KERNELS": "1"}  # the same kernels on both sides (measured, each might choose another path)
    r1 = run_cli("train", *flags, "--out", one, env=same)
    r2 = run_cli("train", *flags, "--out", two, "--devices", "2", env=same)
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr
    assert "x 2 workers" in r2.stderr
    epoch_lines = [line for line in r2.stdout.splitlines() if line.startswith("Epoch")]
    assert len(epoch_lines) == 4  # one line per epoch, from rank 0 only
    h1, h2 = history(one), history(two)
    for a, b in zip(h1, h2):
        assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-5)
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
        assert a["val_accuracy"] == b["val_accuracy"] and a["train_accuracy"] == b["train_accuracy"]
    assert load_checkpoint(two)["environment"]["workers"] == 2  # for the report's record
    w1, w2 = load_checkpoint(one)["model"], load_checkpoint(two)["model"]
    assert w1.keys() == w2.keys()  # saved without DistributedDataParallel's "module." prefix
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-6)


def test_a_run_of_two_workers_resumes_on_one(tree, tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--data", tree, "--epochs", "2", "--batch-size", "16", "--device", "cpu",
                   "--devices", "2", "--out", run).returncode == 0
    before = history(run)
    r = run_cli("train", "--resume", run, "--epochs", "3")
    assert r.returncode == 0, r.stderr
    after = history(run)
    assert [row["epoch"] for row in after] == ["1", "2", "3"] and after[:2] == before
    assert float(after[-1]["val_accuracy"]) >= 0.9
    r = run_cli("train", "--resume", run, "--epochs", "4", "--devices", "2", "--device", "cpu")  # and back on 2
    assert r.returncode == 0, r.stderr
    assert [row["epoch"] for row in history(run)] == ["1", "2", "3", "4"]


def workers_of(pid: int) -> dict[int, int]:
    """RANK -> pid of the launcher's worker processes (its children that carry a RANK)."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            ppid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            env = dict(e.split("=", 1) for e in (proc / "environ").read_text().split("\0") if "=" in e)
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and "RANK" in env:
            found[int(env["RANK"])] = int(proc.name)
    return found


def start_two_workers(tree, run, *extra, epochs: int = 40):
    """2 workers for many epochs, returned once epoch 2 is saved: (launcher process, stdout so far, workers)."""
    cmd = [sys.executable, "-m", "tenfold", "train", "--data", str(tree), "--epochs", str(epochs), "--batch-size",
           "8", "--device", "cpu", "--devices", "2", "--out", str(run), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("Epoch  2:"):
            break
    wait_for(lambda: len(workers_of(proc.pid)) == 2, "the two workers")
    return proc, "".join(lines), workers_of(proc.pid)


def start_and_kill_a_worker(tree, run, *extra):
    """Start 2 workers, SIGKILL worker 1 once epoch 2 is saved; returns (exit code, out, err, workers)."""
    proc, lines, first = start_two_workers(tree, run, *extra)
    os.kill(first[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=240)
    return proc.returncode, lines + out, err, first


def test_sigterm_to_the_launcher_stops_every_worker_cleanly(tree, tmp_path):
    """What a spot notice does (the instance's agent sends the job SIGTERM): all stop, the checkpoint intact."""
    run = tmp_path / "run"
    proc, _, workers = start_two_workers(tree, run, epochs=400)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert err.strip().splitlines()[-1].startswith("terminated (finished epochs are saved")
    assert "Traceback" not in err and "error" not in err
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers.values())
    assert 2 <= load_checkpoint(run)["epoch"] < 400 and not list(run.glob(".*.tmp"))


def test_one_device_is_a_plain_process(tree, tmp_path):
    r = run_cli("train", "--data", tree, "--epochs", "1", "--device", "cpu", "--devices", "1", "--out", tmp_path / "a")
    assert r.returncode == 0 and "workers" not in r.stderr
    r = run_cli("train", "--data", tree, "--epochs", "1", "--device", "cpu", "--devices", "auto", "--out",
                tmp_path / "b")
    assert r.returncode == 0 and "workers" not in r.stderr  # auto = every GPU; with --device cpu, one process


def test_a_killed_worker_ends_the_job_with_one_line(tree, tmp_path):
    run = tmp_path / "run"
    code, out, err, first = start_and_kill_a_worker(tree, run)
    said = "".join(line for line in err.splitlines(True) if not line.startswith("tenfold: "))  # after the start
    result = subprocess.CompletedProcess([], code, out, said)
    assert_one_line_error(result, f"worker 1 (pid {first[1]}) was killed by SIGKILL",
                          f"--resume {run} --devices 2", "--max-restarts")
    done = load_checkpoint(run)["epoch"]
    assert 2 <= done < 40  # the finished epochs are saved, intact
    assert not list(run.glob(".*.tmp"))
    assert run_cli("train", "--resume", run, "--epochs", str(done + 1)).returncode == 0


def failure(rank: int, exitcode: int, seen: int):
    """torch's record of a failed worker, as the launcher makes it when it finds the process dead at `seen`."""
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure
    f = ProcessFailure(local_rank=rank, pid=1000 + rank, exitcode=exitcode, error_file="/nonexistent")
    f.timestamp = seen
    return f


@pytest.mark.parametrize("failures, blamed", [
    # worker 1 killed; worker 0, stuck in a collective, ignored the launcher's SIGTERM and was SIGKILLed 30 s later
    ({0: failure(0, -9, 130), 1: failure(1, -9, 100)}, "worker 1 (pid 1001) was killed by SIGKILL"),
    ({0: failure(0, -15, 100), 1: failure(1, -9, 100)}, "worker 1 (pid 1001) was killed by SIGKILL"),
    ({0: failure(0, -6, 100), 1: failure(1, -11, 100)}, "worker 1 (pid 1001) was killed by SIGSEGV"),  # same look
    ({0: failure(0, -9, 100), 1: failure(1, -9, 100), 2: failure(2, -15, 99)}, "worker 0 (pid 1000) was killed by SIGKILL"),
    ({3: failure(3, 1, 100), 2: failure(2, 2, 100)}, "worker 2 (pid 1002) exited with code 2"),
])
def test_the_cause_named_is_the_first_worker_to_fail(failures, blamed, tmp_path):
    from tenfold.training.launch import cause
    assert cause(failures, str(tmp_path)) == blamed


def test_max_restarts_restarts_the_workers_from_the_checkpoint(tree, tmp_path):
    run = tmp_path / "run"
    code, out, err, first = start_and_kill_a_worker(tree, run, "--max-restarts", "1")
    assert code == 0, err
    assert "error" not in err and "warning" not in err and "Traceback" not in err
    rows = history(run)
    assert [int(r["epoch"]) for r in rows] == list(range(1, 41))  # each epoch once, none lost
    assert load_checkpoint(run)["epoch"] == 40
    starts = [line for line in err.splitlines() if line.startswith("tenfold: lenet5")]
    assert len(starts) == 2  # the first start, and the restart (which resumed)


def test_torchrun_starts_the_same_workers(tree, tmp_path):
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "tenfold", "train", "--data", str(tree), "--epochs", "2", "--batch-size", "16",
                        "--device", "cpu", "--out", str(run)], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert r.returncode == 0, r.stderr
    assert len([line for line in r.stdout.splitlines() if line.startswith("Epoch")]) == 2
    assert load_checkpoint(run)["epoch"] == 2


def test_torchrun_on_two_nodes_makes_one_job(tree, tmp_path):
    """Two `torchrun --nnodes 2` agents meeting at one c10d rendezvous (here both on 127.0.0.1, as two machines
    would on a network) make one job of 2 workers: one epoch line per epoch, one run directory."""
    from ssh_testbed import free_port
    run, port = tmp_path / "run", free_port()
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
            "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes",
            "--local-addr", "127.0.0.1", "-m", "tenfold", "train", "--data", str(tree), "--epochs", "2",
            "--batch-size", "16", "--device", "cpu", "--out", str(run)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_CPP_LOG_LEVEL": "ERROR"}
    procs = [subprocess.Popen(node, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    epoch_lines = [line for out, _ in outs for line in out.splitlines() if line.startswith("Epoch")]
    assert len(epoch_lines) == 2  # global rank 0 only, on whichever node it is
    assert "x 2 workers" in "".join(err for _, err in outs)
    assert load_checkpoint(run)["epoch"] == 2 and load_checkpoint(run)["environment"]["workers"] == 2


def test_bad_worker_settings_are_one_line_errors(tree, tmp_path):
    flags = ["train", "--data", tree, "--epochs", "1", "--out", tmp_path / "r"]
    cpu = ["--device", "cpu"]
    assert_one_line_error(run_cli(*flags, *cpu, "--devices", "2", "--batch-size", "15"), "multiple of the 2 workers")
    assert_one_line_error(run_cli(*flags, *cpu, "--devices", "0"), "--devices must be")
    assert_one_line_error(run_cli(*flags, *cpu, "--devices", "two"), "--devices must be")
    assert_one_line_error(run_cli(*flags, *cpu, "--devices", "2", "--max-restarts", "-1"), "--max-restarts")
    if not torch.cuda.is_available():
        assert_one_line_error(run_cli(*flags, "--device", "cuda", "--devices", "2"), "no CUDA GPU")
    r = run_cli("train", "--data", tmp_path / "nothing", "--devices", "2", "--device", "cpu")
    assert_one_line_error(r, "worker", "nothing")  # every worker fails the same way: one line, not two
    assert not (tmp_path / "r").exists()


def test_a_multi_worker_job_on_a_cloud_host(box, tree):
    """`tenfold cloud run -- tenfold train --devices 2` on an ssh host: the workers run there, the run comes back."""
    import shutil
    shutil.copytree(tree, box["project"] / "mydata", dirs_exist_ok=True)
    r = run_cli("cloud", "run", "--host", "box", "--", "tenfold", "train", "--data", "mydata", "--epochs", "2",
                "--batch-size", "16", "--device", "cpu", "--devices", "2", "--out", "runs/multi",
                cwd=box["project"], timeout=300)
    assert r.returncode == 0, r.stderr
    assert len([line for line in r.stdout.splitlines() if line.startswith("Epoch")]) == 2
    assert load_checkpoint(box["project"] / "runs" / "multi")["epoch"] == 2
    spec = (box["remote"] / "job" / "spec.json").read_text()
    assert '"--resume", "runs/multi"' in spec and '"--devices", "2"' in spec


def test_multi_worker_job_on_a_spot_instance_survives_an_interruption(testbed, cloud, tenfold_home, tmp_path,
                                                                    monkeypatch):
    """The cloud test bed (moto as AWS, a local sshd as a 4-GPU g4dn.12xlarge): `tenfold train --devices 2`
    (CPU workers standing in for the GPUs) is interrupted by a spot notice, and `run --resume` continues it on
    the same number of workers, with nothing finished lost."""
    import json
    from cloud_testbed import spot_interruption
    from ssh_testbed import SSHD, SshServer
    from test_cloud_acceptance import up_and_boot
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.skip("needs OpenSSH's sshd and root (make test installs it)")
    import aws_testbed
    testbed.quotas.update({"L-3819A6DF": 48.0})  # 48 vCPUs of spot G instances: one g4dn.12xlarge
    testbed.spot_prices.append(("g4dn.12xlarge", "us-east-1a", 1.1736, aws_testbed.ago(1)))
    server = SshServer(tmp_path / "sshd")
    (cloud.home / ".ssh" / "config").write_text(server.user_config())
    monkeypatch.setenv("TENFOLD_AGENT_OVERRIDES", json.dumps({
        "stop": ["touch", str(tmp_path / "stopped")], "boot_hook": False, "poll": 0.2, "imds": cloud.imds.url}))
    remote, project = tmp_path / "remote", tmp_path / "project"
    data = make_tree(tmp_path / "pets", n=40)
    project.mkdir()
    try:
        out = up_and_boot(server, tenfold_home / "keys" / "tenfold-gpu4.pem", "gpu4", "--type", "g4dn.12xlarge",
                          "--spot", "--cidr", "203.0.113.7/32", "--wait", "60")
        iid = out["instance"]["id"]
        job = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "run", "gpu4", "--", "tenfold", "train",
                                "--data", str(data), "--epochs", "120", "--batch-size", "8", "--device", "cpu",
                                "--devices", "2", "--out", "runs/multi"],
                               cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        remote_history = remote / jobs.remote_work(project) / "runs" / "multi" / "history.csv"
        wait_for(lambda: remote_history.exists() and len(history(remote_history.parent)) >= 2, "two epochs")
        spot_interruption(cloud, iid, remote)
        before = history(remote_history.parent)
        _, err = job.communicate(timeout=90)
        assert job.returncode == 1 and "was interrupted" in err, err
        spec = json.loads((remote / "job" / "spec.json").read_text())
        assert spec["resume"][-6:] == ["--epochs", "120", "--device", "cpu", "--devices", "2"]
        cloud.restart_by_aws(iid, after=2)
        resumed = run_cli("cloud", "run", "gpu4", "--resume", cwd=project, timeout=300)
        assert resumed.returncode == 0, resumed.stderr
        after = history(project / "runs" / "multi")
        assert [int(r["epoch"]) for r in after] == list(range(1, 121))
        assert after[:len(before)] == before
        assert run_cli("cloud", "down", "gpu4").returncode == 0
    finally:
        server.close()
