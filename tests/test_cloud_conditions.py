"""`tenfold cloud` under real conditions: failure kinds reported against cloud tools, rebuilt on the test bed
(moto for AWS, a real sshd on 127.0.0.1 for "the instance"). Each test is one kind: results that exist only on
the host, one job per host, idle means idle, guardrails that hold, logs as they happen, host keys of replaced
machines, stopped instances named, uploads that say what they do, `up` that never ignores what it was asked,
and AWS or the user cutting in at any moment, after which `status`, `cost` and `down` still see everything."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from aws_testbed import ec2, nothing_left
from cloud_testbed import authorize_new_keys
from helpers import REPO, assert_one_line_error, run_cli, wait_for
from ssh_testbed import SSHD, SshServer, free_port, power_off
from tenfold.cloud import jobs
from tenfold.cloud.remote import ssh_command

needs_sshd = pytest.mark.skipif(not os.path.exists(SSHD) or os.geteuid() != 0,
                                reason="needs OpenSSH's sshd and root (make test installs it)")


def start_cli(*args, cwd=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tenfold", *map(str, args)], cwd=cwd or REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def cli_json(*args, **kw):
    result = run_cli("cloud", *args, "--json", **kw)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def instances_in_aws(states=("pending", "running", "stopping", "stopped")) -> list[str]:
    found = ec2().describe_instances(Filters=[{"Name": "instance-state-name", "Values": list(states)}])
    return sorted(i["InstanceId"] for r in found["Reservations"] for i in r["Instances"])


def accounted_for(project=None) -> None:
    """`status` and `cost` list every instance that exists; `down` then leaves nothing that bills."""
    existing = instances_in_aws()
    assert sorted(r["id"] for r in cli_json("status")) == existing
    costed = {r["id"]: r for r in cli_json("cost")["instances"]}
    assert set(existing) <= set(costed)
    assert run_cli("cloud", "down", "gpu").returncode == 0
    nothing_left()
    assert all(r["terminated"] for r in cli_json("cost")["instances"] if r["id"] in existing)


# ---- on any ssh host (box): results, one job, idle, logs, uploads ---------------------------------------

def copy_of(box) -> Path:
    """The project's copy on the host."""
    return box["remote"] / jobs.remote_work(box["project"])


def interrupted_job(box, script: str) -> None:
    """A job that wrote results on the host and then was cut short (the machine went down under it)."""
    (box["project"] / "job.py").write_text(script)
    proc = start_cli("cloud", "run", "--host", "box", "--", "python3", "job.py", cwd=box["project"])
    wait_for(lambda: (copy_of(box) / "ready").exists(), "the job's results")
    power_off(box["remote"])
    _, err = proc.communicate(timeout=60)
    assert "tenfold cloud run --host box --resume" in err, err               # the way on, for this host
    assert jobs.agent("box", "state").stdout.strip() == "interrupted"


RESULTS_JOB = """
import pathlib, time
pathlib.Path('runs/exp1').mkdir(parents=True, exist_ok=True)
pathlib.Path('runs/exp1/checkpoint.pt').write_text('epoch 5, on the host')
pathlib.Path('outputs').mkdir(exist_ok=True)
pathlib.Path('outputs/model.bin').write_text('host only')
pathlib.Path('ready').touch()
time.sleep(120)
"""


