"""The decoded-image caches (CIFAR-10's arrays, an image folder's splits): one policy for both.

A cache is only a head start, never the data: one that cannot be read (cut short, damaged, from another numpy) or
does not hold what it should (`check`: the arrays' names, kinds and shapes) is removed with a warning and rebuilt
from the source; one that cannot be written (a full disk, a read-only home) costs the next run its head start, not
this run. Each is one `.npz` of named arrays with their SHA-256 (so a change on disk is caught however well-formed
it is), written atomically, read without pickle.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tenfold.fileio import atomic_open
from tenfold.log import warn


DIGEST = "sha256"  # the arrays' digest, stored beside them


def digest(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 of every array: its name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.data if a.dtype.kind != "U" else a.tobytes())
    return h.hexdigest()


def cached_arrays(path: Path, build: Callable[[], dict[str, np.ndarray]], what: str,
                  check: Callable[[dict[str, np.ndarray]], None]) -> dict[str, np.ndarray]:
    """The arrays stored at `path`, or `build()`'s, stored there for next time. `check` raises (KeyError,
    ValueError, ...) for arrays that are not what `build` makes; `what` names the cache in the one-line warnings
    (e.g. "the CIFAR-10 cache")."""
    arrays = read(path, what, check)
    if arrays is None:
        arrays = build()
        write(path, arrays, what)
    return arrays


def read(path: Path, what: str, check: Callable[[dict[str, np.ndarray]], None]) -> dict[str, np.ndarray] | None:
    """Every array of the cache; None when there is none, or it was damaged (then it is removed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        if str(arrays.pop(DIGEST, "")) != digest(arrays):
            raise ValueError("its arrays do not match their SHA-256")
        check(arrays)
        return arrays
    except Exception as e:  # noqa: BLE001 (numpy and zipfile raise many kinds for a damaged file)
        path.unlink(missing_ok=True)
        warn(f"{what} {path} was damaged ({type(e).__name__}); it was removed and is rebuilt now")
        return None


def write(path: Path, arrays: dict[str, np.ndarray], what: str) -> None:
    try:
        with atomic_open(path) as f:
            np.savez(f, **arrays, **{DIGEST: np.array(digest(arrays))})
    except OSError as e:
        warn(f"could not write {what} in {path.parent} ({e.strerror or e}); the next run decodes the images again")


def check_split(arrays: dict[str, np.ndarray], split: str, classes: str) -> None:
    """ValueError unless SPLIT_x is uint8 (N, H, W, 3) images and SPLIT_y N whole-number labels of the class names
    in `arrays[classes]` (KeyError for a missing one)."""
    x, y, names = arrays[f"{split}_x"], arrays[f"{split}_y"], arrays[classes]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or min(x.shape[1:3]) < 1:
        raise ValueError(f"{split} images: {x.dtype} {x.shape}, not uint8 (N, H, W, 3)")
    if y.ndim != 1 or len(y) != len(x) or y.dtype.kind not in "iu" or names.ndim != 1:
        raise ValueError(f"{split} labels: {y.dtype} {y.shape} for {len(x)} images")
    if len(y) and (y.min() < 0 or y.max() >= len(names)):
        raise ValueError(f"{split} labels outside the {len(names)} classes")
