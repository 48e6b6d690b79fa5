"""The CPU fast path, chosen by measurement rather than by assumption (as `torch.backends.cudnn.benchmark` chooses
GPU convolution algorithms).

CPUs differ more than GPUs do: tenfold's fused conv -> max-pool -> ReLU kernel beats PyTorch's ops by 2x on one
layer of one machine and loses on the next layer, or on a CPU with half the vector width; bf16 autocast is 2x fp32
where a CPU has bf16 units and may not pay for a small net. So at the start of a CPU run each candidate is timed on
the run's own shapes, interleaved round by round (a busy machine slows both alike), and the faster kept:

- each `conv2d_maxpool` block the fused kernel can compute: fused kernel against PyTorch's ops, forward + backward;
- with `--precision auto` on a CPU with bf16 units: a training step in fp32 against one in bf16 autocast.

Choices are cached per CPU, kernel build, PyTorch version, thread count and shape in `$TENFOLD_HOME/fastpath.json`,
so a machine measures once. Measuring runs on copies, with the random number generators restored afterwards: a run
trains the same whether its choice was measured or cached. `TENFOLD_KERNELS=1` forces the fused kernel wherever it
applies and `TENFOLD_KERNELS=0` forbids it (nothing is measured then).
"""
from __future__ import annotations

import copy
import datetime
import json
import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from tenfold import envvars
from tenfold.fileio import atomic_write_text, tenfold_home
from tenfold.log import warn

CACHE = "fastpath.json"
ROUNDS = 5             # timed rounds per candidate, interleaved; the median counts
PRECISION_ROUNDS = 3   # fewer for whole training steps, which take 0.1-1 s each on a CPU
PRECISION_BATCH = 256  # images per timed step at most: bf16's gain per image is the same at 256 as at 1,024
HOPELESS = 4.0         # a candidate this many times slower than the best on its first call is not timed further
RETRY_S = 1.0          # seconds: a hopeless-looking first call shorter than this is tried once more (a cold start)
METHOD = 2             # how measure() judges (2: cold starts retried); cached choices say which made them


@dataclass
class Choice:
    what: str                  # "block 1" or "precision"
    chosen: str                # "fused" | "pytorch", or "fp32" | "bf16"
    seconds: dict[str, float]  # median seconds per candidate ({} when forced)
    how: str = "measured"      # measured | cached | forced

    def speedup(self) -> float | None:
        """How much faster the choice is than the other candidate (None when forced)."""
        others = [v for k, v in self.seconds.items() if k != self.chosen]
        return others[0] / self.seconds[self.chosen] if others and self.seconds.get(self.chosen) else None


@dataclass
class FastPath:
    choices: list[Choice] = field(default_factory=list)
    precision: str | None = None  # the measured precision, where --precision auto asked for a measurement

    def summary(self, how: bool = True) -> str:
        """For the start line, e.g. 'block 1 fused 2.03x, block 2 pytorch 1.08x (measured)'."""
        parts = []
        for c in self.choices:
            s = c.speedup()
            parts.append(f"{c.what} {c.chosen}" + (f" {s:.2f}x" if s else ""))
        hows = sorted({c.how for c in self.choices})
        return ", ".join(parts) + (f" ({'/'.join(hows)})" if hows and how else "")

    def record(self) -> dict:
        """For the checkpoint's environment: each choice, and the machine it holds for (a resume there keeps it)."""
        return {"machine": machine_key(), **{c.what: {"chosen": c.chosen, "how": c.how, "seconds": c.seconds}
                                             for c in self.choices}}

    @classmethod
    def from_record(cls, record: dict) -> "FastPath":
        choices = [Choice(what, v["chosen"], v.get("seconds", {}), "recorded")
                   for what, v in record.items() if isinstance(v, dict) and valid(v.get("chosen"))]
        precision = next((c.chosen for c in choices if c.what == "precision"), None)
        return cls(choices, precision)


CANDIDATES = {"fused", "pytorch", "fp32", "bf16"}


def valid(chosen) -> bool:
    return chosen in CANDIDATES


