"""The faithfulness suite against ferret (ferret-xai 0.4.2) at equal work, measured in one run.

    python bench/bench_ferret.py [--data-dir DIR] [--n 50] [--ferret-python PATH] [--repeats 1]

Both sides explain and evaluate the same N SST-2 test sentences with the same model (MiniLM with an untrained head,
saved by common.save_task_model as a standard folder that both load): Gradient x Input and IG (10 midpoint steps,
[PAD] baseline, signed sum over hidden dims), AOPC comprehensiveness and sufficiency over ferret's 10 bins (0.1 ..
1.0, the positively scored tokens, deletion by re-tokenising) and leave-one-out Kendall tau, for the predicted class.
Ours: `--convention ferret` (regex_robust.attribute_all + faithfulness). ferret: Benchmark.explain +
evaluate_explanations per sentence, with IntegratedGradientExplainer(n_steps=10, method="riemann_middle").
ferret runs in its own environment (--ferret-python, e.g. a venv with `pip install torch==2.13.0` then
`pip install ferret-xai==0.4.2` constrained to that torch); without it, the script prints our side beside the last
measured ferret figure. Times are wall seconds of the explain-and-evaluate part (model loading excluded), medians of
--repeats, both sides on the same threads; the ratio is what to read.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from timing import run_bench  # noqa: E402

import common  # noqa: E402
import regex_robust as rx  # noqa: E402

# the last measurement with ferret installed (bench/bench_ferret.py --n 50, docs/regex.md, Speed)
LAST_FERRET = {"date": "2026-12-01", "n": 50, "seconds": 112.4, "ours_seconds": 61.6,
               "hardware": "2-core Intel Xeon virtual machine, shared, 1 thread"}

FERRET_SIDE = r'''
import json, sys, time, warnings
warnings.simplefilter("ignore")
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from ferret import Benchmark, GradientExplainer, IntegratedGradientExplainer
from ferret.evaluators.faithfulness_measures import (AOPC_Comprehensiveness_Evaluation, AOPC_Sufficiency_Evaluation,
                                                     TauLOO_Evaluation)
path, texts, targets = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager").eval()
tok = AutoTokenizer.from_pretrained(path)
ig = IntegratedGradientExplainer(model, tok)
explainers = [GradientExplainer(model, tok, multiply_by_inputs=True), ig]
evaluators = [E(model, tok) for E in (AOPC_Comprehensiveness_Evaluation, AOPC_Sufficiency_Evaluation,
                                      TauLOO_Evaluation)]
bench = Benchmark(model, tok, explainers=explainers, evaluators=evaluators, class_based_evaluators=[])
scores, t_explain, t_eval = [], 0.0, 0.0
for text, y in zip(texts, targets):
    t0 = time.perf_counter()
    expl = [explainers[0](text, target=y), ig(text, target=y, call_args={"n_steps": 10, "method": "riemann_middle"})]
    t1 = time.perf_counter()
    ev = bench.evaluate_explanations(expl, target=y)
    t_explain, t_eval = t_explain + t1 - t0, t_eval + time.perf_counter() - t1
    scores.append([[float(e.score) for e in x.evaluation_scores] for x in ev])
print(json.dumps({"seconds": t_explain + t_eval, "explain": t_explain, "evaluate": t_eval, "scores": scores}))
'''


def regex_argv(a) -> list[str]:
    """regex_robust.py's flags for our side."""
    return ["--convention", "ferret", "--attributions", "input_x_gradient,ig", "--ig-steps", "10", "--task", "sst2",
            "--device", "cpu", "--eval-batch-size", str(a.eval_batch_size)] + (["--data-dir", str(a.data_dir)]
                                                                               if a.data_dir else [])


def ours(model_dir: Path, a) -> tuple[float, dict, list, list]:
    import torch
    args = rx.resolve(rx.parse_args(regex_argv(a)))
    model, _ = common.load_task_model(model_dir)
    tok = common.load_tokenizer(str(model_dir))
    clf = rx.as_classifier(model, tok)
    ex = rx.load_split("sst2", "test", args, tok, None, 0)[:a.n]
    t0 = time.perf_counter()
    attrs = rx.attribute_all(clf, ex, ["input_x_gradient", "ig"], args, 1)
    t1 = time.perf_counter()
    table = rx.faithfulness(clf, ex, attrs, args)
    times = [(time.perf_counter() - t0, t1 - t0, time.perf_counter() - t1)]
    with torch.inference_mode():
        b = common.collate(ex, tok.pad_token_id)
        targets = rx.probs_of(clf, b["input_ids"], b).argmax(-1).tolist()
    return median_split(times), table, [" ".join(e["words"]) for e in ex], targets


