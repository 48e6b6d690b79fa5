"""The pieces of the fast recipes, each usable alone: the learning-rate schedule, lookahead weight averaging and
multi-view test-time augmentation (the augmentations are in tenfold.data.augment)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.training.callbacks import Callback


def onecycle(step: int, total: int, warmup: float = 0.23, final: float = 0.07, start: float = 0.2) -> float:
    """Learning-rate multiplier: linear from `start` to 1 over the first `warmup` of the steps, then linear down
    to `final` at the end (airbench's triangle)."""
    t = step / max(total, 1)
    if t < warmup:
        return start + (1 - start) * t / warmup
    return 1 + (final - 1) * (t - warmup) / (1 - warmup)


class LRSchedule(Callback):
    """Sets each parameter group's learning rate to its initial_lr x onecycle(step) before every step; `shape`
    is onecycle's (warmup, final, start)."""

    def __init__(self, optimizer, total_steps: int, start_step: int = 0, shape: tuple = (0.23, 0.07, 0.2)):
        self.optimizer, self.total, self.step, self.shape = optimizer, total_steps, start_step, shape
        self.apply()

    def on_batch_end(self, batch, logs):
        self.step += 1
        self.apply()

    def apply(self) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = g["initial_lr"] * onecycle(min(self.step, self.total), self.total, *self.shape)


class Lookahead(Callback):
    """Slow and fast weights: every `every` steps the slow weights move toward the fast ones,
    slow = lerp(slow, fast, 1 - decay), and training continues from the slow ones. The decay grows with the cube of
    the progress (0 at the start, `decay` at the end), and the last step leaves the net at the slow weights.
    BatchNorm running statistics are averaged the same way (they are part of the state)."""

    def __init__(self, model: nn.Module, total_steps: int, every: int = 5, decay: float = 0.95 ** 5):
        self.model, self.total, self.every, self.decay = model, total_steps, every, decay
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}
        self.step = 0

    def on_batch_end(self, batch, logs):
        self.step += 1
        if self.step >= self.total:
            self.average(1.0)  # the end: the net takes the slow weights
        elif self.step % self.every == 0:
            self.average(self.decay * (self.step / self.total) ** 3)

    @torch.no_grad()
    def average(self, decay: float) -> None:
        state = self.model.state_dict()
        for k, slow in self.slow.items():
            slow.lerp_(state[k], 1 - decay)
            state[k].copy_(slow)

    def state_dict(self) -> dict:
        return {"step": self.step, "slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        for k, v in state["slow"].items():
            self.slow[k].copy_(v)


def tta_views(x: torch.Tensor, level: int) -> list[tuple[torch.Tensor, float]]:
    """(view, weight) pairs: level 0 the image; 1 the image and its mirror; 2 adds both shifted one pixel up-left
    and down-right (reflection-padded), weighted so the unshifted pair counts half."""
    if level == 0:
        return [(x, 1.0)]
    views = [(x, 0.5), (x.flip(3), 0.5)]
    if level == 1:
        return views
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, :-2, :-2], padded[:, :, 2:, 2:]]
    return [(v, 0.25) for v, _ in views] + [(v, 0.125) for s in shifted for v in (s, s.flip(3))]


@torch.inference_mode()
def predict_tta(model: nn.Module, x: torch.Tensor, level: int) -> torch.Tensor:
    """The weighted mean of the model's logits over the test-time views of batch `x`."""
    return sum(w * model(v).float() for v, w in tta_views(x, level))
