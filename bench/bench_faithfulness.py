"""Peak resident memory of the faithfulness suite on long documents, against one IG chunk, for two corpus sizes.

    python bench/bench_faithfulness.py --data-dir DIR [--n 50,500] [--max-len 512] [--explain-memory-mb 1024]
                                       [--ig-steps 2] [--aopc-ratios 0.1] [--model NAME_OR_PATH]

Each measurement is a fresh process (peak RSS = getrusage ru_maxrss): `load` loads MiniLM and the documents only;
`chunk` does one IG chunk: the forward + backward of the rows the budget admits at --max-len (what the budget is
sized for); `suite N` runs the suite's IG attributions and faithfulness (comp / suff at the rationale ratio and the
AOPC bins, [PAD] removal) on the first N ERASER Movie Reviews training documents, truncated to --max-len. The goal:
the suite's peak stays within 2x of the chunk's, whatever N. The model is MiniLM with an untrained head (memory does
not depend on the weights). Sized for a 2-core machine: one explainer, few IG steps, one AOPC bin.
"""
import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from timing import run_bench  # noqa: E402

import common  # noqa: E402
import regex_robust as rx  # noqa: E402

PROG = "bench_faithfulness.py"
MODES = ["load", "chunk", "suite"]  # one measurement each, in a fresh process (the hidden --mode)


def _ratios(value: str) -> str:
    """--aopc-ratios as regex_robust.py takes it (comma-separated distinct numbers in (0, 1]), kept as text."""
    if not rx.FloatList(0, 1).ok(value):
        raise ValueError(value)
    return value