def measure(candidates: dict[str, Callable[[], object]], rounds: int = ROUNDS, warmup: int = 1,
            timer: Callable[[], float] = time.perf_counter) -> dict[str, float]:
    """Median seconds per call of each candidate: `warmup` calls each, then `rounds` rounds in which every
    candidate runs once in turn, so that a change in the machine's load falls on all of them alike. A candidate
    whose warm-up took over HOPELESS times the fastest one's is not run again (an emulated bf16 step can take a
    minute): its warm-up time stands for it. One under RETRY_S is first called once more, and judged on the
    quicker call: the first candidate's first call pays the process's cold start (the fused kernel's first call
    took 336 ms here, then 3 ms, against PyTorch's 5 ms)."""
    first = {name: timed(fn, warmup, timer) for name, fn in candidates.items()}
    for name, t in first.items():
        if HOPELESS * min(first.values()) < t < RETRY_S:
            first[name] = min(t, timed(candidates[name], 1, timer))
    best = min(first.values())
    hopeless = {name: t for name, t in first.items() if t > HOPELESS * best}
    samples: dict[str, list[float]] = {name: [] for name in candidates if name not in hopeless}
    for _ in range(rounds):
        for name in samples:
            fn = candidates[name]
            t0 = timer()
            fn()
            samples[name].append(timer() - t0)
    return {**hopeless, **{name: statistics.median(s) for name, s in samples.items()}}


def cold_start_artefact(hit: dict) -> bool:
    """A choice cached before METHOD 2 that may rest on one cold call (see measure): measured again, once."""
    seconds = [t for t in hit["seconds"].values() if isinstance(t, (int, float))]
    return hit.get("method") != METHOD and any(HOPELESS * min(seconds) < t < RETRY_S for t in seconds)


def timed(fn: Callable[[], object], calls: int, timer: Callable[[], float]) -> float:
    """Seconds per call of `calls` calls of `fn` (at least one)."""
    t0 = timer()
    for _ in range(max(1, calls)):
        fn()
    return (timer() - t0) / max(1, calls)


def fastest(seconds: dict[str, float]) -> str:
    return min(seconds, key=seconds.get)


def machine_key(threads: int | None = None) -> str:
    """What a measured choice depends on besides the shape: CPU, kernel build, PyTorch, threads, ISA caps."""
    from tenfold.kernels.build import library_path  # its name hashes the CPU's flags, the source and the build
    caps = ",".join(f"{v}={os.environ[v]}" for v in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA",
                                                    "MKL_ENABLE_INSTRUCTIONS") if v in os.environ)
    threads = threads or torch.get_num_threads()
    return f"{cpu_model()}|{library_path().name}|torch {torch.__version__}|{threads} threads|{caps}"


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                        platform.processor())
    except OSError:
        return platform.processor() or platform.machine()


def load_cache(name: str = CACHE) -> dict:
    try:
        cache = json.loads((tenfold_home() / name).read_text())
    except (OSError, ValueError):
        return {}  # missing or damaged: measure again, and write it anew
    return cache if isinstance(cache, dict) else {}


