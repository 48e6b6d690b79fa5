"""The whole trip, as a user makes it: gpus -> up --spot -> run a training job -> results back -> a spot
interruption -> resume to the end -> down, and afterwards nothing left, and the bill as hours x price.

AWS is the moto test bed (plus its spot requests, instance metadata and interruptions); "the instance" is a real
sshd on 127.0.0.1, so its jobs and agent run on this machine, in a folder of the test's own."""
import csv
import datetime
import json
import os
import subprocess
import sys

import pytest

from aws_testbed import ec2, nothing_left
from cloud_testbed import spot_interruption
from helpers import REPO, make_tree, run_cli, wait_for
from tenfold.cloud import jobs
from ssh_testbed import SSHD, SshServer

pytestmark = pytest.mark.skipif(not os.path.exists(SSHD) or os.geteuid() != 0,
                                reason="needs OpenSSH's sshd and root (make test installs it)")
SPOT = 0.2104  # $/h, the test bed's spot price for g4dn.xlarge in the instance's zone


def cli_json(*args, **kw):
    result = run_cli("cloud", *args, "--json", **kw)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def up_and_boot(server, key, *args) -> dict:
    """`tenfold cloud up` while the instance "boots": its key is installed a moment after launch."""
    proc = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "up", *args, "--json"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: key.exists() or proc.poll() is not None, "the key pair")
    server.authorize(key)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    return json.loads(out)


def history(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_spot_round_trip_with_an_interruption(cloud, tenfold_home, tmp_path, monkeypatch):
    server = SshServer(tmp_path / "sshd")
    (cloud.home / ".ssh" / "config").write_text(server.user_config())
    stopped_by_agent = tmp_path / "machine-stopped"
    monkeypatch.setenv("TENFOLD_AGENT_OVERRIDES", json.dumps({   # the instance's metadata service is the bed's
        "stop": ["touch", str(stopped_by_agent)], "boot_hook": False, "poll": 0.2, "imds": cloud.imds.url}))
    remote = tmp_path / "remote"
    project, data = tmp_path / "project", make_tree(tmp_path / "pets", n=60)
    project.mkdir()
    try:
        rows = {r["type"]: r for r in cli_json("gpus")["types"]}
        assert "spot" in rows["g4dn.xlarge"]["launchable"] and rows["g4dn.xlarge"]["spot_usd_per_h"] == SPOT

        out = up_and_boot(server, tenfold_home / "keys" / "tenfold-gpu.pem", "gpu", "--spot",
                          "--cidr", "203.0.113.7/32", "--wait", "60")
        iid = out["instance"]["id"]
        inst = ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        assert inst["MetadataOptions"]["HttpTokens"] == "required" and inst["InstanceLifecycle"] == "spot"
        (request,) = ec2().describe_spot_instance_requests()["SpotInstanceRequests"]
        assert (request["Type"], request["InstanceInterruptionBehavior"]) == ("persistent", "stop")
        assert "SpotPrice" not in request or not request["SpotPrice"]             # no max price
        (group,) = ec2().describe_security_groups(GroupNames=["tenfold-gpu"])["SecurityGroups"]
        assert [(p["FromPort"], p["ToPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]] \
            == [(22, 22, "203.0.113.7/32")]                                        # never 0.0.0.0/0, never 8888

        first = run_cli("cloud", "run", "gpu", "--", "tenfold", "train", "--data", data, "--epochs", "1",
                        "--out", "runs/first", cwd=project)
        assert first.returncode == 0, first.stderr
        assert "Epoch  1: Training Loss:" in first.stdout
        assert len(history(project / "runs" / "first" / "history.csv")) == 1       # fetched back

        long_job = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "run", "gpu", "--", "tenfold",
                                     "train", "--data", str(data), "--epochs", "150", "--out", "runs/long"],
                                    cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        remote_history = remote / jobs.remote_work(project) / "runs" / "long" / "history.csv"
        wait_for(lambda: remote_history.exists() and len(history(remote_history)) >= 1, "the first epoch")
        spot_interruption(cloud, iid, remote)               # the 2-minute notice, then AWS stops the instance
        assert (remote / "job" / "interrupted").exists()     # the agent stopped the job in time, and said so
        before = history(remote_history)
        _, err = long_job.communicate(timeout=60)
        assert long_job.returncode == 1 and "was interrupted" in err and "--resume" in err, err
        assert 1 <= len(before) < 150 and not stopped_by_agent.exists()

        refused = run_cli("cloud", "start", "gpu")                # only AWS may start it again
        assert refused.returncode == 1 and "only AWS can start it again" in refused.stderr
        cloud.restart_by_aws(iid, after=3)                      # capacity returns a little later
        resumed = run_cli("cloud", "run", "gpu", "--resume", cwd=project)
        assert resumed.returncode == 0, resumed.stderr
        assert "AWS stopped tenfold-gpu for capacity" in resumed.stderr and "Waiting up to" in resumed.stderr
        assert "tenfold: resuming after an interruption: tenfold train --resume runs/long" in resumed.stdout
        after = history(project / "runs" / "long" / "history.csv")
        assert [int(r["epoch"]) for r in after] == list(range(1, 151))
        assert after[:len(before)] == before                 # nothing finished was lost or redone

        gone = cli_json("down", "gpu")
        assert gone["instances"] == [iid] and gone["spot_requests"] == [request["SpotInstanceRequestId"]]
        nothing_left()
        assert ec2().describe_spot_instance_requests()["SpotInstanceRequests"] == []
    finally:
        server.close()

    events = [json.loads(line) for line in (tenfold_home / "cloud" / "ledger.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["launch", "stop", "start", "terminate"]  # the stop: AWS's, caught up
    t = [datetime.datetime.fromisoformat(e["time"]) for e in events]
    hours = ((t[1] - t[0]) + (t[3] - t[2])).total_seconds() / 3600
    (row,) = cli_json("cost")["instances"]
    assert row["running_hours"] == pytest.approx(hours)
    assert row["compute_usd"] == pytest.approx(hours * SPOT)
    assert row["storage_usd"] == pytest.approx(100 * 0.08 * (t[3] - t[0]).total_seconds() / 3600 / 730)
    assert row["ipv4_usd"] == pytest.approx(hours * 0.005) and row["terminated"]

