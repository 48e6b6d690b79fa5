"""tenfold's instances for people: one-line summaries and the tables of `up`, `status` and `down`."""
from __future__ import annotations

from tenfold.cloud import aws
from tenfold.cloud.guardrails import Guardrails
from tenfold.cloud.provision import resource_name
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
        cells.append([r["name"] or "?", r["type"], r["market"], r["state"], r["zone"], r["ip"] or "-",
                      f"{r['uptime_h']:.2f}", f"{rate:.4f}", f"{rate * r['uptime_h']:.2f}", g.describe()])
    return table(cells, ["name", "type", "market", "state", "zone", "address", "up (h)", "$/h", "so far $",
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
