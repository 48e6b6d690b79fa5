"""`tenfold train`: data -> model -> fit() with the seed's logger, a progress bar and a checkpoint each epoch."""
from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tenfold.config import TrainConfig
from tenfold.data import DeviceLoader, Splits, open_dataset
from tenfold.data.dataset import is_cifar10
from tenfold.data.loader import channel_stats
from tenfold.errors import CheckpointError, ConfigError, TenfoldError
from tenfold.presets import resolve_config
from tenfold.fileio import STALE_TEMP, run_lock
from tenfold.log import note, warn
from tenfold.data.photo import PhotoPipeline
from tenfold.models import create_model, pretrained_cfg
from tenfold.models.registry import is_user_model
from tenfold.training.callbacks import Callback, History, ProgressBar, SeedLogger
from tenfold.training.features import FeatureHead, FeatureLoader, feature_loaders, fit_head
from tenfold.training.checkpoint import CHECKPOINT, Checkpointer, load_checkpoint
from tenfold.training import cpu, distributed
from tenfold.training.device import (cpu_has, describe, environment, pick_device, resolve_precision, rng_state,
                                     set_rng_state)
from tenfold.training.distributed import Place
from tenfold.training import fastpath
from tenfold.training.fastpath import FastPath, choose
from tenfold.kernels.build import kernel_isa
from tenfold.training.fit import evaluate, fit, grad_scaler
from tenfold.training.recipe import Lookahead, LRSchedule

EVAL_BATCH = 2048  # 32x32 images per evaluation batch: large, since inference keeps no activations


