"""The report's figures, drawn with matplotlib's object API (no pyplot state, no GUI backend needed).

Each function takes plain data and returns a matplotlib Figure: save it with `fig.savefig(path)`, or let a
notebook display it.
"""
from __future__ import annotations

import math

import numpy as np

from tenfold.training.callbacks import in_notebook
from tenfold.training.metrics import METRICS

WRONG = "#c62828"  # misclassified: red
RIGHT = "#2e7d32"  # correct: green


def new_figure(width: float, height: float):
    """A Figure not registered with pyplot (so nothing accumulates, and no GUI backend is needed); in a notebook
    it displays inline when it is a cell's result."""
    from matplotlib.figure import Figure
    if in_notebook():
        show_figures_inline(Figure)
    return Figure(figsize=(width, height), layout="constrained")


def show_figures_inline(figure_class) -> None:
    """Make IPython draw a Figure result as PNG, as `%matplotlib inline` would, unless it already knows how."""
    from IPython import get_ipython
    from IPython.core.pylabtools import select_figure_formats
    shell = get_ipython()
    try:
        shell.display_formatter.formatters["image/png"].lookup_by_type(figure_class)
    except KeyError:
        select_figure_formats(shell, {"png"})


def series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) where `key` has a number (NaN and missing left out)."""
    pairs = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None and not math.isnan(r[key])]
    return [e for e, _ in pairs], [v for _, v in pairs]


def plot_history(rows: list[dict]):
    """Loss and accuracy per epoch, training and validation: the run's learning curves."""
    fig = new_figure(10, 3.8)
    loss_ax, acc_ax = fig.subplots(1, 2)
    panels = {"loss": loss_ax, "accuracy": acc_ax}
    for m in METRICS:  # each metric with a curve, in its tag's panel (tenfold.training.metrics)
        epochs, values = series(rows, m.key)
        if m.curve and values:
            style, legend = m.curve
            panels[m.tag.split("/")[0]].plot(epochs, values, style, label=legend, markersize=11 if style == "*" else 4)
    for ax, title in ((loss_ax, "Loss"), (acc_ax, "Accuracy")):
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
    acc_ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    for ax in (loss_ax, acc_ax):
        ax.xaxis.get_major_locator().set_params(integer=True)
        if ax.has_data():
            ax.legend()
    return fig


def plot_confusion(confusion: np.ndarray, classes: list[str]):
    """Row-normalised confusion matrix: row = true class, column = predicted; each row sums to 100 %."""
    cm = np.asarray(confusion, dtype=float)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    k = len(classes)
    size = min(12, 2.5 + 0.55 * k)
    fig = new_figure(size + 1.2, size)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, format=lambda v, _: f"{v:.0%}")
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set(xlabel="predicted class", ylabel="true class", title="Confusion matrix (each row sums to 100 %)")
    if k <= 20:  # the numbers stay readable up to about 20 classes
        for i in range(k):
            for j in range(k):
                ax.text(j, i, f"{rates[i, j]:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if rates[i, j] > 0.5 else "black")
    return fig


def plot_per_class(per_class: dict[str, float | None], overall: float):
    """Accuracy of each class as bars, with the overall accuracy as a line."""
    names = list(per_class)
    values = [per_class[c] if per_class[c] is not None else 0.0 for c in names]
    fig = new_figure(max(6.0, 0.6 * len(names) + 2), 3.8)
    ax = fig.subplots()
    bars = ax.bar(range(len(names)), values, color="#4c72b0")
    ax.bar_label(bars, labels=[f"{v:.0%}" if per_class[c] is not None else "n/a" for c, v in zip(names, values)],
                 fontsize=8)
    ax.axhline(overall, color=WRONG, linestyle="--", label=f"overall {overall:.1%}")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set(ylim=(0, 1.08), ylabel="accuracy", title="Accuracy per class")
    ax.yaxis.set_major_formatter(lambda v, _: f"{v:.0%}")
    ax.legend(loc="lower right")
    return fig


def plot_predictions(images: np.ndarray, probs: np.ndarray, classes: list[str], labels=None, top: int = 3,
                     columns: int = 3):
    """The original project's "Softmax Predictions": each image beside its top-`top` probabilities as bars.
    With `labels`, the true class is named above the image and a misclassified one is marked in red."""
    n = len(images)
    rows = max(1, math.ceil(n / columns))
    fig = new_figure(4.2 * columns, 1.9 * rows)
    grid = fig.add_gridspec(rows, 2 * columns, width_ratios=[1, 1.6] * columns)
    top = min(top, probs.shape[1])
    for i in range(n):
        r, c = divmod(i, columns)
        picture, bars = fig.add_subplot(grid[r, 2 * c]), fig.add_subplot(grid[r, 2 * c + 1])
        order = np.argsort(-probs[i])[:top]
        picture.imshow(images[i], interpolation="nearest")
        picture.set_xticks([])
        picture.set_yticks([])
        colors = ["#9e9e9e"] * top
        if labels is not None:
            wrong = order[0] != labels[i]
            picture.set_title(("✗ " if wrong else "") + f"true: {classes[labels[i]]}", fontsize=9,
                              color=WRONG if wrong else "black")
            for spine in picture.spines.values():
                spine.set(color=WRONG if wrong else RIGHT, linewidth=3 if wrong else 1)
            colors = [RIGHT if j == labels[i] else (WRONG if k == 0 else "#9e9e9e") for k, j in enumerate(order)]
        y = np.arange(top)[::-1]  # the most probable class on top
        drawn = bars.barh(y, probs[i][order], color=colors)
        bars.bar_label(drawn, labels=[f"{p:.0%}" for p in probs[i][order]], fontsize=8, padding=2)
        bars.set_yticks(y, [classes[j] for j in order], fontsize=8)
        bars.set_xlim(0, 1.25)  # room for the percentage beside a full bar
        bars.set_xticks([])
        bars.spines[["top", "right", "bottom"]].set_visible(False)
    fig.suptitle("Softmax predictions" + (" (true class in green, misclassified in red)" if labels is not None
                                          else ""))
    return fig
