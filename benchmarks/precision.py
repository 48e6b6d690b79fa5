"""Training-step time of a preset's net in each arithmetic tenfold offers, eager and compiled, side by side.

    python benchmarks/precision.py                     # 2 CPU cores: airnet_small, batch 512
    python benchmarks/precision.py --device cuda --model airnet94 --batch 1024 --steps 50
    python benchmarks/precision.py --dry               # tiny, on the CPU (the tests run this)

Each variant trains the same net on the same synthetic batch with tenfold's own step (fit.train_step: its
autocast, its loss scaler for fp16; here with SGD and Nesterov momentum), in one process, in alternating rounds; a variant's time is the
median of its timed steps over all rounds, after warm-up steps (which include compiling, timed on their own).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tenfold.models import create_model  # noqa: E402
from tenfold.training.fit import grad_scaler, train_step  # noqa: E402


def make_step(model_name: str, precision: str, compiled: bool, x: torch.Tensor, y: torch.Tensor):
    """A closure that makes one training step, and the time its first call took (compiling, when compiled)."""
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, image_shape=tuple(x.shape[2:]))
    if hasattr(model, "init_from_data"):
        model.init_from_data(x[:256].cpu())
    model = model.to(x.device, memory_format=torch.channels_last)
    trained = torch.compile(model) if compiled else model
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.85,
                                nesterov=True)
    scaler = grad_scaler(x.device, precision)

    def step() -> None:
        train_step(trained, optimizer, x, y, scaler, precision, label_smoothing=0.2)
    first = timed(step, x.device)
    return step, first


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def run(args) -> dict[str, dict]:
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, 3, 32, 32, generator=g).to(device, memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,), generator=g).to(device)
    variants = args.variants.split(",")
    steps = {v: make_step(args.model, v.split("+")[0], v.endswith("+compile"), x, y) for v in variants}
    results = {v: {"first_s": first, "times": []} for v, (_, first) in steps.items()}
    for _ in range(args.rounds):
        for v, (step, _) in steps.items():  # alternating: a slow phase of the machine hits every variant
            for _ in range(args.warmup):
                step()
            results[v]["times"] += [timed(step, device) for _ in range(args.steps)]
    for r in results.values():
        r["step_s"] = statistics.median(r["times"])
        r["images_per_s"] = args.batch / r["step_s"]
    return results


def table(results: dict[str, dict], base: str) -> str:
    lines = ["| variant | step (ms) | images/s | vs " + base + " | first step (s, incl. compiling) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for v, r in results.items():
        lines.append(f"| {v} | {1000 * r['step_s']:.1f} | {r['images_per_s']:,.0f} | "
                     f"{results[base]['step_s'] / r['step_s']:.2f}x | {r['first_s']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", default="airnet_small")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--steps", type=int, default=5, help="timed steps per variant per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per variant per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--variants", default="fp32,bf16,fp16,bf16+compile",
                   help="comma-separated PRECISION or PRECISION+compile; the first is the base of the ratios")
    p.add_argument("--dry", action="store_true", help="airnet_tiny, batch 16, one step each")
    args = p.parse_args()
    if args.dry:
        args.model, args.batch, args.steps, args.warmup, args.rounds = "airnet_tiny", 16, 1, 1, 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("benchmarks/precision.py: no CUDA GPU here")
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, batch {args.batch}, on {name}; torch {torch.__version__}")
    results = run(args)
    print(table(results, args.variants.split(",")[0]))


if __name__ == "__main__":
    main()
