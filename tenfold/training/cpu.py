"""The CPU a run may use: its cores (affinity and cgroup quota), how busy they already are, and the thread pool.

On a busy machine the thread count matters more than any kernel: OpenMP threads spin at each barrier while their
partner is descheduled, so two threads sharing two cores with someone else's process ran the LeNet epoch 3x slower
than on a quiet machine, and one thread only 1.5-1.8x (BENCHMARKS.md). Waiting passively (`OMP_WAIT_POLICY=PASSIVE`)
or a short spin (`GOMP_SPINCOUNT`) helped less under load and cost 10-40 % on a quiet machine, so tenfold keeps
libgomp's defaults and instead (1) starts as many threads as cores it may actually run on (the affinity mask and the
cgroup CPU quota, a container's `--cpus`, not `os.cpu_count()`), and (2) while it trains, gives up a thread for
each core other processes keep busy, and takes it back when they stop (`AdaptiveThreads`). `--threads N` fixes
the count instead.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import os
import time
from pathlib import Path

from tenfold import envvars
from tenfold.training.callbacks import Callback

CGROUP_ROOT = Path("/sys/fs/cgroup")
BUSY_CORES = 0.5  # other processes' use, in cores, above which the start line notes that the machine is busy


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, self_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup and its ancestors, in cores (quota / period), or None if unlimited.

    cgroup v2: `cpu.max` ("200000 100000", or "max 100000"); v1: `cpu.cfs_quota_us` / `cpu.cfs_period_us`
    (quota -1: unlimited). The tightest limit on the path to the root applies."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # v2's unified hierarchy
            limits += [q for d in ancestors(root, path) if (q := read_v2(d / "cpu.max")) is not None]
        elif "cpu" in controllers.split(","):
            base = next((root / n for n in (controllers, "cpu,cpuacct", "cpu") if (root / n).is_dir()), None)
            if base is not None:
                limits += [q for d in ancestors(base, path) if (q := read_v1(d)) is not None]
    return min(limits) if limits else None


def ancestors(base: Path, path: str) -> list[Path]:
    """base/path and every folder above it up to base (a limit anywhere on the way applies)."""
    parts = [p for p in path.split("/") if p]
    return [base.joinpath(*parts[:i]) for i in range(len(parts), -1, -1)]


def read_v2(file: Path) -> float | None:
    try:
        quota, period = file.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def read_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def affinity() -> set[int]:
    """The CPUs this process may run on (all of them where the platform cannot say)."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return set(range(os.cpu_count() or 1))


def usable_cores(cpus: set[int] | None = None, quota: float | None | str = "read", default: int | None = None) -> int:
    """Cores this process can keep busy: the affinity mask, capped by the cgroup quota (rounded down, at least 1)
    and by PyTorch's own default (its count of physical cores: two hyperthreads of one core share its FMA units)."""
    cpus = affinity() if cpus is None else cpus
    quota = cgroup_cpu_limit() if quota == "read" else quota
    n = min(len(cpus), default or torch_default_threads())
    if quota is not None:
        n = min(n, max(1, math.floor(quota + 1e-9)))
    return max(1, n)


@functools.lru_cache(maxsize=None)
def torch_default_threads() -> int:
    """PyTorch's thread count before tenfold changes it (read once, at the first call)."""
    import torch
    return torch.get_num_threads()


def cpu_times(stat: str, cpus: set[int]) -> tuple[int, int]:
    """(busy, total) jiffies over `cpus` from the text of /proc/stat."""
    busy = total = 0
    for line in stat.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
            continue
        values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
        total += sum(values)
        busy += sum(values) - values[3] - values[4]
    return busy, total


def busy_cores(cpus: set[int] | None = None, seconds: float = 0.2,
               read=lambda: Path("/proc/stat").read_text(), sleep=time.sleep) -> float | None:
    """How many of `cpus` other processes keep busy, sampled over `seconds` while this one sleeps; None where
    /proc/stat cannot be read."""
    cpus = affinity() if cpus is None else cpus
    try:
        b0, t0 = cpu_times(read(), cpus)
        sleep(seconds)
        b1, t1 = cpu_times(read(), cpus)
    except (OSError, ValueError):
        return None
    return None if t1 <= t0 else len(cpus) * (b1 - b0) / (t1 - t0)


# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
KEEP_BYTES = 1 << 30  # blocks up to this size come from (and return to) the heap instead of fresh mappings


