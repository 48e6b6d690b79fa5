#!/usr/bin/env bash
# Every GPU benchmark in one go: the seed's LeNet-5 epoch (tenfold against the tutorial-style PyTorch loop, side
# by side), the distributed path's overhead on one GPU (plain against one torchrun worker, LeNet-5 and `fast`),
# then the fast net's training step in fp32, bf16, fp16 and compiled, then `--preset fast` timed to its accuracy:
# as it is (bf16 autocast on an H100), compiled, and in fp16.
#   benchmarks/gpu.sh            on a CUDA machine: 2 alternating rounds x 5 epochs, then the preset
#   benchmarks/gpu.sh --dry      on any machine: synthetic data on the CPU, briefly (the test suite runs this)
# Extra arguments go to benchmarks/lenet.py (e.g. --data PATH, --rounds 3). DATA=PATH picks the preset's data
# (default: the shared CIFAR-10 copy).
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's venv when there is one; else a python3 that already has torch (a bare GPU machine, say).
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
VARIANTS="fast,fast:--compile,fast:--precision fp16"  # --preset fast as it is, compiled, and in fp16
if [ "${1:-}" = "--dry" ]; then
  shift
  "$PY" benchmarks/lenet.py --dry --device cpu --peers tenfold,tutorial "$@"
  "$PY" benchmarks/distributed.py --dry --workers 1
  "$PY" benchmarks/precision.py --dry
  exec "$PY" benchmarks/presets.py --dry --device cpu --presets "lenet5,fast-small,fast-tiny,$VARIANTS"
fi
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "benchmarks/gpu.sh: no CUDA GPU here (try --dry)")'
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
"$PY" benchmarks/lenet.py --device cuda --peers tenfold,tutorial "$@"
"$PY" benchmarks/distributed.py --device cuda --workers 1 --presets lenet5,fast ${DATA:+--data "$DATA"}
"$PY" benchmarks/precision.py --device cuda --model airnet94 --batch 1024 --steps 30 --warmup 5
exec "$PY" benchmarks/presets.py --presets "$VARIANTS" --device cuda ${DATA:+--data "$DATA"}
