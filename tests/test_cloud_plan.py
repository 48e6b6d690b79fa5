"""`tenfold cloud plan` (a job's time and cost on every GPU type, before launching) and `--max-cost` (the agent
stops the job and the instance at a dollar cap; the bill agrees). AWS is the moto test bed; "the instance" a
real sshd on 127.0.0.1."""
import csv
import json
import os
import subprocess
import sys

import pytest

from aws_testbed import ago, ec2
from helpers import REPO, assert_one_line_error, make_tree, run_cli, wait_for
from ssh_testbed import SSHD, SshServer, power_off
from tenfold.cloud import jobs

GP3_AND_IPV4 = 100 * 0.08 / 730 + 0.005  # $/h besides compute: 100 GB gp3 and a public IPv4 address


def plan_json(*args, env=None) -> dict:
    result = run_cli("cloud", "plan", *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_plan_prices_a_preset_on_every_type_cheapest_first(cloud):
    for itype, zone, price in [("g4dn.xlarge", "us-east-1b", 0.1900), ("g6.xlarge", "us-east-1a", 0.3500),
                               ("g5.xlarge", "us-east-1a", 0.4300), ("g6e.xlarge", "us-east-1c", 0.9000),
                               ("g4dn.12xlarge", "us-east-1a", 1.5000)]:
        cloud.spot_prices.append((itype, zone, price, ago(0.01)))  # newer than the bed's 0.2104 in us-east-1a
    result = plan_json("--preset", "fast", "--epochs", "10")
    rows = {r["type"]: r for r in result["types"]}
    priced = [r for r in result["types"] if r["cost_usd"] is not None]
    assert len(priced) >= 5 and [r["cost_usd"] for r in priced] == sorted(r["cost_usd"] for r in priced)
    assert result["market"] == "spot" and result["aws"] is None
    t4 = rows["g4dn.xlarge"]
    assert (t4["usd_per_h"], t4["zone"]) == (0.19, "us-east-1b")  # the cheapest zone's latest price
    assert t4["quota"] == "yes" and rows["g4dn.12xlarge"]["quota"].startswith("no: 8 of 48 vCPUs free")

    # one row by hand: airnet94, 45,000 + 5,000 CIFAR-10 images a epoch, 44 steps of 1,024, on a T4's 65 TFLOPS
    job = result["job"]
    assert (job["model"], job["epochs"], job["train_images"], job["val_images"], job["tta_views"]) == \
        ("airnet94", 10, 45_000, 5_000, 6)
    rate = 65e12 * 0.30
    val_s = 5_000 * job["eval_flops"] / rate
    epoch_s = 44 * 0.002 + 45_000 * job["train_flops"] / rate + val_s
    total_s = 120 + 90 + 30 + 10 * epoch_s + 6 * val_s
    assert t4["epoch_s"] == pytest.approx(epoch_s) and t4["total_s"] == pytest.approx(total_s)
    assert t4["cost_usd"] == pytest.approx(total_s / 3600 * (0.19 + GP3_AND_IPV4))
    assert t4["basis"] == "derived: 30% of 65 TFLOPS fp16"
    assert job["train_flops"] == pytest.approx(3 * job["eval_flops"])

    text = run_cli("cloud", "plan", "--preset", "fast", "--epochs", "10")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert lines[0].startswith("airnet94, 10 epochs of 45,000 images (+6 test-time views")
    assert lines[2].split()[:1] == ["g4dn.xlarge"] and "$0.0" in lines[2] and "derived: 30% of 65" in lines[2]
    assert any(line.startswith("Start-up (assumed), in every total: boot 2 min + install 90 s") for line in lines)
    assert lines[0].endswith("spot prices for us-east-1")


def test_plan_counts_lenet5s_flops_as_the_hand_count_and_a_folders_images(cloud, tmp_path):
    data = make_tree(tmp_path / "pets", n=20)             # 3 classes x 20: 54 to train, 6 held out
    job = plan_json("--data", data, "--on-demand")["job"]
    macs = 32 * 32 * 6 * 75 + 16 * 16 * 16 * 150 + 1024 * 120 + 120 * 84 + 84 * 3  # conv, conv, fc, fc, out
    assert job["eval_flops"] == 2 * macs and (job["train_images"], job["val_images"]) == (54, 6)
    assert job["data_bytes"] == sum(p.stat().st_size for p in data.rglob("*.png"))


def test_without_aws_credentials_the_plan_still_gives_times_and_on_demand_prices(tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_EC2_METADATA_DISABLED": "true",  # never the metadata service: no address but 127.0.0.1
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
           "HOME": str(tmp_path)}
    result = plan_json("--on-demand", env=env)
    assert "no AWS credentials" in result["aws"]
    rows = {r["type"]: r for r in result["types"]}
    assert rows["g4dn.xlarge"]["usd_per_h"] == 0.526 and rows["g4dn.xlarge"]["quota"] == "unknown"
    assert all(r["cost_usd"] is not None and r["total_s"] > 0 for r in result["types"])
    spot = plan_json(env=env)                         # spot prices are AWS's: on-demand's stand in, and it says so
    assert spot["market"] == "on-demand" and all(r["cost_usd"] is not None for r in spot["types"])
    text = run_cli("cloud", "plan", env=env)
    assert text.returncode == 0 and "Not asked of AWS (no AWS credentials found" in text.stdout
    assert "on-demand (spot prices need AWS) prices" in text.stdout.splitlines()[0]


def test_a_bench_on_an_instance_makes_later_plans_say_measured(tmp_path, monkeypatch):
    from tenfold.cloud.measured import import_measurements, measured_path
    from tenfold.training.bench import record_measured
    rows = [{"device": "CPU, 4 threads", "images_per_s": 9_000.0},
            {"device": "NVIDIA T4 (cuda)", "images_per_s": 30_000.0}]
    path = record_measured(rows, "g4dn.xlarge", tmp_path / "runs" / "bench")  # what bench leaves on the instance
    assert path.read_text().splitlines()[1].startswith("g4dn.xlarge,lenet5,fp32,256,32,30000.0,20")
    assert record_measured(rows[:1], "g4dn.xlarge", tmp_path / "cpu-only") is None
    assert import_measurements(path.parent) == 1 and import_measurements(path.parent) == 0  # each line once
    with open(measured_path()) as f:
        (kept,) = list(csv.DictReader(f))
    assert (kept["type"], kept["model"], kept["train_images_per_s"]) == ("g4dn.xlarge", "lenet5", "30000.0")
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    rows = {r["type"]: r for r in plan_json("--on-demand", env=env)["types"]}
    assert rows["g4dn.xlarge"]["basis"].startswith("measured 20") and "tenfold bench" in rows["g4dn.xlarge"]["basis"]
    assert rows["g4dn.xlarge"]["epoch_s"] == pytest.approx(45_000 / 30_000 * (1 + 5_000 / 45_000 / 3))
    assert rows["g4dn.2xlarge"]["basis"].startswith("derived")  # measured on another type: not this one
    other = {r["type"]: r for r in plan_json("--preset", "fast", "--on-demand", env=env)["types"]}
    assert other["g4dn.xlarge"]["basis"].startswith("derived")  # nor another model
    for flags in (["--batch-size", "64"], ["--precision", "bf16"]):  # nor another batch, nor another arithmetic
        rows = {r["type"]: r for r in plan_json("--on-demand", *flags, env=env)["types"]}
        assert not rows["g4dn.xlarge"]["basis"].startswith("measured"), flags


def test_a_job_a_type_cannot_run_is_marked_so_not_priced(tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    bf16 = {r["type"]: r for r in plan_json("--preset", "fast", "--precision", "bf16", env=env)["types"]}
    assert bf16["g4dn.xlarge"]["basis"] == "cannot: the NVIDIA T4 has no bf16 units (--precision fp16 or auto)"
    assert bf16["g4dn.xlarge"]["cost_usd"] is None and bf16["g6.xlarge"]["basis"].endswith("TFLOPS bf16")
    assert list(bf16)[-1].startswith("g4dn")                 # what cannot run it comes last
    fp16 = {r["type"]: r for r in plan_json("--preset", "fast", "--precision", "fp16", env=env)["types"]}
    assert fp16["g6.xlarge"]["basis"].endswith("121 TFLOPS fp16")
    four = {r["type"]: r for r in plan_json("--devices", "4", env=env)["types"]}
    assert four["g4dn.xlarge"]["basis"] == "cannot: --devices 4: it has 1 GPU"
    assert four["g4dn.12xlarge"]["basis"].endswith("4 of its 4 GPUs") and four["g4dn.12xlarge"]["cost_usd"]
    three = {r["type"]: r for r in plan_json("--devices", "3", "--batch-size", "256", env=env)["types"]}
    assert three["g4dn.12xlarge"]["basis"] == "cannot: --batch-size 256 is not a multiple of its 3 workers"


def test_the_data_is_counted_as_training_will_take_it(tmp_path):
    env = {"AWS_ACCESS_KEY_ID": "", "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(tmp_path),
           "AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    few = make_tree(tmp_path / "few", classes=[f"c{i}" for i in range(10)], n=4)  # hold_out: 1 of each class
    job = plan_json("--data", few, env=env)["job"]
    assert (job["train_images"], job["val_images"]) == (30, 10)
    notes = make_tree(tmp_path / "notes", n=20)
    for d in (notes / "train").iterdir():                    # as many notes as images: skipped by training
        for i in range(20):
            (d / f"note{i}.txt").write_text("not an image")
    job = plan_json("--data", notes, env=env)["job"]
    assert (job["train_images"], job["val_images"]) == (54, 6)
    mixed = make_tree(tmp_path / "mixed", n=6, size=(48, 48))
    make_tree(mixed, n=3, size=(32, 32))                     # half of each class 32x32 now: decoded at 32x32
    assert plan_json("--data", mixed, env=env)["job"]["image_shape"] == [32, 32]  # mixed small sizes: 32x32


def test_bad_plan_flags_are_one_line_errors(tmp_path):
    assert_one_line_error(run_cli("cloud", "plan", "--data", tmp_path / "nowhere"), "no such file or folder")
    assert_one_line_error(run_cli("cloud", "plan", "--image-size", "64"), "CIFAR-10 images are 32x32")
    assert_one_line_error(run_cli("cloud", "plan", "--device", "cpu"), "prices GPU time")
    one = make_tree(tmp_path / "one", classes=("only",), n=5)
    assert_one_line_error(run_cli("cloud", "plan", "--data", one), "at least 2 classes")
    assert_one_line_error(run_cli("cloud", "plan", "--epochs", "0"), "--epochs must be at least 1")
    assert_one_line_error(run_cli("cloud", "plan", "--devices", "two"), "--devices")
    wrong = run_cli("cloud", "plan", "--spot", "--on-demand")
    assert wrong.returncode == 2 and "not allowed with argument" in wrong.stderr


# ---- --max-cost on a tenfold instance -------------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists(SSHD) or os.geteuid() != 0, reason="needs OpenSSH's sshd and root")
def test_a_run_with_max_cost_stops_at_the_cap_resumes_and_the_bill_agrees(cloud, tenfold_home, tmp_path,
                                                                            monkeypatch):
    cloud.spot_prices.append(("g4dn.xlarge", "us-east-1a", 5.984, ago(0.01)))  # $6/h in all: a cent each 6 s
    server = SshServer(tmp_path / "sshd")
    (cloud.home / ".ssh" / "config").write_text(server.user_config())
    stopped = tmp_path / "machine-stopped"
    monkeypatch.setenv("TENFOLD_AGENT_OVERRIDES", json.dumps({
        "stop": ["touch", str(stopped)], "boot_hook": False, "poll": 0.2, "imds": cloud.imds.url}))
    project, data, remote = tmp_path / "project", make_tree(tmp_path / "pets", n=20), tmp_path / "remote"
    project.mkdir()
    try:
        key = tenfold_home / "keys" / "tenfold-gpu.pem"
        launching = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "up", "gpu", "--cidr",
                                      "203.0.113.7/32", "--wait", "60", "--json"], cwd=REPO, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wait_for(lambda: key.exists() or launching.poll() is not None, "the key pair")
        server.authorize(key)
        out, err = launching.communicate(timeout=180)
        assert launching.returncode == 0, err
        iid = json.loads(out)["instance"]["id"]
        job = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "run", "gpu", "--max-cost", "0.06", "--",
                                "tenfold", "train", "--data", str(data), "--epochs", "100000", "--out", "runs/capped"],
                               cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(stopped.exists, "the max-cost stop", timeout=120)  # $0.06 at $6/h: 36 s after the cap is set
        power_off(remote)                                        # the shutdown the agent asked for ...
        ec2().stop_instances(InstanceIds=[iid])                  # ... as AWS sees it
        _, err = job.communicate(timeout=60)
        assert "stops itself at $" in err and "was interrupted" in err, err
        inst = ec2().describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        cap = float(next(t["Value"] for t in inst["Tags"] if t["Key"] == "tenfold:max-cost"))
        counted = json.loads((remote / "spent.json").read_text())  # the agent's count when it stopped the job
        assert counted["cap"] == pytest.approx(cap) and counted["usd_per_h"] == pytest.approx(5.984 + GP3_AND_IPV4)
        assert 0 <= counted["spent"] - counted["cap"] <= counted["usd_per_h"] * (0.2 + 0.5) / 3600  # one poll: 0.2 s + its looks
        assert f"--max-cost ${cap:.2f} reached" in (remote / "agent.log").read_text()
        status = run_cli("cloud", "status")
        assert f"of {cap:.2f}" in status.stdout and "--max-cost" in status.stdout, status.stdout
        (row,) = json.loads(run_cli("cloud", "cost", "--json").stdout)["instances"]
        assert abs(row["total_usd"] - cap) <= 0.01            # the bill, from the ledger, within a cent of the cap
        history = remote / jobs.remote_work(project) / "runs" / "capped" / "history.csv"
        done = len(history.read_text().splitlines()) - 1
        assert done >= 1 and (history.parent / "checkpoint.pt").exists()

        stopped.unlink()
        resumed = subprocess.Popen([sys.executable, "-m", "tenfold", "cloud", "run", "gpu", "--resume",
                                    "--max-cost", "5"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)       # a higher cap first: the restarted agent must not stop it again
        wait_for(lambda: len(history.read_text().splitlines()) - 1 >= done + 3, "epochs after the resume", 120)
        rows = list(csv.DictReader(history.open()))
        assert [int(r["epoch"]) for r in rows] == list(range(1, len(rows) + 1)) and not stopped.exists()
        resumed.terminate()                                      # detach; `down` ends the job with the instance
        resumed.wait(timeout=30)
        assert run_cli("cloud", "down", "gpu", "--force").returncode == 0
    finally:
        power_off(remote)
        server.close()
