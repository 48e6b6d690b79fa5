"""`tenfold cloud up | status | stop | start | down` against the AWS test bed: what is created, and that `down`
leaves nothing behind. moto's invented public addresses are never contacted (the suite has only loopback)."""
import base64
import json
import os
import stat
import subprocess
import sys
import time

import pytest

from aws_testbed import ec2, nothing_left
from helpers import REPO, Server, assert_one_line_error, run_cli
from ssh_testbed import SSHD, SshServer


def cli(*args):
    if args[0] == "up":
        args = (*args, "--no-wait")
    result = run_cli("cloud", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_up_creates_a_locked_down_tagged_spot_instance(cloud, tenfold_home):
    out = cli("up", "gpu", "--spot", "--cidr", "203.0.113.7/32", "--disk", "80")
    inst = ec2().describe_instances(InstanceIds=[out["instance"]["id"]])["Reservations"][0]["Instances"][0]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    assert tags["tenfold"] == "true" and tags["tenfold:name"] == "gpu" and tags["Name"] == "tenfold-gpu"
    assert inst["InstanceType"] == "g4dn.xlarge" and inst["ImageId"] == cloud.image
    assert inst["MetadataOptions"]["HttpTokens"] == "required"           # IMDSv2 only
    assert inst.get("InstanceLifecycle") == "spot" and out["instance"]["market"] == "spot"
    volume = ec2().describe_volumes(VolumeIds=[inst["BlockDeviceMappings"][0]["Ebs"]["VolumeId"]])["Volumes"][0]
    assert (volume["VolumeType"], volume["Size"]) == ("gp3", 80)
    (group,) = ec2().describe_security_groups(GroupNames=["tenfold-gpu"])["SecurityGroups"]
    rules = [(p["FromPort"], p["ToPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]]
    assert rules == [(22, 22, "203.0.113.7/32")]                        # ssh from one address; never 8888
    key = tenfold_home / "keys" / "tenfold-gpu.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "PRIVATE KEY" in key.read_text()
    assert out["cost"]["compute"] == pytest.approx(0.2104)
    assert out["cost"]["storage"] == pytest.approx(80 * 0.08 / 730) and out["cost"]["ipv4"] == 0.005


def test_ssh_config_entry_parses_and_leaves_the_users_own_first(cloud):
    config = cloud.home / ".ssh" / "config"
    config.write_text("Host tenfold-gpu\n    Port 2222\n")  # the user's own setting for the host
    out = cli("up", "gpu", "--cidr", "203.0.113.7/32")
    resolved = subprocess.run(["ssh", "-G", "-F", str(config), "tenfold-gpu"], capture_output=True, text=True)
    assert resolved.returncode == 0, resolved.stderr
    options = dict(line.split(" ", 1) for line in resolved.stdout.splitlines() if " " in line)
    assert options["hostname"] == out["instance"]["ip"] and options["user"] == "ubuntu"
    assert options["port"] == "2222" and options["identitiesonly"] == "yes"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    run_cli("cloud", "down", "gpu")
    assert config.read_text() == "Host tenfold-gpu\n    Port 2222\n"


def test_caller_address_found_through_the_checkip_service(cloud, monkeypatch):
    server = Server()
    server.routes["/"] = (b"198.51.100.23\n", "ok")
    try:
        monkeypatch.setenv("TENFOLD_CHECKIP_URL", server.url("/"))
        cli("up", "gpu")
    finally:
        server.close()
    (group,) = ec2().describe_security_groups(GroupNames=["tenfold-gpu"])["SecurityGroups"]
    assert [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]] == ["198.51.100.23/32"]


def test_rerun_finds_the_instance_and_stop_start_down_clean_up(cloud, tenfold_home):
    first = cli("up", "gpu", "--on-demand", "--cidr", "203.0.113.7/32")
    again = cli("up", "gpu", "--on-demand", "--cidr", "203.0.113.7/32")
    assert (first["action"], again["action"]) == ("launched", "found")
    assert again["instance"]["id"] == first["instance"]["id"] and first["instance"]["market"] == "on-demand"
    assert first["cost"]["compute"] == 0.526
    assert cli("stop", "gpu")["state"] == "stopped"
    (row,) = cli("status")
    assert row["cost"]["compute"] == 0.0 and row["cost"]["storage"] > 0  # stopped: only the disk bills
    restarted = cli("up", "gpu", "--cidr", "198.51.100.9/32")  # from another network now
    assert restarted["instance"]["state"] == "running" and restarted["instance"]["id"] == first["instance"]["id"]
    (group,) = ec2().describe_security_groups(GroupNames=["tenfold-gpu"])["SecurityGroups"]
    assert [r["CidrIp"] for p in group["IpPermissions"] for r in p["IpRanges"]] == ["198.51.100.9/32"]  # only
    (row,) = cli("status")
    assert (row["name"], row["state"], row["type"]) == ("gpu", "running", "g4dn.xlarge")
    gone = cli("down", "gpu")
    assert gone["instances"] == [first["instance"]["id"]] and gone["key_pair"] == "tenfold-gpu"
    state = ec2().describe_instances(InstanceIds=[first["instance"]["id"]])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] == "terminated"
    assert ec2().describe_security_groups(Filters=[{"Name": "group-name", "Values": ["tenfold-gpu"]}])["SecurityGroups"] == []
    assert ec2().describe_key_pairs(Filters=[{"Name": "key-name", "Values": ["tenfold-gpu"]}])["KeyPairs"] == []
    assert not (tenfold_home / "keys" / "tenfold-gpu.pem").exists()
    assert cli("status") == [] and cli("down", "gpu")["instances"] == []  # a second down is harmless
    (row,) = cli("cost")["instances"]  # the ledger saw launch, stop, start, terminate
    assert row["id"] == first["instance"]["id"] and row["terminated"] and row["market"] == "on-demand"
    assert row["compute_usd"] == pytest.approx(row["running_hours"] * 0.526)


def test_open_to_the_world_only_when_asked_and_with_a_warning(cloud):
    result = run_cli("cloud", "up", "gpu", "--cidr", "0.0.0.0/0", "--no-wait")
    assert result.returncode == 0, result.stderr
    assert "warning: ssh will be open to the whole internet" in result.stderr
    (group,) = ec2().describe_security_groups(GroupNames=["tenfold-gpu"])["SecurityGroups"]
    assert [(p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]] == [(22, "0.0.0.0/0")]


def test_bad_input_is_one_line_and_launches_nothing(cloud):
    assert_one_line_error(run_cli("cloud", "up", "--type", "p9.huge", "--cidr", "203.0.113.7/32"), "unknown GPU type")
    assert_one_line_error(run_cli("cloud", "up", "--disk", "10", "--cidr", "203.0.113.7/32"), "--disk")
    assert_one_line_error(run_cli("cloud", "up", "--cidr", "somewhere"), "--cidr")
    assert_one_line_error(run_cli("cloud", "stop", "nosuch"), "no tenfold instance named 'nosuch'")
    assert_one_line_error(run_cli("cloud", "up", "--spot", "--on-demand"), "not allowed")
    assert_one_line_error(run_cli("cloud", "up", "--region", "mars-north-1", "--cidr", "203.0.113.7/32"),
                          "mars-north-1")
    assert_one_line_error(run_cli("cloud", "up", "--idle-stop", "soon", "--cidr", "203.0.113.7/32"), "--idle-stop")
    assert_one_line_error(run_cli("cloud", "up", "--max-hours", "0", "--cidr", "203.0.113.7/32"), "--max-hours")
    assert ec2().describe_instances()["Reservations"] == []


needs_sshd = pytest.mark.skipif(not os.path.exists(SSHD) or os.geteuid() != 0,
                                reason="needs OpenSSH's sshd and root (make test installs it)")


@needs_sshd
def test_up_waits_until_ssh_answers_then_ssh_just_works(cloud, tenfold_home, tmp_path):
    server = SshServer(tmp_path / "sshd")
    config = cloud.home / ".ssh" / "config"
    config.write_text(server.user_config())
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "up", "gpu", "--cidr", "203.0.113.7/32",
                                 "--wait", "60", "--json"], cwd=REPO, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        key = tenfold_home / "keys" / "tenfold-gpu.pem"
        deadline = time.monotonic() + 60
        while not key.exists():  # the instance "boots": its key is installed a little after launch
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.1)
        time.sleep(1)
        server.authorize(key)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert json.loads(out)["action"] == "launched"
        hello = subprocess.run(["ssh", "-F", str(config), "tenfold-gpu", "echo", "hello from the instance"],
                               capture_output=True, text=True, timeout=30)
        assert hello.stdout.strip() == "hello from the instance", hello.stderr
        # the whole trip: a job on the instance, its results back, and the instance gone afterwards
        project = tmp_path / "project"
        project.mkdir()
        (project / "job.py").write_text("import pathlib\npathlib.Path('runs/a').mkdir(parents=True)\n"
                                        "pathlib.Path('runs/a/done').write_text('yes')\nprint('trained')\n")
        env = {"TENFOLD_REMOTE_DIR": str(tmp_path / "remote")}
        job = run_cli("cloud", "run", "gpu", "--down", "--", "python3", "job.py", cwd=project, env=env)
        assert job.returncode == 0 and job.stdout.strip() == "trained", job.stderr
        assert (project / "runs" / "a" / "done").read_text() == "yes"
        assert cli("status") == []
        assert "tenfold-gpu" not in config.read_text()
    finally:
        server.close()


