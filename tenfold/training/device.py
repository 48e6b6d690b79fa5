"""Choosing the device and setting it up."""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from tenfold.errors import ConfigError


def pick_device(name: str = "auto") -> torch.device:
    """auto: the first CUDA GPU, else Apple's MPS, else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif torch.backends.mps.is_available():
            name = "mps"
        else:
            name = "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got '{name}'")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA GPU is available here (use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: this machine has {torch.cuda.device_count()} GPU(s)")
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick the fastest kernels
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: Apple's MPS is not available here (use --device cpu or auto)")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got '{name}'")
    return device


def cpu_has(kind: str, cpuinfo: str | None = None) -> bool:
    """Native `kind` (bf16 or fp16) dot products: x86's AVX512-BF16/-FP16 or AMX. Where a CPU has them, 16-bit
    autocast beats fp32 (bf16: about 2x for the fast presets' convs, BENCHMARKS.md); elsewhere it is emulated and
    slower than fp32."""
    if capped_below_avx512():  # PyTorch and oneDNN were told not to use them (e.g. emulating an AVX2 machine)
        return False
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:  # not Linux: no way to ask without a native call, so assume no
            return False
    return re.search(rf"\b(avx512_{kind}|amx_{kind})\b", cpuinfo) is not None


def capped_below_avx512(env: dict | None = None) -> bool:
    """Whether ATEN_CPU_CAPABILITY or ONEDNN_MAX_CPU_ISA keeps PyTorch off AVX-512 (and so off its bf16 units)."""
    env = os.environ if env is None else env
    aten = env.get("ATEN_CPU_CAPABILITY", "").lower()
    onednn = env.get("ONEDNN_MAX_CPU_ISA", "").upper()
    return aten in ("default", "avx2") or onednn.startswith(("SSE", "AVX2", "AVX_")) or onednn == "AVX"


def resolve_precision(precision: str, device: torch.device) -> str:
    """The arithmetic a run uses on `device`. auto: bf16 on GPUs with bf16 units (compute capability 8.0+: A100,
    L4, H100) and on CPUs with them; fp16 with loss scaling on older GPUs (T4, V100); fp32 elsewhere (MPS too)."""
    if device.type == "cuda" and precision in ("auto", "bf16"):
        major, minor = torch.cuda.get_device_capability(device)
        if major >= 8:
            return "bf16"
        if precision == "bf16":
            raise ConfigError(f"--precision bf16: {torch.cuda.get_device_name(device)} (compute capability "
                              f"{major}.{minor}) has no bf16 units; use --precision fp16 or auto")
        return "fp16"
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cpu" and cpu_has("bf16") else "fp32"


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"CPU, {n} thread{'s' if n > 1 else ''}"
    return device.type


def environment(device: torch.device) -> dict:
    """What a run was trained with, for its report: device, versions, platform."""
    import platform

    from tenfold.version import __version__
    return {"device": describe(device), "tenfold": __version__, "torch": str(torch.__version__),
            "python": platform.python_version(), "platform": platform.platform(terse=True),
            "processor": platform.processor() or platform.machine(), "cpu_threads": torch.get_num_threads(),
            "cuda": str(torch.version.cuda) if device.type == "cuda" else None}


def rng_state(device: torch.device, loader_gen: torch.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "loader": loader_gen.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device, loader_gen: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_gen.set_state(state["loader"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
