"""The decoded-image caches (CIFAR-10's arrays, an image folder's splits): one policy for both.

A cache is only a head start, never the data: one that cannot be read (cut short, damaged, from another numpy) is
removed with a warning and rebuilt from the source; one that cannot be written (a full disk, a read-only home) costs
the next run its head start, not this run. Each is one `.npz` of named arrays, written atomically, read without
pickle.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from tenfold.fileio import atomic_open
from tenfold.log import warn


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]], what: str) -> dict[str, np.ndarray]:
    """The arrays stored at `path`, or `build()`'s, stored there for next time. `what` names the cache in the
    one-line warnings (e.g. "the CIFAR-10 cache")."""
    arrays = read(path, what)
    if arrays is None:
        arrays = build()
        write(path, arrays, what)
    return arrays


def read(path: Path, what: str) -> dict[str, np.ndarray] | None:
    """Every array of the cache; None when there is none, or it was damaged (then it is removed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as e:  # noqa: BLE001 (numpy and zipfile raise many kinds for a damaged file)
        path.unlink(missing_ok=True)
        warn(f"{what} {path} was damaged ({type(e).__name__}); it was removed and is rebuilt now")
        return None


def write(path: Path, arrays: dict[str, np.ndarray], what: str) -> None:
    try:
        with atomic_open(path) as f:
            np.savez(f, **arrays)
    except OSError as e:
        warn(f"could not write {what} in {path.parent} ({e.strerror or e}); the next run decodes the images again")
