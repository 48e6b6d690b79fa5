"""Training: fit() and its callbacks, checkpoints, devices, and the `tenfold train` run."""
from tenfold.training.callbacks import Callback, History
from tenfold.training.fit import evaluate, fit

__all__ = ["fit", "evaluate", "Callback", "History"]
