"""tenfold's instances for people: one-line summaries and the tables of `up`, `status` and `down`."""
from __future__ import annotations

from tenfold.cloud import aws
from tenfold.cloud.guardrails import Guardrails
from tenfold.cloud.provision import resource_name
from tenfold.cloud.gpus import PRICE_REGION
from tenfold.cloud.plan import DISK_GB
from tenfold.tables import table

def summary(instance: dict) -> dict:
    return {"id": instance["InstanceId"], "type": instance["InstanceType"], "state": instance["State"]["Name"],
            "market": "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand",
            "zone": instance["Placement"]["AvailabilityZone"], "ip": instance.get("PublicIpAddress"),
            "launched": instance["LaunchTime"].isoformat() if hasattr(instance["LaunchTime"], "isoformat")
            else str(instance["LaunchTime"]),
            "name": next((t["Value"] for t in instance.get("Tags", []) if t["Key"] == aws.NAME_TAG), None)}


def per_hour(rates: dict) -> str:
    total = (rates["compute"] or 0.0) + rates["storage"] + rates["ipv4"]
    compute = "unknown" if rates["compute"] is None else f"${rates['compute']:.4f}"
    return f"${total:.4f}/h (compute {compute}, gp3 storage ${rates['storage']:.4f}, IPv4 ${rates['ipv4']:.4f})"


def format_up(result: dict) -> str:
    i, host = result["instance"], resource_name(result["name"])
    return (f"{host}: {result['action']} {i['type']} ({i['market']}) in {i['zone']}, {i['state']}, {i['ip']}\n"
            f"cost: {per_hour(result['cost'])}\n"
            f"connect: ssh {host}        stop paying: tenfold cloud down {result['name']}")


def format_status(rows: list[dict]) -> str:
    if not rows:
        return "no tenfold instances"
    cells = []
    for r in rows:
        c, g = r["cost"], Guardrails(**r["guardrails"])
        rate = (c["compute"] or 0.0) + c["storage"] + c["ipv4"]
        spent = "n/a" if r.get("spent_usd") is None else f"{r['spent_usd']:.2f}"
        if g.max_cost is not None:
            spent += f" of {g.max_cost:.2f}"  # --max-cost: the agent stops the instance there
        cells.append([r["name"] or "?", r["type"], r["market"], r["state"], r["zone"], r["ip"] or "-",
                      f"{r['uptime_h']:.2f}", f"{rate:.4f}", spent, g.describe()])
    return table(cells, ["name", "type", "market", "state", "zone", "address", "up (h)", "$/h", "spent $",
                         "guardrails"], "llllllrrr")


def format_down(name: str, gone: dict) -> str:
    parts = [f"terminated {', '.join(gone['instances'])}" if gone["instances"] else "no instance to terminate"]
    if gone["spot_requests"]:
        parts.append(f"cancelled spot request {', '.join(gone['spot_requests'])}")
    if gone["security_group"]:
        parts.append(f"deleted security group {gone['security_group']}")
    if gone["key_pair"]:
        parts.append(f"deleted key pair {gone['key_pair']}")
    text = f"{resource_name(name)}: " + "; ".join(parts) + ". Nothing of it bills any more."
    if gone.get("security_group_left"):
        text += (f"\nnote: AWS still holds security group {gone['security_group_left']} for the terminated instance "
                 f"(it costs nothing); `tenfold cloud down {name}` again in a few minutes deletes it")
    return text


def span(seconds: float) -> str:
    """A planned duration as people say it: 45 s, 12 min, 2.5 h."""
    if seconds < 119.5:
        return f"{seconds:.0f} s" if seconds >= 9.5 else f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min" if seconds < 90 * 60 else f"{seconds / 3600:.1f} h"


def dollars(usd: float | None) -> str:
    return "n/a" if usd is None else f"${usd:.2f}" if usd >= 0.995 else f"${usd:.3f}"


def flops(n: float) -> str:
    for unit, size in (("PFLOPs", 1e15), ("TFLOPs", 1e12), ("GFLOPs", 1e9), ("MFLOPs", 1e6), ("kFLOPs", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} FLOPs"


def megabytes(n: int) -> str:
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def plan_heading(result: dict) -> str:
    job = result["job"]
    tta = (f" (+{job['tta_views']} test-time views of the {job['val_images']:,} on the last)"
           if job["tta_views"] and job["val_images"] else "")
    once = f", {flops(job['once_flops'])} once (the frozen features)" if job["once_flops"] else ""
    market = result["market"] if not result["aws"] else "on-demand (spot prices need AWS)"
    listed = "" if result["market"] == "spot" or result["region"] == PRICE_REGION else f", {PRICE_REGION}'s list"
    return (f"{job['model']}, {job['epochs']} epochs of {job['train_images']:,} images{tta}, "
            f"{flops(job['train_flops'])} per training image{once}: {flops(job['flops'])} in all; {market} prices "
            f"for {result['region']}{listed}")


def format_plan(result: dict) -> str:
    job, start = result["job"], result["startup"]
    lines = [plan_heading(result)]
    time = lambda s: "-" if s is None else span(s)  # noqa: E731  (a type that cannot run the job)
    cells = [[r["type"], f"{r['gpus']}x {r['gpu']}" if r["gpus"] > 1 else r["gpu"], time(r["epoch_s"]),
              time(r["run_s"]), time(r["total_s"]), "n/a" if r["usd_per_h"] is None else f"{r['usd_per_h']:.4f}",
              dollars(r["cost_usd"]), r["quota"], r["basis"]] for r in result["types"]]
    lines.append(table(cells, ["type", "GPU", "epoch", "training", "total", "$/h", "cost", "quota now", "basis"],
                       "llrrrrrll"))
    data = "CIFAR-10 downloaded there" if job["data_bytes"] == 0 else f"{megabytes(job['data_bytes'])} sent"
    lines.append(f"Start-up (assumed), in every total: boot {span(start['boot_s'])} + install "
                 f"{span(start['install_s'])} + data {span(start['data_s'])} ({data}) = {span(sum(start.values()))}.")
    lines.append(f"Derived: the job's FLOPs at {result['efficiency']:.0%} of the GPU's published peak, at least "
                 f"{result['step_s'] * 1000:g} ms a step (no catalogue GPU measured yet: see BENCHMARKS.md); "
                 "measured: `tenfold bench` on that type.")
    lines.append(f"Cost: compute + {DISK_GB} GB gp3 + public IPv4, until the job ends: run it with `tenfold cloud "
                 "run --down` (or --stop), else the idle stop bills up to an hour more.")
    if result["aws"]:
        lines.append(f"Not asked of AWS ({result['aws']}): no spot prices, no quotas; the times and on-demand "
                     "prices stand")
    return "\n".join(lines)
