"""`tenfold train`: data -> model -> fit() with the seed's logger, a progress bar and a checkpoint each epoch."""
from __future__ import annotations

import datetime
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from tenfold.config import TrainConfig
from tenfold.data import DeviceLoader, Splits, open_dataset
from tenfold.data.loader import channel_stats
from tenfold.errors import CheckpointError, ConfigError
from tenfold.models import create_model
from tenfold.training.callbacks import History, ProgressBar, SeedLogger
from tenfold.training.checkpoint import CHECKPOINT, Checkpointer, load_checkpoint
from tenfold.training import cpu, distributed
from tenfold.training.device import (cpu_has, describe, environment, pick_device, resolve_precision, rng_state,
                                     set_rng_state)
from tenfold.training.distributed import Place
from tenfold.training import fastpath
from tenfold.training.fastpath import FastPath, choose
from tenfold.kernels.build import kernel_isa
from tenfold.training.fit import fit, grad_scaler
from tenfold.training.recipe import Lookahead, LRSchedule

EVAL_BATCH = 2048  # images per evaluation batch: large, since inference keeps no activations


@dataclass
class Run:
    """What a training run is made of; `train()` builds it, tests and notebooks may too."""
    config: TrainConfig
    device: torch.device
    data: Splits
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # shuffling and augmentation
    meta: dict                  # what the checkpoint carries besides the states
    precision: str = "fp32"     # config.precision resolved for this device: fp32, bf16 or fp16
    place: Place | None = None  # this worker's rank among several (None: a process on its own)
    fast: FastPath | None = None  # the CPU fast path measured (or recalled) for this machine
    busy: float | None = None   # cores other processes kept busy at the start (CPU runs)


def default_run_dir(config: TrainConfig) -> Path:
    name = Path(config.model.rsplit(":", 1)[-1]).name if ":" in config.model else config.model
    return Path("runs") / f"{name}-{datetime.datetime.now():%Y%m%d-%H%M%S}"


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # frozen layers stay out
    if config.optimizer == "sgd":
        scale = config.bias_lr_scale  # biases learn `scale` times faster and decay as much slower (airbench)
        groups = [{"params": [p for n, p in trainable if scale == 1 or not n.endswith("bias")]}]
        if scale != 1:
            groups.append({"params": [p for n, p in trainable if n.endswith("bias")], "lr": config.lr * scale,
                           "weight_decay": config.weight_decay / scale})
        optimizer = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay, nesterov=config.momentum > 0)
    else:
        optimizer = torch.optim.Adam([p for _, p in trainable], lr=config.lr, weight_decay=config.weight_decay)
    for g in optimizer.param_groups:
        g["initial_lr"] = g["lr"]  # the schedule's base, kept in the optimizer's saved state
    return optimizer


WHITEN_IMAGES = 5000  # training images for data-dependent initialisation (the whitening layer's statistics)


