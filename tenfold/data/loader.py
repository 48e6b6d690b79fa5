"""The dataset lives on the device as uint8; each batch is normalised (and augmented) with tensor ops."""
from __future__ import annotations

import numpy as np
import torch

from tenfold.data.augment import flip_mask, random_flip, translate
from tenfold.data.imageset import ImageSet
from tenfold.data.photo import PhotoPipeline, center_crop, random_resized_crop
from tenfold.kernels import load_library


def channel_stats(images: np.ndarray, max_images: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, 3) images, on the 0-1 scale.

    An evenly spaced sample of `max_images` pins both to about three digits, at a fraction of the cost.
    """
    sample = images[:: max(1, len(images) // max_images)]
    x = torch.from_numpy(np.ascontiguousarray(sample)).reshape(-1, images.shape[-1]).float()
    return (x.mean(0) / 255).tolist(), (x.std(0).clamp_min(1e-3) / 255).tolist()


class DeviceLoader:
    """Batches of (float NCHW in channels_last memory, int64 labels) from a resident uint8 dataset."""

    def __init__(self, data: ImageSet, batch_size: int, device: torch.device, mean: list[float],
                 std: list[float], shuffle: bool = False, augment: bool = False, crop_pad: int = 4,
                 generator: torch.Generator | None = None, flip: str = "random", seed: int = 0,
                 photo: PhotoPipeline | None = None):
        self.images = torch.from_numpy(data.images).to(device).contiguous()  # (N, H, W, 3) uint8
        self.labels = torch.from_numpy(data.labels).to(device)
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.augment, self.crop_pad = shuffle, augment, crop_pad
        # x_normalised = (x_uint8 - 255 mean) / (255 std), as one multiply-add per pixel, per channel
        self.scale = (1.0 / (255.0 * torch.tensor(std))).to(device)
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).to(device)
        self.generator = generator or torch.Generator(device="cpu")
        # flip="random": zero-padded random crop, then a coin per image for the mirror (the classic recipe);
        # "alternating": the mirror by an alternating pattern (see flip_mask), then a reflection-padded shift
        self.flip, self.seed = flip, seed
        self.epoch = 0    # passes made so far (a resumed run sets it): the flip pattern depends on it
        self.mask = None  # (N,) bool: which images this pass mirrors, in "alternating" mode
        self.photo = photo  # a pretrained model's crops (tenfold.data.photo) instead of shifts and flips

    def __len__(self) -> int:
        return len(self.batches(len(self.labels)))

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self):
        n = len(self.labels)
        self.epoch += 1
        if self.augment and self.flip == "alternating":
            pattern = torch.Generator().manual_seed(self.seed * 100_003 + (self.epoch + 1) // 2)  # one per pair
            self.mask = flip_mask(n, self.epoch, torch.rand(n, generator=pattern) < 0.5).to(self.device)
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else None
        for start, end in self.batches(n):
            if order is None:
                idx = torch.arange(start, end, device=self.device)
            else:
                idx = order[start:end]
            yield self.gather(idx), self.labels.index_select(0, idx)

    def batches(self, n: int) -> list[tuple[int, int]]:
        """(start, end) of each batch. In training, a last batch of a single image joins the one before: BatchNorm
        cannot normalise one image (PyTorch raises for BatchNorm1d), and its gradient would be noise."""
        bounds = [(start, min(start + self.batch_size, n)) for start in range(0, n, self.batch_size)]
        if self.shuffle and len(bounds) > 1 and bounds[-1][1] - bounds[-1][0] == 1:
            bounds[-2:] = [(bounds[-2][0], n)]
        return bounds

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """prepare(images[idx]); on the CPU in one pass of tenfold's kernel, when there is one."""
        lib = load_library() if self.device.type == "cpu" and not self.augment else None
        if lib is None:  # index_select: several times faster than advanced indexing for a batch of rows
            return self.prepare(self.images.index_select(0, idx), idx)
        n, h, w, c = len(idx), *self.images.shape[1:]
        out = torch.empty(n, h, w, c)
        idx = idx.contiguous()
        lib.gather_normalize(self.images.data_ptr(), idx.data_ptr(), n, h * w, c, self.scale.data_ptr(),
                             self.shift.data_ptr(), out.data_ptr())
        x = out.permute(0, 3, 1, 2)
        return center_crop(x, self.photo).contiguous(memory_format=torch.channels_last) if self.photo else x

    def prepare(self, u8: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) images number `idx` -> normalised float (B, C, H, W), channels_last in memory."""
        # one fused multiply-add in NHWC; seen as NCHW, that memory is already channels_last
        x = torch.addcmul(self.shift, u8.float(), self.scale).permute(0, 3, 1, 2)
        if self.photo is not None:
            x = random_resized_crop(x, self.photo, self.generator) if self.augment else center_crop(x, self.photo)
            return x.contiguous(memory_format=torch.channels_last)
        if self.augment and self.flip == "alternating":
            x = torch.where(self.mask[idx].view(-1, 1, 1, 1), x.flip(3), x)
            x = translate(x, self.crop_pad, self.generator, "reflect").contiguous(memory_format=torch.channels_last)
        elif self.augment:
            x = random_flip(translate(x, self.crop_pad, self.generator, "constant"), self.generator)
            x = x.contiguous(memory_format=torch.channels_last)
        return x
