"""How long a preset takes on this machine: a few measured training steps, scaled to the preset's whole run.

A preset's time on the reference machine says little about a laptop without bf16 units (the fast presets ran 7x
slower per epoch in fp32 on an AVX2 CPU than in bf16 on an AVX-512 one), so `tenfold presets` measures: the preset's
own net, arithmetic, fast path and augmentation, on synthetic CIFAR-10-shaped batches of the preset's own batch
size (smaller batches ran faster per image, from cache: an estimate from batches of 256 came out 1.4x short for
batches of 1,024 on an AVX2 CPU), then

    seconds = STARTUP + epochs * (TRAIN_IMAGES * train_s + VAL_IMAGES * eval_s) + views * VAL_IMAGES * eval_s

with train_s and eval_s the measured seconds per image of a training step and of a validation pass, and views the
test-time augmentation's extra views on the last epoch. The measurement is cached per machine in
`$TENFOLD_HOME/estimates.json` (as the fast path is): a second `tenfold presets` is instant.
"""
from __future__ import annotations

import datetime
import json
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from tenfold.training.bench import TRAIN_IMAGES, VAL_IMAGES, synthetic_cifar
from tenfold.training.fastpath import load_cache, save_cache

CACHE = "estimates.json"
MAX_PROBE = 2048   # images per measured step at most (the preset's batch size, unless larger)
STARTUP = 3.0      # seconds: the cached dataset loaded, the model built, its fast path recalled
TTA_VIEWS = {0: 0, 1: 2, 2: 6}


@dataclass
class Estimate:
    seconds: float    # the whole run, CIFAR-10 sized
    train_s: float    # per training image
    eval_s: float     # per validation image and view
    device: str       # as the start line says it
    precision: str
    measured: str     # date of the measurement

    def describe(self) -> str:
        return (f"here ({self.device}, {self.precision}): about {format_duration(self.seconds)} "
                f"(measured {self.measured})")


def format_duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def per_image(fn, images: int, repeats: int = 2) -> float:
    """Median seconds per image of `fn` (which handles `images` images), after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / images


def measure(config, batch: int | None = None) -> Estimate:
    """Time `config`'s training step (the batch's gathering and augmentation included) and validation pass, at
    `batch` images (default: the config's batch size)."""
    from tenfold.training.device import describe
    from tenfold.training.fit import evaluate, grad_scaler, train_step
    from tenfold.training.run import build, loaders
    batch = batch or min(config.batch_size, MAX_PROBE)
    config = config.updated(batch_size=batch)
    run = build(config, quiet=True, data=synthetic_cifar(train=batch, val=batch))
    train_loader, val_loader = loaders(run, batch)
    scaler = grad_scaler(run.device, run.precision)

    def step():
        for x, y in train_loader:
            train_step(run.model, run.optimizer, x, y, scaler, run.precision, config.label_smoothing)
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
    train_s = per_image(step, batch)
    eval_s = per_image(lambda: evaluate(run.model, val_loader, 0, run.precision), batch)
    return Estimate(0.0, train_s, eval_s, describe(run.device), run.precision, datetime.date.today().isoformat())


PHOTOS = (250, 150)  # a pretrained preset's estimate: a small photo set of 250 training and 150 validation photos
DECODE_S = 0.03      # seconds per photo decoded on 2 cores (a few hundred 0.2-0.5 megapixel JPEGs, first run only)


def sizes(config) -> tuple[int, int]:
    """(training, validation) images the estimate is for: CIFAR-10's, or a small photo set's."""
    from tenfold.models import pretrained_cfg
    return PHOTOS if pretrained_cfg(config.model) else (TRAIN_IMAGES, VAL_IMAGES)


def scale_label(name: str) -> str:
    from tenfold.presets import preset_config
    train, val = sizes(preset_config(name))
    return "CIFAR-10 sized" if (train, val) == (TRAIN_IMAGES, VAL_IMAGES) else f"for {train} + {val} photos"


def total_seconds(e: Estimate, epochs: int, tta: int, images: tuple[int, int] = (TRAIN_IMAGES, VAL_IMAGES),
                  head_first: bool = False) -> float:
    """The whole run: epochs of training and validation, the last epoch's test-time views, and for a pretrained
    preset the photos' decoding and the head's fit on frozen features (each training image and its mirror)."""
    train, val = images
    per_epoch = train * e.train_s + val * e.eval_s
    photos = (train + val) * DECODE_S + ((2 * train + 2 * val) * e.eval_s if head_first else 0.0)
    return STARTUP + photos * (images != (TRAIN_IMAGES, VAL_IMAGES)) + epochs * per_epoch + \
        TTA_VIEWS[tta] * val * e.eval_s


def cache_key(name: str):
    from tenfold.presets import preset_config
    from tenfold.training.cpu import usable_cores
    from tenfold.training.fastpath import machine_key
    config = preset_config(name)
    steps = {k: v for k, v in config.to_dict().items() if k not in ("epochs", "preset")}  # what one step does
    return config, f"{machine_key(usable_cores())}|{json.dumps(steps, sort_keys=True)}"


def is_cached(name: str) -> bool:
    return cache_key(name)[1] in load()


def estimate(name: str) -> Estimate:
    """Preset `name` on this machine, measured once and then recalled."""
    config, key = cache_key(name)
    cache = load()
    try:
        e = Estimate(**cache[key])
    except (KeyError, TypeError):  # not measured yet, or written by another version
        e = None
    if e is None:
        e = measure(config)
        save_cache({key: asdict(e)}, CACHE)
    e.seconds = total_seconds(e, config.epochs, config.tta, sizes(config), config.head_first)
    return e


def load() -> dict:
    return load_cache(CACHE)
