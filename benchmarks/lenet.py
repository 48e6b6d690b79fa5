"""The seed's LeNet-5 epoch, side by side: tenfold, a tutorial-style PyTorch loop, and Keras 3 on TensorFlow.

    python benchmarks/lenet.py                       # CPU: all four peers, 2 alternating rounds, 5 epochs each
    python benchmarks/lenet.py --device cuda --peers tenfold,tutorial
    python benchmarks/lenet.py --dry                 # seconds: synthetic data, 2 epochs (what the tests run)
    python benchmarks/lenet.py --isa avx2            # an AVX-512 CPU capped at AVX2 + FMA, as Zen 3 or Haswell
    python benchmarks/lenet.py --load 1 --peers tenfold-quiet,tenfold,tutorial  # one busy process beside each
                                                     # peer (but tenfold-quiet, the reference)

Every peer trains the same 45,000 / 5,000 split of the shared CIFAR-10 copy, exported once, in its own process;
the peers take turns round after round so that they share the machine's state. Reported per peer: the median
epoch time of epochs 2-5 (training plus the validation pass), images/s, validation accuracy after the last epoch,
and tenfold's speed-up over it; then the measured matmul GFLOP/s and tenfold's fraction of the arithmetic floor.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tenfold.config import TrainConfig

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared" / "datasets" / "cifar10-train-jpeg.tar.gz"
KERAS_VENV = HERE / ".venv-keras"
KERAS_PACKAGES = ["tensorflow-cpu==2.21.0", "keras==3.15.1"]
PEERS = {  # name: (runner, script, batch size; 0 = tenfold's default)
    "tenfold": ("torch", "tenfold_peer.py", 0),
    "tenfold-quiet": ("torch", "tenfold_peer.py", 0),       # with --load: tenfold with no busy process beside it
    "tenfold-fused": ("torch", "tenfold_peer.py", 0),       # the fused kernels forced (TENFOLD_KERNELS=1)
    "tenfold-no-kernels": ("torch", "tenfold_peer.py", 0),  # PyTorch's ops only (TENFOLD_KERNELS=0)
    "tutorial": ("torch", "tutorial_loop.py", 128),
    "keras128": ("keras", "keras_lenet.py", 128),
    "keras256": ("keras", "keras_lenet.py", 256),
}


def export_split(data: str, dry: bool, out: Path) -> tuple[int, int]:
    """The 45k/5k split (or a small synthetic one) as uint8 arrays every peer reads."""
    if dry:
        rng = np.random.default_rng(0)
        ty, vy = rng.integers(0, 10, 1000), rng.integers(0, 10, 200)
        tx = rng.integers(0, 256, (1000, 32, 32, 3), dtype=np.uint8)
        vx = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    else:
        from tenfold.data import open_dataset
        s = open_dataset(data, quiet=True)
        tx, ty, vx, vy = s.train.images, s.train.labels, s.val.images, s.val.labels
    np.savez(out, train_x=tx, train_y=ty, val_x=vx, val_y=vy)
    return len(ty), len(vy)


def keras_python() -> str:
    """Keras gets a virtual environment of its own, made on first use."""
    python = KERAS_VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {KERAS_VENV} with {' '.join(KERAS_PACKAGES)} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(KERAS_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *KERAS_PACKAGES, "numpy"], check=True)
    return str(python)


# An AVX-512 machine capped at AVX2 + FMA for every library that dispatches on the CPU: PyTorch's own kernels,
# oneDNN (PyTorch's and TensorFlow's convolutions), MKL (PyTorch's matmuls) and tenfold's kernels (-mavx2 -mfma).
ISA_ENV = {"native": {}, "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                                  "MKL_ENABLE_INSTRUCTIONS": "AVX2", "TENFOLD_CPU_ISA": "avx2"}}
BUSY = "while True: pass"  # one single-threaded busy process: a browser tab, a compile, another notebook


def run_peer(name: str, split: Path, epochs: int, device: str, isa: str = "native", load: int = 0) -> list[dict]:
    runner, script, batch = PEERS[name]
    python = keras_python() if runner == "keras" else sys.executable
    kernels = {"tenfold-no-kernels": "0", "tenfold-fused": "1"}.get(name)
    env = {**os.environ, "PYTHONPATH": f"{HERE / 'peers'}{os.pathsep}{REPO}", **ISA_ENV[isa],
           **({"TENFOLD_KERNELS": kernels} if kernels else {})}
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
    try:
        result = subprocess.run([python, str(HERE / "peers" / script), str(split), str(epochs), str(batch), device],
                                capture_output=True, text=True, env=env, timeout=3600)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    if result.returncode != 0:
        raise SystemExit(f"peer {name} failed:\n{result.stderr[-2000:]}")
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def matmul_gflops(dtype: torch.dtype, device: str, n: int = 2048, seconds: float = 1.0) -> float:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
        if device.startswith("cuda"):
            torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def measured_gflops(device: str, isa: str, n: int = 2048) -> dict[str, float]:
    """Matmul GFLOP/s in fp32 and bf16, in a process with the peers' ISA cap (MKL reads it when it loads); n x n
    matrices (one emulated bf16 product of 2048 x 2048 takes most of a minute on AVX2)."""
    code = ("import json, torch, lenet; print(json.dumps({k: lenet.matmul_gflops(getattr(torch, t), %r, %d) "
            "for k, t in [('fp32', 'float32'), ('bf16', 'bfloat16')]}))" % (device, n))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **ISA_ENV[isa], "PYTHONPATH": f"{HERE}{os.pathsep}{REPO}"})
    return json.loads(out.stdout.splitlines()[-1])


def training_flops_per_image() -> float:
    """Forward multiply-adds of every conv and linear layer, x2 for FLOPs, x3 for forward + backward."""
    from tenfold.models import create_model
    model, macs = create_model("lenet5"), []

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            macs.append(output[0].numel() * module.in_channels // module.groups * np.prod(module.kernel_size))
        elif isinstance(module, torch.nn.Linear):
            macs.append(module.in_features * module.out_features)
    for m in model.modules():
        m.register_forward_hook(hook)
    import tenfold.kernels.fused as fused
    applies, fused.applies = fused.applies, lambda *a: False  # PyTorch's path calls every conv module
    try:
        model.eval()(torch.zeros(1, 3, 32, 32))
    finally:
        fused.applies = applies
    return 3 * 2 * float(sum(macs))


def versions(peers: list[str]) -> str:
    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}"]
    if any(PEERS[p][0] == "keras" for p in peers):
        out = subprocess.run([keras_python(), "-c", "import tensorflow as t, keras as k; print(t.__version__, k.__version__)"],
                             capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        tf, keras = (out.stdout.split() + ["?", "?"])[:2]
        parts += [f"TensorFlow {tf}", f"Keras {keras}"]
    return ", ".join(parts)


def machine(device: str, isa: str = "native") -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    from tenfold.kernels.build import cpu_signature, native_isa
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
                 platform.processor())
    flags = set(cpu_signature().split())
    units = ", ".join(u for u, f in [("AVX-512", "avx512f"), ("AVX512-BF16", "avx512_bf16"), ("AMX", "amx_bf16"),
                                      ("AVX2", "avx2"), ("FMA", "fma")] if f in flags)
    kernels = native_isa(" ".join(flags)) if isa == "native" else isa
    used = "" if isa == "native" else f"; every peer capped at {isa.upper()}, emulating an AVX2 + FMA CPU"
    return f"{model} ({units}; tenfold's kernels: {kernels}{used}), {os.cpu_count()} cores, no GPU used"


def summarise(runs: dict[str, list[list[dict]]], epochs: int) -> dict[str, dict]:
    rows = {}
    for name, rounds in runs.items():
        times = [e["seconds"] for r in rounds for e in r if e["epoch"] >= min(2, epochs)]
        median = statistics.median(times)
        rows[name] = {"median_epoch_s": median, "images_per_s": statistics.median(
            [e["images_per_s"] for r in rounds for e in r if e["epoch"] >= min(2, epochs)]),
            "val_accuracy": statistics.mean(r[-1]["val_accuracy"] for r in rounds),
            "epoch_times": times}
    return rows


def table(rows: dict, flops_epoch: float, gflops: dict, args, n_train: int) -> str:
    base = rows.get("tenfold", {}).get("median_epoch_s")
    lines = [f"Command: `python benchmarks/lenet.py {' '.join(sys.argv[1:])}`".replace(" `", " `").strip(),
             f"Machine: {machine(args.device, args.isa)}; {versions(list(rows))}",
             f"Date: {datetime.date.today()}; {args.rounds} round(s) x {args.epochs} epochs per peer, "
             f"{n_train} training images; times are medians of epochs {min(2, args.epochs)}-{args.epochs}"
             + (f"; {args.load} busy single-threaded process(es) beside each peer" if args.load else ""), "",
             "| peer | batch | epoch (s) | images/s | val. accuracy | tenfold speed-up |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in rows.items():
        batch = PEERS[name][2] or f"{TrainConfig.batch_size} (default)"
        ratio = f"{r['median_epoch_s'] / base:.2f}x" if base else "n/a"
        lines.append(f"| {name} | {batch} | {r['median_epoch_s']:.2f} | {r['images_per_s']:,.0f} | "
                     f"{r['val_accuracy']:.2%} | {ratio} |")
    floor = flops_epoch / (gflops["fp32"] * 1e9)
    lines += ["", f"Model: {flops_epoch / n_train / 1e6:.2f} MFLOP per training image, {flops_epoch / 1e9:.0f} GFLOP "
                  f"per epoch. Matmul on this device: fp32 {gflops['fp32']:.0f} GFLOP/s, bf16 {gflops['bf16']:.1f} "
                  f"GFLOP/s: the fp32 floor is {floor:.2f} s per epoch"
                  + (f"; tenfold runs at {floor / base:.0%} of it." if base else ".")]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(SHARED), help="the CIFAR-10 copy to split (default: the shared one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--peers", default="tenfold,tenfold-fused,tenfold-no-kernels,tutorial,keras128,keras256")
    p.add_argument("--isa", choices=list(ISA_ENV), default="native",
                   help="avx2: cap PyTorch, oneDNN, MKL and tenfold's kernels at AVX2 + FMA (on an AVX-512 CPU)")
    p.add_argument("--load", type=int, default=0, help="busy single-threaded processes beside each peer")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--dry", action="store_true", help="synthetic data, 2 epochs, 1 round: checks the harness")
    p.add_argument("--json", help="also write the results to this file")
    args = p.parse_args()
    if args.dry:
        args.epochs, args.rounds = 2, 1
    peers = [s for s in args.peers.split(",") if s]
    unknown = set(peers) - set(PEERS)
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(sorted(unknown))}; choose from {', '.join(PEERS)}")
    with tempfile.TemporaryDirectory() as tmp:
        split = Path(tmp) / "split.npz"
        n_train, _ = export_split(args.data, args.dry, split)
        runs: dict[str, list] = {name: [] for name in peers}
        for r in range(args.rounds):
            for name in peers:  # alternate: every round runs each peer once, in turn
                print(f"round {r + 1}/{args.rounds}: {name} ...", file=sys.stderr, flush=True)
                load = 0 if name == "tenfold-quiet" else args.load
                runs[name].append(run_peer(name, split, args.epochs, args.device, args.isa, load))
    rows = summarise(runs, args.epochs)
    gflops = measured_gflops(args.device, args.isa, 256 if args.dry else 2048)
    flops_epoch = training_flops_per_image() * n_train
    print(table(rows, flops_epoch, gflops, args, n_train))
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "gflops": gflops, "flops_per_epoch": flops_epoch,
                                               "device": args.device, "epochs": args.epochs}, indent=2))


if __name__ == "__main__":
    main()
