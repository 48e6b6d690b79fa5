"""tenfold: train image classifiers fast, on a laptop CPU, a local GPU or a rented cloud GPU."""

__version__ = "0.1.0"
