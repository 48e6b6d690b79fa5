"""`tenfold presets`' estimate for this machine against the measured time of the same training, side by side.

    python benchmarks/estimate.py                                    # fast-tiny 2 epochs, fast-small 1 epoch
    python benchmarks/estimate.py --runs fast-tiny:10 --isa avx2     # as an AVX2 + FMA CPU would run it
    python benchmarks/estimate.py --dry                              # seconds: synthetic folder, 1 epoch

For each PRESET:EPOCHS, the estimate (tenfold.training.estimate: a few measured steps, scaled) for that many
epochs, then `tenfold train --preset PRESET --epochs EPOCHS` on the shared CIFAR-10 copy, timed from launch to
exit (the dataset already decoded and cached, as for any second run); the last column is measured / estimated.
"""
from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from lenet import ISA_ENV, SHARED, machine  # noqa: E402


def estimate_for(preset: str, epochs: int, env: dict) -> tuple[float, str]:
    code = ("import sys, json; from tenfold.training import estimate as e; from tenfold.presets import preset_config;"
            f"x = e.estimate({preset!r}); c = preset_config({preset!r});"
            f"print(json.dumps([e.total_seconds(x, {epochs}, c.tta), x.describe()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    import json
    seconds, described = json.loads(out.stdout.splitlines()[-1])
    return seconds, described


def timed_train(preset: str, epochs: int, data: str, env: dict) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tenfold", "train", "--preset", preset, "--epochs", str(epochs),
                        "--data", data, "--out", str(Path(tmp) / "run"), "--quiet"], env=env, check=True)
        return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", default="fast-tiny:2,fast-small:1", help="PRESET:EPOCHS, comma-separated")
    p.add_argument("--data", default=str(SHARED))
    p.add_argument("--isa", choices=list(ISA_ENV), default="native")
    p.add_argument("--dry", action="store_true", help="a tiny synthetic image folder, fast-tiny for 1 epoch")
    args = p.parse_args()
    env = {**os.environ, **ISA_ENV[args.isa], "PYTHONPATH": str(HERE.parent)}
    runs = [(r.split(":")[0], int(r.split(":")[1])) for r in args.runs.split(",")]
    data = args.data
    if args.dry:
        runs, data = [("fast-tiny", 1)], make_dry_folder()
    subprocess.run([sys.executable, "-c", f"from tenfold.data import open_dataset; open_dataset({data!r}, quiet=True)"],
                   env=env, check=True)  # decoded and cached before anything is timed
    print(f"Command: `python benchmarks/estimate.py {' '.join(sys.argv[1:])}`")
    print(f"Machine: {machine('cpu', args.isa)}; date {datetime.date.today()}\n")
    print("| preset | epochs | estimated | measured | measured / estimated |\n| --- | ---: | ---: | ---: | ---: |")
    for preset, epochs in runs:
        estimated, described = estimate_for(preset, epochs, env)
        measured = timed_train(preset, epochs, data, env)
        print(f"| {preset} | {epochs} | {estimated:.0f} s | {measured:.0f} s | {measured / estimated:.2f} |  "
              f"<!-- {described} -->", flush=True)


def make_dry_folder() -> str:
    import numpy as np
    from PIL import Image
    root = Path(tempfile.mkdtemp()) / "data"
    rng = np.random.default_rng(0)
    for c in range(3):
        (root / "train" / str(c)).mkdir(parents=True)
        for i in range(40):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "train" / str(c) / f"{i}.png")
    return str(root)


if __name__ == "__main__":
    main()