@needs_sshd
def test_results_that_exist_only_on_the_host_are_never_deleted(box):
    interrupted_job(box, RESULTS_JOB)
    work = copy_of(box)
    local = box["project"] / "runs" / "exp1" / "checkpoint.pt"      # an older copy of the same file here
    local.parent.mkdir(parents=True)
    local.write_text("epoch 2, fetched long ago")
    os.utime(local, (time.time() - 3600, time.time() - 3600))
    (box["project"] / "other.py").write_text("print('other job')\n")

    refused = run_cli("cloud", "run", "--host", "box", "--", "python3", "other.py", cwd=box["project"])
    assert_one_line_error(refused, "interrupted", "--resume", "--force")
    assert (work / "runs/exp1/checkpoint.pt").read_text() == "epoch 5, on the host"

    forced = run_cli("cloud", "run", "--host", "box", "--force", "--", "python3", "other.py", cwd=box["project"])
    assert forced.returncode == 0 and forced.stdout.strip() == "other job", forced.stderr
    assert (work / "runs/exp1/checkpoint.pt").read_text() == "epoch 5, on the host"   # not replaced by older
    assert (work / "outputs/model.bin").read_text() == "host only"                      # not deleted
    assert local.read_text() == "epoch 5, on the host"                                  # fetched: the newer
    resumed = run_cli("cloud", "run", "--host", "box", "--resume", cwd=box["project"])
    assert_one_line_error(resumed, "nothing to resume")                                # the forced job finished


@needs_sshd
def test_one_job_per_host_even_when_runs_start_together(box):
    (box["project"] / "job.py").write_text(
        "import sys, time\nopen('ran.txt', 'a').write(sys.argv[1] + '\\n')\ntime.sleep(2)\n")
    procs = [start_cli("cloud", "run", "--host", "box", "--", "python3", "job.py", tag, cwd=box["project"])
             for tag in "ABC"]
    results = [(p.wait(timeout=120), p.communicate()[1]) for p in procs]
    assert sorted(code for code, _ in results) == [0, 1, 1], results
    ran = (copy_of(box) / "ran.txt").read_text().split()
    assert len(ran) == 1                                                    # one job ran, once
    for code, err in results:
        if code:
            assert "one job at a time" in err or "still running" in err, err


@needs_sshd
def test_projects_on_one_host_keep_apart_and_ctrl_c_only_detaches(box, tmp_path):
    first = box["project"]
    (first / "job.py").write_text("import pathlib, time\nprint('working', flush=True)\ntime.sleep(3)\n"
                                  "pathlib.Path('runs/a').mkdir(parents=True)\npathlib.Path('runs/a/ckpt').write_text('A')\n")
    proc = start_cli("cloud", "run", "--host", "box", "--", "python3", "job.py", cwd=first)
    assert proc.stdout.readline().strip() == "working"
    proc.send_signal(signal.SIGINT)                                          # detach, not kill
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "detached" in err and "tenfold cloud fetch --host box" in err, err
    assert run_cli("cloud", "logs", "--host", "box", cwd=first).returncode == 0   # ran on to its end
    assert run_cli("cloud", "fetch", "--host", "box", cwd=first).returncode == 0
    assert (first / "runs" / "a" / "ckpt").read_text() == "A"

    second = tmp_path / "other project"
    second.mkdir()
    (second / "list.py").write_text("import os\nprint(sorted(os.listdir('.')))\n")
    listed = run_cli("cloud", "run", "--host", "box", "--", "python3", "list.py", cwd=second)
    assert listed.returncode == 0 and listed.stdout.strip() == "['list.py']", listed.stdout  # not A's files
    assert not (second / "runs").exists()                                     # nor A's results back

    host_copy = copy_of(box) / "job.py"                                     # a newer copy on the host
    old = first / "job.py"
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    host_copy.write_text("print('edited on the host')\n")
    kept = run_cli("cloud", "run", "--host", "box", "--", "python3", "job.py", cwd=first)
    assert kept.stdout.strip() == "edited on the host" and "kept 1 newer file(s)" in kept.stderr, kept.stderr


@needs_sshd
def test_an_interrupted_job_resumes_once_however_many_ask(box):
    interrupted_job(box, "import pathlib, time\nwith open('attempts', 'a') as f: f.write('x')\n"
                         "pathlib.Path('ready').touch()\ntime.sleep(3)\n")
    asks = [threading.Thread(target=jobs.agent, args=("box", "resume")) for _ in range(4)]
    for t in asks:
        t.start()
    for t in asks:
        t.join()
    wait_for(lambda: jobs.agent("box", "state").stdout.strip() == "finished", "the resumed job's end")
    assert (copy_of(box) / "attempts").read_text() == "xx"         # the first run and one resume