def eval_batch(shape) -> int:
    """Images per evaluation batch at `shape` (H, W): EVAL_BATCH's pixels, at least 16 images."""
    return max(16, min(EVAL_BATCH, EVAL_BATCH * 32 * 32 // (shape[0] * shape[1])))


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


ACTIVE: dict = {}  # this process's run: its directory and whether an epoch of it is saved (for Ctrl-C's hint)


def default_run_dir(config: TrainConfig) -> Path:
    """runs/MODEL-DATE-TIME, created here so that two runs started in the same second never share it (the second
    takes MODEL-DATE-TIME-2, and so on)."""
    base = Path("runs") / f"{config.run_name()}-{datetime.datetime.now():%Y%m%d-%H%M%S}"
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 1000):
        candidate = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise ConfigError(f"could not name a new run directory beside {base}; pass --out")


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]  # frozen layers stay out
    if hasattr(model, "lr_groups") and not config.freeze:  # a pretrained net: lower rates for earlier layers
        groups = [{"params": [p for p in params if p.requires_grad], "lr": config.lr * scale}
                  for params, scale in model.lr_groups()]
        kind = torch.optim.SGD if config.optimizer == "sgd" else torch.optim.Adam
        extra = {"momentum": config.momentum, "nesterov": config.momentum > 0} if config.optimizer == "sgd" else {}
        optimizer = kind(groups, lr=config.lr, weight_decay=config.weight_decay, **extra)
    elif config.optimizer == "sgd":
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
    cfg = pretrained_cfg(config.model)
    photo = check_pretrained(config, cfg)
    data = data or open_dataset(config.data, config.val_split, config.image_size, quiet=quiet, photo=photo)
    if stats is None:  # a pretrained model keeps its own normalisation; a new one takes the data's
        stats = (list(cfg["mean"]), list(cfg["std"])) if cfg else channel_stats(data.train.images)
    mean, std = stats
    torch.manual_seed(config.seed)
    shape = (photo.input_size, photo.input_size) if photo else data.train.shape  # what the model takes
    model = create_model(config.model, num_classes=len(data.train.classes), image_shape=shape,
                         **model_settings(config.to_dict()))
    if hasattr(model, "init_from_data"):  # e.g. the whitening layer; a resumed run overwrites it from the checkpoint
        every = max(1, len(data.train) // WHITEN_IMAGES)  # evenly spaced: the split may be sorted by class
        sample = DeviceLoader(data.train.subset(slice(None, None, every)), WHITEN_IMAGES, torch.device("cpu"),
                              mean, std)
        model.init_from_data(next(iter(sample))[0])
    model = model.to(device, memory_format=torch.channels_last)
    if config.freeze:  # features once, the head alone: the optimiser holds only the head's parameters
        model.freeze(True)
    generator = torch.Generator().manual_seed(config.seed)
    precision = resolve_precision(config.precision, device)
    fast = None
    if device.type == "cpu":  # which kernels and arithmetic are fastest here, for this net at this batch
        if place is None or place.main:  # workers share the cores: rank 0 measures, all follow it
            batch = min(distributed.local_batch(config.batch_size, place.world if place else 1), len(data.train))
            fast = choose(model, max(1, batch), shape, len(data.train.classes), precision,
                          config.precision == "auto" and precision == "bf16", recorded)
        fast = fastpath.apply(model, distributed.from_rank0(fast)) if place else fast
        precision = fast.precision or precision
    meta = {"config": config.to_dict(), "classes": data.train.classes, "image_shape": list(data.train.shape),
            "mean": mean, "std": std, "data_source": data.source, "schedule_epochs": config.epochs,
            "train_digests": torch.from_numpy(data.train.digests()),  # evaluation never judges these images
            **({"photo": photo.to_dict(), "input_shape": list(shape),
                "weights": config.weights or cfg.get("weights")} if photo else {}),
            "num_train": len(data.train), "num_val": len(data.val) if data.val is not None else 0,
            "environment": {**environment(device), "workers": place.world if place else 1, "precision": precision,
                            **({"fast_path": fast.record(), "kernel_isa": kernel_isa()} if fast else {})}}
    return Run(config, device, data, model, make_optimizer(config, model), generator, meta, precision, place,
               fast, busy)


def model_settings(config: dict) -> dict:
    """The settings a model factory may take (each takes those it declares; see registry.call_factory)."""
    return {k: config[k] for k in ("keep_prob", "weights", "bn_momentum", "whiten_eps") if k in config}


def check_pretrained(config: TrainConfig, cfg: dict | None) -> PhotoPipeline | None:
    """The photo pipeline of a pretrained model (None for the others); ConfigError for settings that need one."""
    if cfg is None:
        wrong = [flag for flag, used in (("--weights", config.weights), ("--freeze", config.freeze),
                                          ("--head-first", config.head_first)) if used]
        if wrong:
            raise ConfigError(f"{wrong[0]} applies to pretrained models (efficientnet_lite0), not '{config.model}'")
        return None
    photo = PhotoPipeline.from_cfg(cfg)
    if config.image_size is not None and config.image_size != photo.input_size:
        raise ConfigError(f"{config.model} takes {photo.input_size}x{photo.input_size} images (its ImageNet size); "
                          "leave out --image-size")
    return photo


def check_workers(images: int, workers: int) -> None:
    """Every worker needs a training image (the launcher checks before starting them, each worker again)."""
    if workers > images:
        raise ConfigError(f"{images} training images cannot be shared by {workers} workers; "
                          f"use --devices {images} or fewer")


def run_photo(meta: dict) -> PhotoPipeline | None:
    return PhotoPipeline(**meta["photo"]) if meta.get("photo") else None


def loaders(run: Run, batch_size: int) -> tuple[DeviceLoader, DeviceLoader | None]:
    """The training and validation loaders; a worker's hold its shard, with its part of the global batch."""
    m, s = run.meta["mean"], run.meta["std"]
    c, place, photo = run.config, run.place or distributed.ALONE, run_photo(run.meta)
    check_workers(len(run.data.train), place.world)
    batch_size = distributed.local_batch(batch_size, place.world)
    train = DeviceLoader(distributed.shard(run.data.train, place, equal=True), batch_size, run.device, m, s,
                         shuffle=True, augment=c.augment, crop_pad=c.translate, generator=run.generator,
                         flip=c.flip, seed=c.seed, photo=photo)
    val = (DeviceLoader(distributed.shard(run.data.val, place, equal=False), eval_batch(run.meta.get(
        "input_shape", run.data.val.shape)), run.device, m, s,
                        photo=photo) if run.data.val is not None else None)
    return train, val


def restore(run: Run, ckpt: dict) -> None:
    """Load model, optimiser and RNG states; the data's classes must be the checkpoint's."""
    if ckpt["classes"] != run.data.train.classes:
        raise CheckpointError("the data's classes differ from the checkpoint's: resume with the same --data")
    now = (len(run.data.train), len(run.data.val) if run.data.val is not None else 0)
    then = (ckpt.get("num_train", now[0]), ckpt.get("num_val", now[1]))
    same = "train_digests" not in ckpt or torch.equal(ckpt["train_digests"], run.meta["train_digests"])
    if now != then or not same:  # another dataset under the same name: a different experiment, not a continuation
        raise CheckpointError(f"the data at {run.data.source} changed since the run started ({then[0]} training / "
                              f"{then[1]} validation images then, {now[0]} / {now[1]} now); resume with the same "
                              "data, or start a new run")
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise CheckpointError(f"the checkpoint does not match model '{run.config.model}' "
                              f"({str(e).splitlines()[0][:160]})")
    set_rng_state(ckpt["rng"], run.device, run.generator)


def open_run(flags: dict, out, resume, quiet: bool, place: Place | None, stack: contextlib.ExitStack):
    """A new run, or a resumed one: (run, run directory, epochs done, history rows, checkpoint or None). The run
    directory is locked (on `stack`) before anything is read from it or decided about it."""
    main = place is None or place.main
    if resume is not None:
        check_resume_out(out, resume)
        if main:
            stack.enter_context(run_lock(Path(resume)) if Path(resume).is_dir() else contextlib.nullcontext())
        ckpt = load_checkpoint(resume)
        config = resolve_config(flags.get("preset"), flags, ckpt["config"])
        config = config.updated(model=model_spec(ckpt, resume), data=resumed_data(flags.get("data"), ckpt))
        run = build(config, quiet, stats=(ckpt["mean"], ckpt["std"]), place=place,
                    recorded=ckpt.get("environment", {}).get("fast_path"))
        restore(run, ckpt)
        run.meta["schedule_epochs"] = int(ckpt.get("schedule_epochs", ckpt["config"]["epochs"]))
        run.meta.update({k: ckpt[k] for k in ("model_file",) if k in ckpt})
        return run, Path(resume), int(ckpt["epoch"]), ckpt["history"], ckpt
    config = resolve_config(flags.get("preset"), flags)
    if not is_cifar10(config.data) and Path(config.data).exists():  # the run finds its data from anywhere
        config = config.updated(data=str(Path(config.data).resolve()))
    run_dir = Path(out) if out else default_run_dir(config)
    if main:
        stack.enter_context(run_lock(run_dir))
    check_new_run_dir(run_dir)
    run = build(config, quiet, place=place)
    if main and is_user_model(config.model):  # the run keeps the code it was trained with
        run.meta["model_file"] = keep_model_file(config.model, run_dir)
    return run, run_dir, 0, [], None


def check_resume_out(out, resume) -> None:
    """A resumed run stays where it is: ConfigError for an --out that names another directory."""
    if resume is not None and out is not None and Path(out).resolve() != Path(resume).resolve():
        raise ConfigError(f"--out with --resume: a resumed run stays in its own directory ({resume})")


RUN_FILES = {CHECKPOINT, "config.json", "history.csv", ".lock", "model"}
MODEL_DIR = "model"  # a user's model file, copied into the run directory


def keep_model_file(spec: str, run_dir: Path) -> str:
    """Copy a user's `net.py` into RUN/model/; returns 'model/net.py:factory', relative to the run directory."""
    import shutil
    path, _, factory = spec.rpartition(":")
    target = run_dir / MODEL_DIR / Path(path).name
    target.parent.mkdir(parents=True, exist_ok=True)
    if Path(path).resolve() != target.resolve():
        shutil.copyfile(path, target)
    return f"{MODEL_DIR}/{target.name}:{factory}"


def model_spec(ckpt: dict, run_dir) -> str:
    """The model to rebuild a run with: its own copy of a user's model file, else the registered name."""
    kept = ckpt.get("model_file")
    if kept:
        path, _, factory = kept.rpartition(":")
        if (Path(run_dir) / path).is_file():
            return f"{Path(run_dir) / path}:{factory}"
    return ckpt["config"]["model"]


def data_spec(ckpt: dict) -> str:
    """The run's data: its resolved path while that exists, else what was given."""
    source = ckpt.get("data_source")
    return source if source and source != "cifar10" and Path(source).exists() else ckpt["config"]["data"]  # what a run that never finished an epoch leaves


def resumed_data(given: str | None, ckpt: dict) -> str:
    """Where a resumed run's data is: --data when given (the same images moved: restore() checks they are the
    run's), else where the run had it; ConfigError, saying what to do, when that is gone."""
    if given is not None:
        return given if is_cifar10(given) else str(Path(given).resolve())
    spec = data_spec(ckpt)
    if not is_cifar10(spec) and not Path(spec).exists():
        raise ConfigError(f"the run's data {spec} is not there any more; if it moved, resume with "
                          f"--data NEW_PLACE (the same images: they are checked)")
    return spec


def check_new_run_dir(run_dir: Path) -> Path:
    """A new run must not write over a finished epoch of another, nor into a folder of the user's own files."""
    if (run_dir / CHECKPOINT).exists():
        raise ConfigError(f"{run_dir} already holds a run: continue it with --resume {run_dir}, "
                          "or choose another --out")
    if run_dir.is_dir():
        foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES and not p.match(STALE_TEMP))
        if foreign:
            raise ConfigError(f"{run_dir} holds other files ({', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}"
                              "); --out must be a new or empty folder")
    return run_dir


