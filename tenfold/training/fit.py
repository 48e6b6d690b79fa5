"""The training loop: it trains, measures, and reports only through callbacks."""
from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from tenfold.errors import DivergedError
from tenfold.training.callbacks import Callback, CallbackList, History
from tenfold.training.distributed import all_sum
from tenfold.training.recipe import predict_tta


HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(device: torch.device, precision: str):
    """Autocast of the forward pass for bf16 or fp16 (matmuls and convs in 16 bits, reductions in fp32), or
    nothing for fp32. `precision` is resolved already (tenfold.training.device.resolve_precision)."""
    return torch.autocast(device.type, HALF.get(precision, torch.bfloat16), enabled=precision in HALF)


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none (a no-op scaler)."""
    return torch.amp.GradScaler(device.type, enabled=precision == "fp16")


def train_step(model: nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor, scaler: torch.amp.GradScaler,
               precision: str = "fp32", label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on batch (x, y); returns the logits and the loss (on the device, not synced)."""
    with autocast(x.device, precision):
        logits = model(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)  # skipped when fp16 gradients overflowed; the scale then halves
    scaler.update()
    return logits, loss


def train_epoch(model: nn.Module, optimizer, loader, callbacks: CallbackList, label_smoothing: float = 0.0,
                precision: str = "fp32", scaler: torch.amp.GradScaler | None = None) -> tuple[float, float, int]:
    """One pass over `loader`; returns the mean training loss and accuracy and the images trained on (one host
    sync, at the end), over every worker's images. The accuracy is that of the augmented batches as trained on, as Keras reports it."""
    model.train()
    scaler = scaler or grad_scaler(loader.device, precision)
    sums = torch.zeros(3, device=loader.device, dtype=torch.float64)  # loss x images, correct, images
    for i, (x, y) in enumerate(loader):
        logits, loss = train_step(model, optimizer, x, y, scaler, precision, label_smoothing)
        sums[0] += loss.detach() * len(y)  # stays on the device: no sync per step
        sums[1] += (logits.detach().argmax(1) == y).sum()
        sums[2] += len(y)
        callbacks.on_batch_end(i, {"size": len(y)})
    loss_sum, correct, images = all_sum(sums).tolist()
    return loss_sum / images, correct / images, int(images)


@torch.inference_mode()
def predict_logits(model: nn.Module, loader, tta: int = 0, precision: str = "fp32") -> torch.Tensor:
    """Logits for every image of `loader`, in order, as one (N, classes) tensor (averaged over `tta` views)."""
    model.eval()
    with autocast(loader.device, precision):
        return torch.cat([predict_tta(model, x, tta) for x, _ in loader])


@torch.inference_mode()
def evaluate(model: nn.Module, loader, tta: int = 0, precision: str = "fp32") -> dict:
    """{'loss': mean cross-entropy, 'accuracy': fraction correct} over `loader` (over every worker's shard)."""
    labels = loader.labels
    if len(labels) == 0:  # a worker whose shard of a tiny validation split is empty still joins the sum
        sums = torch.zeros(3, dtype=torch.float64, device=labels.device)
    else:
        logits = predict_logits(model, loader, tta, precision).float()
        sums = torch.stack([F.cross_entropy(logits, labels, reduction="sum").double(),
                            (logits.argmax(1) == labels).sum().double(),
                            torch.tensor(float(len(labels)), dtype=torch.float64, device=labels.device)])
    loss_sum, correct, images = all_sum(sums).tolist()
    return {"loss": loss_sum / images, "accuracy": correct / images} if images else {"loss": float("nan"),
                                                                                      "accuracy": float("nan")}


