#!/usr/bin/env bash
# The device checks, as one command on a GPU node (no network needed; at most ~8 minutes on one H100-class GPU):
#   1. the `gpu` tests: one training step of every method on CUDA equals the CPU step (loss and gradients within
#      1e-4 relative), every script's quick config runs end to end on CUDA, and two CUDA runs of one seed agree;
#   2. the step-time table of every method at the papers' shapes (bench/bench_paper_shapes.py);
#   3. one epoch of the SMaT IMDB teacher on all 25,000 training reviews at 256 wordpieces, timed, if --model and
#      the IMDB data (--data-dir holding imdb/) are given; else it says what it skipped.
#
#   bash bench/gpu_check.sh [--model NAME_OR_PATH] [--data-dir DIR]
# On a machine without CUDA it prints that it needs one and exits 0.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
MODEL="" DATA=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL=${2:?--model needs a value}; shift 2 ;;
    --data-dir) DATA=${2:?--data-dir needs a value}; shift 2 ;;
    *) echo "gpu_check.sh: error: unknown argument $1 (see the header of bench/gpu_check.sh)" >&2; exit 2 ;;
  esac
done
if ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check.sh: needs CUDA (a GPU visible to torch); nothing was run on this machine"
  exit 0
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
$PY -c 'import torch, transformers; print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{torch.cuda.get_device_name(0)}, {torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")'
status=0
echo "== 1. gpu tests"
$PY -m pytest -q -m gpu tests/ || status=1
echo "== 2. step-time ratios at the papers' shapes (random initialisation)"
$PY bench/bench_paper_shapes.py --device cuda || status=1
echo "== 3. SMaT IMDB teacher, one epoch, 25,000 reviews x 256 wordpieces"
if [ -n "$MODEL" ] && [ -n "$DATA" ] && [ -f "$DATA/imdb/imdb_train.jsonl" ]; then
  out=$(mktemp -d)
  t0=$(date +%s)
  $PY smat_jax_free.py --setup teacher --task imdb --model "$MODEL" --data-dir "$DATA" --out-dir "$out" \
    --max-len 256 --max-epochs 1 --device cuda || status=1
  echo "teacher epoch: $(( $(date +%s) - t0 )) s wall (training on 25,000 reviews + validation on 12,500 + test on 2,500)"
else
  echo "skipped: give --model and --data-dir (a folder holding imdb/, see data/fetch.py) to time it"
fi
exit $status
