"""What an instance costs per hour now: compute (spot: the zone's latest price; on-demand: the catalogue's), gp3
storage and the public IPv4 address."""
from __future__ import annotations

from tenfold.cloud import aws, cost
from tenfold.cloud.catalog import catalog

def hourly_cost(s, instance: dict, region: str) -> dict:
    """$/h now: the compute price while it runs (spot: the zone's latest; on-demand: the catalogue's), gp3
    storage, the public IPv4 address."""
    itype, zone = instance["InstanceType"], instance["Placement"]["AvailabilityZone"]
    if instance.get("InstanceLifecycle") == "spot":
        zones = {r["AvailabilityZone"]: float(r["SpotPrice"]) for r in aws.spot_history(s, [itype], region=region)}
        compute = zones.get(zone)
    else:
        compute = catalog()[itype].on_demand_usd_per_h if itype in catalog() else None
    if instance["State"]["Name"] not in ("pending", "running"):
        compute = 0.0  # a stopped instance bills its disk only
    disk = sum(v.get("Size", 0) for v in volumes(s, instance, region))
    return {"compute": compute, "storage": disk * cost.GP3_USD_PER_GB_MONTH / cost.HOURS_PER_MONTH,
            "ipv4": cost.IPV4_USD_PER_H if instance.get("PublicIpAddress") else 0.0}


def volumes(s, instance: dict, region: str) -> list[dict]:
    ids = [m["Ebs"]["VolumeId"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m]
    if not ids:
        return []
    with aws.aws_errors(region):
        return aws.client(s, "ec2", region).describe_volumes(VolumeIds=ids)["Volumes"]


def running_price(s, instance: dict, region: str) -> float:
    """$/h while it runs: compute (spot: the zone's latest; unknown: on-demand's, above any spot price), gp3 and
    IPv4, the figure --max-cost counts with."""
    rates = hourly_cost(s, instance, region)
    compute = rates["compute"] if rates["compute"] is not None else catalog()[instance["InstanceType"]].on_demand_usd_per_h
    return compute + rates["storage"] + rates["ipv4"]
