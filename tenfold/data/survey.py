"""How big a dataset is, without decoding it: the images per split, the classes, the image size, the bytes.

`tenfold cloud plan` sizes a job with it before any training; the counts are of files (a few may later turn out
not to be images, and be skipped), the image size is read from the headers of a sample.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

from tenfold.data import cifar10, folder
from tenfold.data.dataset import is_cifar10
from tenfold.errors import DataError

CIFAR10 = (50_000, 10, (32, 32))  # training images, classes, (H, W)


@dataclass(frozen=True)
class Survey:
    train: int               # training images, validation held out
    val: int                 # validation images (the source's own split, else the held-out fraction)
    classes: int
    shape: tuple[int, int]   # (H, W) the images are decoded to
    bytes: int               # on disk (0 for `cifar10`: downloaded where the job runs)


def survey(spec: str, val_split: float = 0.1, image_size: int | None = None) -> Survey:
    """The size of `spec` ('cifar10', a CIFAR-10 archive, or a folder or archive of class folders). DataError
    for what is not a dataset."""
    if is_cifar10(spec) or cifar10.is_cifar10_archive(spec):
        n, classes, shape = CIFAR10
        val = round(n * val_split)
        return Survey(n - val, val, classes, shape, 0 if is_cifar10(spec) else Path(spec).stat().st_size)
    path = Path(spec)
    if not path.exists():
        raise DataError(f"{spec}: no such file or folder")
    files, dirs = folder.list_source(path)
    layout = folder.find_layout(files, dirs, spec, as_test=False)
    if "train" not in layout:
        raise DataError(f"{spec}: no training images found (expected train/<class>/* or <class>/*)")
    train = sum(map(len, layout["train"].values()))
    val = sum(map(len, layout["val"].values())) if "val" in layout else round(train * val_split)
    train -= 0 if "val" in layout else val
    return Survey(train, val, len(layout["train"]), image_shape(layout["train"], image_size), size_of(path, files))


def image_shape(by_class: dict[str, list], image_size: int | None) -> tuple[int, int]:
    """`image_size` square if given; else the commonest shown size of a sample (LARGE for photos), as decoding
    would choose (tenfold.data.folder.decode_all)."""
    if image_size:
        return image_size, image_size
    shapes = folder.sample_shapes([src for items in by_class.values() for _, src in items])
    if not shapes:
        return 32, 32
    if sum(max(s) > folder.LARGE for s in shapes) * 2 >= len(shapes):
        return folder.LARGE, folder.LARGE
    return collections.Counter(shapes).most_common(1)[0][0]


def size_of(path: Path, files: dict[str, object]) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in files.values() if isinstance(p, Path) and p.is_file())