@needs_sshd
def test_a_port_forward_or_a_notebook_in_use_is_not_idle(box, tmp_path):
    stopped = tmp_path / "machine-stopped"
    os.chdir(box["project"])
    jobs.install_agent("box", {"spot": False, "auto_resume": True, "idle_stop": 2})
    forward = subprocess.Popen(ssh_command("box")[:-1] + ["-N", "-L", f"127.0.0.1:{free_port()}:127.0.0.1:9",
                                                          "box"])  # a tunnel, no shell
    time.sleep(5)
    assert not stopped.exists()                       # "sshd: root" with no session: still somebody there
    forward.terminate()
    forward.wait()
    closed = time.time()
    wait_for(stopped.exists, "the idle stop after the tunnel closed", timeout=60)
    assert stopped.stat().st_mtime >= closed + 2 - 0.5

    stopped.unlink()
    jobs.install_agent("box", {"spot": False, "auto_resume": True, "idle_stop": 3})
    notebook = start_cli("cloud", "notebook", "--host", "box", cwd=box["project"])
    try:
        url = notebook.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), notebook.stderr.read() if notebook.poll() is not None else url
        time.sleep(6)
        assert not stopped.exists()                   # the notebook's tunnel is open: in use
    finally:
        notebook.send_signal(signal.SIGINT)
        notebook.wait(timeout=30)
    wait_for(stopped.exists, "the idle stop after the notebook closed", timeout=60)


EPOCHS = "import time\nfor e in (1, 2, 3):\n    print('epoch', e)\n    time.sleep(1.5 if e < 3 else 60)\n"


@needs_sshd
def test_output_streams_as_printed_and_survives_an_interruption(box):
    (box["project"] / "epochs.py").write_text(EPOCHS)          # print() without flush, into a file
    proc = start_cli("cloud", "run", "--host", "box", "--", "python3", "epochs.py", cwd=box["project"])
    assert proc.stdout.readline().strip() == "epoch 1"
    log = box["remote"] / "job" / "log"
    assert "epoch 3" not in log.read_text()                   # the first line came while the job ran on
    assert proc.stdout.readline().strip() == "epoch 2"
    wait_for(lambda: "epoch 3" in log.read_text(), "the third epoch in the log")
    power_off(box["remote"])                                  # the machine goes down mid-job
    proc.communicate(timeout=60)
    logs = run_cli("cloud", "logs", "--host", "box", cwd=box["project"])
    assert logs.stdout.splitlines() == ["epoch 1", "epoch 2", "epoch 3"]

    tool = "for i in 1 2; do echo step $i; sleep 4; done | grep step"  # stdio buffers a file by the block
    proc = start_cli("cloud", "run", "--host", "box", "--force", "--", "sh", "-c", tool, cwd=box["project"])
    assert proc.stdout.readline().strip() == "step 1"         # a C tool's stdio, line-buffered
    assert "step 2" not in log.read_text()
    proc.communicate(timeout=60)


@needs_sshd
def test_upload_says_what_it_sends_once_without_environments_or_caches(box):
    project = box["project"]
    (project / ".gitignore").unlink()
    pets = project / "pets"
    for c in ("cat", "dog"):
        (pets / c).mkdir(parents=True)
        for i in range(10):
            (pets / c / f"{i}.jpg").write_bytes(os.urandom(50_000))       # 1 MB of "photos"
    for env in (".venv", "myenv"):                                          # any name: found by pyvenv.cfg
        (project / env / "lib").mkdir(parents=True)
        (project / env / "pyvenv.cfg").write_text("home = /usr/bin\n")
        for i in range(200):
            (project / env / "lib" / f"m{i}.py").write_text("x = 1\n")
    (project / "__pycache__").mkdir()
    (project / "__pycache__" / "a.pyc").write_bytes(b"\0" * 100)
    (project / "count.py").write_text("import pathlib, sys\np = pathlib.Path(sys.argv[-1].split('=')[-1])\n"
                                      "print(sum(1 for _ in p.rglob('*.jpg')))\n")
    result = run_cli("cloud", "run", "--host", "box", "--", "python3", "count.py", "--data=pets", cwd=project)
    assert result.returncode == 0 and result.stdout.strip() == "20", result.stderr
    assert "uploading" in result.stderr and "myenv/ (a Python environment)" in result.stderr
    assert "1.0 MB" in result.stderr                                        # sizes shown
    work, data = copy_of(box), box["remote"] / "data"
    assert {p.name for p in work.iterdir()} >= {"count.py"}
    assert not {".venv", "myenv", "__pycache__", "pets"} & {p.name for p in work.iterdir()}
    assert len(list(data.glob("*/pets/*/*.jpg"))) == 20                    # the data once, as data
    (pets / "cat" / "0.jpg").unlink()                                       # the copy mirrors the data
    again = run_cli("cloud", "run", "--host", "box", "--", "python3", "count.py", "--data", "pets", cwd=project)
    assert again.stdout.strip() == "19", again.stderr