AOPC_RATIOS = tb.Domain(rx.FloatList(0, 1).text, _ratios)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(a) -> dict:
    """One measurement in this process."""
    import torch
    torch.manual_seed(0)
    args = rx.resolve(rx.parse_args(regex_argv(a)))
    tok = common.load_tokenizer(a.model)
    model = rx.new_model(args, a.model).eval()
    clf = rx.as_classifier(model, tok)
    raw = rx.read_text_task("movies", common.resolve_data_dir(args.data_dir))["train"]
    if len(raw) < a.n:
        raise common.UsageError(f"--n {a.n}: the ERASER Movie Reviews training split holds {len(raw)} documents")
    raw = raw[:a.n]
    docs = [rx.encode_text(tok, r["words"], args.max_len, r["label"], k) for k, r in enumerate(raw)]
    out = {"mode": a.mode, "n": a.n, "rows_per_ig_forward": min(args.ig_max_rows, rx.rows_within(
        clf, args.max_len, True, args.explain_memory_mb)), "estimate_mb_per_grad_row": round(
        rx.row_bytes(clf, args.max_len, True) / 2 ** 20, 1)}
    t0 = time.perf_counter()
    if a.mode == "chunk":  # one IG forward + backward of the rows the budget admits, at the full length
        long = [d for d in docs if len(d["input_ids"]) == args.max_len] or docs
        rows = out["rows_per_ig_forward"]
        batch = common.collate([long[0]] * max(1, rows // args.ig_steps), tok.pad_token_id)
        e = clf.embed(batch["input_ids"]).detach()
        target = torch.zeros(e.size(0), dtype=torch.long)
        rx.integrated_gradients(clf, batch, e, rx.baseline_embeddings(clf, batch, e, "zero"), target,
                                args.ig_steps, rows)
    elif a.mode == "suite":
        attrs = rx.attribute_all(clf, docs, ["ig"], args, 1)
        out["faithfulness"] = rx.faithfulness(clf, docs, attrs, args)["ig"]["comp"]
    out["seconds"] = round(time.perf_counter() - t0, 1)
    out["peak_rss_mb"] = round(peak_mb(), 1)
    return out


def build_parser():
    p = tb.OneLineParser(prog=PROG, description=tb.first_paragraph(__doc__))
    tb.add(p, "--data-dir", domain=tb.EXISTING_DIR, help="folder holding eraser_movies/ (default: $DATA_DIR, else the "
           "data/ folder of the repository; python data/fetch.py eraser_movies gets it)")
    tb.add(p, "--model", default=common.DEFAULT_MODEL, domain=tb.TEXT, help=common.MODEL_HELP)
    tb.add(p, "--n", default=[50, 500], domain=tb.IntList(1, 10**6), help="corpus sizes, one suite run each "
           "(default: 50,500)")
    tb.add(p, "--max-len", default=512, domain=tb.Int(8, 100000), help="wordpieces per document (at most the model's "
           "position limit)")
    tb.add(p, "--ig-steps", default=2, domain=tb.Int(1, 1000), help="IG steps")
    tb.add(p, "--explain-memory-mb", default=1024, domain=tb.Int(16, 10**7), help="the suite's memory budget (MiB)")
    tb.add(p, "--aopc-ratios", default="0.1", domain=AOPC_RATIOS, help="AOPC bins")
    # one measurement in this process (the parent runs each in a fresh one): hidden, checked all the same
    p.add_argument("--mode", default=None, choices=MODES, help=argparse.SUPPRESS)
    p.add_argument("--n-one", default=1, type=tb.Int(1, 10**6).argtype(), help=argparse.SUPPRESS)
    return p


def regex_argv(a) -> list[str]:
    """regex_robust.py's flags for these measurements."""
    return ["--task", "movies", "--max-len", str(a.max_len), "--ig-steps", str(a.ig_steps), "--explain-memory-mb",
            str(a.explain_memory_mb), "--aopc-ratios", a.aopc_ratios, "--attributions", "ig", "--model", a.model,
            "--device", "cpu"] + (["--data-dir", str(a.data_dir)] if a.data_dir else [])


def parse_args(argv=None):
    """The flags checked, the model (its config: --max-len against its position limit) and the data folder found:
    nothing loaded, no measurement started."""
    a = build_parser().parse_args(argv)
    rx.resolve(rx.parse_args(regex_argv(a)))
    data_dir = common.resolve_data_dir(str(a.data_dir) if a.data_dir else None)
    common.dataset_dir(data_dir, "eraser_movies")
    if not a.mode:  # the training split read (and checked) once here, before any measurement starts
        n_docs = len(common.read_eraser_movies(data_dir, "train"))
        if max(a.n) > n_docs:
            raise common.UsageError(f"--n {max(a.n)}: the ERASER Movie Reviews training split holds {n_docs} "
                                    "documents")
    return a


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def main(a) -> None:
    if a.mode:
        a.n = a.n_one
        print(json.dumps(child(a)))
        return
    base = [sys.executable, __file__, "--max-len", str(a.max_len), "--ig-steps", str(a.ig_steps),
            "--explain-memory-mb", str(a.explain_memory_mb), "--aopc-ratios", a.aopc_ratios, "--model", a.model] + \
        (["--data-dir", str(a.data_dir)] if a.data_dir else [])
    rows = []
    for mode, n in [("load", 1), ("chunk", 1)] + [("suite", n) for n in a.n]:
        r = subprocess.run(base + ["--mode", mode, "--n-one", str(n)], capture_output=True, text=True)
        if r.returncode == 2:  # bad input the parent could not see: the child's one line, as ours
            raise tb.UsageError(f"the {mode} run: {last_line(r.stderr).removeprefix(PROG + ': error: ')}")
        if r.returncode:
            sys.exit(f"{PROG}: the {mode} run failed: {last_line(r.stderr) or f'exit code {r.returncode}'}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    chunk = next(r for r in rows if r["mode"] == "chunk")["peak_rss_mb"]
    print(f"MiniLM, {a.max_len} wordpieces, --explain-memory-mb {a.explain_memory_mb}, IG {a.ig_steps} steps, "
          f"AOPC bins {a.aopc_ratios}; peak RSS (MiB):")
    for r in rows:
        print(f"  {r['mode']:6s} N={r['n']:<4d} {r['peak_rss_mb']:8.1f}  {r['peak_rss_mb'] / chunk:5.2f} x chunk  "
              f"({r['seconds']} s)")


def cli(argv=None) -> int:
    return run_bench(main, parse_args, PROG, argv, errors=(common.UsageError,))


if __name__ == "__main__":
    sys.exit(cli())
