"""Typed configuration: defaults here, then flags. One place for every hyperparameter, with units."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from tenfold.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # arithmetic of the forward pass; see training.device
RESUME_SETTINGS = ("epochs", "device", "precision", "compile", "threads")  # what a resume may change: how, not what, it trains


def setting(default, help: str, choices: tuple | None = None, metavar: str | None = None, negatable: bool = False,
            show_default: bool = True):
    """A TrainConfig field with what its `tenfold train --flag` says: the help (the default is added from the
    field itself), its choices, whether it has a --no- form. The one place a setting is written down."""
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar,
                                            "negatable": negatable, "show_default": show_default})


@dataclass
class TrainConfig:
    data: str = setting("cifar10", "'cifar10' (downloads the official archive; default), an image folder with "
                        "train/<class>/*, or a .tar/.tar.gz/.zip of one", show_default=False)
    model: str = setting("lenet5", "registered model name (see 'tenfold models') or path/to/net.py:factory")
    epochs: int = setting(10, "passes over the training data")
    # images per optimiser step (LeNet on 2 CPU cores: faster than 128, as accurate)
    batch_size: int = setting(256, "images per step")
    lr: float = setting(2e-3, "learning rate")  # the original's Adam 1e-3, scaled up with the batch
    optimizer: str = setting("adam", "adam, or sgd with momentum", choices=("adam", "sgd"))
    momentum: float = setting(0.9, "SGD momentum")
    weight_decay: float = setting(0.0, "L2 weight decay per step")
    keep_prob: float = setting(0.5, "dropout keep probability, in (0, 1]")
    augment: bool = setting(False, "random crop (4 px padding) and flip each batch")
    # the last images of each class, when there is no val/ folder
    val_split: float = setting(0.1, "fraction of each class held out for validation")
    image_size: int | None = setting(None, "resize images to this square size (default: their own, if uniform)")
    seed: int = setting(0, "random seed: initialisation, shuffling, dropout, augmentation")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps")
    # The fast recipes' pieces (see tenfold/presets.py); the defaults leave the seed's LeNet as it was.
    preset: str | None = setting(None, "start from a preset (see 'tenfold presets'); other flags override it")
    label_smoothing: float = setting(0.0, "label smoothing: weight moved from the true class to all, in [0, 1)")
    # onecycle: linear warm-up over 23 % of the steps, then linear decay
    schedule: str = setting("constant", "learning-rate schedule", choices=("constant", "onecycle"))
    # biases learn this many times faster (their weight decay as much slower)
    bias_lr_scale: float = setting(1.0, "SGD: biases' learning rate multiplier")
    warmup: float = setting(0.23, "onecycle: the fraction of the steps over which the rate rises (airbench's "
                            "triangle: from 0.2 x --lr to --lr, then down to 0.07 x)")
    lookahead: bool = setting(False, "average the weights every few steps (slow and fast weights)")
    lookahead_every: int = setting(5, "with --lookahead: steps between averages")
    # the slow weights' decay at the end (it grows with the cube of the progress from 0)
    lookahead_decay: float = setting(0.95 ** 5, "with --lookahead: the slow weights' final decay")
    # random: each image a coin; alternating: flip pattern A, then not-A
    flip: str = setting("random", "with --augment: how images are mirrored", choices=("random", "alternating"))
    translate: int = setting(4, "with --augment: shift by up to this many pixels")
    # autocast of the forward pass (auto: see training.device.resolve_precision; fp16 adds loss scaling)
    precision: str = setting("fp32", "arithmetic of the forward pass (the fast presets: auto = bf16 where the "
                             "hardware has it, fp16 on older GPUs)", choices=PRECISIONS)
    # GPUs; it did not pay on 2 CPU cores
    compile: bool = setting(False, "torch.compile the model for training (a one-off compile first; for GPUs)",
                            negatable=True)
    tta: int = setting(0, "test-time views: 0, 1 (+ mirror) or 2 (6 views)", choices=(0, 1, 2))
    threads: int | None = setting(None, "CPU threads (default: the cores this process may use, from its affinity "
                                  "and cgroup quota)")
    # Pretrained models (efficientnet_lite0): how the backbone is fine-tuned
    weights: str | None = setting(None, "pretrained models: a local weights file (state dict or tenfold checkpoint) "
                                  "of the same architecture, instead of ImageNet's", metavar="FILE")
    head_first: bool = setting(False, "pretrained models: fit the new head to the frozen features before training "
                               "all layers (finetune: on)", negatable=True)
    freeze: bool = setting(False, "pretrained models: compute the backbone's features once and train only the "
                           "head (seconds)")

    def validate(self) -> "TrainConfig":
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}"),
            (0.0 < self.keep_prob <= 1.0, f"--keep-prob must be in (0, 1], got {self.keep_prob}"),
            (0 < self.lr < float("inf"), f"--lr must be a positive number, got {self.lr}"),
            (self.optimizer in ("adam", "sgd"), f"--optimizer must be adam or sgd, got {self.optimizer}"),
            (0.0 <= self.momentum < 1.0, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (0.0 <= self.val_split < 1.0, f"--val-split must be in [0, 1), got {self.val_split}"),
            (self.image_size is None or 8 <= self.image_size <= 1024,
             f"--image-size must be between 8 and 1024, got {self.image_size}"),
            (0.0 <= self.label_smoothing < 1.0, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.schedule in ("constant", "onecycle"), f"--schedule must be constant or onecycle, got {self.schedule}"),
            (self.bias_lr_scale > 0, f"--bias-lr-scale must be positive, got {self.bias_lr_scale}"),
            (0.0 < self.warmup < 1.0, f"--warmup must be in (0, 1), got {self.warmup}"),
            (self.lookahead_every >= 1, f"--lookahead-every must be at least 1, got {self.lookahead_every}"),
            (0.0 <= self.lookahead_decay < 1.0, f"--lookahead-decay must be in [0, 1), got {self.lookahead_decay}"),
            (self.flip in ("random", "alternating"), f"--flip must be random or alternating, got {self.flip}"),
            (0 <= self.translate <= 16, f"--translate must be between 0 and 16 pixels, got {self.translate}"),
            (self.precision in PRECISIONS, f"--precision must be {', '.join(PRECISIONS)}, got {self.precision}"),
            (self.tta in (0, 1, 2), f"--tta must be 0, 1 or 2, got {self.tta}"),
            (self.threads is None or 1 <= self.threads <= 1024, f"--threads must be at least 1, got {self.threads}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    def run_name(self) -> str:
        """The model's name as run directories start with it: 'lenet5', or 'factory' for path/to/net.py:factory."""
        return self.model.rsplit(":", 1)[-1]

    def updated(self, **overrides) -> "TrainConfig":
        """A copy with the given (non-None) values replaced."""
        d = self.to_dict()
        d.update({k: v for k, v in overrides.items() if v is not None})
        return TrainConfig.from_dict(d)
