"""`tenfold bench`: the seed's LeNet-5 epoch on every device here, beside the seed's own numbers."""
from __future__ import annotations

import datetime
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

from tenfold.config import TrainConfig
from tenfold.data import ImageSet, Splits, open_dataset
from tenfold.fileio import atomic_write_text
from tenfold.training.callbacks import ProgressBar
from tenfold.training.device import describe
from tenfold.training.fit import fit
from tenfold.training.run import build, loaders
from tenfold.tables import table

# The seed's measurements of one LeNet-5 epoch over 45,000 CIFAR-10 images (seconds).
REFERENCES = [("seed: laptop CPU", 42.0), ("seed: AWS Tesla K80", 4.5)]
TRAIN_IMAGES, VAL_IMAGES = 45_000, 5_000


def devices_here() -> list[str]:
    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    return found + (["mps"] if torch.backends.mps.is_available() else [])


def synthetic_cifar(seed: int = 0, train: int = TRAIN_IMAGES, val: int = VAL_IMAGES) -> Splits:
    """CIFAR-10-shaped random images: the epoch time does not depend on what the pixels show."""
    rng = np.random.default_rng(seed)
    classes = [str(i) for i in range(10)]
    make = lambda n: ImageSet(rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),  # noqa: E731
                              rng.integers(0, 10, n).astype(np.int64), classes)
    return Splits(make(train), make(val), None, source="synthetic")


def bench_device(device: str, data: Splits, epochs: int, batch_size: int | None, progress: bool) -> dict:
    config = TrainConfig(device=device, epochs=epochs, **({"batch_size": batch_size} if batch_size else {}))
    run = build(config, quiet=True, data=data)
    train_loader, val_loader = loaders(run, config.batch_size)
    bar = [ProgressBar(train_loader.num_images, epochs)] if progress else []
    history = fit(run.model, run.optimizer, train_loader, val_loader, epochs, bar).history
    steady = lambda key: statistics.median(history[key][1:] or history[key])  # noqa: E731  (epoch 1 warms up)
    return {"device": describe(run.device), "epoch_s": steady("seconds"), "images_per_s": steady("images_per_s"),
            "val_accuracy": history["val_accuracy"][-1] if data.source != "synthetic" else None,
            "images": train_loader.num_images}


def bench(data: str | None = None, epochs: int = 3, devices: list[str] | None = None,
          batch_size: int | None = None, progress: bool | None = None) -> list[dict]:
    """One row per device: median epoch time (epochs 2..N), images/s, validation accuracy (real data only).

    Devices are checked by the caller (the CLI does it before any work) or, at the latest, by build()."""
    splits = open_dataset(data, quiet=True) if data else synthetic_cifar()
    show = sys.stderr.isatty() if progress is None else progress
    return [bench_device(d, splits, epochs, batch_size, show) for d in devices or devices_here()]


def record_measured(rows: list[dict], instance_type: str, folder: Path = Path("runs") / "bench",
                    batch_size: int | None = None) -> Path | None:
    """On a cloud instance (the agent names its type): the GPU rows as measured.csv lines (tenfold.cloud.catalog),
    written to runs/bench/, which `tenfold cloud run` fetches and adds to this account's measurements, so that
    `tenfold cloud plan` says "measured" for LeNet-5 on that type. The file, or None without a GPU row."""
    today = datetime.date.today().isoformat()
    batch = TrainConfig().batch_size if batch_size is None else batch_size
    lines = [f"{instance_type},lenet5,fp32,{batch},32,{r['images_per_s']:.1f},{today},tenfold bench on this account"
             for r in rows if r["device"].endswith("(cuda)")]
    if not lines:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"measured-{instance_type}-{datetime.datetime.now():%Y%m%d-%H%M%S}.csv"
    atomic_write_text(path, "type,model,precision,batch_size,image_size,train_images_per_s,measured,source\n" + "\n".join(lines) + "\n")
    return path


def format_bench(rows: list[dict]) -> str:
    cpu = next((r["epoch_s"] for r in rows if r["device"].startswith("CPU")), rows[0]["epoch_s"])
    laptop = REFERENCES[0][1]
    cells = []
    for r in rows + [{"device": name, "epoch_s": s, "images_per_s": TRAIN_IMAGES / s, "val_accuracy": None}
                     for name, s in REFERENCES]:
        acc = "n/a" if r["val_accuracy"] is None else f"{r['val_accuracy']:.2%}"
        cells.append([r["device"], f"{r['epoch_s']:.2f}", f"{r['images_per_s']:,.0f}", acc,
                      f"{cpu / r['epoch_s']:.2f}x", f"{laptop / r['epoch_s']:.1f}x"])
    return (table(cells, ["device", "epoch (s)", "images/s", "val. acc.", "vs this CPU", "vs seed laptop"], "lrrrrr")
            + f"\n(LeNet-5 epoch over {TRAIN_IMAGES:,} images; seed rows are the original project's reports)")
