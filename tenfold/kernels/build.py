"""Compile the C kernels once per machine into $TENFOLD_HOME/kernels and load them with ctypes.

Plain C with no PyTorch headers: it builds in about a second with the system's C compiler, for this CPU
(-march=native; the file name carries the CPU's flags, so a shared cache never hands one CPU another's build).
Anything that fails (no compiler, an odd platform) means the PyTorch ops are used instead, with one warning.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tenfold.fileio import tenfold_home

SOURCE = Path(__file__).with_name("cpu_kernels.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-ffp-contract=fast", "-shared", "-fPIC"]


def cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), platform.processor())
    except OSError:
        return platform.processor() + platform.machine()


def library_path() -> Path:
    h = hashlib.sha256(SOURCE.read_bytes() + " ".join(FLAGS).encode() + cpu_signature().encode())
    return tenfold_home() / "kernels" / f"cpu_kernels-{h.hexdigest()[:16]}.so"


def compile_library(dest: Path) -> None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise OSError("no C compiler found (install gcc, or set CC)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, suffix=".so")
    os.close(fd)
    try:
        subprocess.run([cc, *FLAGS, "-o", tmp, str(SOURCE)], check=True, capture_output=True, timeout=120)
        os.replace(tmp, dest)  # another process may have built the same file meanwhile: either copy is fine
    finally:
        Path(tmp).unlink(missing_ok=True)


@functools.lru_cache(maxsize=None)
def load_library() -> ctypes.CDLL | None:
    import torch  # noqa: F401  (loads PyTorch's OpenMP runtime first, so the kernels bind to the same one)
    if os.environ.get("TENFOLD_KERNELS", "1") == "0" or platform.system() != "Linux":
        return None
    path = library_path()
    try:
        if not path.exists():
            compile_library(path)
        lib = ctypes.CDLL(str(path))
    except (OSError, subprocess.SubprocessError) as e:
        lines = e.stderr.decode(errors="replace").splitlines() if getattr(e, "stderr", None) else [str(e)]
        detail = next((line for line in lines if "error" in line), lines[0] if lines else str(e))
        print(f"warning: tenfold's CPU kernels are unavailable ({detail.strip()}); using PyTorch's ops",
              file=sys.stderr)
        return None
    i, p = ctypes.c_int, ctypes.c_void_p
    lib.conv_pool_relu_forward.argtypes = [p, p, p, p, p, i, i, i, i, i, i]
    lib.conv_pool_relu_backward.argtypes = [p, p, p, p, p, p, p, p, i, i, i, i, i, i]
    lib.conv_pool_relu_forward.restype = lib.conv_pool_relu_backward.restype = i
    lib.gather_normalize.argtypes = [p, p, i, i, i, p, p, p]
    lib.gather_normalize.restype = None
    return lib


def available() -> bool:
    return load_library() is not None
