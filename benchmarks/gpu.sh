#!/usr/bin/env bash
# Every GPU benchmark in one go: the seed's LeNet-5 epoch (tenfold against the tutorial-style PyTorch loop, side
# by side), the distributed path's overhead on one GPU (plain against one torchrun worker, LeNet-5 and `fast`),
# then `--preset fast` timed to its accuracy.
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
if [ "${1:-}" = "--dry" ]; then
  shift
  "$PY" benchmarks/lenet.py --dry --device cpu --peers tenfold,tutorial "$@"
  "$PY" benchmarks/distributed.py --dry --workers 1
  exec "$PY" benchmarks/presets.py --dry --device cpu
fi
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "benchmarks/gpu.sh: no CUDA GPU here (try --dry)")'
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
"$PY" benchmarks/lenet.py --device cuda --peers tenfold,tutorial "$@"
"$PY" benchmarks/distributed.py --device cuda --workers 1 --presets lenet5,fast ${DATA:+--data "$DATA"}
exec "$PY" benchmarks/presets.py --presets fast --device cuda ${DATA:+--data "$DATA"}
