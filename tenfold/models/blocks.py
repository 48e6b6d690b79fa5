"""The original Udacity CIFAR-10 project's vocabulary as PyTorch modules.

Input channels and feature counts are inferred on the first forward pass (lazy modules), so a network
reads like the original: conv2d_maxpool(6, (5, 5), (1, 1), (2, 2), (2, 2)) -> ... -> output(10).
Padding is TensorFlow's SAME: output size = ceil(input / stride). Weights start Glorot-uniform with zero biases,
as in Keras and TensorFlow (marked here, applied by `glorot_init` once the lazy layers know their sizes).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def glorot(layer: nn.Module) -> nn.Module:
    layer._tenfold_glorot = True
    return layer


def glorot_init(model: nn.Module) -> None:
    """Glorot-uniform weights and zero biases for every layer the blocks marked."""
    for m in model.modules():
        if getattr(m, "_tenfold_glorot", False):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def same_padding(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow SAME: (before, after) so that the output is ceil(size / s); the extra pixel goes after."""
    total = max((math.ceil(size / s) - 1) * s + k - size, 0)
    return total // 2, total - total // 2


class SamePad(nn.Module):
    """Pads (N, C, H, W) for a k x k window at stride s; `value` -inf for max-pooling."""

    def __init__(self, k, s, value: float = 0.0):
        super().__init__()
        self.k, self.s, self.value = pair(k), pair(s), value

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.k[0], self.s[0])
        left, right = same_padding(x.shape[-1], self.k[1], self.s[1])
        if top == bottom == left == right == 0:
            return x
        return F.pad(x, (left, right, top, bottom), value=self.value)


def same_conv(outputs: int, ksize, strides) -> nn.Module:
    k, s = pair(ksize), pair(strides)
    if s == (1, 1) and k[0] % 2 and k[1] % 2:  # symmetric: let the convolution pad, no extra copy
        return glorot(nn.LazyConv2d(outputs, k, s, padding=(k[0] // 2, k[1] // 2)))
    return nn.Sequential(SamePad(k, s), glorot(nn.LazyConv2d(outputs, k, s)))


def same_maxpool(ksize, strides) -> nn.Module:
    k, s = pair(ksize), pair(strides)
    return nn.Sequential(SamePad(k, s, value=-math.inf), nn.MaxPool2d(k, s))


class ConvMaxPool(nn.Sequential):
    """[conv, pool, relu]. On the CPU with a 2x2 pool, the three can run as one fused kernel
    (tenfold.kernels.fused), which gives the same numbers; `fast_path` ("fused" or "pytorch") says which, as
    measured for this machine and shape at the start of a run (tenfold.training.fastpath)."""

    fast_path = "fused"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, pool = self[0], self[1][-1]
        if (self.fast_path == "fused" and isinstance(conv, nn.Conv2d)
                and not isinstance(conv.weight, nn.parameter.UninitializedParameter)):
            from tenfold.kernels.fused import ConvPoolReLU, applies
            if applies(x, conv, pool):
                return ConvPoolReLU.apply(x, conv.weight, conv.bias)
        return super().forward(x)


def conv2d_maxpool(outputs: int, ksize, strides, pool_ksize, pool_strides) -> nn.Sequential:
    """Convolution (SAME) -> max-pool (SAME) -> ReLU.

    ReLU after the pool equals ReLU before it (both are monotone) and touches 4x fewer values.
    """
    return ConvMaxPool(same_conv(outputs, ksize, strides), same_maxpool(pool_ksize, pool_strides),
                       nn.ReLU(inplace=True))


def flatten() -> nn.Module:
    """(N, C, H, W) -> (N, C*H*W)."""
    return nn.Flatten()


def fully_conn(outputs: int) -> nn.Sequential:
    """Dense layer with ReLU."""
    return nn.Sequential(glorot(nn.LazyLinear(outputs)), nn.ReLU(inplace=True))


def dropout(keep_prob: float) -> nn.Module:
    """Dropout in the original's terms: keep_prob is the probability a unit is kept."""
    if not 0.0 < keep_prob <= 1.0:
        raise ValueError(f"keep_prob must be in (0, 1], got {keep_prob}")
    return nn.Dropout(p=1.0 - keep_prob)


def output(classes: int) -> nn.Module:
    """Dense layer with no activation: the logits."""
    return glorot(nn.LazyLinear(classes))
