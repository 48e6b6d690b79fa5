"""tenfold: train image classifiers fast, on a laptop CPU, a local GPU or a rented cloud GPU.

In Python (and notebooks): `from tenfold import train, evaluate, predict` (see tenfold.api).
"""

from tenfold import log  # noqa: F401  (the "tenfold" logger set up at import, so settings made after it hold)
from tenfold.version import __version__

__all__ = ["train", "evaluate", "predict", "__version__"]


def __getattr__(name: str):
    # Lazy: `tenfold` on the command line (e.g. the cloud commands) does not import torch until it needs it.
    if name in ("train", "evaluate", "predict"):
        from tenfold import api
        return getattr(api, name)
    raise AttributeError(f"module 'tenfold' has no attribute {name!r}")