def recipe_callbacks(run: Run, steps_per_epoch: int, start: int) -> tuple[list, dict]:
    """The schedule and lookahead: on every worker, before anything that reads the weights. Both keep the length
    the run was planned with: a resume with more epochs continues at the schedule's final rate (schedule_note)."""
    config, recipe = run.config, []
    total_steps = run.meta.get("schedule_epochs", config.epochs) * steps_per_epoch
    if config.schedule == "onecycle":
        recipe.append(LRSchedule(run.optimizer, total_steps, start * steps_per_epoch,
                                  (config.warmup, config.lr_end_factor, config.lr_start_factor)))
    states = {}  # name -> what the checkpoint keeps of it (state_dict / load_state_dict)
    if config.lookahead:
        states["lookahead"] = Lookahead(run.model, total_steps, config.lookahead_every, config.lookahead_decay)
        recipe.append(states["lookahead"])
    return recipe, states


def train(out: str | Path | None = None, resume: str | Path | None = None, quiet: bool = False,
          progress: bool | None = None, callbacks: list | None = None, tensorboard: bool = False,
          **flags) -> History:
    """Train (or resume) a run; returns its History (with run_dir, device, data and main set, for a report:
    tenfold.report.make.report_run). `flags` are TrainConfig's settings as given (preset=... among them; None: not
    given), resolved by tenfold.presets.resolve_config: a resume may change only RESUME_SETTINGS (ConfigError
    otherwise). Each epoch lands atomically in the run directory. `callbacks`
    (Keras-style) see every epoch after it is saved. `tensorboard`: scalars in RUN/tensorboard. Started by a
    launcher (RANK and WORLD_SIZE set), it is one of several workers: only rank 0 prints and writes."""
    if tensorboard:
        from tenfold.training.tensorboard import summary_writer_class
        summary_writer_class()  # a missing extra is reported before any data is read
    place = distributed.launched()
    main = place is None or place.main
    quiet = quiet or not main
    finished, stack = False, contextlib.ExitStack()
    try:
        run, run_dir, start, rows, ckpt = open_run(flags, out, resume, quiet, place, stack)
        ACTIVE.update(run_dir=run_dir, saved=start > 0)
        fitting = prepare(run, run_dir, start, place, quiet)
        recipe, states = recipe_callbacks(run, len(fitting.train), start)
        scaler = restore_states(run, states, ckpt)
        writers = default_callbacks(run, run_dir, rows, states, fitting.train.num_images, tensorboard, callbacks,
                                    quiet, progress) if main else []
        history = fit_run(run, fitting, [*recipe, *thread_callbacks(run), *writers], start, History(rows, run_dir),
                          scaler, place)
        finished = True
    finally:
        stack.close()
        distributed.leave(finished)
    if main and not quiet:
        note(summary_line(history.rows(), run_dir))
    history.main, history.device, history.data = main, str(run.device), run.data  # for the caller's --report
    return history


