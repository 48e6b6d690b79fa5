"""Choosing the device and setting it up."""
from __future__ import annotations

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
        raise ConfigError(f"--device must be auto, cpu, cuda, cuda:N or mps, got '{name}'") from None
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


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (cuda)"
    if device.type == "cpu":
        return f"CPU, {torch.get_num_threads()} threads"
    return device.type


def environment(device: torch.device) -> dict:
    """What a run was trained with, for its report: device, versions, platform."""
    import platform

    from tenfold import __version__
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
