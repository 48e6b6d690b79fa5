"""`tenfold cloud plan`: what a training job will take and cost on each GPU type, before anything is launched.

For each catalogue type: the job's epoch time, from a measurement of that type and model where one is recorded
(measured.csv, or `tenfold bench` on an instance of this account), else derived from the job's FLOPs and the GPU's
published peak (gpu_specs.csv) at a stated efficiency; then today's price (spot: the latest in each zone, the
cheapest zone's; on-demand: the catalogue's), the start-up (boot, install, data sync) and the quota. Without AWS
credentials it still gives the times and on-demand prices.

    epoch_s = steps * STEP_S + FLOPs per epoch / (peak * EFFICIENCY)          (derived)
    epoch_s = train_images / measured images/s * (1 + validation's share)    (measured)
    total_s = STARTUP + epochs * epoch_s + test-time views * validation_s
    cost    = total_s / 3600 * (compute + gp3 storage + public IPv4, $/h)
"""
from __future__ import annotations

import datetime
from dataclasses import dataclass

from tenfold.cloud import aws, cost
from tenfold.cloud.catalog import InstanceType, Measurement, catalog, catalog_date, gpu_specs, measurements
from tenfold.cloud.gpus import latest_per_zone, quota_table
from tenfold.cloud.measured import account_measurements
from tenfold.errors import TenfoldError
from tenfold.workload import Workload

# airbench94 (Jordan, 2024) trains its 10 epochs in 3.8 s on an A100: its FLOPs over that time are 30 % of the
# A100's 312 TFLOPS bf16 peak. A well-fed small CNN reaches about that; LeNet-size nets are bound by STEP_S.
EFFICIENCY = 0.30
# Depthwise convolutions (EfficientNet) do little arithmetic per byte moved: NVIDIA's EfficientNet-B0 reference
# (DeepLearningExamples) trains 2,489 images/s on an A100 with AMP, about 1 % of its peak.
EFFICIENCY_DEPTHWISE = 0.01
STEP_S = 0.002          # seconds per step at least, whatever its FLOPs: kernel launches and Python (eager PyTorch)
BOOT_S = 120            # launch until ssh answers (the Deep Learning AMI on a G instance)
INSTALL_S = 90          # tenfold and its extras installed beside the AMI's PyTorch
UPLOAD_BYTES_PER_S = 5e6   # the data sent from here: a 40 Mbit/s uplink
CIFAR10_S = 30          # `--data cifar10`: downloaded (163 MB) and unpacked on the instance
DISK_GB = 100           # `tenfold cloud up`'s default root volume, gp3


@dataclass(frozen=True)
class Startup:
    boot_s: float
    install_s: float
    data_s: float

    @property
    def seconds(self) -> float:
        return self.boot_s + self.install_s + self.data_s


def startup(work: Workload) -> Startup:
    data_s = CIFAR10_S if work.data_bytes == 0 else work.data_bytes / UPLOAD_BYTES_PER_S
    return Startup(BOOT_S, INSTALL_S, data_s)


def arithmetic(work: Workload, itype: InstanceType) -> tuple[str, float]:
    """(the arithmetic the job uses on this GPU, its peak TFLOPS); ValueError (why) where it cannot run."""
    spec = gpu_specs()[itype.gpu]
    if work.precision == "fp32":
        return "fp32", spec.fp32_tflops
    if work.precision == "bf16" and spec.tensor_16bit != "bf16":
        raise ValueError(f"the {itype.gpu} has no bf16 units (--precision fp16 or auto)")
    return (spec.tensor_16bit if work.precision == "auto" else work.precision), spec.tensor_16bit_tflops


def unfit(work: Workload, itype: InstanceType) -> str | None:
    """Why `work` cannot run on `itype` as asked (as `tenfold train` would refuse it there), else None."""
    used = work.gpus_used(itype.gpus)
    if used > itype.gpus:
        return f"--devices {work.devices}: it has {itype.gpus} GPU{'s' * (itype.gpus > 1)}"
    if work.batch_size % used:
        return f"--batch-size {work.batch_size} is not a multiple of its {used} workers"
    try:
        arithmetic(work, itype)
    except ValueError as e:
        return str(e)
    return None


def measured_for(work: Workload, itype: InstanceType, found: list[Measurement]) -> Measurement | None:
    """A measurement of this very job's kind on this type: model, arithmetic, batch size, image size, one GPU."""
    kind = arithmetic(work, itype)[0]
    return next((m for m in found if m.type == itype.type and m.model == work.model and m.precision == kind and
                 m.batch_size == work.batch_size and m.image_size == work.image_shape[0] and
                 work.gpus_used(itype.gpus) == 1), None)


