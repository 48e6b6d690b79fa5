"""Seeing a run: the figures (matplotlib, no GUI needed), report.html, and TensorBoard scalars."""
from tenfold.report.plots import plot_confusion, plot_history, plot_per_class, plot_predictions

__all__ = ["plot_history", "plot_confusion", "plot_per_class", "plot_predictions"]
