"""A training job's size, as the cloud plan prices it: images, epochs and the arithmetic per image.

Measured by tenfold.training.workload (which builds the model) and priced by tenfold.cloud.plan (which knows
the GPUs); it lives down here so that neither of those imports the other.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    model: str
    precision: str          # as asked: auto, fp32, bf16 or fp16 (auto: 16-bit on every catalogue GPU)
    epochs: int
    train_images: int       # per epoch
    val_images: int         # per epoch (and per test-time view on the last one)
    batch_size: int         # images per step
    tta_views: int          # extra validation passes after the last epoch (test-time augmentation)
    train_flops: float      # per training image: forward and backward, FLOPs (2 per multiply-add)
    eval_flops: float       # per validation image: forward only, FLOPs
    data_bytes: int         # what `tenfold cloud run` syncs for the data (0: downloaded on the instance)
    data: str               # the data as named
    devices: str | None = None  # `--devices`: N, or auto (every GPU of the instance); None: one GPU
    image_shape: tuple[int, int] = (32, 32)  # (H, W) the model takes
    once_flops: float = 0.0     # FLOPs done once, not per epoch: frozen features, a head fitted first
    depthwise: bool = False     # depthwise convolutions (EfficientNet): far from a GPU's peak

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.train_images // self.batch_size)

    @property
    def sixteen_bit(self) -> bool:
        return self.precision != "fp32"

    def gpus_used(self, gpus: int) -> int:
        """How many GPUs the job asks for on an instance with `gpus` (more than it has: it cannot run there)."""
        if self.devices is None:
            return 1
        return gpus if self.devices == "auto" else int(self.devices)

    def flops_per_epoch(self) -> float:
        return self.train_images * self.train_flops + self.val_images * self.eval_flops

    def total_flops(self) -> float:
        """Every epoch, the last one's test-time views, and what is done once."""
        return self.epochs * self.flops_per_epoch() + self.tta_views * self.val_images * self.eval_flops + \
            self.once_flops
