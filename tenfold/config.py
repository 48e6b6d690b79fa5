"""Typed configuration: defaults here, then flags. One place for every hyperparameter, with units."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from tenfold.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # arithmetic of the forward pass; see training.device
# What a resume may change: how the run trains, not what; and where its data is now (the same images, checked).
RESUME_SETTINGS = ("epochs", "device", "precision", "compile", "threads", "data")


def setting(default, help: str, choices: tuple | None = None, metavar: str | None = None, negatable: bool = False,
            show_default: bool = True, within: str | None = None):
    """A TrainConfig field with what its `tenfold train --flag` says: the help (the default is added from the
    field itself), its choices, whether it has a --no- form, and the interval its values must lie `within`, in
    interval notation ("(0, 1]", "[1, inf)"); None is allowed where the default is None. The one place a setting
    is written down: its flag, help, checks and README row follow from it."""
    return field(default=default, metadata={"help": help, "choices": choices, "metavar": metavar,
                                            "negatable": negatable, "show_default": show_default, "within": within})


FLOAT32_MAX = 3.4028234663852886e38  # what a setting used in float32 arithmetic can be at most
KINDS = {"int": "a whole number", "float": "a number", "bool": "True or False", "str": "text"}


def kind_error(value, annotation: str) -> str | None:
    """What a setting's value must be, when it is not of its field's type (an API caller's 1.5 epochs)."""
    kind = annotation.split(" |")[0]
    ok = {"int": isinstance(value, int) and not isinstance(value, bool),
          "float": isinstance(value, (int, float)) and not isinstance(value, bool),
          "bool": isinstance(value, bool), "str": isinstance(value, str)}[kind]
    return None if ok else KINDS[kind]


def interval(within: str) -> tuple[float, float, bool, bool]:
    """(low, high, low included, high included) of "[a, b)"-style interval notation."""
    low, high = (float(x) for x in within[1:-1].split(","))
    return low, high, within[0] == "[", within[-1] == "]"


def out_of(value, within: str, whole: bool) -> str | None:
    """Why `value` is not within the interval (for "--flag must be ..., got value"), or None if it is: a whole
    number's bound it crossed, a number's interval."""
    low, high, has_low, has_high = interval(within)
    below = value < low or (value == low and not has_low)
    above = value > high or (value == high and not has_high)
    if value == value and not (below or above):  # (NaN is in no interval)
        return None
    if whole:  # a whole-number setting's intervals are closed
        return f"at least {number(low)}" if below else f"at most {number(high)}"
    return f"in {within}"


def number(x: float) -> str:
    return str(int(x)) if x == int(x) else f"{x:g}"


@dataclass
class TrainConfig:
    data: str = setting("cifar10", "'cifar10' (downloads the official archive; default), an image folder with "
                        "train/<class>/*, or a .tar/.tar.gz/.zip of one", show_default=False)
    model: str = setting("lenet5", "registered model name (see 'tenfold models') or path/to/net.py:factory")
    epochs: int = setting(10, "passes over the training data", within="[1, 100000]")
    # images per optimiser step (LeNet on 2 CPU cores: faster than 128, as accurate)
    batch_size: int = setting(256, "images per step", within="[1, 1048576]")
    lr: float = setting(2e-3, "learning rate", within="(0, inf)")  # the original's Adam 1e-3, scaled up with the batch
    optimizer: str = setting("adam", "adam, or sgd with momentum", choices=("adam", "sgd"))
    momentum: float = setting(0.9, "SGD momentum", within="[0, 1)")
    weight_decay: float = setting(0.0, "L2 weight decay per step", within="[0, inf)")
    keep_prob: float = setting(0.5, "dropout keep probability, in (0, 1]", within="(0, 1]")
    augment: bool = setting(False, "random crop (4 px padding) and flip each batch")
    # the last images of each class, when there is no val/ folder
    val_split: float = setting(0.1, "fraction of each class held out for validation", within="[0, 1)")
    image_size: int | None = setting(None, "resize images to this square size (default: their own, if uniform)", within="[8, 1024]")
    seed: int = setting(0, "random seed: initialisation, shuffling, dropout, augmentation", within="[0, 4294967295]")
    device: str = setting("auto", "auto, cpu, cuda, cuda:N or mps")
    # The fast recipes' pieces (see tenfold/presets.py); the defaults leave the seed's LeNet as it was.
    preset: str | None = setting(None, "start from a preset (see 'tenfold presets'); other flags override it")
    label_smoothing: float = setting(0.0, "label smoothing: weight moved from the true class to all, in [0, 1)", within="[0, 1)")
    # onecycle: linear warm-up over 23 % of the steps, then linear decay
    schedule: str = setting("constant", "learning-rate schedule", choices=("constant", "onecycle"))
    # biases learn this many times faster (their weight decay as much slower)
    bias_lr_scale: float = setting(1.0, "SGD: biases' learning rate multiplier", within="(0, inf)")
    warmup: float = setting(0.23, "onecycle: the fraction of the steps over which the rate rises (airbench's "
                            "triangle)", within="(0, 1)")
    lr_start_factor: float = setting(0.2, "onecycle: the rate at the first step, as a fraction of --lr",
                                     within="(0, 1]")
    lr_end_factor: float = setting(0.07, "onecycle: the rate at the last step, as a fraction of --lr",
                                   within="[0, 1]")
    lookahead: bool = setting(False, "average the weights every few steps (slow and fast weights)")
    lookahead_every: int = setting(5, "with --lookahead: steps between averages", within="[1, 100000]")
    # the slow weights' decay at the end (it grows with the cube of the progress from 0)
    lookahead_decay: float = setting(0.95 ** 5, "with --lookahead: the slow weights' final decay", within="[0, 1)")
    # random: each image a coin; alternating: flip pattern A, then not-A
    flip: str = setting("random", "with --augment: how images are mirrored", choices=("random", "alternating"))
    translate: int = setting(4, "with --augment: shift by up to this many pixels", within="[0, 16]")
    # autocast of the forward pass (auto: see training.device.resolve_precision; fp16 adds loss scaling)
    precision: str = setting("fp32", "arithmetic of the forward pass (the fast presets: auto = bf16 where the "
                             "hardware has it, fp16 on older GPUs)", choices=PRECISIONS)
    # GPUs; it did not pay on 2 CPU cores
    compile: bool = setting(False, "torch.compile the model for training (a one-off compile first; for GPUs)",
                            negatable=True)
    tta: int = setting(0, "test-time views: 0, 1 (+ mirror) or 2 (6 views)", choices=(0, 1, 2))
    threads: int | None = setting(None, "CPU threads (default: the cores this process may use, from its affinity "
                                  "and cgroup quota)", within="[1, 1024]")
    # airnet models (tenfold.models.airbench): their normalisation, airbench's values
    bn_momentum: float = setting(0.4, "airnet models: BatchNorm's running-statistics momentum (PyTorch's "
                                 "convention: the weight of the new batch)", within="(0, 1]")
    whiten_eps: float = setting(5e-4, "airnet models: added to the eigenvalues of the whitening layer's patch "
                                "covariance (keeps noise directions from blowing up)", within="(0, inf)")
    # Pretrained models (efficientnet_lite0): how the backbone is fine-tuned
    weights: str | None = setting(None, "pretrained models: a local weights file (state dict or tenfold checkpoint) "
                                  "of the same architecture, instead of ImageNet's", metavar="FILE")
    head_first: bool = setting(False, "pretrained models: fit the new head to the frozen features before training "
                               "all layers (finetune: on)", negatable=True)
    freeze: bool = setting(False, "pretrained models: compute the backbone's features once and train only the "
                           "head (seconds)")

    def validate(self) -> "TrainConfig":
        """Each setting against its field's choices and interval: ConfigError naming the first flag out of them."""
        for f in fields(self):
            value, meta, flag = getattr(self, f.name), f.metadata, "--" + f.name.replace("_", "-")
            if value is None and f.default is None:
                continue
            wrong_type = kind_error(value, f.type)
            if wrong_type:
                raise ConfigError(f"{flag} must be {wrong_type}, got {value!r}")
            choices = meta.get("choices")
            if choices and value not in choices:
                raise ConfigError(f"{flag} must be {', '.join(map(str, choices[:-1]))} or {choices[-1]}, got {value}")
            wrong = meta.get("within") and out_of(value, meta["within"], f.type.startswith("int"))
            if wrong:
                raise ConfigError(f"{flag} must be {wrong}, got {value}")
            if f.type == "float" and abs(value) > FLOAT32_MAX:  # it becomes a float32 tensor's scalar
                raise ConfigError(f"{flag} must be at most {FLOAT32_MAX:.4g} (a float32's largest), got {value}")
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
