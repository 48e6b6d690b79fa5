"""The instance catalogue (a dated data file) and the EC2 vCPU quotas that govern each family."""
from __future__ import annotations

import csv
import functools
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


@functools.lru_cache(maxsize=1)
def catalog_text() -> str:
    return resources.files("tenfold.cloud").joinpath("catalog.csv").read_text()


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, InstanceType]:
    """The catalogue, read once: instance type -> its facts, in the file's order."""
    rows = csv.DictReader(line for line in catalog_text().splitlines() if line and not line.startswith("#"))
    return {r["type"]: InstanceType(r["type"], r["gpu"], int(r["gpus"]), int(r["gpu_memory_gib"]), int(r["vcpus"]),
                                    int(r["memory_gib"]), r["family"], float(r["on_demand_usd_per_h"])) for r in rows}


def catalog_date() -> str:
    return next((w.rstrip(";.") for w in catalog_text().split() if w[:4].isdigit() and w.count("-") == 2),
                "unknown")


@dataclass(frozen=True)
class GpuSpec:
    gpu: str
    fp32_tflops: float          # published peak, dense
    tensor_16bit_tflops: float  # published peak of its 16-bit tensor cores, dense
    tensor_16bit: str           # fp16 or bf16: what precision "auto" uses on it


@dataclass(frozen=True)
class Measurement:
    type: str
    model: str
    precision: str              # the arithmetic it ran in: fp32, bf16 or fp16
    batch_size: int
    image_size: int             # pixels, square
    train_images_per_s: float   # one GPU
    measured: str               # date, YYYY-MM-DD
    source: str                 # where: "tenfold bench on this account", a BENCHMARKS.md section


def data_rows(text: str) -> list[dict]:
    return list(csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")))


@functools.lru_cache(maxsize=1)
def gpu_specs() -> dict[str, GpuSpec]:
    """GPU name (as the catalogue's `gpu`) -> its published peak throughput (gpu_specs.csv)."""
    rows = data_rows(resources.files("tenfold.cloud").joinpath("gpu_specs.csv").read_text())
    return {r["gpu"]: GpuSpec(r["gpu"], float(r["fp32_tflops"]), float(r["tensor_16bit_tflops"]), r["tensor_16bit"])
            for r in rows}


def measurements(extra: str = "") -> list[Measurement]:
    """The throughputs measured on catalogue types: the package's (measured.csv), then `extra` (the same CSV
    format, this account's own), later rows first."""
    text = resources.files("tenfold.cloud").joinpath("measured.csv").read_text()
    rows = data_rows(text) + data_rows(extra)
    return [Measurement(r["type"], r["model"], r["precision"], int(r["batch_size"]), int(r["image_size"]),
                        float(r["train_images_per_s"]), r["measured"], r["source"]) for r in reversed(rows)]
