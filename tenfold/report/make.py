"""`tenfold report RUN_DIR`: the four figures and report.html, written into the run directory."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tenfold.data import ImageSet, Splits, open_dataset, open_test_set
from tenfold.data.dataset import relabel
from tenfold.errors import DataError
from tenfold.fileio import atomic_open, atomic_write_text
from tenfold.report import plots
from tenfold.report.html import render
from tenfold.training.run import run_photo
from tenfold.training.infer import Trained, load_trained, probabilities, run_data, summarise

GRID_IMAGES = 12  # images in the prediction grid (4 rows of 3)
FIGURES = ("curves.png", "confusion.png", "per_class_accuracy.png", "predictions.png")


@dataclass
class Judged:
    """The images a run is judged on, with what the model made of them."""
    data: ImageSet
    split: str          # which split of which data, in words
    probs: np.ndarray   # (N, classes) softmax probabilities
    summary: dict       # accuracy, per-class accuracy, confusion matrix


def pick_split(trained: Trained, data: str | None, splits: Splits | None, quiet: bool) -> tuple[ImageSet, str]:
    """--data's test split (or all its images, in class folders); else, and also when --data is the run's own data,
    the run's test split; else its validation split as held out in training. Never images the run trained on."""
    source = run_data(trained.ckpt)
    if data is not None and not same_path(data, source):
        return (open_test_set(data, trained.classes, trained.shape, quiet=quiet, fit=trained.fit),
                f"the test split of {data}")
    if splits is None and source != "cifar10" and not Path(source).exists():
        raise DataError(f"this run's data ({source}) is not here: pass --data PATH with images to judge it on")
    if splits is None:
        cfg = trained.ckpt["config"]
        splits = open_dataset(source, cfg.get("val_split", 0.1), cfg.get("image_size"), quiet=quiet,
                              photo=run_photo(trained.ckpt))
    if splits.test is not None:
        return relabel(splits.test, trained.classes, trained.shape), f"the test split of {source}"
    if splits.val is not None:
        return splits.val, f"the validation split of {source} (it has no test split)"
    raise DataError(f"{source} has neither a test nor a validation split to report on: pass --data PATH "
                    "with test images")


def same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        return a == b


def unseen(trained: Trained, images: ImageSet, split: str) -> tuple[ImageSet, str]:
    """`images` less any the run trained on (by their pixels' digests: a copied folder, its train/ subfolder,
    data that changed since the run), with the count left out named in `split`."""
    trained_on = trained.ckpt.get("train_digests")
    if trained_on is None or not len(images):
        return images, split
    seen = np.isin(images.digests(), trained_on.numpy())
    if not seen.any():
        return images, split
    if seen.all():
        raise DataError(f"all {len(images)} images of {split} were trained on by this run; judge it on images it "
                        "never saw (its validation or test split, or --data PATH with new images)")
    return images.subset(np.flatnonzero(~seen)), f"{split}, less {int(seen.sum())} image(s) the run trained on"


def judge(trained: Trained, data: str | None = None, splits: Splits | None = None, quiet: bool = False,
          tta: int | None = None) -> Judged:
    images, split = unseen(trained, *pick_split(trained, data, splits, quiet))
    probs = probabilities(trained, images, tta)
    return Judged(images, split, probs, summarise(images.labels, probs.argmax(1), trained.classes))


def prediction_grid(judged: Judged, classes: list[str], n: int = GRID_IMAGES, seed: int = 0):
    """`n` of the judged images (a seeded random choice: the same each time), each with its true class and
    top-3 probabilities (the original "Softmax Predictions")."""
    pick = np.random.default_rng(seed).choice(len(judged.data), min(n, len(judged.data)), replace=False)
    return plots.plot_predictions(judged.data.images[pick], judged.probs[pick], classes, judged.data.labels[pick])


def figures(rows: list[dict], judged: Judged, classes: list[str]) -> dict:
    """name -> Figure for the four figures."""
    s = judged.summary
    return {"curves.png": plots.plot_history(rows),
            "confusion.png": plots.plot_confusion(np.array(s["confusion_matrix"]), classes),
            "per_class_accuracy.png": plots.plot_per_class(s["per_class_accuracy"], s["accuracy"]),
            "predictions.png": prediction_grid(judged, classes)}


def png_bytes(fig, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def make_report(run_dir: str | Path, data: str | None = None, device: str = "auto", splits: Splits | None = None,
                quiet: bool = False) -> Path:
    """Write the figures (PNG) and report.html into `run_dir`; returns report.html's path. `splits`: the run's
    data already in memory (from `tenfold train --report`), so it is not read again."""
    run_dir = Path(run_dir)
    trained = load_trained(run_dir, device)
    judged = judge(trained, data, splits, quiet)
    images = {name: png_bytes(fig) for name, fig in figures(trained.ckpt["history"], judged, trained.classes).items()}
    for name, content in images.items():
        with atomic_open(run_dir / name) as f:
            f.write(content)
    path = run_dir / "report.html"
    atomic_write_text(path, render(run_dir, trained.ckpt, judged.summary, judged.split, trained.views(None), images))
    return path
