#!/usr/bin/env bash
# The commands behind the UIMER results tables in README.md (default MiniLM encoder, CPU).
# BaseModel = the same script with --alpha 0: same data, seeds, lr, epochs and model selection.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=55,1988,12333,42
D=${DATA_DIR:-../shared/data}
for setting in "ic 1" "ic 3" "sf 1" "sf 3"; do
  set -- $setting
  python uimer_im.py --task $1 --shots $2 --strategy uniform --warmup-epochs paper --alpha 0 --seeds $SEEDS --data-dir $D
  python uimer_im.py --task $1 --shots $2 --strategy uniform --warmup-epochs paper --seeds $SEEDS --data-dir $D
done