@functools.lru_cache(maxsize=None)
def keep_freed_memory() -> bool:
    """Let glibc reuse freed activation buffers instead of unmapping them after each step.

    By default glibc serves any block over its mmap threshold (at most 32 MiB) with a fresh mapping and unmaps it on
    free, so every training step of a wide net maps its activations anew and the kernel zero-fills them page by page:
    `--preset fast-small` in fp32 took 114 s of system time per 400 s epoch (46.8 million page faults) on 2 cores.
    Raising the thresholds keeps those blocks in the heap for the next step: the page faults fell from 190,000 to
    8,000 a step and the step ran 1.2x faster (BENCHMARKS.md). The cost is that the process's resident memory stays
    at its peak until it exits, which a training process reaches anyway. True where glibc took the settings."""
    name = ctypes.util.find_library("c")
    if not name or os.environ.get(envvars.MALLOPT, "1") == "0":
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    # glibc versions that refuse a threshold over 32 MiB take "no mappings at all" instead
    kept = mallopt(M_MMAP_THRESHOLD, KEEP_BYTES) or mallopt(M_MMAP_MAX, 0)
    return bool(kept) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


def pinned_threads(threads: int | None) -> int | None:
    """The thread count the user fixed: `threads` (--threads), else OMP_NUM_THREADS, else None (tenfold adapts)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return threads or (int(env) if env.isdigit() and int(env) > 0 else None)


def start_threads(threads: int | None, busy: float | None) -> int:
    """Set PyTorch's (and so tenfold's kernels') OpenMP threads for the start of a run: the fixed count if there
    is one, else the usable cores less those other processes keep busy."""
    import torch
    n = pinned_threads(threads) or fewer_for(usable_cores(), len(affinity()), busy or 0.0)
    torch.set_num_threads(n)
    return n


def fewer_for(cores: int, cpus: int, others: float) -> int:
    """Threads to run on `cpus` CPUs that other processes keep `others` of busy, at most `cores` (the quota) and
    at least 1: a container with a 2-core quota on a 64-CPU host keeps its 2 while 30 of the 64 are busy."""
    return max(1, min(cores, cpus - int(others + 0.5)))


class AdaptiveThreads(Callback):
    """Every `window` seconds of training: how many cores did other processes keep busy (all busy time on our CPUs
    less our own CPU time)? Run on the rest, at least one thread. Spinning threads count as our own time, so a
    descheduled partner does not make us look busier than we are."""

    def __init__(self, cores: int, cpus: set[int] | None = None, window: float = 2.0,
                 clock=time.monotonic, read=lambda: Path("/proc/stat").read_text(),
                 own_cpu=lambda: sum(os.times()[:2]), set_threads=None, threads: int | None = None):
        import torch
        self.cores, self.cpus, self.window = cores, affinity() if cpus is None else cpus, window
        self.clock, self.read, self.own_cpu = clock, read, own_cpu
        self.set_threads = set_threads or torch.set_num_threads
        self.threads = threads or torch.get_num_threads()
        self.last = None
        self.used: list[int] = [self.threads]  # every count it has run with, in order

    def sample(self):
        try:
            busy, total = cpu_times(self.read(), self.cpus)
        except (OSError, ValueError):
            return None
        return self.clock(), busy, total, self.own_cpu()

    def on_epoch_begin(self, epoch, logs):
        self.last = self.sample()

    def on_train_end(self, logs):
        if self.threads != self.used[0]:  # a notebook's later work gets the count it started with
            self.set_threads(self.used[0])
            self.threads = self.used[0]

    def on_batch_end(self, batch, logs):
        if self.last is None or self.clock() - self.last[0] < self.window:
            return
        now = self.sample()
        if now is None:
            return
        (t0, b0, j0, c0), (t1, b1, j1, c1) = self.last, now
        self.last = now
        if j1 <= j0 or t1 <= t0:
            return
        others = max(0.0, len(self.cpus) * (b1 - b0) / (j1 - j0) - (c1 - c0) / (t1 - t0))
        want = fewer_for(self.cores, len(self.cpus), others)
        if want != self.threads:
            self.set_threads(want)
            self.threads = want
            self.used.append(want)


def busy_note(threads: int, busy: float | None, cores: int, adapting: bool) -> str | None:
    """One line for the start of a run on a machine that other processes already keep busy, else None."""
    if busy is None or busy < BUSY_CORES:
        return None
    plural = "s" if threads > 1 else ""
    then = ("so training starts on {n} thread{s} and takes more as they free up" if adapting else
            "and --threads (or OMP_NUM_THREADS) fixes {n} thread{s}: epochs will be slower than on a quiet machine")
    return (f"other processes are already using about {busy:.1f} of the {cores} cores this run may use, "
            + then.format(n=threads, s=plural))
