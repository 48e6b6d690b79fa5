"""Validation accuracy against wall-clock time for tenfold's presets, each a fresh `tenfold train` process.

    python benchmarks/presets.py                       # fast-tiny and fast-small on the shared CIFAR-10 copy, CPU
    python benchmarks/presets.py --presets fast --device cuda          # on a GPU machine
    python benchmarks/presets.py --presets "fast,fast:--compile,fast:--precision fp16" --device cuda
                                                       # variants: a preset, then flags of its own after ':'
    python benchmarks/presets.py --dry                 # a tiny synthetic run of every preset (gpu.sh --dry: a few)

The clock starts when the process is launched, so start-up and data loading are included (the data cache is
warmed first, as a user's second run finds it). Prints a markdown table and writes presets.json and, when
matplotlib is installed, presets.png (accuracy over time) into --out.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"
EPOCH = re.compile(r"^Epoch +(\d+): .*Validation Accuracy: +([\d.]+)%.*?(?:test-time augmentation: ([\d.]+)%)?\)?$")


def run_preset(entry: str, data: str, out: Path, device: str, extra: list[str]) -> dict:
    """Train one preset (`NAME` or `NAME:FLAGS`); (seconds since launch, epoch, accuracy) for every epoch line as
    it appears."""
    preset, _, flags = entry.partition(":")
    command = [sys.executable, "-m", "tenfold", "train", "--preset", preset, "--data", data, "--device", device,
               "--out", str(out / re.sub(r"[^\w.-]+", "_", entry)), *flags.split(), *extra]
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    points = []
    for line in proc.stdout:
        m = EPOCH.match(line.strip())
        if m:
            points.append({"seconds": time.perf_counter() - start, "epoch": int(m[1]),
                           "val_accuracy": float(m[2]) / 100, "val_accuracy_tta": float(m[3]) / 100 if m[3] else None})
            print(f"  {entry}: {line.strip()}  [{points[-1]['seconds']:.0f} s]", flush=True)
    if proc.wait() != 0:
        sys.exit(f"{entry} failed: {proc.stderr.read().strip().splitlines()[-1:]}")
    final = points[-1]
    return {"preset": entry, "points": points, "seconds": final["seconds"],
            "accuracy": final["val_accuracy_tta"] or final["val_accuracy"]}


def dry_model(entry: str, dry: bool) -> list[str]:
    """--dry checks every preset's plumbing, not its speed: the airnet94 presets run on airnet_tiny (the same
    recipe on a net 8x smaller: their fp16 and compiled variants take seconds on a CPU, not a minute)."""
    from tenfold.presets import PRESETS
    preset = PRESETS.get(entry.partition(":")[0])
    return ["--model", "airnet_tiny"] if dry and preset and preset.settings.get("model") == "airnet94" else []


def first_time_at(points: list[dict], level: float) -> float | None:
    return next((p["seconds"] for p in points if max(p["val_accuracy"], p["val_accuracy_tta"] or 0) >= level), None)


def table(results: list[dict]) -> str:
    lines = ["| preset | epochs | wall-clock (s) | val. accuracy (TTA) | first >= 85 % at (s) | first >= 90 % at (s) |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in results:
        t85, t90 = first_time_at(r["points"], 0.85), first_time_at(r["points"], 0.90)
        lines.append(f"| {r['preset']} | {len(r['points'])} | {r['seconds']:.0f} | {r['accuracy']:.2%} | "
                     f"{'-' if t85 is None else f'{t85:.0f}'} | {'-' if t90 is None else f'{t90:.0f}'} |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in results:
        ax.plot([p["seconds"] / 60 for p in r["points"]], [100 * p["val_accuracy"] for p in r["points"]],
                marker="o", label=f"{r['preset']} ({r['accuracy']:.1%} with TTA)")
    ax.set_xlabel("wall-clock (minutes, from launch)")
    ax.set_ylabel("validation accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return True


def synthetic(root: Path) -> str:
    """A tiny image folder (3 classes of flat colours) for --dry."""
    import numpy as np
    from PIL import Image
    for c, colour in enumerate([(220, 40, 40), (40, 200, 40), (40, 40, 220)]):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(30):
            noise = np.random.default_rng(i).integers(-20, 20, (32, 32, 3))
            Image.fromarray(np.clip(np.array(colour) + noise, 0, 255).astype("uint8")).save(d / f"{i}.png")
    return str(root)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", help="comma-separated NAME or NAME:FLAGS (default fast-tiny,fast-small; with "
                                     "--dry every preset)")
    p.add_argument("--data", default=str(SHARED))
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="where the runs and results go (default: a temp dir)")
    p.add_argument("--dry", action="store_true", help="1 epoch of tiny synthetic data each")
    args = p.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="tenfold-presets-"))
    presets, extra = (args.presets or "fast-tiny,fast-small").split(","), []
    if args.dry:
        from tenfold.presets import PRESETS
        presets = args.presets.split(",") if args.presets else list(PRESETS)
        extra, args.data = ["--epochs", "1", "--batch-size", "27"], synthetic(out / "data")  # 81 training images: 3 steps
    if not args.dry:  # decodes and caches the data once, so no timed run pays for it (81 images: nothing to pay)
        subprocess.run([sys.executable, "-m", "tenfold", "train", "--data", args.data, "--epochs", "1", "--quiet",
                        "--out", str(out / "warm-up"), "--device", args.device], check=True, cwd=REPO,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    results = [run_preset(name, args.data, out, args.device, extra + dry_model(name, args.dry)) for name in presets]
    (out / "presets.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    print(f"results in {out}" + (f"; plot {out / 'presets.png'}" if plot(results, out / "presets.png") else ""))


if __name__ == "__main__":
    main()