def median_split(times: list[tuple]) -> tuple:
    """The (total, explain, evaluate) triple of the repeat with the median total."""
    return sorted(times)[len(times) // 2]


def build_parser():
    p = tb.OneLineParser(prog="bench_ferret.py", description=tb.first_paragraph(__doc__))
    tb.add(p, "--data-dir", domain=tb.EXISTING_DIR, help="folder holding sst2/ (default: $DATA_DIR, else the data/ "
           "folder of the repository)")
    tb.add(p, "--model", default=common.DEFAULT_MODEL, domain=tb.TEXT, help=common.MODEL_HELP)
    tb.add(p, "--n", default=50, domain=tb.Int(1, 10**6), help="SST-2 test sentences (at most the split's size)")
    tb.add(p, "--repeats", default=3, domain=tb.Int(1, 1000), help="timed repeats per side, interleaved, median")
    tb.add(p, "--eval-batch-size", default=8, domain=tb.Int(1, 4096), help="our side's --eval-batch-size: short "
           "sentences explain faster in small batches (less padding)")
    tb.add(p, "--ferret-python", default=os.environ.get("FERRET_PYTHON") or None, domain=tb.EXISTING_FILE,
           help="python of an environment with ferret-xai 0.4.2 (default: $FERRET_PYTHON; without it, our side "
           "beside the last measured ferret figure)")
    return p


def parse_args(argv=None):
    """The flags checked, the model (its config), the SST-2 test split (its size against --n) and the ferret
    interpreter (executable) found: nothing loaded, no measurement started."""
    a = build_parser().parse_args(argv)
    args = rx.resolve(rx.parse_args(regex_argv(a)))
    common.check_max_len(a.model, args.max_len, "regex_robust.py's --max-len for sst2")
    test = rx.read_sst2(common.resolve_data_dir(str(a.data_dir) if a.data_dir else None), "test")
    if a.n > len(test):
        raise common.UsageError(f"--n {a.n}: the SST-2 test split holds {len(test)} sentences")
    if a.ferret_python and not os.access(a.ferret_python, os.X_OK):
        raise common.UsageError(f"--ferret-python {a.ferret_python}: not executable")
    return a


def main(a) -> None:
    import torch
    torch.manual_seed(0)
    model = common.TaskModel(common.load_encoder(a.model), "cls", 2, 0.1).eval()
    with torch.no_grad():  # a head that separates the classes, so that probabilities move
        model.head.weight.normal_(0, 0.5)
    with tempfile.TemporaryDirectory(prefix="bench-ferret-") as tmp:
        common.save_task_model(Path(tmp) / "model", model, common.load_tokenizer(a.model), {"method": "bench"},
                               labels=["negative", "positive"])
        compare(Path(tmp) / "model", a)


def compare(model_dir: Path, a) -> None:
    """Our side, then (with --ferret-python) both sides interleaved, on the model saved in `model_dir`."""
    import torch
    ours_s, table, texts, targets = ours(model_dir, a)
    ours_all = [ours_s]
    print(f"threads {torch.get_num_threads()}, {a.n} SST-2 test sentences, Gradient x Input + IG (10 steps), 10 AOPC "
          "bins, deletion by re-tokenising, taucorr_loo")
    print(f"ours:   {ours_s[0]:7.2f} s = explain {ours_s[1]:.2f} + evaluate {ours_s[2]:.2f}  (" + ", ".join(
        f"{m}: comp {r['aopc_comp']:.4f} suff {r['aopc_suff']:.4f} tau {r['taucorr_loo']:.3f}"
        for m, r in table.items()) + ")")
    if not a.ferret_python:
        f = LAST_FERRET
        print(f"ferret: not installed here (--ferret-python); last measured {f['seconds']} s for {f['n']} sentences "
              f"on {f['date']} ({f['hardware']}), ours {f['ours_seconds']} s in the same run")
        return
    times, out = [], None
    for k in range(a.repeats):  # interleaved: ours, ferret, ours, ferret, ... (the machine's load hits both alike)
        if k:
            ours_all.append(ours(model_dir, a)[0])
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        r = subprocess.run([str(a.ferret_python), "-c", FERRET_SIDE, str(model_dir), json.dumps(texts),
                            json.dumps(targets)], capture_output=True, text=True, env=env)
        if r.returncode:
            lines = r.stderr.strip().splitlines()
            sys.exit(f"bench_ferret.py: the ferret side failed: {lines[-1] if lines else f'exit code {r.returncode}'}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        times.append((out["seconds"], out["explain"], out["evaluate"]))
        print(f"repeat {k + 1}: ours {ours_all[-1][0]:.2f} s, ferret {times[-1][0]:.2f} s, ratio "
              f"{times[-1][0] / ours_all[-1][0]:.2f}", flush=True)
    fs, ours_s = median_split(times), median_split(ours_all)
    import numpy as np
    sc = np.array(out["scores"], dtype=float)  # (n, explainer, evaluator)
    print(f"ferret: {fs[0]:7.2f} s = explain {fs[1]:.2f} + evaluate {fs[2]:.2f}  (" + ", ".join(
        f"{m}: comp {np.nanmean(sc[:, i, 0]):.4f} suff {np.nanmean(sc[:, i, 1]):.4f} tau {np.nanmean(sc[:, i, 2]):.3f}"
        for i, m in enumerate(table)) + ")")
    print(f"ferret / ours = {fs[0] / ours_s[0]:.2f}x in all; explain {fs[1] / ours_s[1]:.2f}x, "
          f"evaluate {fs[2] / ours_s[2]:.2f}x")


def cli(argv=None) -> int:
    return run_bench(main, parse_args, "bench_ferret.py", argv, errors=(common.UsageError,))


if __name__ == "__main__":
    sys.exit(cli())
