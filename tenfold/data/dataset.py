"""One entry point for every data source: `open_dataset(spec)` -> Splits of uint8 arrays."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tenfold.data import cifar10, folder
from tenfold.data.imageset import ImageSet
from tenfold.errors import DataError
from tenfold.log import warn

__all__ = ["ImageSet", "Splits", "open_dataset", "open_test_set", "hold_out", "relabel", "is_cifar10"]


@dataclass
class Splits:
    train: ImageSet
    val: ImageSet | None
    test: ImageSet | None
    source: str  # what the data came from, for config.json and messages


def hold_out(data: ImageSet, fraction: float) -> tuple[ImageSet, ImageSet | None]:
    """Deterministic validation split: the last `fraction` of each class, in source order, and at least one image
    of every class that has two or more (so a small class still shows up in validation).

    For CIFAR-10 at 0.1 that is 45,000 train / 5,000 validation, 500 of each class.
    """
    if not 0.0 <= fraction < 1.0:
        raise DataError(f"--val-split must be in [0, 1), got {fraction}")
    if fraction == 0.0:
        return data, None
    train_idx, val_idx = [], []
    for c in range(len(data.classes)):
        idx = np.flatnonzero(data.labels == c)
        n_val = min(max(1, int(round(len(idx) * fraction))), len(idx) - 1)  # one at least; one left to train on
        train_idx.append(idx[: len(idx) - n_val])
        val_idx.append(idx[len(idx) - n_val:])
    train_idx = np.sort(np.concatenate(train_idx))
    val_idx = np.sort(np.concatenate(val_idx))
    return data.subset(train_idx), (data.subset(val_idx) if len(val_idx) else None)


def check_trainable(splits: "Splits", spec: str, fraction: float, quiet: bool) -> None:
    """Refuse data that cannot give a meaningful model (one class); say so when nothing could be held out."""
    if len(splits.train.classes) < 2:
        found = f"only '{splits.train.classes[0]}'" if splits.train.classes else "none"
        raise DataError(f"{spec}: a classifier needs at least 2 classes (class folders); found {found}")
    if splits.val is None and fraction > 0 and not quiet:  # --val-split 0 asked for none: no news
        warn(f"{spec}: no validation images (every class has a single image, so none could be held "
             "out); validation accuracy will read n/a (add a val/ folder or more images)")


def is_cifar10(spec: str) -> bool:
    return spec.lower() in ("cifar10", "cifar-10")


def open_dataset(spec: str, val_split: float = 0.1, image_size: int | None = None,
                 default_size: int = 32, quiet: bool = False, photo=None) -> Splits:
    """Open `spec` ('cifar10' or a path) and hold out validation unless the source has its own. `photo` (a
    tenfold.data.photo.PhotoPipeline): folders are decoded aspect-kept at its stored size, CIFAR-10 stays 32x32
    (the loader resizes each batch)."""
    if is_cifar10(spec) or cifar10.is_cifar10_archive(spec):
        train, test = cifar10.load(None if is_cifar10(spec) else spec, quiet=quiet)
        if image_size is not None and (image_size, image_size) != train.shape:
            raise DataError("CIFAR-10 images are 32x32; --image-size applies to image folders only")
        train, val = hold_out(train, val_split)
        return Splits(train, val, test, source="cifar10" if is_cifar10(spec) else str(Path(spec).resolve()))
    size = (image_size, image_size) if image_size else None
    if photo is not None:
        parts = folder.load(spec, size=(photo.stored, photo.stored), quiet=quiet, fit="crop")
    else:
        parts = folder.load(spec, size=size, default_size=default_size, quiet=quiet)
    if "train" not in parts:
        raise DataError(f"{spec}: no training images found (expected train/<class>/* or <class>/*)")
    train = parts["train"]
    val = parts.get("val")
    if val is None:
        train, val = hold_out(train, val_split)
    splits = Splits(train, val, parts.get("test"), source=str(Path(spec).resolve()))
    check_trainable(splits, spec, val_split if "val" not in parts else 1.0, quiet)
    return splits


def open_test_set(spec: str, classes: list[str], shape: tuple[int, int], quiet: bool = False,
                  fit: str = "stretch") -> ImageSet:
    """The test split of `spec` ('cifar10', PATH/test, or PATH as class folders), in `classes`' label order.
    `fit`: how folder images reach `shape` (see tenfold.data.folder.load)."""
    if is_cifar10(spec) or cifar10.is_cifar10_archive(spec):
        _, test = cifar10.load(None if is_cifar10(spec) else spec, quiet=quiet)
    else:
        parts = folder.load(spec, size=shape, default_size=shape[0], quiet=quiet, as_test=True, fit=fit)
        test = parts.get("test")
        if test is None:
            raise DataError(f"{spec}: no test split (expected PATH/test/<class>/* or PATH/<class>/*)")
    return relabel(test, classes, shape)


def relabel(data: ImageSet, classes: list[str], shape: tuple[int, int]) -> ImageSet:
    """Map `data`'s labels onto the model's class list; unknown class names are an error."""
    unknown = [c for c in data.classes if c not in classes]
    if unknown:
        raise DataError(f"the test data has classes the model was not trained on: {', '.join(unknown[:5])}")
    if data.shape != tuple(shape):
        raise DataError(f"test images are {data.shape[0]}x{data.shape[1]}, the model expects {shape[0]}x{shape[1]}")
    lookup = np.array([classes.index(c) for c in data.classes], dtype=np.int64)
    return ImageSet(data.images, lookup[data.labels], list(classes))
