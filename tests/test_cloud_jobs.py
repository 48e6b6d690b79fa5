"""`tenfold cloud run` and `logs` against a real OpenSSH server on 127.0.0.1 (any ssh host, via --host)."""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import assert_one_line_error, run_cli
from tenfold.cloud import jobs

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


def test_run_syncs_runs_detached_streams_and_fetches_results(box):
    (box["project"] / "train.py").write_text(SCRIPT)
    result = run_cli("cloud", "run", "--host", "box", "--", "python3", "train.py", "--data", "mydata",
                     cwd=box["project"])
    assert result.returncode == 3, result.stderr          # the job's own exit status
    assert result.stdout.splitlines() == ["epoch 1 of 42", "done"]
    assert (box["project"] / "runs" / "r1" / "result.txt").read_text() == "trained on mydata"
    work = box["remote"] / jobs.remote_work(box["project"])
    assert (work / "train.py").exists() and not (work / "secret.txt").exists()  # .gitignore honoured
    (copy,) = (box["remote"] / "data").glob("*/mydata/numbers.txt")       # the data, once, apart from the code
    assert copy.read_text() == "42" and not (work / "mydata").exists()
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


def test_any_ssh_host_works_without_aws_or_boto3(box, tmp_path):
    """An ssh host by its ~/.ssh/config name, or $TENFOLD_HOST by default, with boto3 not importable at all."""
    (box["project"] / "hello.py").write_text("print('hello from the host')\n")
    blocker = tmp_path / "no-boto3"
    blocker.mkdir()
    (blocker / "boto3.py").write_text("raise ImportError('boto3 is not installed')\n")
    env = {"PYTHONPATH": str(blocker)}
    by_name = run_cli("cloud", "run", "box", "--", "python3", "hello.py", cwd=box["project"], env=env)
    assert by_name.returncode == 0 and by_name.stdout.strip() == "hello from the host", by_name.stderr
    by_default = run_cli("cloud", "logs", cwd=box["project"], env={**env, "TENFOLD_HOST": "box"})
    assert by_default.returncode == 0 and by_default.stdout.strip() == "hello from the host", by_default.stderr
    assert_one_line_error(run_cli("cloud", "gpus", env=env), "pip install 'tenfold[cloud]'")


def test_a_tenfold_train_job_gets_a_run_directory_and_a_resume_command():
    from tenfold.cloud.jobs import job_spec
    spec = job_spec(["tenfold", "train", "--data", "../data/d", "--epochs", "20"], "20261126-120000")
    assert spec["command"][-2:] == ["--out", "runs/lenet5-20261126-120000"]
    assert spec["resume"] == ["tenfold", "train", "--resume", "runs/lenet5-20261126-120000", "--epochs", "20"]
    spec = job_spec(["python3", "-m", "tenfold", "train", "--out", "runs/a", "--device", "cuda", "--quiet"], "x")
    assert spec["resume"] == ["python3", "-m", "tenfold", "train", "--resume", "runs/a", "--device", "cuda", "--quiet"]
    spec = job_spec(["tenfold", "train", "--devices", "auto", "--max-restarts", "2", "--out", "runs/b", "--report"], "x")
    assert spec["resume"] == ["tenfold", "train", "--resume", "runs/b", "--devices", "auto", "--max-restarts", "2",
                              "--report"]
    assert job_spec(["tenfold", "train", "--preset", "fast"], "x")["run_dir"] == "runs/airnet94-x"  # as train names it
    assert job_spec(["tenfold", "train", "--preset=fast", "--model", "lenet5"], "x")["run_dir"] == "runs/lenet5-x"
    # the command is read by tenfold train's own parser: --flag=value, a user's model file, a resume
    assert job_spec(["tenfold", "train", "--model=airnet_tiny", "--out=runs/c"], "x")["run_dir"] == "runs/c"
    assert job_spec(["tenfold", "train", "--model", "nets/my.py:make_net"], "x")["run_dir"] == "runs/make_net-x"
    spec = job_spec(["tenfold", "train", "--preset", "fast-tiny", "--epochs=3", "--tensorboard"], "x")
    assert spec["resume"] == ["tenfold", "train", "--resume", "runs/airnet_tiny-x", "--epochs", "3", "--tensorboard"]
    assert job_spec(["tenfold", "train", "--resume=runs/a"], "x")["run_dir"] == "runs/a"
    assert job_spec(["tenfold", "train", "--epochs", "many"], "x")["run_dir"] == "runs/lenet5-x"  # train says why
    assert job_spec(["python3", "train.py"], "x") == {"command": ["python3", "train.py"], "resume": None,
                                                      "run_dir": None}


def test_a_start_whose_answer_is_lost_is_judged_by_whether_the_agent_took_the_job(monkeypatch):
    """The connection can drop between the agent starting the job and its "started" reaching the laptop (the
    machine going down under a quick job): started if job/next.json was taken in, else said plainly."""
    from tenfold.errors import CloudError
    for code, outcome in [(0, None), (1, "did not start"), (255, "lost box while starting")]:
        monkeypatch.setattr(jobs, "ssh", lambda host, script, check=True, c=code: subprocess.CompletedProcess(
            [], c, "", ""))
        if outcome is None:
            jobs.unacknowledged("box", "box", "")
        else:
            with pytest.raises(CloudError, match=outcome):
                jobs.unacknowledged("box", "box", "")
    with pytest.raises(CloudError, match="did not start"):  # the agent said so: no need to ask
        jobs.unacknowledged("box", "box", "failed")
