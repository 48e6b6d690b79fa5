"""`tenfold cloud gpus` and `tenfold cloud quota`: what each GPU type costs, and what this account may launch."""
from __future__ import annotations

import argparse
import datetime
import statistics

from tenfold.argtypes import duration
from tenfold.cloud import aws
from tenfold.cloud.catalog import QUOTA_CODES, catalog, catalog_date
from tenfold.errors import ConfigError
from tenfold.tables import table

PRICE_REGION = "us-east-1"  # the region whose on-demand prices the catalogue holds


def parse_days(text: str) -> int:
    """'30d', '30' (days) or '2w'... as argtypes.duration reads it -> whole days, 1 to 90 (AWS keeps 90)."""
    try:
        seconds = duration(text, bare="d") or 0.0
    except argparse.ArgumentTypeError:
        seconds = 0.0
    if not 86400 <= seconds <= 90 * 86400 or seconds % 86400:
        raise ConfigError(f"--history takes days, from 1d to 90d (AWS keeps 90 days), got '{text}'")
    return int(seconds // 86400)


def latest_per_zone(records: list[dict]) -> dict[str, dict[str, float]]:
    """type -> {zone: the most recent spot price}."""
    newest: dict[tuple[str, str], dict] = {}
    for r in records:
        key = (r["InstanceType"], r["AvailabilityZone"])
        if key not in newest or r["Timestamp"] > newest[key]["Timestamp"]:
            newest[key] = r
    out: dict[str, dict[str, float]] = {}
    for (t, zone), r in newest.items():
        out.setdefault(t, {})[zone] = float(r["SpotPrice"])
    return out


def quota_table(s, region: str) -> dict[tuple[str, bool], dict]:
    """(family, spot) -> {'code', 'quota' (vCPUs, None if unknown), 'used', 'free'}."""
    values = aws.quota_values(s, list(QUOTA_CODES.values()), region)
    used = aws.running_vcpus(s, {t: c.vcpus for t, c in catalog().items()}, region)
    table = {}
    for key, code in QUOTA_CODES.items():
        quota = values[code]
        table[key] = {"code": code, "quota": quota, "used": used.get(key, 0),
                      "free": None if quota is None else max(0.0, quota - used.get(key, 0))}
    return table


def by_name(table: dict[tuple[str, bool], dict]) -> dict[str, dict]:
    """{'g-on-demand': ..., 'g-spot': ..., 'p-on-demand': ..., 'p-spot': ...} for JSON and tables."""
    return {f"{family}-{'spot' if spot else 'on-demand'}": q for (family, spot), q in table.items()}


def gpus(region: str | None = None, profile: str | None = None, history: str | None = None,
         regions: bool = False) -> dict:
    """The catalogue joined with live spot prices, the account's quotas and, when asked, history and regions."""
    days = parse_days(history) if history else None
    s = aws.session(region, profile)
    region = aws.region_of(s)
    types = list(catalog())
    spot = latest_per_zone(aws.spot_history(s, types, region=region))
    quotas = quota_table(s, region)
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=days) if days else None
    past = aws.spot_history(s, types, since, region) if days else []
    offered = aws.regions_offering(s, types) if regions else {}
    rows = []
    for c in catalog().values():
        zones = spot.get(c.type, {})
        zone = min(zones, key=zones.get) if zones else None
        prices = sorted(float(r["SpotPrice"]) for r in past if r["InstanceType"] == c.type)
        can = {market: (q := quotas[(c.family, market == "spot")])["free"] is not None and q["free"] >= c.vcpus
               for market in ("on-demand", "spot")}
        rows.append({**c.__dict__, "spot_usd_per_h": zones.get(zone) if zone else None, "spot_zone": zone,
                     "spot_history": {"days": days, "min": prices[0], "median": statistics.median(prices),
                                      "max": prices[-1]} if prices else None,
                     "regions": offered.get(c.type), "launchable": [m for m, ok in can.items() if ok]})
    return {"region": region, "catalog_date": catalog_date(), "types": rows, "quotas": by_name(quotas)}


def money(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}".rstrip("0").rstrip(".") if v < 1 else f"{v:.3f}"


def format_gpus(result: dict) -> str:
    rows = result["types"]
    history = any(r["spot_history"] for r in rows)
    cells = []
    for r in rows:
        h = r["spot_history"]
        hist = ["/".join(money(h[k]) for k in ("min", "median", "max")) if h else "n/a"] if history else []
        launch = ", ".join(r["launchable"]) or "no: see tenfold cloud quota"
        if r["regions"] is not None:
            launch += f"\nregions: {', '.join(r['regions']) or 'none'}"
        cells.append([r["type"], r["gpu"], r["gpus"], f"{r['gpu_memory_gib']} GiB", r["vcpus"], f"{r['memory_gib']} GiB",
                      money(r["on_demand_usd_per_h"]), money(r["spot_usd_per_h"]), r["spot_zone"] or "-", *hist,
                      launch])
    headers = ["type", "GPU", "GPUs", "GPU mem", "vCPUs", "RAM", "on-demand $/h", "spot $/h", "zone",
               *(["spot min/median/max"] if history else []), "launch now"]
    lines = [table(cells, headers, "llrrrrrrl" + ("r" if history else ""))]
    days = next((r["spot_history"]["days"] for r in rows if r["spot_history"]), None)
    lines.append(f"Region {result['region']}; spot prices live (latest per zone"
                 + (f", history over {days} days" if days else "") + "); on-demand prices are "
                 f"{PRICE_REGION}'s list prices as of {result['catalog_date']}.")
    return "\n".join(lines)


def format_quota(result: dict) -> str:
    names = {"g-on-demand": "G and VT, on-demand", "g-spot": "G and VT, spot", "p-on-demand": "P, on-demand",
             "p-spot": "P, spot"}
    def fmt(v):
        return "n/a" if v is None else f"{v:g}"
    cells = [[names[key], q["code"], fmt(q["quota"]), q["used"], fmt(q["free"])] for key, q in result["quotas"].items()]
    lines = [table(cells, ["quota", "code", "vCPUs", "in use", "free"], "llrrr")]
    lines.append(f"Region {result['region']}. A g4dn.xlarge needs 4 vCPUs of free quota; "
                 "ask for more with: tenfold cloud quota --request 8 [--spot] [--family g|p]")
    return "\n".join(lines)


def quota(region: str | None = None, profile: str | None = None) -> dict:
    s = aws.session(region, profile)
    region = aws.region_of(s)
    return {"region": region, "quotas": by_name(quota_table(s, region))}


def request_increase(vcpus: int, family: str = "g", spot: bool = False, region: str | None = None,
                     profile: str | None = None) -> dict:
    """Ask AWS for a higher vCPU quota (the seed's support ticket); returns the request as AWS records it."""
    if vcpus < 1:
        raise ConfigError(f"--request takes a number of vCPUs of at least 1, got {vcpus}")
    if family not in ("g", "p"):
        raise ConfigError(f"--family must be g or p, got '{family}'")
    s = aws.session(region, profile)
    return aws.request_quota(s, QUOTA_CODES[(family, spot)], float(vcpus), aws.region_of(s))
