"""Compile the C kernels once per machine into $TENFOLD_HOME/kernels and load them with ctypes.

Plain C with no PyTorch headers: it builds in about a second with the system's C compiler, for this CPU's vector
ISA (`kernel_isa`): AVX-512 (16 floats a register, 32 registers), AVX2 (8 floats, 16 registers) or a plain
128-bit build, with register blocks sized to match (cpu_kernels.c). The file name carries the CPU's flags and the
build's, so a shared cache never hands one CPU another's build. Anything that fails (no compiler, an odd
platform) means the PyTorch ops are used instead, with one warning.

`TENFOLD_CPU_ISA=avx2|avx512|generic` forces an ISA (avx512 only where the CPU has it); unset, an
`ATEN_CPU_CAPABILITY=avx2` (PyTorch's own cap, used to emulate an AVX2 machine) caps tenfold's build too.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

from tenfold import envvars
from tenfold.fileio import tenfold_home
from tenfold.log import warn

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ["-O3", "-fopenmp", "-ffp-contract=fast", "-shared", "-fPIC"]
ISA_FLAGS = {  # the vector ISA -> (compiler flags, floats per register)
    "avx512": (["-march=native"], 16),
    "avx2": (["-mavx2", "-mfma", "-mtune=generic"], 8),  # Haswell and later, Zen 1-3: AVX2 + FMA, 16 ymm
    "generic": (["-mtune=generic"], 4),                    # SSE2 (x86-64's baseline) or NEON: 128-bit registers
}


@functools.lru_cache(maxsize=None)
def cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), platform.processor())
    except OSError:
        return platform.processor() + platform.machine()


def native_isa(flags: str) -> str:
    """The widest vector ISA in a /proc/cpuinfo flags line that the kernels have a build for."""
    have = set(flags.split())
    if {"avx512f", "avx512bw", "avx512vl"} <= have:
        return "avx512"
    return "avx2" if {"avx2", "fma"} <= have else "generic"


@functools.lru_cache(maxsize=None)
def this_cpu_isa() -> str:
    return native_isa(cpu_signature())


def kernel_isa(flags: str | None = None, env: dict | None = None) -> str:
    """The ISA the kernels are built for: TENFOLD_CPU_ISA if set (never wider than the CPU), else the CPU's
    widest, capped at AVX2 when PyTorch is (ATEN_CPU_CAPABILITY=avx2 or default)."""
    env = os.environ if env is None else env
    native = this_cpu_isa() if flags is None else native_isa(flags)
    order = ["generic", "avx2", "avx512"]
    wanted = env.get(envvars.CPU_ISA, "").lower()
    if not wanted:
        wanted = {"avx2": "avx2", "default": "generic"}.get(env.get("ATEN_CPU_CAPABILITY", "").lower(), "")
    if wanted in order and order.index(wanted) < order.index(native):
        return wanted
    return native


def build_flags(isa: str) -> list[str]:
    flags, lanes = ISA_FLAGS[isa]
    return [*FLAGS, *flags, f"-DTENFOLD_VL={lanes}"]


def library_path(isa: str | None = None) -> Path:
    flags = build_flags(isa or kernel_isa())
    h = hashlib.sha256(SOURCE.read_bytes() + " ".join(flags).encode() + cpu_signature().encode())
    return tenfold_home() / "kernels" / f"cpu_kernels-{h.hexdigest()[:16]}.so"


def compile_library(dest: Path, isa: str) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise OSError("no C compiler found (install gcc, or set CC)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".so")
    os.close(fd)
    try:
        subprocess.run([cc, *build_flags(isa), "-o", tmp, str(SOURCE)], check=True, capture_output=True, timeout=120)
        os.replace(tmp, dest)  # another process may have built the same file meanwhile: either copy is fine
    finally:
        Path(tmp).unlink(missing_ok=True)


def load_library() -> ctypes.CDLL | None:
    """The kernels for this CPU (see kernel_isa), built on first use; None where they are off or cannot be built."""
    if os.environ.get(envvars.KERNELS, "1") == "0" or platform.system() != "Linux":
        return None
    return library_for(kernel_isa())


def available_isas() -> list[str]:
    """Every build this CPU can run, narrowest first (the tests check each against PyTorch's ops)."""
    order = ["generic", "avx2", "avx512"]
    return order[:order.index(this_cpu_isa()) + 1]


@functools.lru_cache(maxsize=None)
def library_for(isa: str) -> ctypes.CDLL | None:
    import torch  # noqa: F401  (loads PyTorch's OpenMP runtime first, so the kernels bind to the same one)
    path = library_path(isa)
    try:
        if not path.exists():
            compile_library(path, isa)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as e:
        lines = e.stderr.decode(errors="replace").splitlines() if getattr(e, "stderr", None) else [str(e)]
        detail = next((line for line in lines if "error" in line), lines[0] if lines else str(e))
        warn(f"tenfold's CPU kernels are unavailable ({detail.strip()}); using PyTorch's ops")
        return None
    i, p = ctypes.c_int, ctypes.c_void_p
    lib.conv_pool_relu_forward.argtypes = [p, p, p, p, p, i, i, i, i, i, i]
    lib.conv_pool_relu_backward.argtypes = [p, p, p, p, p, p, p, p, i, i, i, i, i, i]
    lib.conv_pool_relu_forward.restype = lib.conv_pool_relu_backward.restype = i
    lib.gather_normalize.argtypes = [p, p, i, i, i, p, p, p]
    lib.gather_normalize.restype = None
    lib.isa = isa
    return lib


def available() -> bool:
    return load_library() is not None
