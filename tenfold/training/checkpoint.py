"""The run directory: checkpoint.pt (the source of truth), history.csv and config.json, all written atomically.

A checkpoint is an explicit dict that carries everything needed to resume or to predict:
config, classes, image shape, normalisation, model and optimiser state, RNG states, epoch and history.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from tenfold.version import __version__
from tenfold.errors import CheckpointError
from tenfold.fileio import CHECKPOINT, atomic_open, atomic_write_text, check_run_dir
from tenfold.training.callbacks import Callback
from tenfold.training.metrics import CSV_FORMATS, METRICS

FORMAT = "tenfold-checkpoint"
VERSION = 1
TENSORS = ("train_digests",)  # meta the checkpoint keeps but config.json does not (not JSON)


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_open(path) as f:
        torch.save({"format": FORMAT, "version": VERSION, "tenfold": __version__, **state}, f)


def load_checkpoint(run_dir: str | Path) -> dict:
    """The checkpoint of a run directory; a clear error for anything that is not one."""
    path = check_run_dir(run_dir) / CHECKPOINT
    try:
        # weights_only: a checkpoint holds tensors and plain data only, so loading runs no foreign code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as e:
        raise CheckpointError(f"{path}: cannot read it ({e.strerror})") from e
    except Exception as e:  # torch raises several kinds for truncated or foreign files
        raise CheckpointError(f"{path} is corrupt or not a tenfold checkpoint ({e.__class__.__name__})")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tenfold checkpoint")
    if ckpt.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer tenfold ({ckpt.get('tenfold')}); upgrade to read it")
    return ckpt


def history_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["epoch", *(m.column for m in METRICS)], lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({"epoch": r["epoch"], **{m.column: csv_text(m, r.get(m.key)) for m in METRICS}})
    return buf.getvalue()


def csv_text(metric, value) -> str:
    """As history.csv has always written them: 'nan' for a NaN (no validation split), '' for an absent value."""
    if value is None:
        return ""
    return "nan" if value != value else CSV_FORMATS[metric.kind].format(value)


def write_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_error(run_dir: Path, epoch: int, e: Exception) -> CheckpointError:
    """One line for a checkpoint that could not be written; the last one saved is untouched (atomic writes)."""
    import errno
    reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:120]
    if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "unexpected pos" in str(e) or "space" in str(e):
        reason = f"no space left on the device: {reason}"
    then = (f"then: tenfold train --resume {run_dir} (it continues after epoch {epoch - 1})" if epoch > 1 else
            "then start the run again")
    return CheckpointError(f"could not save epoch {epoch} to {run_dir} ({reason}); free space, {then}")


class Checkpointer(Callback):
    """After every epoch: checkpoint.pt first (the truth), then history.csv and config.json derived from it. A new
    run writes both at its start (its folder says what it is before the first epoch ends); a resumed one rewrites
    history.csv from its checkpoint (mending one a kill left behind) and changes config.json only with its next
    checkpoint, so a resume that trains nothing leaves config.json as the checkpoint says."""

    def __init__(self, run_dir: Path, model, optimizer, rng_state, meta: dict, history: list[dict],
                 states: dict | None = None):
        self.run_dir, self.model, self.optimizer = Path(run_dir), model, optimizer
        self.states = states or {}  # name -> more to keep, by its state_dict() (lookahead's slow weights, fp16's
        #                             loss scale); a resume gives each its entry back with load_state_dict()
        self.rng_state = rng_state  # () -> dict of RNG states, read at the end of each epoch
        self.meta = meta            # config, classes, image_shape, mean, std, data facts
        self.history = list(history)

    def on_train_begin(self, logs):
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.write_derived(config=not self.history)
        except OSError as e:
            raise save_error(self.run_dir, len(self.history) + 1, e)

    def on_epoch_end(self, epoch, logs):
        self.history.append(dict(logs))
        state = {**self.meta, "epoch": epoch, "history": self.history,
                 "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "rng": self.rng_state(), **{name: s.state_dict() for name, s in self.states.items()}}
        try:
            save_checkpoint(self.run_dir / CHECKPOINT, state)
            self.write_derived()
        except (OSError, RuntimeError) as e:  # disk full, quota, file too large: torch's zip writer says RuntimeError
            self.history.pop()
            raise save_error(self.run_dir, epoch, e)

    def write_derived(self, config: bool = True) -> None:
        """config.json (the meta, without tensors) and history.csv: what people read, derived from the checkpoint."""
        if config:
            write_json(self.run_dir / "config.json", {k: v for k, v in self.meta.items() if k not in TENSORS})
        atomic_write_text(self.run_dir / "history.csv", history_csv(self.history))
