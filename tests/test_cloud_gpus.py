"""`tenfold cloud gpus` and `tenfold cloud quota` against the AWS test bed (moto on 127.0.0.1, real boto3)."""
import json
import socket

import boto3
import pytest

from aws_testbed import ago
from helpers import assert_one_line_error, run_cli


@pytest.fixture
def aws(testbed, tmp_path, monkeypatch):
    testbed.reset()
    env = testbed.env(tmp_path)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    testbed.quotas.update({"L-DB2E81BA": 4.0, "L-3819A6DF": 8.0, "L-417A185B": 0.0, "L-7212CCBC": 0.0})
    testbed.spot_prices += [("g4dn.xlarge", "us-east-1a", 0.2104, ago(1)), ("g4dn.xlarge", "us-east-1b", 0.1958, ago(2)),
                            ("g5.xlarge", "us-east-1a", 0.4520, ago(1))]
    return testbed


def cli_json(*args):
    result = run_cli("cloud", *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_gpus_joins_catalogue_live_spot_prices_and_quotas(aws):
    out = cli_json("gpus")
    rows = {r["type"]: r for r in out["types"]}
    assert out["region"] == "us-east-1" and out["catalog_date"] == "2026-11-01"
    t4 = rows["g4dn.xlarge"]
    assert (t4["gpu"], t4["gpus"], t4["vcpus"], t4["on_demand_usd_per_h"]) == ("NVIDIA T4", 1, 4, 0.526)
    assert t4["spot_usd_per_h"] == pytest.approx(0.1958) and t4["spot_zone"] == "us-east-1b"
    assert t4["launchable"] == ["on-demand", "spot"]      # 4 vCPUs on-demand, 8 spot
    assert rows["g4dn.2xlarge"]["launchable"] == ["spot"]  # 8 vCPUs: more than the on-demand quota
    assert rows["g4dn.12xlarge"]["launchable"] == []
    assert rows["g6.xlarge"]["spot_usd_per_h"] is None     # no spot price seen: not invented


def test_running_instances_use_up_the_quota(aws):
    ec2 = boto3.client("ec2", region_name="us-east-1")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ec2.run_instances(ImageId=image, InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1)
    rows = {r["type"]: r for r in cli_json("gpus")["types"]}
    assert rows["g4dn.xlarge"]["launchable"] == ["spot"]
    quota = cli_json("quota")["quotas"]["g-on-demand"]
    assert (quota["quota"], quota["used"], quota["free"]) == (4.0, 4, 0.0)


def test_history_gives_min_median_max_over_the_period(aws):
    aws.spot_prices += [("g5.xlarge", "us-east-1b", 0.30, ago(20)), ("g5.xlarge", "us-east-1c", 0.60, ago(10)),
                        ("g5.xlarge", "us-east-1a", 0.10, ago(45))]  # older than 30 days: left out
    rows = {r["type"]: r for r in cli_json("gpus", "--history", "30d")["types"]}
    assert rows["g5.xlarge"]["spot_history"] == {"days": 30, "min": 0.30, "median": 0.452, "max": 0.60}


def test_regions_lists_where_each_type_is_offered(aws):
    rows = {r["type"]: r for r in cli_json("gpus", "--regions")["types"]}
    assert "us-east-1" in rows["g4dn.xlarge"]["regions"]
    assert all(isinstance(r["regions"], list) for r in rows.values())


def test_table_for_people(aws):
    result = run_cli("cloud", "gpus")
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("g4dn.xlarge "))
    assert "NVIDIA T4" in line and "0.526" in line and "0.1958" in line and "us-east-1b" in line
    assert "list prices as of 2026-11-01" in result.stdout


def test_quota_table_and_increase_request(aws):
    table = run_cli("cloud", "quota")
    assert table.returncode == 0 and "L-DB2E81BA" in table.stdout and "G and VT, spot" in table.stdout
    request = run_cli("cloud", "quota", "--request", "16", "--spot")
    assert request.returncode == 0, request.stderr
    assert "L-3819A6DF" in request.stdout and "PENDING" in request.stdout
    assert [(r["QuotaCode"], r["DesiredValue"]) for r in aws.quota_requests] == [("L-3819A6DF", 16.0)]


def test_quotas_aws_does_not_report_show_as_unknown(aws):
    aws.quotas.clear()
    out = cli_json("quota")
    assert out["quotas"]["g-on-demand"]["quota"] is None
    assert {r["type"]: r for r in cli_json("gpus")["types"]}["g4dn.xlarge"]["launchable"] == []


def test_bad_input_and_aws_failures_are_one_line(aws, tmp_path):
    assert_one_line_error(run_cli("cloud", "gpus", "--history", "a month"), "--history")
    assert_one_line_error(run_cli("cloud", "gpus", "--history", "120d"), "90d")
    no_creds = {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}
    assert_one_line_error(run_cli("cloud", "gpus", env=no_creds), "no AWS credentials")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    assert_one_line_error(run_cli("cloud", "quota", env={"AWS_ENDPOINT_URL": f"http://127.0.0.1:{closed}"}),
                          "cannot reach AWS")
    assert_one_line_error(run_cli("cloud", "gpus", "--profile", "nosuch"), "nosuch")
