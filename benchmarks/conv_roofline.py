"""How close `--preset fast-small`'s convolutions already run to this CPU's fp32 arithmetic floor: each 3x3 conv of
airnet94 at batch 1,024 (forward, and backward: input and weight gradients), in GFLOP/s, beside a 4096x4096 sgemm
measured in the same run. A direct convolution cannot beat the sgemm rate by much; a faster fp32 epoch needs fewer
multiplications (Winograd), not better blocking.

    python benchmarks/conv_roofline.py [--isa avx2] [--batch 1024]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
SHAPES = [(24, 64, 31), (64, 64, 15), (64, 256, 15), (256, 256, 7), (256, 256, 7), (256, 256, 3)]  # cin, cout, side


def measure(batch: int) -> None:
    import torch
    from torch import nn
    a, b = torch.randn(4096, 4096), torch.randn(4096, 4096)
    a @ b
    t = time.perf_counter()
    for _ in range(3):
        a @ b
    print(f"sgemm 4096: {2 * 4096 ** 3 * 3 / (time.perf_counter() - t) / 1e9:.0f} GFLOP/s")
    print("| conv | forward GFLOP/s | backward GFLOP/s |\n| --- | ---: | ---: |")
    for cin, cout, side in SHAPES:
        conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
        x = torch.randn(batch, cin, side, side).contiguous(memory_format=torch.channels_last)
        x.requires_grad_(cin != 24)  # the first conv's input comes from the frozen whitening layer: no gradient
        g = torch.randn_like(conv(x))
        conv(x).backward(g)
        t = time.perf_counter()
        conv(x)
        forward = time.perf_counter() - t
        t = time.perf_counter()
        conv(x).backward(g)
        backward = time.perf_counter() - t - forward
        flops = 2 * cin * cout * 9 * side * side * batch / 1e9
        print(f"| {cin}->{cout} at {side}x{side} | {flops / forward:.0f} | {(2 if x.requires_grad else 1) * flops / backward:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--isa", choices=["native", "avx2"], default="native")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return measure(a.batch)
    env = {**os.environ, **(AVX2 if a.isa == "avx2" else {})}  # the caps must be set before torch loads
    subprocess.run([sys.executable, __file__, "--child", "--batch", str(a.batch)], env=env, check=True)


if __name__ == "__main__":
    main()
