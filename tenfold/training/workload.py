"""A training job's size before it runs (tenfold.workload.Workload): its data surveyed, its model's FLOPs counted.

The forward FLOPs are counted by PyTorch (torch.utils.flop_counter.FlopCounterMode: 2 per multiply-add of every
convolution and matrix product) on the job's own model at its own input size, so a user's network is counted as
exactly as a registered one. A training step is taken as 3 forward passes (the backward pass computes gradients
for both inputs and weights: twice the forward's work), the usual rule (Kaplan et al., 2020, "Scaling Laws for
Neural Language Models", section 2.1; nanoGPT's MFU estimate). The counter's own backward formula is not used:
it counts a depthwise convolution's backward about 40 times too high (EfficientNet-Lite0, PyTorch 2.13).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from tenfold.config import TrainConfig
from tenfold.errors import ConfigError
from tenfold.data.survey import survey
from tenfold.models import create_model, pretrained_cfg
from tenfold.training.recipe import tta_views
from tenfold.training.run import check_pretrained, model_settings
from tenfold.workload import Workload


def measure_workload(config: TrainConfig, devices: str | None = None) -> Workload:
    """The size of training `config` (CIFAR-10 when its data is `cifar10`) on `devices` (as `--devices`).
    DataError, ConfigError as training would raise them."""
    if config.device not in ("auto", "cuda") and not config.device.startswith("cuda:"):
        raise ConfigError(f"--device {config.device}: `cloud plan` prices GPU time; leave --device out (or cuda)")
    photo = check_pretrained(config, pretrained_cfg(config.model))
    size = survey(config.data, config.val_split, config.image_size)
    shape = (photo.input_size, photo.input_size) if photo else size.shape
    train_flops, eval_flops, depthwise = count_flops(config, size.classes, shape)
    views = len(tta_views(torch.zeros(1, 1, 4, 4), config.tta))  # the last epoch's validation, in each view
    images = size.train + size.val
    once = 0.0
    if config.freeze:  # the backbone's features of each image and its mirror, once; then the head alone, per epoch
        once, train_flops, eval_flops = 2 * images * eval_flops, 0.0, 0.0
    elif config.head_first:  # the frozen features once, for the head fitted before the whole net trains
        once = images * eval_flops
    return Workload(config.model, config.precision, config.epochs, size.train, size.val, config.batch_size,
                    views if config.tta else 0, train_flops, eval_flops, size.bytes, config.data, devices, shape,
                    once, depthwise)


def count_flops(config: TrainConfig, classes: int, shape: tuple[int, int]) -> tuple[float, float, bool]:
    """FLOPs per image of a training step (forward and backward: 3 forwards) and of an evaluation (forward), and
    whether the model has depthwise convolutions."""
    torch.manual_seed(0)
    model = create_model(config.model, num_classes=classes, image_shape=shape, pretrained=False,
                         **model_settings(config.to_dict()))
    x = torch.randn(2, 3, *shape)  # (2, 3, H, W)
    for block in model.modules():
        if hasattr(block, "fast_path"):
            block.fast_path = "pytorch"  # the fused C kernel is invisible to the counter (same arithmetic)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model.eval()(x)
    forward = counter.get_total_flops() / len(x)
    depthwise = any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
                    for m in model.modules())
    return 3 * forward, forward, depthwise
