"""`tenfold train --preset finetune` on a photo-like folder, first run with an empty $TENFOLD_HOME (decoding and the
fast path's measurement included): wall-clock and validation accuracy, against `--freeze` (features once, the head
only) measured in the same run.

The photos: two classes of the shared CIFAR-10 copy (default bird and frog), 125 training and 75 validation images
each, upscaled to 180-520 px wide at four aspect ratios and saved as JPEG: the size of a small real photo set
(PyTorch's transfer-learning tutorial's ants and bees: 244 + 153). Upscaled 32x32 images are blurrier than real
photos, so accuracies here are a floor for real ones.

    python benchmarks/finetune.py [--classes bird,frog] [--dry]
"""
from __future__ import annotations

import argparse
import io
import random
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"


def make_photos(out: Path, classes: list[str], train: int, val: int) -> None:
    rng = random.Random(0)
    with tarfile.open(SHARED) as tar:
        for m in tar:
            parts = m.name.split("/")
            if not m.isfile() or parts[-2] not in classes:
                continue
            i = int(Path(m.name).stem)
            split = "train" if i < train else "val" if i < train + val else None
            if split is None:
                continue
            w = rng.randint(180, 520)
            h = int(w * rng.choice([0.75, 1.0, 1.33, 0.66]))
            im = Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB").resize((w, h), Image.BICUBIC)
            (out / split / parts[-2]).mkdir(parents=True, exist_ok=True)
            im.save(out / split / parts[-2] / f"{i:04d}.jpg", quality=90)


def timed_run(args: list[str], home: Path) -> tuple[float, str]:
    env = {"TENFOLD_HOME": str(home), "PATH": "/usr/bin:/bin"}
    t0 = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "tenfold", "train", *args], capture_output=True, text=True,
                            env=env, cwd=REPO)
    if result.returncode:
        sys.exit(result.stderr)
    return time.perf_counter() - t0, result.stdout + result.stderr


def accuracy(log: str) -> str:
    last = [line for line in log.splitlines() if line.startswith("Epoch")][-1]
    return last.split("Validation Accuracy:")[1].split()[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", default="bird,frog")
    p.add_argument("--dry", action="store_true", help="8 + 4 photos a class, one epoch: checks the script only")
    a = p.parse_args()
    train, val, epochs = (8, 4, ["--epochs", "1"]) if a.dry else (125, 75, [])
    with tempfile.TemporaryDirectory() as tmp:
        photos = Path(tmp) / "photos"
        make_photos(photos, a.classes.split(","), train, val)
        rows = []
        for name, extra in (("finetune", []), ("finetune --freeze", ["--freeze"])):
            home = Path(tmp) / f"home-{len(rows)}"  # empty: nothing cached, as on a first run
            seconds, log = timed_run(["--data", str(photos), "--preset", "finetune", *extra, *epochs,
                                      "--out", str(Path(tmp) / f"run-{len(rows)}")], home)
            head = next((line for line in log.splitlines() if "new head fitted" in line), "")
            rows.append((name, seconds, accuracy(log), head.split("validation accuracy")[-1].strip()))
        print("| run | wall-clock, first run | validation accuracy (last epoch) | head on frozen features |")
        print("| --- | ---: | --- | ---: |")
        for name, seconds, acc, head in rows:
            print(f"| `--preset {name}` | {seconds:.0f} s | {acc} | {head} |")


if __name__ == "__main__":
    main()
