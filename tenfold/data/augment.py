"""Batched augmentation on the device: one random draw per image, applied to the whole batch with tensor ops."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def random_flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(x.shape[0], generator=gen, device=gen.device) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)


def flip_mask(n: int, epoch: int, base: torch.Tensor) -> torch.Tensor:
    """Alternating flip: on odd epochs (1, 3, ...) the images `base` says; on even epochs exactly the others.
    Every image is seen flipped and unflipped in each pair of epochs, with less variance than coin flips."""
    return base if epoch % 2 == 1 else ~base


def translate(x: torch.Tensor, pad: int, gen: torch.Generator, mode: str = "reflect") -> torch.Tensor:
    """Shift each image of (N, C, H, W) by up to `pad` pixels each way, one random offset per image; the edge is
    filled by reflection, or with zeros (mode="constant": the classic pad-and-crop). One slice copy per offset
    for the images that drew it (faster than a gather with per-pixel indices)."""
    if pad == 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad), mode=mode)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen, device=gen.device).to(x.device)
    out = torch.empty_like(x)
    for sy in range(2 * pad + 1):
        for sx in range(2 * pad + 1):
            idx = ((dy == sy) & (dx == sx)).nonzero().squeeze(1)
            if len(idx):
                out[idx] = padded[idx, :, sy:sy + h, sx:sx + w]
    return out