@dataclass
class Fitting:
    """What fit() trains: the model (the whole net, or only its head on frozen features), its loaders, the
    precision and the test-time views of the last validation."""
    model: nn.Module
    train: DeviceLoader | FeatureLoader
    val: DeviceLoader | FeatureLoader | None
    precision: str
    tta: int


def prepare(run: Run, run_dir: Path, start: int, place: Place | None, quiet: bool) -> Fitting:
    """Seeds per worker, the loaders, the run announced, and with --freeze or a new head the frozen features."""
    config = run.config
    if place is not None and place.world > 1:  # each worker its own shuffle and dropout, reproducibly
        run.generator.manual_seed(config.seed + 7919 * place.rank + start)
        torch.manual_seed(config.seed + 7919 * place.rank + start + 1)
    train_loader, val_loader = loaders(run, config.batch_size)
    if not quiet:
        announce(run, run_dir, start, place)
    fitting = Fitting(run.model, train_loader, val_loader, run.precision, config.tta)
    if config.freeze or (config.head_first and start == 0):  # the backbone's features, once
        features = frozen_features(run, train_loader, val_loader, quiet)
        if start == 0:
            head_first(run, *features, quiet)
        if config.freeze:  # only the head trains, in fp32 (it is tiny)
            fitting = Fitting(FeatureHead(run.model), *features, "fp32", 0)
    fitting.train.epoch = start  # the flip pattern and the schedule continue where the run stopped
    return fitting


