"""Every per-epoch metric, once: its key in the epoch logs (callbacks, History, the checkpoint), its history.csv
column, its TensorBoard tag, its heading in report.html, its words in the epoch line and its curve in the learning
curves. The CSV writer, TensorBoard, the report, the plots and the epoch line read this table; adding a metric is a
row here (and the line of fit() that measures it)."""
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
    line: tuple[str, str] | None = None  # the epoch line's (words, format), in the seed project's words
    curve: tuple[str, str] | None = None  # the learning curves' (matplotlib style, legend); panel: the tag's first word


METRICS = [  # a list: a metric is added by adding a row (as a test does)
    Metric("loss", "train_loss", "loss/train", "training loss", "loss",
           line=("Training Loss:", "{:5.2f}"), curve=("o-", "training")),
    Metric("accuracy", "train_accuracy", "accuracy/train", "training accuracy", "fraction", always=False,
           curve=("o-", "training")),
    Metric("val_loss", "val_loss", "loss/validation", "validation loss", "loss", curve=("s-", "validation")),
    Metric("val_accuracy", "val_accuracy", "accuracy/validation", "validation accuracy", "fraction",
           line=("Validation Accuracy:", "{:6.2%}"), curve=("s-", "validation")),
    Metric("seconds", "seconds", "speed/epoch_seconds", "seconds", "seconds", line=("Time", "{:.1f}s")),
    Metric("images_per_s", "images_per_s", "speed/images_per_s", "images/s", "rate"),
    Metric("lr", "lr", "learning_rate", "learning rate", "lr"),
    Metric("val_accuracy_tta", "val_accuracy_tta", "accuracy/validation_tta", "with test-time augmentation",
           "fraction", always=False, line=("(test-time augmentation:", "{:.2%})"),
           curve=("*", "validation, test-time augmentation")),
]

CSV_FORMATS = {"loss": "{:.6f}", "fraction": "{:.6f}", "seconds": "{:.3f}", "rate": "{:.1f}", "lr": "{:.6g}"}
HTML_FORMATS = {"loss": "{:.4f}", "fraction": "{:.2%}", "seconds": "{:.1f}", "rate": "{:,.0f}", "lr": "{:.3g}"}


def text(metric: Metric, value, formats: dict) -> str:
    """`value` written as `formats` says for the metric's kind; '' when the epoch lacks it, 'n/a' for NaN."""
    if value is None:
        return ""
    if value != value:  # NaN: nothing to measure it on (no validation split)
        return "n/a"
    return formats[metric.kind].format(value)


def epoch_words(metric: Metric, value) -> str | None:
    """The metric in the epoch line ("Validation Accuracy: 40.88%"); None when it has no words there or the epoch
    lacks a metric only some epochs have; 'n/a' (as wide as a number) when there is nothing to measure it on."""
    if metric.line is None or (value is None and not metric.always):
        return None
    words, fmt = metric.line
    if value is None or value != value:  # NaN: no validation split
        return f"{words} {'n/a':>{len(fmt.format(0.0))}}"
    return f"{words} {fmt.format(value)}"
