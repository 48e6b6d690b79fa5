"""Datasets as uint8 arrays: the official CIFAR-10 archive and image folders (or archives of them)."""
from tenfold.data.dataset import ImageSet, Splits, open_dataset, open_test_set
from tenfold.data.loader import DeviceLoader

__all__ = ["ImageSet", "Splits", "open_dataset", "open_test_set", "DeviceLoader"]