def save_cache(new: dict, name: str = CACHE) -> None:
    """Add `new` entries to the cache file, re-read just before the write: another process's entries stay."""
    try:
        atomic_write_text(tenfold_home() / name, json.dumps({**load_cache(name), **new}, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home only costs a measurement next time


def cached_choice(cache: dict, key: str, what: str, measure_it: Callable[[], dict[str, float]]) -> Choice:
    """The cached choice for `key`, else a measured one (added to `cache`)."""
    hit = cache.get(key)
    if (isinstance(hit, dict) and valid(hit.get("chosen")) and isinstance(hit.get("seconds"), dict)
            and hit["chosen"] in hit["seconds"] and not cold_start_artefact(hit)):
        return Choice(what, hit["chosen"], hit["seconds"], "cached")
    seconds = measure_it()
    cache[key] = {"chosen": fastest(seconds), "seconds": seconds, "date": datetime.date.today().isoformat(),
                  "method": METHOD}
    return Choice(what, fastest(seconds), seconds, "measured")


# ---- the candidates -------------------------------------------------------------------------------------------

def conv_block_inputs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """(name, block, its input) for every conv2d_maxpool block, from one training-mode forward pass of `x`
    through a copy of `model` (so that no state of the model, BatchNorm's running statistics say, changes)."""
    from tenfold.models.blocks import ConvMaxPool
    probe, found = copy.deepcopy(model), []
    names = {m: n for n, m in probe.named_modules()}
    hooks = [m.register_forward_pre_hook(lambda m, inp: found.append((names[m], m, inp[0].detach(),
                                                                       inp[0].requires_grad)))
             for m in probe.modules() if isinstance(m, ConvMaxPool)]
    try:
        probe(x)
    finally:
        for h in hooks:
            h.remove()
    return [(name, m, xi.requires_grad_(grad)) for name, m, xi, grad in found]


def block_step(block: nn.Module, x: torch.Tensor, path: str) -> Callable[[], None]:
    """One forward and backward pass of `block` on `x` by `path` (fused | pytorch)."""
    def step():
        block.fast_path = path
        out = block(x)
        out.backward(torch.ones_like(out))
    return step


def choose_blocks(model: nn.Module, x: torch.Tensor, cache: dict, forced: str | None) -> list[Choice]:
    """Set `fast_path` on each conv2d_maxpool block of `model` that the fused kernel can compute; the choices."""
    from tenfold.kernels.fused import applies
    blocks = dict(model.named_modules())
    choices, key = [], machine_key()
    for i, (name, probe, xi) in enumerate(conv_block_inputs(model, x), start=1):
        conv, pool = probe[0], probe[1][-1]
        if not isinstance(conv, nn.Conv2d) or not applies(xi, conv, pool):
            continue
        what = f"block {i}"
        if forced:
            choice = Choice(what, forced, {}, "forced")
        else:
            shape = f"conv {tuple(xi.shape)} -> {conv.out_channels} k{conv.kernel_size[0]} grad_in={xi.requires_grad}"
            choice = cached_choice(cache, f"{key}|{shape}", what, lambda: measure(
                {p: block_step(probe, xi, p) for p in ("fused", "pytorch")}))
        blocks[name].fast_path = choice.chosen
        choices.append(choice)
    return choices


def choose_precision(model: nn.Module, x: torch.Tensor, y: torch.Tensor, cache: dict) -> Choice:
    """fp32 or bf16 autocast, whichever trains `model` faster on batch (x, y) here (forward + backward)."""
    from tenfold.training.fit import autocast
    probe = copy.deepcopy(model).train()

    def step(precision: str) -> Callable[[], None]:
        def run():
            with autocast(x.device, precision):
                logits = probe(x)
            F.cross_entropy(logits.float(), y).backward()
        return run
    shape = f"step {type(model).__name__} {sum(p.numel() for p in model.parameters())} params {tuple(x.shape)}"
    return cached_choice(cache, f"{machine_key()}|{shape}", "precision", lambda: measure(
        {p: step(p) for p in ("fp32", "bf16")}, rounds=PRECISION_ROUNDS))


def choose(model: nn.Module, batch_size: int, image_shape: tuple, classes: int, precision: str,
           tune_precision: bool, recorded: dict | None = None) -> FastPath:
    """Measure (or recall) the CPU fast path for training `model` at `batch_size` in `precision` (resolved), and
    with `tune_precision`, whether bf16 autocast beats fp32; sets each block's `fast_path`. `recorded`: a resumed
    run's choices (FastPath.record), kept as they were when it resumes on the machine that made them. The random
    number generators are restored afterwards, so training is the same either way. A failure to measure (a user's
    model that cannot be copied, say) warns and keeps the defaults."""
    from tenfold.kernels import load_library
    forced = {"0": "pytorch", "1": "fused"}.get(os.environ.get(envvars.KERNELS, ""))
    if recorded and not forced and recorded.get("machine") == machine_key():
        fast = FastPath.from_record(recorded)
        if not tune_precision:  # the resume asked for an arithmetic of its own
            fast = FastPath([c for c in fast.choices if c.what != "precision"])
        return apply(model, fast)
    kernels = load_library() is not None and (precision == "fp32" or tune_precision)  # the kernels are fp32 only
    if not kernels and not tune_precision:
        return FastPath()
    cache = load_cache()
    try:
        with torch.random.fork_rng(devices=[]):
            result = measure_all(model, batch_size, image_shape, classes, cache, forced, kernels, tune_precision)
    except Exception as e:  # noqa: BLE001  (any failure here only costs the speed-up)
        warn(f"could not time this machine's fast path ({type(e).__name__}: {str(e)[:120]}); using the defaults")
        return FastPath()
    if any(c.how == "measured" for c in result.choices):
        save_cache(cache)
    return result


def measure_all(model, batch_size, image_shape, classes, cache, forced, kernels, tune_precision) -> FastPath:
    gen = torch.Generator().manual_seed(0)
    h, w = image_shape
    x = torch.randn(batch_size, 3, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch_size,), generator=gen)
    result = FastPath(choose_blocks(model, x, cache, forced) if kernels else [])
    if tune_precision:
        n = max(4, PRECISION_BATCH * 32 * 32 // (h * w))  # as many pixels as 256 CIFAR images: 5 at 224x224
        chosen = choose_precision(model, x[:n], y[:n], cache)
        result.precision = chosen.chosen
        result.choices = ([] if chosen.chosen != "fp32" else result.choices) + [chosen]
    return result


def apply(model: nn.Module, fast: FastPath) -> FastPath:
    """Set the blocks of `model` to the choices in `fast` (made elsewhere: a recorded run, another worker)."""
    from tenfold.models.blocks import ConvMaxPool
    blocks = [m for m in model.modules() if isinstance(m, ConvMaxPool)]
    for c in fast.choices:
        if c.what.startswith("block ") and int(c.what.split()[1]) <= len(blocks):
            blocks[int(c.what.split()[1]) - 1].fast_path = c.chosen
    return fast