def build(config: TrainConfig, quiet: bool = False, stats: tuple | None = None, data: Splits | None = None,
          place: Place | None = None, recorded: dict | None = None) -> Run:
    """Open the data (unless given), make the model and optimiser on the chosen device, seeded. A launched
    worker (`place`) takes its own GPU and joins the others first."""
    device = distributed.worker_device(config.device, place) if place else pick_device(config.device)
    busy = None
    if device.type == "cpu":  # other processes' load, sampled before our own threads start
        busy = cpu.busy_cores() if place is None else None
        cpu.start_threads(config.threads, busy)
        cpu.keep_freed_memory()
    if place:
        distributed.join(place, device)
    data = data or open_dataset(config.data, config.val_split, config.image_size, quiet=quiet)
    mean, std = stats or channel_stats(data.train.images)
    torch.manual_seed(config.seed)
    model = create_model(config.model, num_classes=len(data.train.classes), image_shape=data.train.shape,
                         keep_prob=config.keep_prob)
    if hasattr(model, "init_from_data"):  # e.g. the whitening layer; a resumed run overwrites it from the checkpoint
        every = max(1, len(data.train) // WHITEN_IMAGES)  # evenly spaced: the split may be sorted by class
        sample = DeviceLoader(data.train.subset(slice(None, None, every)), WHITEN_IMAGES, torch.device("cpu"),
                              mean, std)
        model.init_from_data(next(iter(sample))[0])
    model = model.to(device, memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(config.seed)
    precision = resolve_precision(config.precision, device)
    fast = None
    if device.type == "cpu":  # which kernels and arithmetic are fastest here, for this net at this batch
        if place is None or place.main:  # workers share the cores: rank 0 measures, all follow it
            batch = min(distributed.local_batch(config.batch_size, place.world if place else 1), len(data.train))
            fast = choose(model, max(1, batch), data.train.shape, len(data.train.classes), precision,
                          config.precision == "auto" and precision == "bf16", recorded)
        fast = fastpath.apply(model, distributed.from_rank0(fast)) if place else fast
        precision = fast.precision or precision
    meta = {"config": config.to_dict(), "classes": data.train.classes, "image_shape": list(data.train.shape),
            "mean": mean, "std": std, "data_source": data.source,
            "num_train": len(data.train), "num_val": len(data.val) if data.val is not None else 0,
            "environment": {**environment(device), "workers": place.world if place else 1, "precision": precision,
                            **({"fast_path": fast.record(), "kernel_isa": kernel_isa()} if fast else {})}}
    return Run(config, device, data, model, make_optimizer(config, model), generator, meta, precision, place,
               fast, busy)


def loaders(run: Run, batch_size: int) -> tuple[DeviceLoader, DeviceLoader | None]:
    """The training and validation loaders; a worker's hold its shard, with its part of the global batch."""
    m, s = run.meta["mean"], run.meta["std"]
    c, place = run.config, run.place or distributed.ALONE
    batch_size = distributed.local_batch(batch_size, place.world)
    train = DeviceLoader(distributed.shard(run.data.train, place, equal=True), batch_size, run.device, m, s,
                         shuffle=True, augment=c.augment, crop_pad=c.translate, generator=run.generator,
                         flip=c.flip, seed=c.seed)
    val = (DeviceLoader(distributed.shard(run.data.val, place, equal=False), EVAL_BATCH, run.device, m, s)
           if run.data.val is not None else None)
    return train, val


def restore(run: Run, ckpt: dict) -> None:
    """Load model, optimiser and RNG states; the data's classes must be the checkpoint's."""
    if ckpt["classes"] != run.data.train.classes:
        raise CheckpointError("the data's classes differ from the checkpoint's: resume with the same --data")
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"the checkpoint does not match model '{run.config.model}' "
                              f"({str(e).splitlines()[0][:160]})") from None
    set_rng_state(ckpt["rng"], run.device, run.generator)


def open_run(config: TrainConfig | None, out, resume, quiet: bool, overrides: dict, place: Place | None):
    """A new run, or a resumed one: (run, run directory, epochs done, history rows, checkpoint or None)."""
    if resume is not None:
        ckpt = load_checkpoint(resume)
        config = TrainConfig.from_dict(ckpt["config"]).updated(**overrides).validate()
        run = build(config, quiet, stats=(ckpt["mean"], ckpt["std"]), place=place,
                    recorded=ckpt.get("environment", {}).get("fast_path"))
        restore(run, ckpt)
        return run, Path(resume), int(ckpt["epoch"]), ckpt["history"], ckpt
    config = (config or TrainConfig()).updated(**overrides).validate()
    run_dir = check_new_run_dir(Path(out) if out else default_run_dir(config))
    return build(config, quiet, place=place), run_dir, 0, [], None


def check_new_run_dir(run_dir: Path) -> Path:
    """A new run must not write over a finished epoch of another."""
    if (run_dir / CHECKPOINT).exists():
        raise ConfigError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                          "or choose another --out")
    return run_dir


def recipe_callbacks(run: Run, steps_per_epoch: int, start: int, ckpt: dict | None) -> list:
    """The schedule and lookahead: on every worker, before anything that reads the weights."""
    config, total_steps, recipe = run.config, run.config.epochs * steps_per_epoch, []
    if config.schedule == "onecycle":
        recipe.append(LRSchedule(run.optimizer, total_steps, start * steps_per_epoch))
    if config.lookahead:
        recipe.append(Lookahead(run.model, total_steps))
        if ckpt is not None and "lookahead" in ckpt:
            recipe[-1].load(ckpt["lookahead"])
    return recipe


