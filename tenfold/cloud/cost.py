"""`tenfold cloud cost`: what tenfold's instances cost, from a ledger of what tenfold did to them.

Every launch, start, stop and termination tenfold makes is appended to $TENFOLD_HOME/cloud/ledger.jsonl. The
report turns the running intervals into compute hours x price (spot: the zone's price history, interval by
interval), adds gp3 storage (GB-months from launch to termination) and the public IPv4 address (hours running).
"""
from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path

from tenfold import envvars
from tenfold.cloud import aws
from tenfold.cloud.catalog import catalog
from tenfold.cloud.guardrails import launch_time
from tenfold.fileio import tenfold_home
from tenfold.log import warn
from tenfold.tables import table

GP3_USD_PER_GB_MONTH = 0.08
IPV4_USD_PER_H = 0.005
HOURS_PER_MONTH = 730
# How far before a launch to look for the spot price then in effect: a price can stay unchanged for days, and
# AWS keeps 90 days of history.
PRICE_LOOKBACK = datetime.timedelta(days=90)


def ledger_path() -> Path:
    return tenfold_home() / "cloud" / "ledger.jsonl"


def now() -> datetime.datetime:
    """The report's clock: $TENFOLD_NOW (ISO 8601) when set, which is how the tests fix it."""
    text = os.environ.get(envvars.NOW)
    return datetime.datetime.fromisoformat(text) if text else datetime.datetime.now(datetime.timezone.utc)


def record(event: str, instance: dict, name: str, region: str, disk_gb: int = 0,
           when: datetime.datetime | None = None) -> None:
    """Append one event; one short line written at once, so a crash cannot tear an earlier one."""
    entry = {"time": (when or now()).isoformat(), "event": event, "name": name, "id": instance["InstanceId"],
             "type": instance["InstanceType"], "zone": instance["Placement"]["AvailabilityZone"], "region": region,
             "market": "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand", "disk_gb": disk_gb}
    path = ledger_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_ledger() -> dict[str, list[dict]]:
    """instance id -> its events in order; a damaged line is skipped, never fatal."""
    events: dict[str, list[dict]] = {}
    if ledger_path().exists():
        for line in ledger_path().read_text().splitlines():
            try:
                e = json.loads(line)
                e["time"] = datetime.datetime.fromisoformat(e["time"])
            except (ValueError, KeyError, TypeError):
                continue
            events.setdefault(e["id"], []).append(e)
    return events


def intervals(events: list[dict], end: datetime.datetime) -> tuple[list[tuple], datetime.datetime, datetime.datetime]:
    """(running intervals, launch time, end of storage) from one instance's events."""
    running, since = [], None
    launched = events[0]["time"]
    stored_until = end
    for e in events:
        if e["event"] in ("launch", "start") and since is None:
            since = e["time"]
        elif e["event"] in ("stop", "terminate") and since is not None:
            running.append((since, e["time"]))
            since = None
        if e["event"] == "terminate":
            stored_until = e["time"]
    if since is not None:
        running.append((since, end))
    return running, launched, stored_until


def spot_cost(prices: list[tuple[datetime.datetime, float]], start: datetime.datetime,
              end: datetime.datetime) -> float:
    """The integral of a piecewise-constant price over [start, end], in $ (prices sorted by time)."""
    total, current = 0.0, None
    for t, p in prices:
        if t <= start:
            current = p
    points = [(start, current)] + [(t, p) for t, p in prices if start < t < end] + [(end, None)]
    for (t0, p0), (t1, _) in zip(points, points[1:]):
        if p0 is None:
            raise aws.CloudError(f"no spot price known for {start:%Y-%m-%d %H:%M}: cannot cost that interval")
        total += p0 * (t1 - t0).total_seconds() / 3600
    return total


def state_change_time(inst: dict) -> datetime.datetime | None:
    """When AWS says the instance last stopped or terminated (in StateTransitionReason), if it says."""
    match = re.search(r"\((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (GMT|UTC)\)", inst.get("StateTransitionReason", ""))
    return datetime.datetime.fromisoformat(match[1]).replace(tzinfo=datetime.timezone.utc) if match else None


def missed(events: list[dict], inst: dict) -> list[tuple[str, datetime.datetime]]:
    """What happened to an instance without tenfold, as (event, time): a stop or termination (a spot
    interruption, --max-hours, the console) at the time AWS gives in StateTransitionReason, and a start by AWS
    itself (a persistent spot request restarting it) at its LaunchTime, which AWS resets at every start."""
    last, state = events[-1], inst["State"]["Name"]
    if last["event"] in ("launch", "start") and state in ("stopped", "terminated"):
        when = state_change_time(inst)
        if when:  # none given: the interval runs on to now, which overstates rather than hides a cost
            return [("stop" if state == "stopped" else "terminate", when)]
    if last["event"] == "stop" and state in ("pending", "running"):
        launched = launch_time(inst)
        if launched > last["time"]:
            return [("start", launched)]
    return []


