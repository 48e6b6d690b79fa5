"""Presets: a model with the optimiser, schedule, augmentation, epochs and test-time augmentation that suit it.
`tenfold train --preset NAME` starts from one; any flag given as well overrides it."""
from __future__ import annotations

from dataclasses import dataclass, field

import math

from tenfold.config import RESUME_SETTINGS, TrainConfig
from tenfold.errors import ConfigError

# airbench's SGD settings, per image: a learning rate of 11.5 per 1024 (1 + 1/(1 - momentum)) images, applied to the
# mean loss of a batch, and a decay of 0.0153 per kilo-step at the peak learning rate.
MOMENTUM = 0.85
PER_IMAGE_LR = 11.5 / (1024 * (1 + 1 / (1 - MOMENTUM)))


def fast_recipe(model: str, epochs: int, batch_size: int) -> dict:
    lr = PER_IMAGE_LR * batch_size                               # for the batch's mean loss
    decay = 0.0153 * batch_size / (1024 * (1 + 1 / (1 - MOMENTUM)))  # weights shrink this much per step at peak lr
    return {"model": model, "epochs": epochs, "batch_size": batch_size, "optimizer": "sgd", "lr": lr,
            "momentum": MOMENTUM, "weight_decay": decay / lr, "bias_lr_scale": 64.0, "label_smoothing": 0.2,
            "schedule": "onecycle", "lookahead": True, "augment": True, "flip": "alternating", "translate": 2,
            "precision": "auto", "tta": 2}


# Fine-tuning a pretrained net on a few hundred photos (see BENCHMARKS.md, "Your own photos"): Adam at 1e-3 for the
# new head (the backbone's layers at 0.1-0.5 of it, see PretrainedClassifier.lr_groups), one epoch of head only, the
# one-cycle schedule, mild label smoothing, random-resized crops and mirrors, the mirror as a test-time view.
FINETUNE = {"model": "efficientnet_lite0", "epochs": 4, "head_first": True, "batch_size": 32, "optimizer": "adam",
            "lr": 1e-3, "weight_decay": 0.0, "label_smoothing": 0.1, "schedule": "onecycle", "augment": True,
            "precision": "auto", "tta": 1, "val_split": 0.2}
FINETUNE_EXPECTED = "about 95 % on 250 photos of 2 classes; about 2 minutes on 2 CPU cores"


@dataclass
class Preset:
    name: str
    description: str
    expected: str                       # accuracy and time, as measured (see BENCHMARKS.md)
    settings: dict = field(default_factory=dict)


PRESETS = {p.name: p for p in [
    Preset("lenet5", "the seed's LeNet-5 with Adam, as in the original project",
           "about 62 % after 5 epochs; 2 s per epoch on 2 AVX-512 CPU cores", {"model": "lenet5"}),
    Preset("fast", "airbench94-class net (widths 64/256/256), for GPUs",
           "airbench94's recipe: about 94 % in 10 epochs (not yet timed on a GPU here)",
           fast_recipe("airnet94", 10, 1024)),
    Preset("fast-small", "the same net for 9 epochs: sized for a few CPU cores",
           "about 90.5 % (with TTA); 8.5 minutes on 2 CPU cores with bf16 units", fast_recipe("airnet94", 9, 1024)),
    Preset("fast-tiny", "widths 32/64/128: the quickest to 85 % on a CPU",
           "about 86 % (86.5 % with TTA); 3.2 minutes on 2 CPU cores with bf16 units",
           fast_recipe("airnet_tiny", 10, 1024)),
    Preset("finetune", "ImageNet-pretrained EfficientNet-Lite0 fine-tuned on your photos (head first, then all)",
           FINETUNE_EXPECTED, FINETUNE),
]}


def preset_config(name: str | None) -> TrainConfig:
    """The defaults, with the preset's settings on top (flags then go on top of this)."""
    return TrainConfig().updated(**preset_settings(name)) if name else TrainConfig()


def preset_settings(name: str) -> dict:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; choose one of: {', '.join(PRESETS)} (see `tenfold presets`)")
    return {**PRESETS[name].settings, "preset": name}


def resolve_config(preset: str | None, flags: dict, resume: dict | None = None) -> TrainConfig:
    """The settings a run trains with, validated: TrainConfig's defaults, then the preset's, then the flags given
    (a flag whose value is None was not given). A resumed run (`resume`: the config its checkpoint saved) keeps its
    settings: only RESUME_SETTINGS may change; ConfigError names any other flag that differs from the run's own.
    The one place the CLI, the API, the launcher and cloud jobs turn a command into a TrainConfig."""
    flags = {k: v for k, v in flags.items() if v is not None and k != "preset"}
    if resume is None:
        return preset_config(preset).updated(**flags).validate()
    saved = TrainConfig.from_dict(resume)
    changed = [k for k, v in flags.items() if k not in RESUME_SETTINGS and not same(k, v, getattr(saved, k))]
    changed += ["preset"] if preset is not None and preset != saved.preset else []
    if changed:
        raise ConfigError("a resumed run keeps its settings: "
                          + ", ".join(f"--{k.replace('_', '-')} (the run's: {shown(getattr(saved, k))})" for k in changed)
                          + f" cannot change; only {', '.join('--' + k for k in RESUME_SETTINGS)} may "
                          "(start a new run with --out for the rest)")
    return saved.updated(**{k: v for k, v in flags.items() if k in RESUME_SETTINGS}).validate()


def same(name: str, given, saved) -> bool:
    """Whether a flag given to a resume says what the run already has (a number as printed: 0.773781 is 0.95^5)."""
    if isinstance(given, float) and isinstance(saved, (int, float)) and not isinstance(saved, bool):
        return math.isclose(given, saved, rel_tol=1e-6)
    return given == saved


def shown(value) -> str:
    return "not set" if value is None else "on" if value is True else "off" if value is False else f"{value:g}" \
        if isinstance(value, float) else str(value)
