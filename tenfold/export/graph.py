"""A run's network with its preprocessing and softmax around it: the graph that `tenfold export` writes."""
from __future__ import annotations

import copy

import torch
from torch import nn

from tenfold.data.photo import PhotoPipeline, center_crop


class Preprocessed(nn.Module):
    """uint8 RGB images (N, H, W, 3) at the run's stored size -> class probabilities (N, classes), float32.

    The same arithmetic as `tenfold predict --tta 0`: each channel normalised as the run's loader does
    (x * 1/(255 std) - mean/std, one multiply-add), a pretrained model's centre crop (tenfold.data.photo), the
    network, then softmax. Decoding and resizing a file to (H, W) stay outside (Pillow, as tenfold.data.decode).
    """

    def __init__(self, model: nn.Module, mean: list[float], std: list[float], photo: PhotoPipeline | None = None):
        super().__init__()
        self.model, self.photo = model, photo
        self.register_buffer("scale", 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32)))  # (3,)
        self.register_buffer("shift", -torch.tensor(mean, dtype=torch.float32) / torch.tensor(std))  # (3,)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.addcmul(self.shift, images.float(), self.scale).permute(0, 3, 1, 2)  # (N, 3, H, W)
        if self.photo is not None:
            x = center_crop(x, self.photo)  # (N, 3, input, input)
        return self.model(x).float().softmax(1)


def plain_pytorch(model: nn.Module) -> nn.Module:
    """A copy of `model` in fp32 on the CPU, every block on PyTorch's own operators (not tenfold's fused C kernel, which
    no exporter can see into), which give the same numbers."""
    model = copy.deepcopy(model).float().cpu().to(memory_format=torch.contiguous_format).eval()
    for block in model.modules():
        if hasattr(block, "fast_path"):
            block.fast_path = "pytorch"
    return model
