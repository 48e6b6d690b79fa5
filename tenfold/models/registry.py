"""Models made by name; user networks from `path/to/net.py:factory`."""
from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tenfold.errors import ConfigError
from tenfold.models.blocks import glorot_init

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def pretrained_cfg(name: str) -> dict | None:
    """A registered pretrained model's settings (timm's names: input_size, crop_pct, mean, std, weights), else
    None (a model trained from scratch, at the data's own size)."""
    return getattr(_REGISTRY.get(name), "pretrained_cfg", None)


def is_user_model(spec: str) -> bool:
    """`path/to/net.py:factory`, as opposed to a registered name."""
    return ":" in spec and spec.rsplit(":", 1)[0].endswith(".py")


def create_model(name: str, num_classes: int = 10, image_shape=(32, 32), channels: int = 3,
                 **kwargs) -> nn.Module:
    """A registered model, or a user's `file.py:factory`, materialised for `image_shape` inputs."""
    if is_user_model(name):
        factory = load_user_model(name)
    elif name in _REGISTRY:
        factory = _REGISTRY[name]
    else:
        raise ConfigError(f"unknown model '{name}'; choose one of: {', '.join(list_models())}, "
                          "or give path/to/net.py:factory")
    model = call_factory(factory, name, num_classes=num_classes, **kwargs)
    return materialise(model, name, num_classes, image_shape, channels)


def call_factory(factory: Callable, name: str, **kwargs) -> nn.Module:
    """Pass only the arguments the factory declares (num_classes, keep_prob, ...)."""
    params = inspect.signature(factory).parameters
    takes_all = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args = {k: v for k, v in kwargs.items() if takes_all or k in params}
    try:
        model = factory(**args)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"model '{name}' could not be built: {e}")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model '{name}' returned {type(model).__name__}, not a torch.nn.Module")
    return model


def materialise(model: nn.Module, name: str, num_classes: int, image_shape, channels: int) -> nn.Module:
    """Run one dummy batch so lazy layers learn their input sizes; check the output is (N, classes)."""
    h, w = image_shape
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, channels, h, w))
    except Exception as e:  # the user's code: whatever it raises is theirs to see, in one line
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"model '{name}' fails on a batch of 2 {channels}x{h}x{w} images in evaluation mode "
                          f"({type(e).__name__}: {first})")
    model.train(was_training)
    glorot_init(model)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"model '{name}' outputs {shape} for a batch of 2; expected (2, {num_classes})")
    return model


def load_user_model(spec: str) -> Callable[..., nn.Module]:
    """`path/to/net.py:conv_net` -> the factory function `conv_net` from that file."""
    path, _, attr = spec.rpartition(":")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"model file {path} does not exist")
    module_spec = importlib.util.spec_from_file_location(f"tenfold_user_{file.stem}", file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as e:  # the user's code: any error in it is theirs to see, in one line
        raise ConfigError(f"model file {path} failed to load: {e.__class__.__name__}: {e}")
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"model file {path} has no function '{attr}'")
    return factory
