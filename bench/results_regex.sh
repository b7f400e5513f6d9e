#!/usr/bin/env bash
# The commands behind the REGEX results table in README.md (default MiniLM encoder, CPU, 2 cores).
# Sizing (CPU budget): SST-2 training subsample of 1000 sentences (drawn with each seed; the same for REGEX and
# plain fine-tuning), max length 64 wordpieces, 3 epochs, IG with 5 steps (training saliency and evaluation),
# dev and test subsamples of 500 sentences (fixed RNG, the same for every seed and both variants).
# Plain fine-tuning = the same script with --no-igr --no-vat --no-egt: same data, seeds, lr, epochs, selection.
set -euo pipefail
cd "$(dirname "$0")/.."
D=${DATA_DIR:-../shared/data}
SIZING="--train-size 1000 --max-len 64 --ig-steps 5 --dev-size 500 --test-size 500 --seeds 1,2,3"
python regex_robust.py --task sst2 $SIZING --no-igr --no-vat --no-egt --data-dir $D
python regex_robust.py --task sst2 $SIZING --data-dir $D