@needs_sshd
def test_a_readable_private_key_is_named_with_the_fix(box):
    os.chmod(box["key"], 0o644)
    result = run_cli("cloud", "run", "--host", "box", "--", "true", cwd=box["project"])
    assert_one_line_error(result, str(box["key"]), "chmod 600")


# ---- tenfold's instances: moto plus a real sshd ----------------------------------------------------------

@pytest.fixture
def instance(cloud, tenfold_home, tmp_path, monkeypatch):
    """The cloud test bed with "the instance" answering: a real sshd that installs each new key pair, as an
    instance's first boot does (by the key's content, so a pair made again under one name is installed too)."""
    if not os.path.exists(SSHD) or os.geteuid() != 0:
        pytest.skip("needs OpenSSH's sshd and root (make test installs it)")
    server = SshServer(tmp_path / "sshd")
    (cloud.home / ".ssh" / "config").write_text(server.user_config())
    monkeypatch.setenv("TENFOLD_AGENT_OVERRIDES", json.dumps({
        "stop": ["touch", str(tmp_path / "machine-stopped")], "boot_hook": False, "poll": 0.2,
        "imds": cloud.imds.url}))
    stop = threading.Event()
    project = tmp_path / "project"
    project.mkdir()
    state = {"server": server, "project": project, "stopped": tmp_path / "machine-stopped"}

    class Booting:  # whichever machine answers now installs the new key (a test may replace the machine)
        def authorize(self, key):
            state["server"].authorize(key)
    threading.Thread(target=authorize_new_keys, args=(Booting(), tenfold_home / "keys", stop), daemon=True).start()
    yield state
    stop.set()
    state["server"].close()


def up(*args, **kw) -> dict:
    return cli_json("up", "gpu", "--cidr", "203.0.113.7/32", "--wait", "60", *args, **kw)


def test_guardrails_persist_and_count_from_the_instance_start(instance, tmp_path):
    remote = tmp_path / "remote"
    first = up("--max-hours", "0.005", "--idle-stop", "off")                 # 18 s
    again = up()                                                              # a plain `up`: the same limit
    assert again["action"] == "found" and again["guardrails"]["max_hours"] == 0.005
    assert up("--max-hours", "0.005")["guardrails"]["max_hours"] == 0.005   # the same `up` twice
    assert json.loads((remote / "agent.json").read_text())["max_hours"] == 0.005
    changed = run_cli("cloud", "up", "gpu", "--max-hours", "2", "--cidr", "203.0.113.7/32")
    assert_one_line_error(changed, "--max-hours 0.005", "--change-guardrails")
    wait_for(instance["stopped"].exists, "the max-hours stop", timeout=60)
    launched = cli_json("status")[0]["launched"]
    import datetime
    since = datetime.datetime.fromisoformat(launched).timestamp()
    assert 18 - 1 <= instance["stopped"].stat().st_mtime - since <= 18 + 6   # from launch, not from the last `up`
    assert first["instance"]["id"] == again["instance"]["id"]

    out = run_cli("cloud", "up", "gpu", "--max-hours", "2", "--change-guardrails", "--cidr", "203.0.113.7/32")
    assert out.returncode == 0 and "--max-hours 0.005, --idle-stop off -> --max-hours 2" in out.stderr, out.stderr
    assert json.loads((remote / "agent.json").read_text())["max_hours"] == 2
    assert cli_json("status")[0]["guardrails"] == {"max_hours": 2, "idle_stop": None, "max_cost": None}