def restore_states(run: Run, states: dict, ckpt: dict | None) -> torch.amp.GradScaler:
    """fp16's loss scaler joins the named states the checkpoint keeps; a resumed run gets each one back."""
    scaler = grad_scaler(run.device, run.precision)
    if scaler.is_enabled():
        states["scaler"] = scaler
    for name, state in states.items():
        if ckpt is not None and name in ckpt:
            state.load_state_dict(ckpt[name])
    return scaler


def default_callbacks(run: Run, run_dir: Path, rows: list[dict], states: dict, images: int, tensorboard: bool,
                      callbacks: list | None, quiet: bool, progress: bool | None) -> list:
    """The main worker's: the checkpoint (first: the user's callbacks see saved epochs), TensorBoard, the
    user's, the progress bar (it clears its line before the epoch line prints) and the epoch line."""
    writers = [Checkpointer(run_dir, run.model, run.optimizer, lambda: rng_state(run.device, run.generator),
                            run.meta, rows, states), MarkSaved()]
    if tensorboard:
        from tenfold.training.tensorboard import TensorBoard
        writers.append(TensorBoard(run_dir / "tensorboard"))
    writers += callbacks or []
    if not quiet and progress is not False:
        writers.append(ProgressBar(images, run.config.epochs, force=bool(progress)))
    if not quiet:
        writers.append(SeedLogger())
    return writers


def fit_run(run: Run, fitting: Fitting, callbacks: list, start: int, history: History, scaler,
            place: Place | None) -> History:
    """fit() on the wrapped model (DDP first, then compile, as PyTorch's DDP notes advise); a compile or user
    model failure in one line."""
    config = run.config
    model = distributed.wrap(fitting.model, run.device, place) if place else fitting.model
    if config.compile:
        model = torch.compile(model)
    try:
        return fit(model, run.optimizer, fitting.train, fitting.val, config.epochs, callbacks, start_epoch=start,
                   history=history, label_smoothing=config.label_smoothing, precision=fitting.precision,
                   tta=fitting.tta, scaler=scaler)
    except Exception as e:
        failed = (compile_error(e) if config.compile else None) or user_model_error(config, e)
        if failed is not None:
            raise failed
        raise


def head_first(run: Run, train: FeatureLoader, val: FeatureLoader | None, quiet: bool) -> None:
    """The new head fitted to the frozen backbone's features before any epoch (deterministic: the seed's run
    gets the same head each time); prints what it reached."""
    loss = fit_head(run.model, train, run.config.label_smoothing)
    if not quiet:
        acc = f", validation accuracy {evaluate(FeatureHead(run.model), val)['accuracy']:.2%}" if val else ""
        note(f"new head fitted to the frozen features: training loss {loss:.2f}{acc}")


def frozen_features(run: Run, train: DeviceLoader, val: DeviceLoader | None, quiet: bool):
    """`--freeze`: loaders of the backbone's features (train images and their mirrors; validation images, with
    their mirrors when the run has test-time views)."""
    m, s, photo = run.meta["mean"], run.meta["std"], run_photo(run.meta)
    plain = DeviceLoader(run.data.train, eval_batch(run.meta["input_shape"]), run.device, m, s, photo=photo)
    return feature_loaders(run.model, plain, val, train.batch_size, run.config.tta, run.precision, run.generator,
                           quiet)


def quote(path) -> str:
    """A path as it must be typed in a shell command."""
    import shlex
    return shlex.quote(str(path))


def schedule_note(config: TrainConfig, planned: int, start: int) -> str | None:
    """What a resume with more epochs than the one-cycle schedule was planned for does to the learning rate."""
    if config.schedule != "onecycle" or config.epochs <= planned or start >= config.epochs:
        return None
    first = max(start, planned) + 1
    epochs = f"epoch {first}" if first == config.epochs else f"epochs {first}-{config.epochs}"
    return (f"the one-cycle schedule was planned for {plural(planned, 'epoch')}: {epochs} continue at its final "
            f"rate ({config.lr_end_factor:g} x --lr); for a whole schedule over {config.epochs} epochs, start a new run")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def summary_line(rows: list[dict], run_dir: Path) -> str:
    """The run's last word: its best and final validation accuracy, where it is, and what to do next."""
    import math
    scored = [r for r in rows if math.isfinite(r.get("val_accuracy", float("nan")))]
    if scored:
        best = max(scored, key=lambda r: r["val_accuracy"])
        final = scored[-1]
        tta = f" ({final['val_accuracy_tta']:.2%} with test-time augmentation)" if "val_accuracy_tta" in final else ""
        result = (f"validation accuracy {final['val_accuracy']:.2%} after epoch {final['epoch']}{tta}, "
                  f"best {best['val_accuracy']:.2%} (epoch {best['epoch']})")
    else:
        result = f"{len(rows)} epoch(s), no validation images"
    q = quote(run_dir)
    return (f"done: {result}; run directory {run_dir}. Next: tenfold evaluate {q} | "
            f"tenfold predict {q} IMAGE | tenfold report {q}")


