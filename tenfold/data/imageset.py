"""ImageSet: a labelled set of images as one uint8 array, the type every data source returns."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ImageSet:
    images: np.ndarray  # (N, H, W, 3) uint8, RGB
    labels: np.ndarray  # (N,) int64, indices into classes
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.images.shape[1:3])

    def subset(self, index: np.ndarray) -> "ImageSet":
        return ImageSet(self.images[index], self.labels[index], self.classes)

    def digests(self) -> np.ndarray:
        """(N,) int64: a 64-bit BLAKE2 digest of each image's pixels, to tell the same image wherever it comes from."""
        import hashlib
        return np.array([int.from_bytes(hashlib.blake2b(np.ascontiguousarray(im).tobytes(), digest_size=8).digest(),
                                        "little", signed=True) for im in self.images], dtype=np.int64)
