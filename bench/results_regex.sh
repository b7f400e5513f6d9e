#!/usr/bin/env bash
# The commands behind the REGEX results table (default MiniLM encoder, CPU, OMP_NUM_THREADS=1, one process at a time).
# Sizing (CPU budget of 45 core-minutes for both variants together): SST-2 training subsample of 500 sentences
# (drawn with each seed; the same for REGEX and plain fine-tuning), max length 64 wordpieces, batch 16, 3 epochs
# (L_EGT on from epoch 2, the default --egt-start), IG with 5 steps (training saliency and evaluation), dev and test
# subsamples of 150 sentences (fixed RNG, the same for every seed and both variants).
# Plain fine-tuning = the same script with --no-igr --no-vat --no-egt: same data, seeds, lr, epochs, selection.
#   bash bench/results_regex.sh          # run both variants, then print the table
#   bash bench/results_regex.sh --table  # only print the table from runs/regex_robust/*/summary.json
#   bash bench/results_regex.sh --diagnostic  # one extra REGEX run (seed 1) with lambda_g 0.01 instead of 0.1
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
D=${DATA_DIR:-data}
SIZING="--train-size 500 --max-len 64 --ig-steps 5 --dev-size 150 --test-size 150 --seeds 1,2,3"
if [ "${1:-}" = "--diagnostic" ]; then
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $PY regex_robust.py --task sst2 --train-size 500 --max-len 64 --ig-steps 5 \
    --dev-size 150 --test-size 150 --seed 1 --lambda-g 0.01 --out-dir runs/regex_diag --data-dir $D
elif [ "${1:-}" != "--table" ]; then
  export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
  $PY regex_robust.py --task sst2 $SIZING --no-igr --no-vat --no-egt --data-dir $D
  $PY regex_robust.py --task sst2 $SIZING --data-dir $D
fi
$PY - <<'PYEOF'
import json, pathlib
root = pathlib.Path("runs/regex_robust")
rows = {v: json.loads((root / f"sst2-500-{v}-seeds/summary.json").read_text()) for v in ("plain", "regex")
        if (root / f"sst2-500-{v}-seeds/summary.json").is_file()}
if not rows:
    raise SystemExit("no summary.json yet under runs/regex_robust/sst2-500-*-seeds/")
ms = lambda a, s=100: f"{s * a['mean']:.2f} +- {s * a['std']:.2f}"
def runtime(v):
    t = [json.loads(p.read_text())["runtime_s"] for p in root.glob(f"sst2-500-{v}-[0-9]*/timing.json")]
    return f"{sum(t) / 60:.1f} min ({len(t)} runs)"
print("SST-2, MiniLM, 500 train / 150 test sentences, 3 seeds, mean +- std over seeds (accuracy, F1 in %)")
print(f"{'':8s} {'accuracy':>14s} {'macro-F1':>14s}   runtime (wall, sum over seeds)")
for v, s in rows.items():
    print(f"{v:8s} {ms(s['accuracy']):>14s} {ms(s['macro_f1']):>14s}   {runtime(v)}")
print("\ncomprehensiveness (higher = more faithful) / sufficiency (lower = more faithful), raw ERASER at ratio 0.2,"
      "\nand the same as gain over random (comp - comp_random / suff - suff_random); x100")
hdr = f"{'method':17s}" + "".join(f" {v + ' comp':>15s} {v + ' suff':>15s}" for v in rows)
print(hdr)
for m in ("random", "attention", "scaled_attention", "input_x_gradient", "ig", "deeplift"):
    line = f"{m:17s}"
    for v, s in rows.items():
        f = s["faithfulness"][m]
        line += f" {ms(f['comp']):>15s} {ms(f['suff']):>15s}"
    print(line)
print("\nnormalised (Carton et al.; both higher = better) and AOPC over {0.02, 0.1, 0.2, 0.5}; x100")
print(f"{'method':17s}" + "".join(f" {v + ' ' + k:>21s}" for v in rows for k in ("nComp", "nSuff", "AOPC-comp", "AOPC-suff")))
for m in ("random", "attention", "scaled_attention", "input_x_gradient", "ig", "deeplift"):
    line = f"{m:17s}"
    for v, s in rows.items():
        f = s["faithfulness"][m]
        line += "".join(f" {ms(f[k]):>21s}" for k in ("norm_comp", "norm_suff", "aopc_comp", "aopc_suff"))
    print(line)
print("\nrandomisation tests (Spearman / top-20% Jaccard): seed vs seed (higher = better), trained vs random init (lower)")
for m in ("attention", "scaled_attention", "input_x_gradient", "ig", "deeplift"):
    line = f"{m:17s}"
    for v, s in rows.items():
        a, b = s["randomization_seed_vs_seed"][m], s["randomization_trained_vs_random"][m]
        line += f"  {v}: {a['spearman']['mean']:.3f}/{a['jaccard']['mean']:.3f} | {b['spearman']['mean']:.3f}/{b['jaccard']['mean']:.3f}"
    print(line)
diag = pathlib.Path("runs/regex_diag/regex_robust/sst2-500-regex-1/results.json")
if diag.is_file():
    r = json.loads(diag.read_text())
    f = r["faithfulness"]
    print(f"\ndiagnostic, seed 1, lambda_g 0.01: accuracy {100 * r['test']['accuracy']:.2f}  macro-F1 "
          f"{100 * r['test']['macro_f1']:.2f}")
    for m in f:
        print(f"{m:17s} comp {100 * f[m]['comp']:6.2f}  suff {100 * f[m]['suff']:6.2f}  nComp {100 * f[m]['norm_comp']:6.2f}"
              f"  nSuff {100 * f[m]['norm_suff']:6.2f}")
PYEOF