def epoch_seconds(work: Workload, itype: InstanceType, found: list[Measurement]) -> tuple[float, float, float, str]:
    """(epoch seconds, seconds of one extra validation view, seconds of the once-only work, the basis in words)
    of `work` on `itype` (which can run it: see `unfit`)."""
    kind, tflops = arithmetic(work, itype)
    used = work.gpus_used(itype.gpus)
    rate = tflops * 1e12 * used * (EFFICIENCY_DEPTHWISE if work.depthwise else EFFICIENCY)  # FLOP/s, data parallel
    measured = measured_for(work, itype, found)
    if measured:
        train_s = work.train_images / measured.train_images_per_s
        val_s = train_s * work.val_images * work.eval_flops / max(1.0, work.train_images * work.train_flops)
        return train_s + val_s, val_s, work.once_flops / rate, f"measured {measured.measured} ({measured.source})"
    val_s = work.val_images * work.eval_flops / rate
    epoch = work.steps_per_epoch * STEP_S + work.train_images * work.train_flops / rate + val_s
    gpus = f", {used} of its {itype.gpus} GPUs" if itype.gpus > 1 else ""
    share = EFFICIENCY_DEPTHWISE if work.depthwise else EFFICIENCY
    return epoch, val_s, work.once_flops / rate, f"derived: {share:.0%} of {tflops:g} TFLOPS {kind}{gpus}"


def live_prices(region: str | None, profile: str | None, spot: bool) -> dict:
    """{'region', 'spot' {type: {zone: $/h}}, 'quotas', 'note'}; without AWS (no credentials, no network) the
    note says why and the rest is empty. A region or profile that does not exist is an error (CloudError)."""
    s = aws.session(region, profile)
    region = aws.region_of(s)
    try:
        prices = latest_per_zone(aws.spot_history(s, list(catalog()), region=region)) if spot else {}
        return {"region": region, "spot": prices, "quotas": quota_table(s, region), "note": None}
    except TenfoldError as e:
        return {"region": region, "spot": {}, "quotas": None, "note": str(e).splitlines()[0]}


def hourly(itype: InstanceType, live: dict, spot: bool) -> tuple[float | None, str | None]:
    """($/h of compute, the zone) in the market asked for; spot: the cheapest zone's latest price, if known."""
    if not spot:
        return itype.on_demand_usd_per_h, None
    zones = live["spot"].get(itype.type, {})
    if not zones:
        return None, None
    zone = min(zones, key=zones.get)
    return zones[zone], zone


def quota_now(itype: InstanceType, live: dict, spot: bool) -> str:
    if live["quotas"] is None:
        return "unknown"
    q = live["quotas"][(itype.family, spot)]
    if q["free"] is None:
        return "unknown"
    return "yes" if q["free"] >= itype.vcpus else f"no: {q['free']:g} of {itype.vcpus} vCPUs free"


def plan(work: Workload, region: str | None = None, profile: str | None = None, spot: bool = True) -> dict:
    """Every catalogue type's time, price and cost for `work`, cheapest first (types that cannot run it, or
    without a price, last). Spot prices need AWS: without it, the on-demand prices stand in, and the result says so."""
    live = live_prices(region, profile, spot)
    spot = spot and live["note"] is None
    found = measurements(account_measurements())
    start = startup(work)
    extras = DISK_GB * cost.GP3_USD_PER_GB_MONTH / cost.HOURS_PER_MONTH + cost.IPV4_USD_PER_H
    rows = [type_row(work, itype, live, spot, found, start, extras) for itype in catalog().values()]
    rows.sort(key=lambda r: (r["cost_usd"] is None, r["cost_usd"] or 0.0, r["total_s"] or 0.0))
    return {"job": work.__dict__ | {"flops": work.total_flops()}, "market": "spot" if spot else "on-demand",
            "region": live["region"], "aws": live["note"], "startup": start.__dict__,
            "catalog_date": catalog_date(), "efficiency": EFFICIENCY_DEPTHWISE if work.depthwise else EFFICIENCY,
            "step_s": STEP_S, "types": rows, "made": datetime.date.today().isoformat()}


def type_row(work: Workload, itype: InstanceType, live: dict, spot: bool, found: list[Measurement],
             start: Startup, extras: float) -> dict:
    row = {"type": itype.type, "gpu": itype.gpu, "gpus": itype.gpus, "quota": quota_now(itype, live, spot),
           "extras_usd_per_h": extras, "startup_s": start.seconds}
    why = unfit(work, itype)
    if why:
        return {**row, "epoch_s": None, "run_s": None, "total_s": None, "usd_per_h": None, "zone": None,
                "cost_usd": None, "startup_usd": None, "basis": f"cannot: {why}"}
    epoch_s, view_s, once_s, basis = epoch_seconds(work, itype, found)
    run_s = once_s + work.epochs * epoch_s + work.tta_views * view_s
    price, zone = hourly(itype, live, spot)
    total_s = start.seconds + run_s
    return {**row, "epoch_s": epoch_s, "run_s": run_s, "total_s": total_s, "usd_per_h": price, "zone": zone,
            "cost_usd": None if price is None else total_s / 3600 * (price + extras),
            "startup_usd": None if price is None else start.seconds / 3600 * (price + extras), "basis": basis}
