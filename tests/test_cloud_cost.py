"""`tenfold cloud cost`: hours x price from the ledger tenfold keeps, checked against hand arithmetic."""
import datetime
import json

import pytest

from helpers import run_cli

T0 = datetime.datetime(2026, 11, 20, tzinfo=datetime.timezone.utc)


def hours(h: float) -> datetime.datetime:
    return T0 + datetime.timedelta(hours=h)


@pytest.fixture
def ledger(testbed, tmp_path, monkeypatch, tenfold_home):
    testbed.reset()
    for k, v in testbed.env(tmp_path).items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("TENFOLD_NOW", hours(30).isoformat())

    def write(*events):
        path = tenfold_home / "cloud" / "ledger.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            for when, event, iid, market, disk in events:
                f.write(json.dumps({"time": when.isoformat(), "event": event, "name": "gpu", "id": iid,
                                    "type": "g4dn.xlarge", "zone": "us-east-1a", "region": "us-east-1",
                                    "market": market, "disk_gb": disk}) + "\n")
    return write


def report():
    result = run_cli("cloud", "cost", "--json")
    assert result.returncode == 0, result.stderr
    return {r["id"]: r for r in json.loads(result.stdout)["instances"]}, json.loads(result.stdout)


def test_on_demand_hours_storage_and_ipv4(ledger):
    ledger((hours(0), "launch", "i-od", "on-demand", 100), (hours(2), "stop", "i-od", "on-demand", 0),
           (hours(3), "start", "i-od", "on-demand", 0), (hours(4), "terminate", "i-od", "on-demand", 0))
    rows, _ = report()
    r = rows["i-od"]
    assert r["running_hours"] == pytest.approx(3.0)                     # 0-2 h and 3-4 h
    assert r["compute_usd"] == pytest.approx(3 * 0.526)
    assert r["storage_usd"] == pytest.approx(100 * 0.08 * 4 / 730)      # the disk bills while stopped too
    assert r["ipv4_usd"] == pytest.approx(3 * 0.005) and r["terminated"]


def test_spot_follows_the_price_history_interval_by_interval(ledger, testbed):
    testbed.spot_prices += [("g4dn.xlarge", "us-east-1a", 0.20, hours(-12)), ("g4dn.xlarge", "us-east-1a", 0.30, hours(1)),
                            ("g4dn.xlarge", "us-east-1b", 9.99, hours(0))]  # another zone: not this instance's
    ledger((hours(0), "launch", "i-spot", "spot", 50), (hours(2.5), "terminate", "i-spot", "spot", 0))
    rows, whole = report()
    r = rows["i-spot"]
    assert r["compute_usd"] == pytest.approx(0.20 * 1 + 0.30 * 1.5)
    assert whole["total_usd"] == pytest.approx(0.20 + 0.45 + 50 * 0.08 * 2.5 / 730 + 2.5 * 0.005)


def test_a_running_instance_is_costed_up_to_now(ledger):
    ledger((hours(10), "launch", "i-live", "on-demand", 100))
    rows, _ = report()
    assert rows["i-live"]["running_hours"] == pytest.approx(20.0) and not rows["i-live"]["terminated"]
    table = run_cli("cloud", "cost")
    assert "(still exists)" in table.stdout and "total $" in table.stdout


def test_nothing_launched_yet(ledger):
    result = run_cli("cloud", "cost")
    assert result.returncode == 0 and "no tenfold instances" in result.stdout
