"""`tenfold train --devices N`: N workers on this machine through PyTorch's elastic launcher (torchrun's engine).

The workers run the same `tenfold train` command; they find their rank in the environment the launcher sets
(see tenfold.training.distributed). A worker that fails ends the job with one line naming it, or, with
`--max-restarts K`, the launcher starts every worker again and they resume from the last checkpoint.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import uuid
from pathlib import Path

from tenfold import envvars
from tenfold.errors import ERRORS_ENV, ConfigError, TenfoldError, Terminated


class WorkerFailed(TenfoldError):
    """A worker died or failed; the message names it and what to do."""


def check_devices(value: str) -> str:
    """--devices as given, once it is a positive number or auto; ConfigError otherwise."""
    try:
        ok = value == "auto" or int(value) >= 1
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(f"--devices must be a positive number or auto, got '{value}'")
    return value


def count_devices(value: str, device: str) -> int:
    """--devices: a positive number, or auto (every GPU; one process where there is none, or on --device cpu)."""
    import torch
    gpus = torch.cuda.device_count() if device != "cpu" and torch.cuda.is_available() else 0
    if check_devices(value) == "auto":
        return max(1, gpus)
    n = int(value)
    if gpus and device != "cpu" and n > gpus:
        raise ConfigError(f"--devices {n}: this machine has {gpus} GPU(s) (or use --device cpu for CPU workers)")
    if device.startswith("cuda") and not gpus:
        raise ConfigError(f"--device {device}: no CUDA GPU is available here (use --device cpu for CPU workers)")
    return n


def worker_env(workers: int, on_cpu: bool, errors: str) -> dict:
    """What the workers need besides the launcher's RANK/WORLD_SIZE/MASTER_ADDR; what the user set wins."""
    env = {ERRORS_ENV: errors}  # (gloo's loopback interface is set where workers join: distributed.join)
    if on_cpu:  # CPU workers share the cores instead of each starting a thread per core
        from tenfold.training.cpu import usable_cores
        env["OMP_NUM_THREADS"] = str(max(1, usable_cores() // workers))
    return {k: v for k, v in env.items() if k not in os.environ}


@contextlib.contextmanager
def environment(extra: dict):
    os.environ.update(extra)
    try:
        yield
    finally:
        for k in extra:
            os.environ.pop(k, None)


def start(args, config, worker_argv) -> bool:
    """`tenfold train --devices N` on the launcher's side: check what can be checked before any worker starts,
    name the run directory (a restart must find it), then launch the workers: `worker_argv(args)` (the run flags, once
    the run directory is named), the settings resolved in TENFOLD_WORKER_CONFIG. False (and nothing done) for one device without restarts: a
    plain process does that best."""
    import torch

    from tenfold.training.distributed import local_batch
    from tenfold.training.run import check_new_run_dir, check_resume_out, default_run_dir

    check_resume_out(args.out, args.resume)
    if args.max_restarts is not None and args.max_restarts < 0:
        raise ConfigError(f"--max-restarts must be 0 or more, got {args.max_restarts}")
    workers = count_devices(args.devices or "1", config.device)
    if workers == 1 and not args.max_restarts:
        return False
    if not args.resume:
        args.out = str(check_new_run_dir(Path(args.out) if args.out else default_run_dir(config)))
    local_batch(config.batch_size, workers)  # the global batch must split evenly
    enough_images(config, args.resume, workers)
    with environment({envvars.WORKER_CONFIG: json.dumps(config.to_dict())}):
        launch(worker_argv(args), workers, args.max_restarts or 0,
               config.device == "cpu" or not torch.cuda.is_available(), args.resume or args.out)
    return True


def enough_images(config, resume, workers: int) -> None:
    """Every worker needs a training image: checked before any worker starts (the data is cached for them)."""
    from tenfold.data import open_dataset
    from tenfold.models import pretrained_cfg
    from tenfold.training.run import check_pretrained, check_workers
    photo = check_pretrained(config, pretrained_cfg(config.model))
    data = open_dataset(config.data, config.val_split, config.image_size, quiet=True, photo=photo)
    check_workers(len(data.train), workers)


def launch(worker_args: list[str], workers: int, max_restarts: int, on_cpu: bool, run_dir: str) -> None:
    """Run `tenfold train WORKER_ARGS` as `workers` processes; raises WorkerFailed when they fail for good."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    for name in list(logging.root.manager.loggerDict):  # each of its modules sets its own level: silence them all
        if name.startswith(("torch.distributed.elastic", "torch.distributed.launcher")):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # its log lines are not for users: we say one line
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=workers, run_id=str(uuid.uuid4()),
                          rdzv_backend="c10d", rdzv_endpoint="127.0.0.1:0",  # as torchrun --standalone
                          local_addr="127.0.0.1", max_restarts=max_restarts, monitor_interval=0.5)
    errors = tempfile.mkdtemp(prefix="tenfold-workers-")
    try:
        with environment(worker_env(workers, on_cpu, errors)):
            elastic_launch(config, sys.executable)("-m", "tenfold", "train", *worker_args)
    except ChildFailedError as e:
        raise WorkerFailed(cause(e.failures, errors) + resume_hint(run_dir, workers, max_restarts))
    except SignalException as e:  # the launcher turns Ctrl-C and SIGTERM into this after stopping the workers
        raise (KeyboardInterrupt() if e.sigval == signal.SIGINT else Terminated())
    finally:
        shutil.rmtree(errors, ignore_errors=True)


def resume_hint(run_dir: str, workers: int, max_restarts: int) -> str:
    from tenfold.training.checkpoint import CHECKPOINT
    if not Path(run_dir, CHECKPOINT).exists():
        return ""
    return (f"; finished epochs are saved: continue with tenfold train --resume {run_dir} --devices {workers}"
            + ("" if max_restarts else " (--max-restarts K restarts failed workers by itself)"))


def cause(failures: dict, errors: str) -> str:
    """The root cause among the failed workers (rank -> torch's ProcessFailure): the first found killed by a
    signal (the others then fail talking to it), else the first error a worker wrote, else the first exit code."""
    # SIGTERM is the launcher stopping the others, and SIGKILL too when one has not stopped 30 s after it: such a
    # worker was found later (the timestamp, whole seconds, when the launcher saw it dead). Among those seen in one
    # look, SIGABRT is often a survivor's network library giving up.
    killed = sorted((f.timestamp, -f.exitcode == signal.SIGABRT, rank, f) for rank, f in failures.items()
                    if f.exitcode < 0 and -f.exitcode != signal.SIGTERM)
    if killed:
        *_, rank, f = killed[0]
        return f"worker {rank} (pid {f.pid}) was killed by {signal.Signals(-f.exitcode).name}"
    written = sorted(Path(errors).glob("rank-*"), key=lambda p: p.stat().st_mtime)
    if written:
        return f"worker {written[0].name[5:]}: {written[0].read_text().strip()}"
    rank, f = min(failures.items())
    return f"worker {rank} (pid {f.pid}) exited with code {f.exitcode}"