def train(config: TrainConfig | None = None, out: str | Path | None = None, resume: str | Path | None = None,
          quiet: bool = False, progress: bool | None = None, callbacks: list | None = None,
          report: bool = False, tensorboard: bool = False, **overrides) -> History:
    """Train (or resume) a run; returns its History. Each epoch lands atomically in the run directory.
    `callbacks` (Keras-style) see every epoch after it is saved. `tensorboard`: scalars in RUN/tensorboard;
    `report`: the figures and report.html at the end (see tenfold.report). Started by a launcher (RANK and
    WORLD_SIZE set), it is one of several workers: only rank 0 prints and writes."""
    if tensorboard:
        from tenfold.report.tensorboard import TensorBoard, summary_writer_class
        summary_writer_class()  # a missing extra is reported before any data is read
    place = distributed.launched()
    main = place is None or place.main
    quiet = quiet or not main
    finished = False
    try:
        run, run_dir, start, rows, ckpt = open_run(config, out, resume, quiet, overrides, place)
        config = run.config
        if place is not None and place.world > 1:  # each worker its own shuffle and dropout, reproducibly
            run.generator.manual_seed(config.seed + 7919 * place.rank + start)
            torch.manual_seed(config.seed + 7919 * place.rank + start + 1)
        train_loader, val_loader = loaders(run, config.batch_size)
        if not quiet:
            announce(run, run_dir, start, place)
        train_loader.epoch = start  # the flip pattern and the schedule continue where the run stopped
        recipe = recipe_callbacks(run, len(train_loader), start, ckpt)
        scaler = grad_scaler(run.device, run.precision)
        if ckpt is not None and "scaler" in ckpt and scaler.is_enabled():
            scaler.load_state_dict(ckpt["scaler"])

        def extra() -> dict:  # the states the checkpoint keeps besides model, optimiser and RNGs
            return {**({"lookahead": recipe[-1].state()} if config.lookahead else {}),
                    **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {})}
        writers = [Checkpointer(run_dir, run.model, run.optimizer, lambda: rng_state(run.device, run.generator),
                                run.meta, rows, extra),
                   *([TensorBoard(run_dir / "tensorboard")] if tensorboard else []), *(callbacks or [])]
        if not quiet and progress is not False:  # the bar first: it clears its line before the epoch line prints
            writers.append(ProgressBar(train_loader.num_images, config.epochs, force=bool(progress)))
        if not quiet:
            writers.append(SeedLogger())
        adapt = thread_callbacks(run)
        model = distributed.wrap(run.model, run.device, place) if place else run.model
        if config.compile:
            model = torch.compile(model)  # DDP first, then compile, as PyTorch's DDP notes advise
        try:
            history = fit(model, run.optimizer, train_loader, val_loader, config.epochs,
                          [*recipe, *adapt, *(writers if main else [])], start_epoch=start, history=History(rows, run_dir),
                          label_smoothing=config.label_smoothing, precision=run.precision, tta=config.tta,
                          scaler=scaler)
        except Exception as e:
            failed = compile_error(e) if config.compile else None
            if failed is not None:
                raise failed from None
            raise
        finished = True
    finally:
        distributed.leave(finished)
    if report and main:
        from tenfold.report.make import make_report
        path = make_report(run_dir, device=str(run.device), splits=run.data, quiet=quiet)
        if not quiet:
            print(f"tenfold: report written to {path}", file=sys.stderr)
    return history


def thread_callbacks(run: Run) -> list:
    """On a CPU, unless the thread count is fixed: fewer threads while other processes keep cores busy."""
    if run.device.type != "cpu" or run.place is not None or cpu.pinned_threads(run.config.threads) is not None:
        return []
    return [cpu.AdaptiveThreads(cpu.usable_cores())]


def compile_error(e: Exception) -> ConfigError | None:
    """torch.compile's failures (no C++ compiler, no Triton, an unsupported op) as one line, else None."""
    if not type(e).__module__.startswith(("torch._dynamo", "torch._inductor")):
        return None
    reason = next((line.strip() for line in str(e).splitlines() if line.strip()), type(e).__name__)[:200]
    return ConfigError(f"--compile failed on this machine ({reason}); train without it (--no-compile)")


def announce(run: Run, run_dir: Path, start: int, place: Place | None) -> None:
    workers = f" x {place.world} workers" if place is not None and place.world > 1 else ""
    arithmetic = "" if run.precision == "fp32" else f", {run.precision} autocast"
    compiled = ", compiled" if run.config.compile else ""
    fast = f", fast path: {run.fast.summary()}" if run.fast and run.fast.choices else ""
    print(f"tenfold: {run.config.model} on {describe(run.device)}{workers}{arithmetic}{compiled}{fast}; "
          f"{len(run.data.train)} training / "
          f"{len(run.data.val) if run.data.val is not None else 0} validation images, "
          f"{len(run.data.train.classes)} classes; run directory {run_dir}", file=sys.stderr)
    note = (cpu.busy_note(torch.get_num_threads(), run.busy, cpu.usable_cores(),
                          cpu.pinned_threads(run.config.threads) is None) if run.device.type == "cpu" else None)
    if note:
        print(note, file=sys.stderr)
    if run.device.type == "cpu" and run.precision != "fp32" and not cpu_has(run.precision):
        print(f"warning: this CPU has no {run.precision} units, so {run.precision} is emulated and far slower than fp32 "
              "(--precision auto picks what the hardware does best)", file=sys.stderr)
    if start >= run.config.epochs:
        print(f"tenfold: {run_dir} already finished {start} epochs; pass --epochs N (> {start}) to train longer",
              file=sys.stderr)
