"""The agent on the instance: idle stop, --max-hours, and an interrupted job resumed at the next boot. "The
instance" is this machine through a real sshd; its stop command only writes a file (see conftest.remote_dir)."""
import json
import os
import subprocess
import time

from helpers import assert_one_line_error, run_cli, wait_for
from ssh_testbed import power_off
from tenfold.cloud import jobs
from tenfold.cloud.remote import ssh_command


def guard(box, **settings):
    """Install the agent on box with these guardrails, as `tenfold cloud up` does on an instance."""
    os.chdir(box["project"])
    jobs.install_agent("box", {"spot": False, "auto_resume": True, **settings})


def test_idle_stop_waits_for_the_job_and_for_logins(box, tmp_path):
    stopped = tmp_path / "machine-stopped"
    (box["project"] / "job.py").write_text("import time\ntime.sleep(2)\n")
    jobs.start("box", ["python3", "job.py"], box["project"])
    guard(box, idle_stop=1.5)
    wait_for(lambda: (box["remote"] / "job" / "exit").exists(), what="the job's end")
    job_end = (box["remote"] / "job" / "exit").stat().st_mtime
    login = subprocess.Popen(ssh_command("box", "sleep", "3"))   # somebody logs in: still not idle
    assert login.wait(timeout=60) == 0
    logout = time.time()
    wait_for(stopped.exists, what="the idle stop")
    assert stopped.stat().st_mtime >= max(job_end, logout) + 1.5 - 0.5  # idle counted from the last activity
    assert "idle for 1.5 s" in (box["remote"] / "agent.log").read_text()


def test_max_hours_stops_mid_job_and_the_job_resumes_at_the_next_boot(box, tmp_path):
    stopped = tmp_path / "machine-stopped"
    (box["project"] / "job.py").write_text(
        "import pathlib, time\nmark = pathlib.Path('attempts')\nn = int(mark.read_text()) + 1 if mark.exists() else 1\n"
        "mark.write_text(str(n))\nprint('attempt', n, flush=True)\ntime.sleep(60 if n == 1 else 0)\n")
    jobs.start("box", ["python3", "job.py"], box["project"])
    guard(box, max_hours=2 / 3600)                              # two seconds
    wait_for(stopped.exists, what="the max-hours stop")
    assert jobs.agent("box", "state").stdout.strip() == "interrupted"
    assert not (box["remote"] / "job" / "exit").exists()
    log = (box["remote"] / "agent.log").read_text()
    assert "--max-hours 0.000555556 reached: stopping the job" in log and "stopping the machine" in log
    power_off(box["remote"])                                     # the machine goes down ...
    (box["remote"] / "agent.json").write_text(json.dumps({"auto_resume": True, "poll": 0.2}))  # no limit now
    jobs.agent("box", "ensure")                                  # ... and boots: the boot hook starts the agent
    logs = run_cli("cloud", "logs", "--host", "box", cwd=box["project"])
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout.splitlines() == ["attempt 1", "tenfold: resuming after an interruption: python3 job.py",
                                        "attempt 2"]


def test_resume_by_hand_and_nothing_to_resume(box):
    (box["project"] / "job.py").write_text("print('ran')\n")
    result = run_cli("cloud", "run", "--host", "box", "--resume", cwd=box["project"])
    assert result.returncode == 1 and "no job to resume on box" in result.stderr
    assert run_cli("cloud", "run", "--host", "box", "--", "python3", "job.py", cwd=box["project"]).returncode == 0
    again = run_cli("cloud", "run", "--host", "box", "--resume", cwd=box["project"])
    assert_one_line_error(again, "nothing to resume on box", "tenfold cloud logs --host box")  # it finished
    bad = run_cli("cloud", "run", "--host", "box", "--resume", "--", "python3", "job.py", cwd=box["project"])
    assert bad.returncode == 1 and "give no command" in bad.stderr


def test_a_gpu_at_work_is_not_idle(box, tmp_path):
    """A job started by hand (in screen, say) with nobody logged in: the GPU's utilisation, as nvidia-smi reports
    it, keeps the instance up. This machine has no GPU: a stand-in nvidia-smi answers from a file."""
    stopped, busy = tmp_path / "machine-stopped", tmp_path / "gpu-busy"
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n[ \"$*\" = '--query-gpu=utilization.gpu --format=csv,noheader,nounits' ] || exit 2\n"
                   f"if [ -e {busy} ]; then echo 0; echo 87; else echo 0; echo 3; fi\n")
    smi.chmod(0o755)
    busy.touch()
    guard(box, idle_stop=1.5, nvidia_smi=str(smi))
    time.sleep(4)
    assert not stopped.exists()
    busy.unlink()
    idle = time.time()
    wait_for(stopped.exists, what="the idle stop once the GPU is idle")
    assert stopped.stat().st_mtime >= idle + 1.5 - 0.5
    assert "GPUs idle" in (box["remote"] / "agent.log").read_text()


def test_max_cost_stops_the_job_once_the_launch_price_times_the_time_reaches_it(box, tmp_path):
    stopped = tmp_path / "machine-stopped"
    (box["project"] / "job.py").write_text("import time\ntime.sleep(60)\n")
    jobs.start("box", ["python3", "job.py"], box["project"])
    started = time.time()
    # $36/h from now, $0.01 spent before this start: the $0.03 cap is reached 2 s after `started`
    guard(box, max_cost=0.03, usd_per_h=36.0, spent_before=0.01, running_since=started, poll=0.2)
    wait_for(stopped.exists, what="the max-cost stop")
    assert stopped.stat().st_mtime - started >= 2.0 - 0.3  # not before (then the job's exit, then the stop)
    assert jobs.agent("box", "state").stdout.strip() == "interrupted"    # resumable, as after a spot notice
    assert "--max-cost $0.03 reached ($0.03" in (box["remote"] / "agent.log").read_text()
    spent = json.loads((box["remote"] / "spent.json").read_text())
    assert spent["base"] == 0.01 and spent["cap"] == 0.03 and 0.03 <= spent["spent"] <= 0.03 + 36 * 0.7 / 3600


def test_what_the_agent_counted_survives_a_restart_nobody_told_the_laptop_of(tmp_path):
    from tenfold.cloud import agent
    cfg = {**agent.DEFAULTS, "spent_before": 0.05, "max_cost": 1.0, "usd_per_h": 3.6}
    (tmp_path / "spent.json").write_text(json.dumps({"boot": 12345, "base": 0.05, "spent": 0.4}))
    assert agent.spent_base(tmp_path, cfg) == 0.4     # another boot (AWS restarted it): what it had spent then
    boot = round(agent.boot_time())
    (tmp_path / "spent.json").write_text(json.dumps({"boot": boot, "base": 0.2, "spent": 0.4}))
    assert agent.spent_base(tmp_path, cfg) == 0.2     # this boot (the agent restarted): its base, not twice
    assert agent.spent_base(tmp_path, {**cfg, "spent_before": 0.3}) == 0.3  # the laptop's figure, when higher
