"""The instance catalogue (a dated data file) and the EC2 vCPU quotas that govern each family."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from importlib import resources

# EC2 limits GPU instances by running vCPUs per family and market: (family, spot) -> quota code
QUOTA_CODES = {
    ("g", False): "L-DB2E81BA",  # Running On-Demand G and VT instances
    ("g", True): "L-3819A6DF",   # All G and VT Spot Instance Requests
    ("p", False): "L-417A185B",  # Running On-Demand P instances
    ("p", True): "L-7212CCBC",   # All P Spot Instance Requests
}


@dataclass(frozen=True)
class InstanceType:
    type: str
    gpu: str
    gpus: int
    gpu_memory_gib: int
    vcpus: int
    memory_gib: int
    family: str
    on_demand_usd_per_h: float


def load_catalog() -> list[InstanceType]:
    text = resources.files("tenfold.cloud").joinpath("catalog.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    return [InstanceType(r["type"], r["gpu"], int(r["gpus"]), int(r["gpu_memory_gib"]), int(r["vcpus"]),
                         int(r["memory_gib"]), r["family"], float(r["on_demand_usd_per_h"])) for r in rows]


def catalog_date() -> str:
    text = resources.files("tenfold.cloud").joinpath("catalog.csv").read_text()
    return next((w.rstrip(";.") for w in text.split() if w[:4].isdigit() and w.count("-") == 2), "unknown")
