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

    @property
    def steps_per_epoch(self) -> int:
        return -(-self.train_images // self.batch_size)

    @property
    def sixteen_bit(self) -> bool:
        return self.precision != "fp32"

    def gpus_used(self, gpus: int) -> int:
        """How many of an instance's `gpus` the job trains on."""
        if self.devices is None:
            return 1
        return gpus if self.devices == "auto" else max(1, min(int(self.devices), gpus))

    def flops_per_epoch(self) -> float:
        return self.train_images * self.train_flops + self.val_images * self.eval_flops
