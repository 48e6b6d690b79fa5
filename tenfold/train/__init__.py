"""Training: fit() and its callbacks, checkpoints, devices, and the `tenfold train` run."""
from tenfold.train.callbacks import Callback, History
from tenfold.train.fit import evaluate, fit

__all__ = ["fit", "evaluate", "Callback", "History"]
