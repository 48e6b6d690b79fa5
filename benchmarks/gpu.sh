#!/usr/bin/env bash
# Every GPU benchmark in one go, in four parts:
#   lenet        the seed's LeNet-5 epoch: tenfold against the tutorial-style PyTorch loop, side by side
#   distributed  the distributed path's overhead on one GPU (plain against one torchrun worker, LeNet-5 and `fast`)
#   precision    the fast net's training step in fp32, bf16, fp16 and compiled
#   presets      `--preset fast` timed to its accuracy: as it is (bf16 autocast on an H100), compiled, and in fp16
#
#   benchmarks/gpu.sh            on a CUDA machine: every part (about 8 minutes on one GPU, with start-ups)
#   PARTS="precision presets" benchmarks/gpu.sh     only those parts (to split the run over two sittings)
#   benchmarks/gpu.sh --dry      on any machine: synthetic data on the CPU, briefly (the test suite runs this)
# Extra arguments go to benchmarks/lenet.py (e.g. --rounds 3). DATA=PATH picks the data of the other parts
# (default: the shared CIFAR-10 copy).
set -euo pipefail
cd "$(dirname "$0")/.."
# The project's venv when there is one; else a python3 that already has torch (a bare GPU machine, say).
PY=python3
[ -x .venv/bin/python ] && PY=.venv/bin/python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
VARIANTS="fast,fast:--compile,fast:--precision fp16"  # --preset fast as it is, compiled, and in fp16
PARTS="${PARTS:-lenet distributed precision presets}"
for part in $PARTS; do
  case "$part" in lenet|distributed|precision|presets) ;; *) echo "benchmarks/gpu.sh: unknown part '$part'" >&2; exit 2;; esac
done
wants() { [[ " $PARTS " == *" $1 "* ]]; }

if [ "${1:-}" = "--dry" ]; then
  shift
  ! wants lenet || "$PY" benchmarks/lenet.py --dry --device cpu --peers tenfold,tutorial "$@"
  ! wants distributed || "$PY" benchmarks/distributed.py --dry --workers 1
  ! wants precision || "$PY" benchmarks/precision.py --dry
  # the GPU run's variants (airnet94 presets run on airnet_tiny in --dry), and lenet5: a preset on its own net
  ! wants presets || "$PY" benchmarks/presets.py --dry --device cpu --presets "lenet5,$VARIANTS"
  exit 0
fi
"$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else "benchmarks/gpu.sh: no CUDA GPU here (try --dry)")'
"$PY" -c 'import torch; print("GPU:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
! wants lenet || "$PY" benchmarks/lenet.py --device cuda --peers tenfold,tutorial ${DATA:+--data "$DATA"} "$@"
! wants distributed || "$PY" benchmarks/distributed.py --device cuda --workers 1 --presets lenet5,fast ${DATA:+--data "$DATA"}
! wants precision || "$PY" benchmarks/precision.py --device cuda --model airnet94 --batch 1024 --steps 30 --warmup 5
! wants presets || "$PY" benchmarks/presets.py --presets "$VARIANTS" --device cuda ${DATA:+--data "$DATA"}
