"""How big a dataset is, without decoding it: the images per split, the classes, the image size, the bytes.

`tenfold cloud plan` sizes a job with it before any training; the counts are of files (a few may later turn out
not to be images, and be skipped), the image size is read from the headers of a sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tenfold.data import cifar10, folder
from tenfold.data.dataset import is_cifar10
from tenfold.errors import DataError

CIFAR10 = (50_000, 10, (32, 32))  # training images, classes, (H, W)
SAMPLE = 256                      # files whose headers are read: their sizes, and how many are images


@dataclass(frozen=True)
class Survey:
    train: int               # training images, validation held out
    val: int                 # validation images (the source's own split, else the held-out fraction)
    classes: int
    shape: tuple[int, int]   # (H, W) the images are decoded to
    bytes: int               # on disk (0 for `cifar10`: downloaded where the job runs)


def survey(spec: str, val_split: float = 0.1, image_size: int | None = None) -> Survey:
    """The size of `spec` ('cifar10', a CIFAR-10 archive, or a folder or archive of class folders), split as
    training would split it. DataError for what is not a dataset, or not one training would take."""
    if is_cifar10(spec) or cifar10.is_cifar10_archive(spec):
        if image_size is not None and image_size != 32:
            raise DataError("CIFAR-10 images are 32x32; --image-size applies to image folders only")
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
    if len(layout["train"]) < 2:
        raise DataError(f"{spec}: a classifier needs at least 2 classes (class folders); found only "
                        f"'{next(iter(layout['train']))}'")
    sources = [src for items in layout["train"].values() for _, src in items]
    shapes, share = sampled(sources)
    counts = {c: round(len(items) * share) for c, items in layout["train"].items()}
    if "val" in layout:
        val = round(sum(map(len, layout["val"].values())) * share)
    else:  # as tenfold.data.dataset.hold_out: per class, one at least, one left to train on
        val = sum(min(max(1, round(n * val_split)), n - 1) for n in counts.values() if n > 1) if val_split else 0
    return Survey(sum(counts.values()) - (0 if "val" in layout else val), val, len(layout["train"]),
                  image_shape(shapes, image_size), size_of(path, files))


def sampled(sources: list) -> tuple[list[tuple[int, int]], float]:
    """The shown sizes of a sample of `sources` (headers only), and the share of them that are images (files are
    judged by their content: a .txt among the photos is skipped by training, so not counted here)."""
    step = max(1, len(sources) // SAMPLE)
    sample = sources[::step][:SAMPLE]
    shapes = folder.sample_shapes(sample, n=len(sample))
    return shapes, (len(shapes) / len(sample) if sample else 1.0)


def image_shape(shapes: list[tuple[int, int]], image_size: int | None) -> tuple[int, int]:
    """`image_size` square if given; else what decoding would choose (tenfold.data.folder.decode_all): LARGE for
    mostly photos, the images' own size when they share one, else the default 32."""
    if image_size:
        return image_size, image_size
    if not shapes:
        return 32, 32
    if sum(max(s) > folder.LARGE for s in shapes) * 2 >= len(shapes):
        return folder.LARGE, folder.LARGE
    return shapes[0] if len(set(shapes)) == 1 else (32, 32)


def size_of(path: Path, files: dict[str, object]) -> int:
    if not path.is_dir():
        return path.stat().st_size
    return sum(p.stat().st_size for p in files.values() if isinstance(p, Path) and p.is_file())
