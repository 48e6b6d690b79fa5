"""`tenfold train --tensorboard`: the epoch logs as TensorBoard scalars in RUN_DIR/tensorboard.

TensorBoard is an optional extra (`pip install 'tenfold[tensorboard]'`); view with `tensorboard --logdir runs`.
"""
from __future__ import annotations

import math
from pathlib import Path

from tenfold.errors import ConfigError
from tenfold.training.callbacks import Callback
from tenfold.training.metrics import METRICS



def summary_writer_class():
    """torch's SummaryWriter, or a one-line error naming the extra to install."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install 'tenfold[tensorboard]'")
    return SummaryWriter


class TensorBoard(Callback):
    """One scalar per epoch log, step = epoch. A resumed run drops what a crash left after its checkpoint."""

    def __init__(self, log_dir: str | Path):
        self.writer_class = summary_writer_class()  # fails before training starts, not after the first epoch
        self.log_dir = Path(log_dir)
        self.writer = None

    def on_train_begin(self, logs):
        # purge_step: events at or after the next epoch (written, then lost to a crash before the checkpoint) go
        self.writer = self.writer_class(str(self.log_dir), purge_step=logs.get("start_epoch", 0) + 1)

    def on_epoch_end(self, epoch, logs):
        for m in METRICS:  # each metric under its tag (tenfold.training.metrics)
            value = logs.get(m.key)
            if value is not None and not math.isnan(value):
                self.writer.add_scalar(m.tag, value, epoch)
        self.writer.flush()

    def on_train_end(self, logs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None