def user_model_error(config: TrainConfig, e: Exception) -> ConfigError | None:
    """An error raised inside a user's model file, as one line naming the file and the epoch."""
    if isinstance(e, TenfoldError) or not is_user_model(config.model):
        return None
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return ConfigError(f"model {config.model} failed in epoch {ACTIVE.get('epoch', '?')}: "
                       f"{type(e).__name__}: {first}")


class MarkSaved(Callback):
    """Right after the checkpoint: an epoch of this run is saved (Ctrl-C then says how to resume)."""

    def on_epoch_begin(self, epoch, logs):
        ACTIVE["epoch"] = epoch

    def on_epoch_end(self, epoch, logs):
        ACTIVE["saved"] = True


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


def image_size(run: Run) -> str:
    """', images at 64x64 (--image-size N to change)' for a folder trained from scratch; '' otherwise."""
    from tenfold.data.cifar10 import is_cifar10_archive
    if run_photo(run.meta) is not None or run.data.source == "cifar10" or is_cifar10_archive(run.config.data):
        return ""
    h, w = run.data.train.shape
    return f", images at {h}x{w}" + (" (--image-size N to change)" if run.config.image_size is None else "")


def finetune_suggestion(config: TrainConfig) -> str | None:
    """For a folder of photos trained from scratch by default: a pointer to the pretrained preset."""
    from tenfold.data.folder import photo_size
    if config.preset is not None or config.model != TrainConfig.model:
        return None
    size = photo_size(config.data)
    if size is None or min(size) <= 64:
        return None
    return (f"these look like photos ({size[1]}x{size[0]}); a net pretrained on ImageNet learns them from far "
            f"fewer images: tenfold train --data {config.data} --preset finetune")


def announce(run: Run, run_dir: Path, start: int, place: Place | None) -> None:
    workers = f" x {place.world} workers" if place is not None and place.world > 1 else ""
    arithmetic = "" if run.precision == "fp32" else f", {run.precision} autocast"
    compiled = ", compiled" if run.config.compile else ""
    fast = f", fast path: {run.fast.summary()}" if run.fast and run.fast.choices else ""
    photo = run_photo(run.meta)
    if photo is not None:  # which weights, at what size, and how they train
        how = (" (backbone frozen: its features once, the head trained)" if run.config.freeze else
               " (the head fitted first, then all layers)" if run.config.head_first else "")
        fast += (f"; {photo.input_size}x{photo.input_size} crops of photos cached at {photo.stored} px, "
                 f"weights: {run.meta['weights']}{how}")
    note(f"{run.config.model} on {describe(run.device)}{workers}{arithmetic}{compiled}{fast}; "
         f"{len(run.data.train)} training / {len(run.data.val) if run.data.val is not None else 0} validation "
         f"images, {len(run.data.train.classes)} classes{image_size(run)}; run directory {run_dir}")
    busy = (cpu.busy_note(torch.get_num_threads(), run.busy, cpu.usable_cores(),
                          cpu.pinned_threads(run.config.threads) is None) if run.device.type == "cpu" else None)
    suggestion = finetune_suggestion(run.config) if start == 0 else None
    planned = schedule_note(run.config, run.meta.get("schedule_epochs", run.config.epochs), start)
    for advice in (busy, suggestion, planned):
        if advice:
            note(advice, prefix="note: ")
    if run.device.type == "cpu" and run.precision != "fp32" and not cpu_has(run.precision):
        warn(f"this CPU has no {run.precision} units, so {run.precision} is emulated and far slower than fp32 "
             "(--precision auto picks what the hardware does best)")
    if start >= run.config.epochs:
        note(f"{run_dir} already finished {plural(start, 'epoch')}; pass --epochs N (> {start}) to train longer")