def test_a_replaced_instance_at_a_reused_address_is_a_new_host_and_a_changed_key_is_named(instance, tmp_path,
                                                                                      tenfold_home):
    first = up()
    assert run_cli("cloud", "run", "gpu", "--", "true", cwd=instance["project"]).returncode == 0
    assert run_cli("cloud", "down", "gpu").returncode == 0
    known = (tenfold_home / "known_hosts").read_text() if (tenfold_home / "known_hosts").exists() else ""
    assert first["instance"]["id"] not in known                               # `down` forgot its host key
    port = instance["server"].port
    instance["server"].close()
    instance["server"] = SshServer(tmp_path / "sshd-2", port=port)              # a new machine, same address
    second = up()
    assert second["action"] == "launched"
    assert run_cli("cloud", "run", "gpu", "--", "true", cwd=instance["project"]).returncode == 0

    instance["server"].close()                                                 # the same instance, a new key
    instance["server"] = SshServer(tmp_path / "sshd-3", port=port)
    for key in (tenfold_home / "keys").glob("*.pem"):
        instance["server"].authorize(key)
    result = run_cli("cloud", "run", "gpu", "--", "true", cwd=instance["project"], timeout=120)
    assert_one_line_error(result, "host key", "ssh-keygen")
    waited = run_cli("cloud", "up", "gpu", "--cidr", "203.0.113.7/32", timeout=120)  # --wait 600: not waited out
    assert_one_line_error(waited, "host key")


def test_a_stopped_instance_is_named_and_its_last_log_kept(instance):
    up()
    (instance["project"] / "hello.py").write_text("print('hello from the last job')\n")
    assert run_cli("cloud", "run", "gpu", "--", "python3", "hello.py", cwd=instance["project"]).returncode == 0
    iid = cli_json("status")[0]["id"]
    ec2().stop_instances(InstanceIds=[iid])                          # as the idle stop's shutdown does
    for verb in (["run", "gpu", "--", "true"], ["logs", "gpu"], ["notebook", "gpu"]):
        assert_one_line_error(run_cli("cloud", *verb, cwd=instance["project"]), "tenfold-gpu is stopped",
                              "tenfold cloud start gpu")
    assert run_cli("cloud", "start", "gpu").returncode == 0
    logs = run_cli("cloud", "logs", "gpu", cwd=instance["project"])
    assert logs.returncode == 0 and logs.stdout.strip() == "hello from the last job", logs.stderr


def test_down_keeps_results_not_fetched_yet_unless_forced(instance, tmp_path):
    up()
    project = instance["project"]
    (project / "job.py").write_text("import pathlib\np = pathlib.Path('runs/a')\np.mkdir(parents=True)\n"
                                    "(p / 'history.csv').write_text('epoch\\n1\\n')\n")
    assert run_cli("cloud", "run", "gpu", "--", "python3", "job.py", cwd=project).returncode == 0
    time.sleep(1.1)                                       # a later job's results, which nobody fetched
    late = tmp_path / "remote" / jobs.remote_work(project) / "runs" / "b" / "checkpoint.pt"
    late.parent.mkdir(parents=True)
    late.write_text("epoch 9")
    refused = run_cli("cloud", "down", "gpu")
    assert_one_line_error(refused, "runs/b/checkpoint.pt", "tenfold cloud fetch gpu", "--force")
    assert instances_in_aws(("running",))                 # nothing was terminated
    fetched = run_cli("cloud", "fetch", "gpu", cwd=project)
    assert fetched.returncode == 0 and (project / "runs" / "b" / "checkpoint.pt").read_text() == "epoch 9"
    assert run_cli("cloud", "down", "gpu").returncode == 0
    nothing_left()