def catch_up(inst: dict, name: str, region: str, events: list[dict] | None = None) -> None:
    """Write into the ledger what happened to `inst` without tenfold (see `missed`); `events`: the instance's
    ledger entries when the caller has read them already."""
    events = events if events is not None else read_ledger().get(inst["InstanceId"])
    for event, when in missed(events, inst) if events else []:
        record(event, inst, name, region, when=when)


def note_launch(s, inst: dict, region: str) -> bool:
    """Put an instance the ledger does not know (launched while tenfold was interrupted, or from another
    machine) into it: launched when its root volume was created, which a restart does not reset. True if added."""
    if inst["InstanceId"] in read_ledger():
        return False
    ids = [m["Ebs"]["VolumeId"] for m in inst.get("BlockDeviceMappings", []) if "Ebs" in m]
    with aws.aws_errors(region):
        vols = aws.client(s, "ec2", region).describe_volumes(VolumeIds=ids)["Volumes"] if ids else []
    created = [v["CreateTime"] for v in vols if v.get("CreateTime")]
    when = min(created) if created else inst["LaunchTime"]
    name = next((t["Value"] for t in inst.get("Tags", []) if t["Key"] == aws.NAME_TAG), "?")
    record("launch", inst, name, region, sum(v.get("Size", 0) for v in vols), when=when)
    return True


def untracked(s, region: str) -> list[str]:
    """Note in the ledger every tenfold instance in `region` it lacks; their IDs."""
    return [i["InstanceId"] for i in aws.find_instances(s, None, region) if note_launch(s, i, region)]


def reconcile(s, ledger: dict[str, list[dict]]) -> None:
    """Bring the ledger up to date with AWS for every instance that may have changed state without tenfold."""
    for iid, events in ledger.items():
        if events[-1]["event"] == "terminate":
            continue
        try:
            with aws.aws_errors(events[-1]["region"]):
                found = aws.client(s, "ec2", events[-1]["region"]).describe_instances(InstanceIds=[iid])
        except aws.CloudError:
            continue  # gone from AWS's view or no access: keep what the ledger knows
        if found["Reservations"]:
            catch_up(found["Reservations"][0]["Instances"][0], events[-1]["name"], events[-1]["region"], events)


def report(region: str | None = None, profile: str | None = None) -> dict:
    end = now()
    s = aws.session(region, profile)
    try:  # every instance that exists is costed, whether or not tenfold saw its launch
        untracked(s, aws.region_of(s))
    except aws.CloudError as e:
        warn(f"the ledger alone (AWS not asked for instances missing from it: {e})")
    ledger = read_ledger()
    if ledger:
        reconcile(s, ledger)
        ledger = read_ledger()
    if region:  # --region: that region's instances only
        ledger = {iid: events for iid, events in ledger.items() if events[0]["region"] == region}
    rows = []
    for iid, events in ledger.items():
        first = events[0]
        running, launched, stored_until = intervals(events, end)
        hours = sum((b - a).total_seconds() for a, b in running) / 3600
        if first["market"] == "spot":
            history = aws.spot_history(s, [first["type"]], since=launched - PRICE_LOOKBACK,
                                       region=first["region"])
            prices = sorted((r["Timestamp"], float(r["SpotPrice"])) for r in history
                            if r["AvailabilityZone"] == first["zone"])
            compute = sum(spot_cost(prices, a, b) for a, b in running)
        else:
            compute = hours * catalog()[first["type"]].on_demand_usd_per_h
        storage_h = (stored_until - launched).total_seconds() / 3600
        rows.append({"name": first["name"], "id": iid, "type": first["type"], "market": first["market"],
                     "running_hours": hours, "compute_usd": compute,
                     "storage_usd": first["disk_gb"] * GP3_USD_PER_GB_MONTH * storage_h / HOURS_PER_MONTH,
                     "ipv4_usd": hours * IPV4_USD_PER_H,
                     "terminated": any(e["event"] == "terminate" for e in events)})
    for r in rows:
        r["total_usd"] = r["compute_usd"] + r["storage_usd"] + r["ipv4_usd"]
    return {"as_of": end.isoformat(), "instances": rows, "total_usd": sum(r["total_usd"] for r in rows)}


def format_report(result: dict) -> str:
    if not result["instances"]:
        return "no tenfold instances launched from this machine yet"
    cells = [[r["name"], r["id"], r["type"], r["market"], f"{r['running_hours']:.2f}", f"{r['compute_usd']:.4f}",
              f"{r['storage_usd']:.4f}", f"{r['ipv4_usd']:.4f}", f"{r['total_usd']:.4f}",
              "" if r["terminated"] else "(still exists)"] for r in result["instances"]]
    lines = [table(cells, ["name", "instance", "type", "market", "hours", "compute $", "storage $", "IPv4 $", "total $",
                           ""], "llllrrrrr")]
    lines.append(f"total ${result['total_usd']:.4f} as of {result['as_of']} "
                 "(list prices; tax and data transfer not included)")
    return "\n".join(lines)
