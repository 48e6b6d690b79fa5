"""The cost of the distributed path: the same `tenfold train` run plain, and as workers of PyTorch's elastic
launcher, side by side in one process tree, alternating rounds.

    python benchmarks/distributed.py                          # on the CPU: plain vs 1 worker vs 2 gloo workers
    python benchmarks/distributed.py --device cuda --workers 1  # a one-GPU machine: the DDP overhead
    python benchmarks/distributed.py --dry                    # tiny synthetic data, one round (the tests run this)

"1 worker" is `torchrun --standalone --nproc-per-node 1 -m tenfold train ...`: DistributedDataParallel, the
all-reduces and the process group, on one device. Each row's epoch time is the median of epochs 2..E of every
round (epoch 1 includes start-up); the ratio is against the plain run of the same preset, measured alongside.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from presets import REPO, SHARED, synthetic  # noqa: E402  (the same data and tiny set as the presets benchmark)


def command(kind: str, preset: str, data: str, device: str, epochs: int, out: Path, extra: list[str]) -> list[str]:
    train = ["tenfold", "train", "--preset", preset, "--data", data, "--device", device, "--epochs", str(epochs),
             "--out", str(out), "--quiet", *extra]
    if kind == "plain":
        return [sys.executable, "-m", *train]
    n = kind.split()[0]
    if n == "1":  # torchrun's own command line: the path a user's torchrun takes
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1", "-m", *train]
    return [sys.executable, "-m", *train, "--devices", n]


def epoch_seconds(run: Path) -> list[float]:
    rows = list(csv.DictReader(open(run / "history.csv")))
    return [float(r["seconds"]) for r in rows[1:]] or [float(rows[0]["seconds"])]


def accuracy(run: Path) -> float:
    return float(list(csv.DictReader(open(run / "history.csv")))[-1]["val_accuracy"])


def measure(kinds, presets, data, device, epochs, rounds, out, extra) -> dict:
    times, acc = {}, {}
    for r in range(rounds):
        for preset in presets:
            for kind in kinds if r % 2 == 0 else kinds[::-1]:  # alternate the order: no peer always goes first
                run = out / f"{preset}-{kind.replace(' ', '')}-{r}"
                env = {**os.environ, "PYTHONPATH": str(REPO)}
                subprocess.run(command(kind, preset, data, device, epochs, run, extra), check=True, cwd=REPO, env=env)
                times.setdefault((preset, kind), []).extend(epoch_seconds(run))
                acc[(preset, kind)] = accuracy(run)
                print(f"  {preset} {kind} round {r + 1}: {statistics.median(epoch_seconds(run)):.3f} s/epoch",
                      flush=True)
    return {k: (statistics.median(v), acc[k]) for k, v in times.items()}


def table(results: dict, presets: list[str], kinds: list[str]) -> str:
    lines = ["| preset | how | epoch (s, median) | vs plain | val. accuracy |", "| --- | --- | ---: | ---: | ---: |"]
    for preset in presets:
        base = results[(preset, "plain")][0]
        for kind in kinds:
            seconds, acc = results[(preset, kind)]
            lines.append(f"| {preset} | {kind} | {seconds:.3f} | {seconds / base:.2f}x | {acc:.2%} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--workers", default="1,2", help="worker counts to compare with the plain run (default 1,2)")
    p.add_argument("--presets", default="lenet5")
    p.add_argument("--data", default=str(SHARED))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dry", action="store_true", help="tiny synthetic data, 2 epochs, one round")
    args = p.parse_args()
    out = Path(tempfile.mkdtemp(prefix="tenfold-distributed-"))
    extra = []
    if args.dry:
        args.data, args.epochs, args.rounds, extra = synthetic(out / "data"), 2, 1, ["--batch-size", "16"]
    kinds = ["plain"] + [f"{n} worker{'s' if n != '1' else ''}" for n in args.workers.split(",")]
    presets = args.presets.split(",")
    subprocess.run([sys.executable, "-m", "tenfold", "train", "--data", args.data, "--epochs", "1", "--quiet",
                    "--out", str(out / "warm-up"), "--device", args.device], check=True, cwd=REPO,
                   env={**os.environ, "PYTHONPATH": str(REPO)})  # decodes and caches the data once
    results = measure(kinds, presets, args.data, args.device, args.epochs, args.rounds, out, extra)
    print(table(results, presets, kinds))


if __name__ == "__main__":
    main()