def test_expired_credentials_do_not_stand_between_a_user_and_the_instance(instance, testbed):
    up()
    testbed.fail_calls("ExpiredToken")
    ran = run_cli("cloud", "run", "gpu", "--", "echo", "still here", cwd=instance["project"])
    assert ran.returncode == 0 and ran.stdout.strip() == "still here", ran.stderr
    assert "could not ask AWS" in ran.stderr and "expired" in ran.stderr
    assert_one_line_error(run_cli("cloud", "status"), "expired", "log in again")
    testbed.clear_faults()
    accounted_for()


def test_resume_with_nothing_to_resume_leaves_a_stopped_instance_stopped(instance):
    up()
    (instance["project"] / "hello.py").write_text("print('done')\n")
    assert run_cli("cloud", "run", "gpu", "--stop", "--", "python3", "hello.py", cwd=instance["project"]).returncode == 0
    result = run_cli("cloud", "run", "gpu", "--resume", cwd=instance["project"])
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.splitlines()[-1].startswith("error: nothing to resume on tenfold-gpu")
    assert "stopped again" in result.stderr and "tenfold cloud logs gpu" in result.stderr
    assert cli_json("status")[0]["state"] == "stopped"


def test_a_readable_key_of_tenfold_s_own_is_fixed_and_said(instance, tenfold_home):
    up()
    key = tenfold_home / "keys" / "tenfold-gpu.pem"
    os.chmod(key, 0o644)
    result = run_cli("cloud", "run", "gpu", "--", "true", cwd=instance["project"])
    assert result.returncode == 0, result.stderr
    assert "set it back to 600" in result.stderr and oct(key.stat().st_mode & 0o777) == "0o600"


def test_a_key_pair_made_again_under_one_name_is_installed_by_the_test_bed(instance):
    first = up()
    assert run_cli("cloud", "down", "gpu").returncode == 0
    second = up()                                         # a new key pair called tenfold-gpu: authorised too
    assert second["instance"]["id"] != first["instance"]["id"]
    assert run_cli("cloud", "run", "gpu", "--", "true", cwd=instance["project"]).returncode == 0


# ---- AWS only (no ssh): what `up` was asked, and AWS or the user cutting in -------------------------------

def quick_up(*args) -> subprocess.CompletedProcess:
    return run_cli("cloud", "up", "gpu", "--cidr", "203.0.113.7/32", "--no-wait", *args)


def test_up_never_ignores_flags_that_do_not_fit_the_instance(cloud):
    assert quick_up("--spot").returncode == 0
    for flags in (["--type", "g5.xlarge", "--on-demand", "--disk", "200"], ["--disk", "200"], ["--on-demand"],
                  ["--type", "g5.xlarge"]):
        refused = quick_up(*flags)
        assert_one_line_error(refused, "exists as a g4dn.xlarge spot instance with a 100 GB disk",
                              "tenfold cloud down gpu", " ".join(flags))
    same = quick_up("--type", "g4dn.xlarge", "--spot", "--disk", "100")
    assert same.returncode == 0 and "found" in same.stdout
    assert len(instances_in_aws()) == 1
    accounted_for()


def test_two_ups_of_one_name_at_once_launch_one_instance(cloud):
    procs = [start_cli("cloud", "up", "gpu", "--cidr", "203.0.113.7/32", "--no-wait", "--json") for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sorted(json.loads(o)["action"] for o, _ in outs) == ["found", "launched"]
    assert len(instances_in_aws()) == 1
    accounted_for()


def test_two_machines_launching_one_name_at_once_keep_one_instance(cloud):
    """Another machine's `up` (no lock shared with this one) launches tenfold-gpu while this `up` is under way:
    both keep the first launched, so this one undoes its own launch and leaves the other's alone."""
    cloud.delays["CreateSecurityGroup"] = 3.0
    proc = start_cli("cloud", "up", "gpu", "--cidr", "203.0.113.7/32", "--no-wait")
    wait_for(lambda: "CreateSecurityGroup" in cloud.seen, "this up under way")
    image = ec2().describe_images()["Images"][0]["ImageId"]
    tags = [{"Key": "tenfold", "Value": "true"}, {"Key": "tenfold:name", "Value": "gpu"}]
    other = ec2().run_instances(ImageId=image, InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1,
                                TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])["Instances"][0]
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and other["InstanceId"] in err and "at the same moment" in err, err
    assert instances_in_aws(("pending", "running")) == [other["InstanceId"]]
    cloud.clear_faults()
    accounted_for()


