"""Hand-written CPU kernels, compiled on first use for this machine, with PyTorch's own ops as the fallback.

`TENFOLD_KERNELS=0` turns them off (the benchmarks compare both ways).
"""
from tenfold.kernels.build import available, load_library

__all__ = ["available", "load_library"]
