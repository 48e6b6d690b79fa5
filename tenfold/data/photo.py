"""The photo pipeline of pretrained models: what is cached, and the crops made on the device for each batch.

Photos are decoded once with their aspect ratio kept (shorter side resized to `stored`, then the centre square),
and cached as uint8 (N, stored, stored, 3). Training takes a random-resized crop (Szegedy et al., 2015, as
torchvision's RandomResizedCrop) and a coin-flip mirror per image; evaluation and prediction take the centre
`crop_pct` of the square (timm's convention), both at the model's `input_size`.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PhotoPipeline:
    input_size: int           # pixels, square: what the model takes (224 for EfficientNet-Lite0)
    crop_pct: float = 0.875   # evaluation: the centre crop_pct of the stored square (224 of 256)
    min_scale: float = 0.35   # training: crops cover 35-100 % of the stored square's area (fastai's choice)

    @property
    def stored(self) -> int:
        """The cached square's side, pixels: a little above the input size, room for the crops."""
        return int(round(self.input_size / self.crop_pct))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_cfg(cls, cfg: dict) -> "PhotoPipeline":
        """From a model's pretrained_cfg (timm's names: input_size (C, H, W), crop_pct)."""
        return cls(int(cfg["input_size"][-1]), float(cfg.get("crop_pct", 0.875)))


def center_crop(x: torch.Tensor, pipe: PhotoPipeline) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, input, input): the centre crop_pct of the shorter side, resized (antialiased) if the
    stored images are not the pipeline's own size (CIFAR-10's 32x32, say)."""
    h, w = x.shape[-2:]
    side = max(1, int(round(min(h, w) * pipe.crop_pct)))
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, :, top:top + side, left:left + side]
    if side != pipe.input_size:
        x = F.interpolate(x, size=(pipe.input_size, pipe.input_size), mode="bilinear", align_corners=False,
                          antialias=side > pipe.input_size)
    return x


def random_resized_crop(x: torch.Tensor, pipe: PhotoPipeline, gen: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """(N, C, H, W) -> (N, C, input, input): per image, a random box of `min_scale`-1 of the area with an aspect
    ratio in `ratio` (log-uniform), mirrored left-right with probability 1/2, resampled bilinearly. All images
    in one `grid_sample` call: the boxes are affine maps of the output grid."""
    n = x.shape[0]
    u = torch.rand(n, 4, generator=gen, device=gen.device).to(x.device)  # area, ratio, x position, y position
    area = pipe.min_scale + (1 - pipe.min_scale) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    r = log_r.exp()
    # box width and height as fractions of the image's, clamped inside it (torchvision falls back to a centre
    # crop after 10 tries; clamping keeps the same distribution for the boxes that fit)
    bw = (area * r).sqrt().clamp(max=1.0)
    bh = (area / r).sqrt().clamp(max=1.0)
    cx = (u[:, 2] * 2 - 1) * (1 - bw)   # box centre in [-1, 1] grid units, box kept inside the image
    cy = (u[:, 3] * 2 - 1) * (1 - bh)
    mirror = torch.rand(n, generator=gen, device=gen.device).to(x.device) < 0.5
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = torch.where(mirror, -bw, bw)
    theta[:, 0, 2] = cx
    theta[:, 1, 1] = bh
    theta[:, 1, 2] = cy
    grid = F.affine_grid(theta, [n, x.shape[1], pipe.input_size, pipe.input_size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