def fit(model: nn.Module, optimizer, train_loader, val_loader=None, epochs: int = 10,
        callbacks: list[Callback] | None = None, start_epoch: int = 0, history: History | None = None,
        label_smoothing: float = 0.0, precision: str = "fp32", tta: int = 0,
        scaler: torch.amp.GradScaler | None = None) -> History:
    """Train from epoch `start_epoch` + 1 to `epochs`; returns the History (resumed runs included). The last
    epoch's validation is also made with `tta` test-time views (`val_accuracy_tta`). `precision` is resolved
    (fp32, bf16 or fp16); `scaler`: fp16's loss scaler, to keep its state across a resume."""
    history = history or History()
    plain = unwrap(model)  # evaluation skips DDP and compilation: no collectives per batch, no eval-mode graph
    # TerminateOnNaN first: a diverged epoch raises before the history or a checkpoint takes it
    cbs = CallbackList([TerminateOnNaN(plain, precision, val_loader is not None), history, *(callbacks or [])])
    scaler = scaler or grad_scaler(train_loader.device, precision)
    cbs.on_train_begin({"epochs": epochs, "start_epoch": start_epoch})
    try:
        for epoch in range(start_epoch + 1, epochs + 1):
            cbs.on_epoch_begin(epoch, {})
            t0 = time.perf_counter()
            loss, accuracy, images = train_epoch(model, optimizer, train_loader, cbs, label_smoothing, precision,
                                                 scaler)
            train_seconds = time.perf_counter() - t0
            cbs.callbacks[0].check(epoch, loss)  # a diverged run stops before its validation is even run
            val = evaluate(plain, val_loader, 0, precision) if val_loader is not None else {
                "loss": float("nan"), "accuracy": float("nan")}
            logs = {"epoch": epoch, "loss": loss, "accuracy": accuracy, "val_loss": val["loss"],
                    "val_accuracy": val["accuracy"], "seconds": time.perf_counter() - t0,
                    "images_per_s": images / train_seconds,
                    "lr": optimizer.param_groups[0]["lr"]}
            if tta and epoch == epochs and val_loader is not None:
                logs["val_accuracy_tta"] = evaluate(plain, val_loader, tta, precision)["accuracy"]
                logs["seconds"] = time.perf_counter() - t0
            cbs.on_epoch_end(epoch, logs)
            if cbs.stop_training:  # a callback asked (as Keras' model.stop_training): this epoch stays saved
                break
    finally:
        cbs.on_train_end({})
    return history


EXPLOSION = 100  # a training loss this many times the loss of a uniform guess, ln(classes), is a divergence


def explosion(model: nn.Module) -> float:
    """The training loss beyond which a run has diverged: EXPLOSION x ln(classes) (230 for 10 classes), read from
    the model's last layer; infinity when that cannot be told."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.LazyLinear)) and
            not isinstance(m.weight, nn.parameter.UninitializedParameter)]
    classes = last[-1].out_features if last else 0
    return EXPLOSION * math.log(classes) if classes >= 2 else math.inf


def finite_weights(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())


class TerminateOnNaN(Callback):
    """Keras' TerminateOnNaN, and more: a training loss that is not finite or beyond `explosion`, a validation
    loss that is not finite, or weights that are not, end training with DivergedError (one line with the fix)
    before the epoch is recorded or saved over a good one."""

    def __init__(self, model: nn.Module, precision: str, validating: bool):
        self.model, self.precision, self.validating = model, precision, validating

    def check(self, epoch: int, loss: float) -> None:
        if not math.isfinite(loss) or loss > explosion(self.model):
            raise diverged(epoch, loss, self.precision)

    def on_epoch_end(self, epoch, logs):
        loss, val_loss = logs["loss"], logs["val_loss"]
        self.check(epoch, loss)
        if self.validating and not math.isfinite(val_loss) or not finite_weights(self.model):
            raise diverged(epoch, val_loss if math.isfinite(loss) else loss, self.precision, "validation loss")


def diverged(epoch: int, loss: float, precision: str, what: str = "training loss") -> DivergedError:
    fix = "a lower --lr" + (" or --precision fp32" if precision != "fp32" else "")
    kept = f"the checkpoint keeps epoch {epoch - 1}" if epoch > 1 else "no epoch was saved"
    return DivergedError(f"epoch {epoch}: the {what} became {loss:.3g}, so training stopped ({kept}); "
                         f"try {fix}")


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside torch.compile's and DistributedDataParallel's wrappers (either order)."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif getattr(model, "_orig_mod", None) is not None:  # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model
