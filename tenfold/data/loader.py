"""The dataset lives on the device as uint8; each batch is normalised (and augmented) with tensor ops."""
from __future__ import annotations

import numpy as np
import torch

from tenfold.data.dataset import ImageSet
from tenfold.kernels import load_library


def channel_stats(images: np.ndarray, max_images: int = 10_000) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 (N, H, W, 3) images, on the 0-1 scale.

    An evenly spaced sample of `max_images` pins both to about three digits, at a fraction of the cost.
    """
    sample = images[:: max(1, len(images) // max_images)]
    x = torch.from_numpy(np.ascontiguousarray(sample)).reshape(-1, images.shape[-1]).float()
    return (x.mean(0) / 255).tolist(), (x.std(0).clamp_min(1e-3) / 255).tolist()


def random_crop(x: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Pad the batch (N, C, H, W) with zeros and cut each image at its own random offset."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=gen, device=gen.device).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n, 1, 1), generator=gen, device=gen.device).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy).expand(n, h, w)  # (N, H, W)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx).expand(n, h, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # gather in NHWC, back to NCHW


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(x.shape[0], generator=gen, device=gen.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)


class DeviceLoader:
    """Batches of (float NCHW in channels_last memory, int64 labels) from a resident uint8 dataset."""

    def __init__(self, data: ImageSet, batch_size: int, device: torch.device, mean: list[float],
                 std: list[float], shuffle: bool = False, augment: bool = False, crop_pad: int = 4,
                 generator: torch.Generator | None = None):
        self.images = torch.from_numpy(data.images).to(device).contiguous()  # (N, H, W, 3) uint8
        self.labels = torch.from_numpy(data.labels).to(device)
        self.batch_size, self.device = batch_size, device
        self.shuffle, self.augment, self.crop_pad = shuffle, augment, crop_pad
        # x_normalised = (x_uint8 - 255 mean) / (255 std), as one multiply-add per pixel, per channel
        self.scale = (1.0 / (255.0 * torch.tensor(std))).to(device)
        self.shift = (-torch.tensor(mean) / torch.tensor(std)).to(device)
        self.generator = generator or torch.Generator(device="cpu")

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    @property
    def num_images(self) -> int:
        return len(self.labels)

    def __iter__(self):
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator).to(self.device) if self.shuffle else None
        for start in range(0, n, self.batch_size):
            if order is None:
                yield self.prepare(self.images[start:start + self.batch_size]), self.labels[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                yield self.gather(idx), self.labels.index_select(0, idx)

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """prepare(images[idx]); on the CPU in one pass of tenfold's kernel, when there is one."""
        lib = load_library() if self.device.type == "cpu" and not self.augment else None
        if lib is None:  # index_select: several times faster than advanced indexing for a batch of rows
            return self.prepare(self.images.index_select(0, idx))
        n, h, w, c = len(idx), *self.images.shape[1:]
        out = torch.empty(n, h, w, c)
        idx = idx.contiguous()
        lib.gather_normalize(self.images.data_ptr(), idx.data_ptr(), n, h * w, c, self.scale.data_ptr(),
                             self.shift.data_ptr(), out.data_ptr())
        return out.permute(0, 3, 1, 2)

    def prepare(self, u8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, H, W, C) -> normalised float (B, C, H, W), channels_last in memory."""
        # one fused multiply-add in NHWC; seen as NCHW, that memory is already channels_last
        x = torch.addcmul(self.shift, u8.float(), self.scale).permute(0, 3, 1, 2)
        if self.augment:
            x = random_flip(random_crop(x, self.crop_pad, self.generator), self.generator)
            x = x.contiguous(memory_format=torch.channels_last)
        return x
