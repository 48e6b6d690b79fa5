"""`tenfold report RUN_DIR`: the four figures and report.html, written into the run directory."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from tenfold.data import Splits
from tenfold.fileio import atomic_open, atomic_write_text
from tenfold.log import note, warn
from tenfold.report import plots
from tenfold.report.html import render
from tenfold.training.infer import load_trained
from tenfold.training.judge import Judged, judge

GRID_IMAGES = 12  # images in the prediction grid (4 rows of 3)
FIGURES = ("curves.png", "confusion.png", "per_class_accuracy.png", "predictions.png")


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


def report_run(history, quiet: bool = False) -> Path | None:
    """`tenfold train --report`: the report of the run `tenfold.training.run.train` just returned (its History
    carries run_dir, device, data and main), from the data already in memory; a warning instead when the run
    has nothing held out to judge. Workers other than the main one do nothing."""
    import shlex

    if not history.main:
        return None
    if history.data.val is None and history.data.test is None:  # training succeeded: a warning, not an error
        warn(f"no report: the run has no validation or test images to judge; write it with: "
             f"tenfold report {shlex.quote(str(history.run_dir))} --data PATH")
        return None
    path = make_report(history.run_dir, device=history.device, splits=history.data, quiet=quiet)
    if not quiet:
        note(f"report written to {path}")
    return path
