#!/usr/bin/env bash
# The GPU session: every figure docs/benchmarks.md asks of a GPU, in one command that fits a short lease
# (about 8 minutes on an H100-class GPU; each step has its own time limit, so one slow step cannot eat the rest).
#
#   OUT=/tmp/gpu-figures bash bench/run_on_gpu.sh [CIFAR_DIR]
#
# CIFAR_DIR holds cifar10-jpeg.tar.gz and the train_*.csv manifests (default: $PRUNESCOPE_CIFAR_SHARED or
# ../shared/data/cifar10). Logs go to $OUT, one per step.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/prunescope-gpu}
mkdir -p "$OUT"
export PRUNESCOPE_CIFAR_SHARED=${1:-${PRUNESCOPE_CIFAR_SHARED:-$(pwd)/../shared/data/cifar10}}
export PYTHONUNBUFFERED=1 PRUNESCOPE_CACHE=${PRUNESCOPE_CACHE:-/tmp/prunescope-gpu-cache}
PY=${PYTHON:-python3}

step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep --line-buffered -v "it/s]" | tee "$OUT/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0), torch.cuda.get_arch_list())" \
  | tee -a "$OUT/gpu.txt"
# 1. device facts, policy, the 16-epoch CIFAR-10 run (bf16 and fp32), peak memory, k-NN at 300K rows
step bench_gpu 240 $PY bench/bench_gpu.py
# 2. full-size scores on sym20 (16 epochs, 4 cross-fitting folds): detection AUROC, then keep 0.8 vs full data
step subset_eval_sym20 300 $PY bench/bench_subset_eval.py --manifest train_sym20.csv --strategies easiest,random \
  --keep 0.8 --seeds 2 --clean '' --cache "$PRUNESCOPE_CACHE"
# 3. class-dependent noise at full size (issue 22): the noise score's AUROC on asym40 (target >= 0.93), then keep 0.6
step budget_asym40_fullsize 150 $PY bench/bench_budget.py train_asym40.csv --budgets 0 --cifar-root /tmp/cifar
step subset_eval_asym40 300 $PY bench/bench_subset_eval.py --manifest train_asym40.csv --strategies easiest,random \
  --keep 0.6 --seeds 3 --clean '' --cache "$PRUNESCOPE_CACHE"
