"""Typed configuration: defaults here, then flags. One place for every hyperparameter, with units."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from tenfold.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # arithmetic of the forward pass; see training.device
RESUME_SETTINGS = ("epochs", "device", "precision", "compile", "threads")  # what a resume may change: how, not what, it trains


@dataclass
class TrainConfig:
    data: str = "cifar10"         # 'cifar10' (official download) or a folder / .tar / .tar.gz / .zip
    model: str = "lenet5"         # a registered name, or path/to/net.py:factory
    epochs: int = 10              # passes over the training split
    batch_size: int = 256         # images per optimiser step (LeNet on 2 CPU cores: faster than 128, as accurate)
    lr: float = 2e-3              # learning rate (the original's Adam 1e-3, scaled up with the batch)
    optimizer: str = "adam"       # adam | sgd (SGD with momentum)
    momentum: float = 0.9         # SGD only
    weight_decay: float = 0.0     # L2 penalty per step
    keep_prob: float = 0.5        # dropout: probability that a unit is kept
    augment: bool = False         # random crop (4 px padding) and horizontal flip; off for the seed LeNet
    val_split: float = 0.1        # fraction of each class held out (the last images) when there is no val/
    image_size: int | None = None  # resize every image to this square size; None: their own size if uniform
    seed: int = 0                 # for initialisation, shuffling, dropout and augmentation
    device: str = "auto"          # auto | cpu | cuda | cuda:N | mps
    # The fast recipes' pieces (see tenfold/presets.py); the defaults leave the seed's LeNet as it was.
    preset: str | None = None     # the preset these settings started from, for the record
    label_smoothing: float = 0.0  # weight moved from the true class to all classes evenly
    schedule: str = "constant"    # constant | onecycle (linear warm-up over 23 % of the steps, then linear decay)
    bias_lr_scale: float = 1.0    # SGD: biases learn this many times faster (their weight decay as much slower)
    lookahead: bool = False       # average the weights every 5 steps (slow/fast weights), the fast ones at the end
    flip: str = "random"          # with --augment: random (each image a coin) | alternating (flip pattern A, then not-A)
    translate: int = 4            # with --augment: shift up to this many pixels each way
    precision: str = "fp32"       # auto | fp32 | bf16 | fp16: autocast of the forward pass (auto: see
                                  # training.device.resolve_precision; fp16 adds loss scaling)
    compile: bool = False         # torch.compile the model for training (GPUs; it did not pay on 2 CPU cores)
    tta: int = 0                  # test-time views: 0 the image, 1 + its mirror, 2 + both shifted a pixel (6 views)
    threads: int | None = None    # CPU threads per process; None: the cores it may use (affinity, cgroup quota)
    # Pretrained models (efficientnet_lite0): how the backbone is fine-tuned
    weights: str | None = None    # a local weights file for the model's architecture, instead of its ImageNet weights
    head_first: bool = False      # fit the new head to the frozen backbone's features before the first epoch
    freeze: bool = False          # train only the head, on backbone features computed once (no augmentation)

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
