"""Using a finished run: test accuracy with a confusion matrix, and top-k predictions for image files."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tenfold.data import DeviceLoader, ImageSet
from tenfold.errors import CheckpointError, DataError
from tenfold.models import create_model
from tenfold.training.checkpoint import load_checkpoint
from tenfold.training.device import pick_device, resolve_precision
from tenfold.training.fit import predict_logits
from tenfold.training.run import eval_batch, run_photo


@dataclass
class Trained:
    model: torch.nn.Module
    ckpt: dict
    device: torch.device

    @property
    def classes(self) -> list[str]:
        return self.ckpt["classes"]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.ckpt["image_shape"])

    @property
    def precision(self) -> str:
        """fp32 for a run trained in fp32; else the 16-bit arithmetic this device does best (a run trained in bf16
        predicts in fp16 on a T4, in fp32 on a CPU without bf16 units)."""
        precision = self.ckpt["config"].get("precision", "fp32")
        return resolve_precision("fp32" if precision == "fp32" else "auto", self.device)

    def views(self, tta: int | None) -> int:
        """The test-time views asked for, else the run's own setting."""
        return self.ckpt["config"].get("tta", 0) if tta is None else tta

    @property
    def fit(self) -> str:
        """How an image reaches `shape`: "crop" (aspect kept, a pretrained model's photos) or "stretch"."""
        return "crop" if self.ckpt.get("photo") else "stretch"

    def loader(self, data: ImageSet) -> DeviceLoader:
        """Evaluation batches as the run's own validation saw them (centre crops for a pretrained model)."""
        return DeviceLoader(data, eval_batch(self.ckpt.get("input_shape", self.shape)), self.device,
                            self.ckpt["mean"], self.ckpt["std"], photo=run_photo(self.ckpt))


def load_trained(run_dir: str | Path, device: str = "auto") -> Trained:
    ckpt = load_checkpoint(run_dir)
    cfg = ckpt["config"]
    dev = pick_device(device)
    from tenfold.training.run import model_spec
    model = create_model(model_spec(ckpt, run_dir), num_classes=len(ckpt["classes"]),
                         image_shape=ckpt.get("input_shape", ckpt["image_shape"]), keep_prob=cfg.get("keep_prob", 1.0),
                         pretrained=False)  # the checkpoint holds every weight
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"the checkpoint does not match model '{cfg['model']}' "
                              f"({str(e).splitlines()[0][:160]})")
    return Trained(model.to(dev, memory_format=torch.channels_last).eval(), ckpt, dev)


def probabilities(trained: Trained, data: ImageSet, tta: int | None = None,
                  precision: str | None = None) -> np.ndarray:
    """Softmax probabilities, (N, classes) float32, with the run's (or the given) test-time views, in the run's
    arithmetic on this device (Trained.precision) unless `precision` (fp32, bf16, fp16) says otherwise."""
    logits = predict_logits(trained.model, trained.loader(data), trained.views(tta), precision or trained.precision)
    if not bool(torch.isfinite(logits).all()):
        raise CheckpointError("this run's model gives outputs that are not numbers (its training diverged); "
                              "train it again with a lower --lr")
    return logits.float().softmax(1).cpu().numpy()


def summarise(labels: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict:
    """Accuracy, per-class accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    k = len(classes)
    confusion = np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)
    totals = confusion.sum(1)
    per_class = {c: (float(confusion[i, i] / totals[i]) if totals[i] else None) for i, c in enumerate(classes)}
    return {"images": int(len(labels)), "accuracy": float(np.trace(confusion) / max(1, len(labels))),
            "classes": list(classes), "per_class_accuracy": per_class, "confusion_matrix": confusion.tolist()}


def load_image(path: str, shape: tuple[int, int], fit: str = "stretch") -> np.ndarray:
    """Any image file Pillow reads -> uint8 (H, W, 3) RGB at the run's stored size, decoded exactly as its
    training images were (tenfold.data.decode; `fit` as Trained.fit). DataError naming why not."""
    from tenfold.data.decode import Skip, decode
    image = decode(Path(path), tuple(shape), fit=fit)
    if isinstance(image, Skip):
        from tenfold.data.folder import printable
        raise DataError(f"{printable(str(path))}: {image}")
    return image


def image_files(args: list[str]) -> list[tuple[str, bool]]:
    """What `tenfold predict` was given, as (image path, named explicitly): files as they are; a folder: every file
    in it and its sub-folders, sorted (non-images among them are skipped with a warning, not an error); a glob
    pattern the shell left alone: its matches, sorted. DataError for a pattern that matches nothing."""
    import glob
    out = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            out += [(str(p), False) for p in sorted(path.rglob("*")) if (p.is_file() or p.is_symlink()) and
                    not any(part.startswith(".") for part in p.relative_to(path).parts)]
        elif not path.exists() and glob.has_magic(arg):
            matches = sorted(glob.glob(arg, recursive=True))
            if not matches:
                raise DataError(f"{arg}: no file matches this pattern")
            out += [(m, True) for m in matches if not Path(m).is_dir()]
        else:
            out.append((arg, True))
    return out


def predict_images(trained: Trained, images: list[np.ndarray], top: int = 3,
                   tta: int | None = None) -> list[list[tuple[str, float]]]:
    """Top-`top` (class, probability) for each image."""
    data = ImageSet(np.stack(images), np.zeros(len(images), dtype=np.int64), trained.classes)
    return top_classes(probabilities(trained, data, tta), trained.classes, top)


def top_classes(probs: np.ndarray, classes: list[str], k: int) -> list[list[tuple[str, float]]]:
    """The `k` most probable (class, probability) of each row, most probable first (ties: class order)."""
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [[(classes[j], float(p[j])) for j in o] for p, o in zip(probs, order)]
