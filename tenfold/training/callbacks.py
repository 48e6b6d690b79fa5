"""Keras-style callbacks: the training loop reports only through these, with a flat `logs` dict.

Epoch logs: epoch (1-based), loss, accuracy (training), val_loss, val_accuracy, seconds, images_per_s, lr;
val_accuracy_tta on the last epoch when test-time augmentation is on.
"""
from __future__ import annotations

import sys
from tenfold.training.metrics import METRICS, epoch_words
from typing import Iterable


class Callback:
    """Setting `stop_training = True` (as Keras' model.stop_training) ends training once the current epoch is
    finished, recorded and saved: runs stay whole epochs, and a resume continues from there."""
    stop_training = False

    def on_train_begin(self, logs: dict) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict) -> None: ...
    def on_batch_end(self, batch: int, logs: dict) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict) -> None: ...
    def on_train_end(self, logs: dict) -> None: ...


class CallbackList(Callback):
    def __init__(self, callbacks: Iterable[Callback]):
        self.callbacks = list(callbacks)

    @property
    def stop_training(self) -> bool:
        return any(getattr(c, "stop_training", False) for c in self.callbacks)

    def on_train_begin(self, logs):
        for c in self.callbacks:
            c.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs):
        for c in self.callbacks:
            c.on_epoch_begin(epoch, logs)

    def on_batch_end(self, batch, logs):
        for c in self.callbacks:
            c.on_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs):
        for c in self.callbacks:
            c.on_epoch_end(epoch, logs)

    def on_train_end(self, logs):
        for c in self.callbacks:
            c.on_train_end(logs)


class History(Callback):
    """`history.history['val_accuracy']` etc., one value per epoch, as Keras' fit() returns. A key some epochs
    lack (e.g. val_accuracy_tta, or a run resumed from an older tenfold) reads None there."""

    def __init__(self, rows: list[dict] | None = None, run_dir=None):
        self.epoch: list[int] = []
        self.history: dict[str, list] = {}
        self.run_dir = run_dir  # where `tenfold train` saved the run, when it did
        self.main, self.device, self.data = True, None, None  # rank 0?, its device, its Splits (for a report)
        for row in rows or []:
            self.on_epoch_end(row["epoch"], row)

    def on_epoch_end(self, epoch, logs):
        for k, v in logs.items():
            if k != "epoch":
                self.history.setdefault(k, [None] * len(self.epoch)).append(v)
        self.epoch.append(epoch)
        for values in self.history.values():
            values.extend([None] * (len(self.epoch) - len(values)))

    def rows(self) -> list[dict]:
        return [{"epoch": e, **{k: v[i] for k, v in self.history.items() if v[i] is not None}}
                for i, e in enumerate(self.epoch)]


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where stderr is no terminal but tqdm.auto draws a widget)."""
    shell = sys.modules.get("IPython") and sys.modules["IPython"].get_ipython()
    return bool(shell) and "IPKernelApp" in getattr(shell, "config", {})


def epoch_line(epoch: int, logs: dict) -> str:
    """The seed's words: `Epoch  1: Training Loss:  1.65 Validation Accuracy: 40.88% Time 4.5s`."""
    words = (epoch_words(m, logs.get(m.key)) for m in METRICS)  # each metric's words (tenfold.training.metrics)
    return f"Epoch {epoch:2d}: " + " ".join(w for w in words if w)


class SeedLogger(Callback):
    """One line per epoch on stdout, in the original project's words."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout

    def on_epoch_end(self, epoch, logs):
        print(epoch_line(epoch, logs), file=self.stream, flush=True)


class ProgressBar(Callback):
    """A live bar with images/s during each epoch; only on a terminal, or in a notebook (as a widget)."""

    def __init__(self, total_images: int, epochs: int, stream=None, force: bool = False):
        self.total, self.epochs = total_images, epochs
        self.stream = stream or sys.stderr
        self.enabled = force or in_notebook() or self.stream.isatty()
        self.bar = None

    def on_epoch_begin(self, epoch, logs):
        if self.enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=self.total, unit="img", unit_scale=True, leave=False, file=self.stream,
                            desc=f"Epoch {epoch}/{self.epochs}", dynamic_ncols=True)

    def on_batch_end(self, batch, logs):
        if self.bar is not None:
            self.bar.update(logs["size"])

    def on_epoch_end(self, epoch, logs):
        self.close()

    def on_train_end(self, logs):
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
