"""The notebook API: `from tenfold import train, evaluate, predict`. Results know how to plot themselves.

    run = train("cifar10", epochs=5)          # or preset="fast-small", model="lenet5", any `tenfold train` flag
    run.history["val_accuracy"]               # one value per epoch, as Keras' History.history
    run.plot()                                # learning curves (displayed inline in Jupyter)
    result = evaluate(run)                    # test accuracy; result.plot(): confusion matrix
    predict(run, ["cat.jpg"]).plot()          # top-3 probabilities beside each image
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from tenfold.errors import ConfigError

if TYPE_CHECKING:  # the API module loads without torch; train() brings it in
    from tenfold.training.callbacks import History


@dataclass
class TrainResult:
    run_dir: Path
    log: History = field(repr=False)  # what fit() returned

    @property
    def history(self) -> dict[str, list]:
        """Per-epoch values: loss, accuracy, val_loss, val_accuracy, seconds, ... (Keras' History.history)."""
        return self.log.history

    @property
    def epoch(self) -> list[int]:
        return self.log.epoch

    def plot(self):
        """Loss and accuracy per epoch, training and validation (a matplotlib Figure)."""
        from tenfold.report.plots import plot_history
        return plot_history(self.log.rows())

    def report(self, data: str | None = None) -> Path:
        """Write the figures and report.html into the run directory; returns report.html's path."""
        from tenfold.report.make import make_report
        return make_report(self.run_dir, data, quiet=True)

    def __str__(self) -> str:
        last = self.log.rows()[-1] if self.epoch else {}
        return f"{self.run_dir}: {len(self.epoch)} epochs, val_accuracy {last.get('val_accuracy', float('nan')):.2%}"


@dataclass
class EvalResult:
    accuracy: float
    images: int
    classes: list[str]
    per_class_accuracy: dict[str, float | None]
    confusion_matrix: list[list[int]]   # rows: true class, columns: predicted class
    split: str                          # which images, in words
    judged: object = field(repr=False, default=None)  # the images and probabilities, for plot_predictions()

    def plot(self):
        """The normalised confusion matrix (a matplotlib Figure); `plot_per_class()` for the bars."""
        from tenfold.report.plots import plot_confusion
        return plot_confusion(np.array(self.confusion_matrix), self.classes)

    def plot_per_class(self):
        from tenfold.report.plots import plot_per_class
        return plot_per_class(self.per_class_accuracy, self.accuracy)

    def plot_predictions(self, n: int = 12, seed: int = 0):
        """`n` random images with their true class and top-3 probabilities (the original "Softmax Predictions")."""
        from tenfold.report.make import prediction_grid
        return prediction_grid(self.judged, self.classes, n, seed)


@dataclass
class Predictions:
    images: np.ndarray                  # (N, H, W, 3) uint8, as the model saw them
    probabilities: np.ndarray           # (N, classes)
    classes: list[str]
    names: list[str] = field(default_factory=list)

    def top(self, k: int = 3) -> list[list[tuple[str, float]]]:
        from tenfold.training.infer import top_classes
        return top_classes(self.probabilities, self.classes, k)

    def plot(self, labels=None):
        """Each image beside its top-3 probabilities; with `labels` (class names or indices), marks mistakes."""
        from tenfold.report.plots import plot_predictions
        if labels is not None:
            labels = np.array([self.classes.index(c) if isinstance(c, str) else int(c) for c in labels])
        return plot_predictions(self.images, self.probabilities, self.classes, labels)


def run_path(run) -> Path:
    return run.run_dir if isinstance(run, TrainResult) else Path(run)


def train(data: str | None = None, *, preset: str | None = None, out: str | None = None, resume=None,
          report: bool = False, tensorboard: bool = False, quiet: bool = False, callbacks: list | None = None,
          **settings) -> TrainResult:
    """Train like `tenfold train`: `data` is its --data (default 'cifar10'), `settings` are its other flags with
    underscores (epochs=5, batch_size=512, ...). `resume` continues a run (a TrainResult or its directory), which
    keeps its settings: only epochs, device, precision, compile, threads and data (where the same images are now)
    may change (ConfigError names any other that differs, as `tenfold train --resume` does; see
    tenfold.presets.resolve_config)."""
    from tenfold.config import TrainConfig
    from tenfold.training.run import train as run_train

    known = {f.name for f in fields(TrainConfig)} - {"data", "preset"}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"train() got unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    history = run_train(out=out, resume=None if resume is None else run_path(resume), quiet=quiet,
                        callbacks=callbacks, tensorboard=tensorboard, preset=preset, data=data, **settings)
    if report:
        from tenfold.report.make import report_run
        report_run(history, quiet)
    return TrainResult(Path(history.run_dir), history)


def evaluate(run, data: str | None = None, device: str = "auto") -> EvalResult:
    """Accuracy, per-class accuracy and confusion matrix of a run (a TrainResult or a run directory) on `data`'s
    test split; by default the run's own test split, else its validation split (as `tenfold report` does)."""
    from tenfold.training.judge import judge
    from tenfold.training.infer import load_trained
    judged = judge(load_trained(run_path(run), device), data, quiet=True)
    s = judged.summary
    return EvalResult(s["accuracy"], s["images"], s["classes"], s["per_class_accuracy"], s["confusion_matrix"],
                      judged.split, judged)


def image_list(images) -> list:
    """`predict`'s argument as a list of paths and arrays: one image is one image, whatever its size; an
    (N, H, W, C) array or a list of images is several. ConfigError for anything else."""
    if isinstance(images, (str, Path)):
        return [images]
    if isinstance(images, (list, tuple)) and images and all(isinstance(r, (list, tuple)) for r in images):
        images = np.asarray(images)  # nested lists of numbers: one array
    if isinstance(images, np.ndarray) or hasattr(images, "__array__") or hasattr(images, "__array_interface__"):
        array = np.asarray(images)   # numpy arrays, torch tensors, PIL images
        return list(array) if array.ndim == 4 else [array]
    if isinstance(images, (list, tuple)) and images:
        return [i if isinstance(i, (str, Path)) else np.asarray(i) for i in images]
    raise ConfigError(f"predict takes an image file path, an image array (H, W, 3), a PIL image, an (N, H, W, 3) "
                      f"array or a list of these; got {type(images).__name__}")


def predict(run, images, device: str = "auto", tta: int | None = None) -> Predictions:
    """Probabilities for `images`: a file path, an image array, or a list of them; an (N, H, W, C) array is N
    images. Arrays are (H, W), (H, W, 3) or (H, W, 4), uint8 in 0-255 or float in [0, 1], any size: each is
    resized exactly as a file would be. ConfigError (one line) for anything else."""
    from tenfold.data.decode import from_array
    from tenfold.training.infer import load_image, load_trained, probabilities
    from tenfold.data import ImageSet

    trained = load_trained(run_path(run), device)
    images = image_list(images)
    names = [str(i) if isinstance(i, (str, Path)) else f"image {n}" for n, i in enumerate(images)]
    arrays = []
    for name, item in zip(names, images):
        if isinstance(item, (str, Path)):
            arrays.append(load_image(str(item), trained.shape, trained.fit))
            continue
        try:
            arrays.append(from_array(item, trained.shape, trained.fit))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{name}: {e}")
    if not arrays:
        raise ConfigError("no images given to predict")
    arrays = np.stack(arrays)
    data = ImageSet(arrays, np.zeros(len(arrays), dtype=np.int64), trained.classes)
    return Predictions(arrays, probabilities(trained, data, tta), trained.classes, names)