@needs_sshd
def test_ssh_that_never_answers_is_a_clear_error_that_says_how_to_stop_paying(cloud, tmp_path):
    server = SshServer(tmp_path / "sshd")  # up, but the instance's key is never installed
    (cloud.home / ".ssh" / "config").write_text(server.user_config())
    try:
        result = run_cli("cloud", "up", "gpu", "--cidr", "203.0.113.7/32", "--wait", "4")
    finally:
        server.close()
    assert_one_line_error(result, "did not answer within 4 s", "tenfold cloud down gpu")
    assert len(ec2().describe_instances()["Reservations"]) == 1  # still there, as the message says


@pytest.mark.parametrize("code,words", [
    ("VcpuLimitExceeded", ["L-DB2E81BA", "tenfold cloud quota --request 8`"]),
    ("MaxSpotInstanceCountExceeded", ["L-3819A6DF", "--request 8 --spot"]),
    ("SpotMaxPriceTooLow", ["--max-price 0.01", "leave it out"]),
    ("Unsupported", ["cannot be launched in us-east-1", "--regions"]),
    ("AuthFailure", ["rejected the credentials"]),
    ("ExpiredToken", ["session token has expired"]),
])
def test_each_launch_failure_gives_its_advice_and_leaves_nothing(cloud, code, words, tenfold_home):
    cloud.fail_launches(code)
    spot = [] if code == "VcpuLimitExceeded" else ["--spot", "--max-price", "0.01"] if code == "SpotMaxPriceTooLow" \
        else ["--spot"]
    result = run_cli("cloud", "up", "gpu", *(spot or ["--on-demand"]), "--cidr", "203.0.113.7/32", "--no-wait")
    assert_one_line_error(result, *words)
    nothing_left()
    assert not (tenfold_home / "keys" / "tenfold-gpu.pem").exists()


