"""Every per-epoch metric, once: its key in the epoch logs (callbacks, History, the checkpoint), its history.csv
column, its TensorBoard tag and its heading in report.html. The CSV writer, TensorBoard, the report and the
plots read this table; adding a metric is a row here (and the line of fit() that measures it)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str      # the epoch logs' key
    column: str   # history.csv
    tag: str      # TensorBoard (loss/..., accuracy/...: training and validation share a chart)
    heading: str  # report.html's epochs table
    kind: str     # loss | fraction | seconds | rate | lr: how it is written (see text)
    always: bool = True  # False: only some epochs have it (test-time augmentation: the last epoch)


METRICS = (
    Metric("loss", "train_loss", "loss/train", "training loss", "loss"),
    Metric("accuracy", "train_accuracy", "accuracy/train", "training accuracy", "fraction", always=False),
    Metric("val_loss", "val_loss", "loss/validation", "validation loss", "loss"),
    Metric("val_accuracy", "val_accuracy", "accuracy/validation", "validation accuracy", "fraction"),
    Metric("seconds", "seconds", "speed/epoch_seconds", "seconds", "seconds"),
    Metric("images_per_s", "images_per_s", "speed/images_per_s", "images/s", "rate"),
    Metric("lr", "lr", "learning_rate", "learning rate", "lr"),
    Metric("val_accuracy_tta", "val_accuracy_tta", "accuracy/validation_tta", "with test-time augmentation",
           "fraction", always=False),
)

CSV_FORMATS = {"loss": "{:.6f}", "fraction": "{:.6f}", "seconds": "{:.3f}", "rate": "{:.1f}", "lr": "{:.6g}"}
HTML_FORMATS = {"loss": "{:.4f}", "fraction": "{:.2%}", "seconds": "{:.1f}", "rate": "{:,.0f}", "lr": "{:.3g}"}


def text(metric: Metric, value, formats: dict) -> str:
    """`value` written as `formats` says for the metric's kind; '' when the epoch lacks it, 'n/a' for NaN."""
    if value is None:
        return ""
    if value != value:  # NaN: nothing to measure it on (no validation split)
        return "n/a"
    return formats[metric.kind].format(value)
