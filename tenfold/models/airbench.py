"""Fast CIFAR-10 nets after the ideas of airbench (Keller Jordan, 2024) and Page's ResNet-9, written for tenfold:
a frozen 2x2 patch-whitening layer, then conv-pool-BatchNorm-GELU groups without residuals, identity-initialised
convs without bias, BatchNorm scales frozen, global max-pool and a scaled linear head.

Shapes for 32x32 inputs: (N, 3, 32, 32) -> whiten (N, 24, 31, 31) -> group 1 (N, w1, 15, 15)
-> group 2 (N, w2, 7, 7) -> group 3 (N, w3, 3, 3) -> max-pool (N, w3) -> logits (N, classes).
"""
from __future__ import annotations

import torch
from torch import nn

from tenfold.models.registry import register_model

# The whitening eps and BatchNorm momentum are settings (TrainConfig.whiten_eps, bn_momentum: config.json records
# them); these defaults are airbench's, for a model made on its own.
WHITEN_EPS = 5e-4     # added to the patch covariance's eigenvalues: keeps noise directions from blowing up
BN_MOMENTUM = 0.4     # PyTorch's convention (weight of the new batch): running stats settle within an epoch
HEAD_SCALE = 1 / 9    # logits scale: with label smoothing, keeps early steps from saturating the softmax


class Whiten(nn.Conv2d):
    """2x2 patch whitening: filters are the eigenvectors of the training patches' covariance scaled by
    1/sqrt(eigenvalue), and their negations (so a following GELU keeps both signs). Weights frozen."""

    def __init__(self, channels: int = 3, patch: int = 2, eps: float = WHITEN_EPS):
        super().__init__(channels, 2 * channels * patch * patch, patch, bias=True)
        self.weight.requires_grad_(False)
        self.eps = eps

    @torch.no_grad()
    def init_from(self, images: torch.Tensor) -> None:
        """`images`: normalised float (N, C, H, W) training images (a few thousand are plenty)."""
        c, k = self.in_channels, self.kernel_size[0]
        patches = images.float().unfold(2, k, 1).unfold(3, k, 1)           # (N, C, H', W', k, k)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * k * k)  # (N H' W', C k k)
        patches = patches - patches.mean(0)
        cov = patches.T @ patches / len(patches)                          # (C k k, C k k)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = (eigenvectors.T / (eigenvalues + self.eps).sqrt()[:, None]).reshape(-1, c, k, k)
        self.weight.copy_(torch.cat([filters, -filters]))
        self.bias.zero_()


class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with its scale frozen at 1: only the shift learns (as airbench found best)."""

    def __init__(self, width: int, momentum: float = BN_MOMENTUM):
        super().__init__(width, eps=1e-12, momentum=momentum)
        self.weight.requires_grad_(False)


def conv(c_in: int, c_out: int) -> nn.Conv2d:
    layer = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    with torch.no_grad():  # identity init for the first c_in filters: each group starts close to a pass-through
        nn.init.dirac_(layer.weight[:c_in])
    return layer


def group(c_in: int, c_out: int, momentum: float) -> nn.Sequential:
    """conv -> 2x2 max-pool -> BN -> GELU -> conv -> BN -> GELU: the spatial size halves."""
    return nn.Sequential(conv(c_in, c_out), nn.MaxPool2d(2), BatchNorm(c_out, momentum), nn.GELU(),
                         conv(c_out, c_out), BatchNorm(c_out, momentum), nn.GELU())


class AirNet(nn.Module):
    def __init__(self, widths: tuple[int, int, int], num_classes: int = 10, bn_momentum: float = BN_MOMENTUM,
                 whiten_eps: float = WHITEN_EPS):
        super().__init__()
        self.whiten = Whiten(eps=whiten_eps)
        c = (self.whiten.out_channels, *widths)
        self.groups = nn.Sequential(*(group(c[i], c[i + 1], bn_momentum) for i in range(3)))
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def init_from_data(self, images: torch.Tensor) -> None:
        """Data-dependent initialisation, called once before training (not on resume)."""
        self.whiten.init_from(images)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.groups(nn.functional.gelu(self.whiten(x)))
        # Global max-pool: (N, w3). torch.max, not amax: compiled, amax's backward gives non-finite gradients in
        # bf16 and fp16 (pytorch/pytorch#186799).
        x = x.flatten(2).max(2).values
        return self.head(x) * HEAD_SCALE


@register_model
def airnet94(num_classes: int = 10, bn_momentum: float = BN_MOMENTUM,
             whiten_eps: float = WHITEN_EPS) -> nn.Module:
    """airbench94-class widths, for GPUs: 94 % on CIFAR-10 in about 10 epochs."""
    return AirNet((64, 256, 256), num_classes, bn_momentum, whiten_eps)


@register_model
def airnet_small(num_classes: int = 10, bn_momentum: float = BN_MOMENTUM,
                 whiten_eps: float = WHITEN_EPS) -> nn.Module:
    """Narrower, for a few CPU cores."""
    return AirNet((64, 128, 256), num_classes, bn_momentum, whiten_eps)


@register_model
def airnet_tiny(num_classes: int = 10, bn_momentum: float = BN_MOMENTUM,
                whiten_eps: float = WHITEN_EPS) -> nn.Module:
    """Narrower still: the fastest way to 85 % on a CPU."""
    return AirNet((32, 64, 128), num_classes, bn_momentum, whiten_eps)