def test_no_capacity_retries_in_the_other_zones(cloud):
    cloud.fail_launches("InsufficientInstanceCapacity", times=1)
    out = cli("up", "gpu", "--cidr", "203.0.113.7/32")
    assert out["action"] == "launched" and out["instance"]["state"] == "running"


def test_no_capacity_anywhere_suggests_other_types(cloud):
    cloud.fail_launches("InsufficientInstanceCapacity", times=50)
    result = run_cli("cloud", "up", "gpu", "--cidr", "203.0.113.7/32", "--no-wait")
    assert_one_line_error(result, "no spot capacity for g4dn.xlarge in any zone", "--type g6.xlarge", "--on-demand")
    nothing_left()


def test_a_key_pair_whose_private_key_is_lost_is_replaced(cloud, tenfold_home):
    old = ec2().create_key_pair(KeyName="tenfold-gpu", KeyType="ed25519")  # left over; its private half is gone
    cli("up", "gpu", "--cidr", "203.0.113.7/32")
    (pair,) = ec2().describe_key_pairs(KeyNames=["tenfold-gpu"])["KeyPairs"]
    assert pair["KeyPairId"] != old["KeyPairId"]
    key = (tenfold_home / "keys" / "tenfold-gpu.pem").read_text()
    assert "PRIVATE KEY" in key and key != old["KeyMaterial"]


def test_the_first_boot_installs_the_agent_with_its_guardrails(cloud, tmp_path, monkeypatch):
    """The launch carries user data that cloud-init runs as root at first boot: here it runs on this machine
    (as the current user, into the test's folder) and must leave the agent running with the guardrails asked."""
    overrides = json.loads(os.environ["TENFOLD_AGENT_OVERRIDES"])
    monkeypatch.setenv("TENFOLD_AGENT_OVERRIDES", json.dumps({**overrides, "running_since": time.time()}))  # "booted"
    out = cli("up", "gpu", "--spot", "--idle-stop", "45m", "--max-hours", "3", "--max-cost", "$4",
              "--cidr", "203.0.113.7/32")
    assert out["guardrails"] == {"max_hours": 3, "idle_stop": 2700, "max_cost": 4}
    (inst,) = [i for r in ec2().describe_instances()["Reservations"] for i in r["Instances"]]
    tags = {t["Key"]: t["Value"] for t in inst["Tags"]}
    extras = 100 * 0.08 / 730 + 0.005  # gp3 and IPv4, $/h
    assert tags["tenfold:max-cost"] == "4" and float(tags["tenfold:usd-per-h"]) == pytest.approx(0.2104 + extras)
    attr = ec2().describe_instance_attribute(InstanceId=out["instance"]["id"], Attribute="userData")
    script = base64.b64decode(attr["UserData"]["Value"]).decode()
    assert script.startswith("#!/bin/bash\n")
    root = tmp_path / "remote"
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    boot = subprocess.run(["bash", "-c", script], env={**os.environ, "TENFOLD_ROOT": str(root), "TENFOLD_USER": user},
                          capture_output=True, text=True, timeout=60)
    assert boot.returncode == 0, boot.stderr
    assert (root / "agent.py").read_bytes() == (REPO / "tenfold" / "cloud" / "agent.py").read_bytes()
    settings = json.loads((root / "agent.json").read_text())
    assert (settings["idle_stop"], settings["max_hours"], settings["spot"]) == (2700, 3, True)
    # before tenfold connects, --max-cost counts at on-demand's price, above any spot price: never past the cap
    assert settings["max_cost"] == 4 and settings["usd_per_h"] == pytest.approx(0.526 + extras)
    pid = int((root / "agent.pid").read_text())
    assert os.path.exists(f"/proc/{pid}") and b"watch" in open(f"/proc/{pid}/cmdline", "rb").read()