def test_credentials_expiring_right_after_the_launch(cloud):
    cloud.fail_calls("ExpiredToken", after="RunInstances")
    result = quick_up()
    cloud.clear_faults()                                                   # logged in again
    (iid,) = instances_in_aws(("pending", "running"))
    assert_one_line_error(result, "expired", iid, "tenfold cloud down gpu")
    accounted_for()


def test_a_security_group_aws_still_holds_after_the_termination(cloud):
    assert quick_up().returncode == 0
    cloud.fail_calls("DependencyViolation", action="DeleteSecurityGroup", times=1,
                     message="resource sg-x has a dependent object")
    gone = cli_json("down", "gpu")
    assert gone["security_group"] and "security_group_left" not in gone
    nothing_left()


@pytest.mark.parametrize("moment", ["CreateKeyPair", "CreateSecurityGroup", "RunInstances", "DescribeInstances"])
def test_ctrl_c_at_any_moment_of_up(cloud, moment):
    cloud.delays[moment] = 3.0                          # the answer is slow: Ctrl-C comes while it is awaited
    proc = start_cli("cloud", "up", "gpu", "--cidr", "203.0.113.7/32", "--no-wait")
    wait_for(lambda: moment in cloud.seen, moment)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err, err
    cloud.clear_faults()
    if instances_in_aws():
        assert "tenfold cloud down gpu" in err, err                       # what exists is said
    again = quick_up()                                                      # a rerun carries on
    assert again.returncode == 0, again.stderr
    assert len(instances_in_aws()) == 1
    accounted_for()


def test_names_and_numbers_that_cannot_work_are_refused_before_anything_is_made(cloud, tenfold_home):
    for name in ("my gpu", "a/b", "", "-x", "x" * 41):
        assert_one_line_error(run_cli("cloud", "up", "--no-wait", "--cidr", "203.0.113.7/32", "--", name),
                              "letters, digits")
    assert not (cloud.home / ".ssh" / "config").read_text().count("tenfold-my")
    for flags, words in ((["up", "gpu", "--wait", "0"], "at least 1"), (["up", "gpu", "--wait", "-1"], "--wait"),
                         (["notebook", "gpu", "--port", "99999"], "1 to 65535")):
        assert_one_line_error(run_cli("cloud", *flags), words)
    assert "COMMAND" in run_cli("cloud").stderr
    assert instances_in_aws() == [] and not (tenfold_home / "keys").exists()


def test_start_stop_of_an_instance_already_so_and_cost_by_region(cloud, tenfold_home):
    assert quick_up().returncode == 0
    again = quick_up()
    assert again.returncode == 0 and "warning" not in again.stderr          # nothing changed: nothing to warn
    ledger = tenfold_home / "cloud" / "ledger.jsonl"
    before = ledger.read_text()
    started = run_cli("cloud", "start", "gpu", "--no-wait")
    assert started.returncode == 0 and "running already" in started.stderr and ledger.read_text() == before
    assert run_cli("cloud", "stop", "gpu").returncode == 0
    stopped = run_cli("cloud", "stop", "gpu")
    assert "stopped already" in stopped.stderr and ledger.read_text().count('"stop"') == 1
    assert cli_json("cost", "--region", "eu-west-1")["instances"] == []
    assert len(cli_json("cost")["instances"]) == 1
    assert "--idle-stop 1h" in run_cli("cloud", "status").stdout             # the guardrails, for people
    accounted_for()
