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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(a) -> dict:
    """One measurement in this process."""
    import torch

    import common
    import regex_robust as rx
    torch.manual_seed(0)
    argv = ["--task", "movies", "--max-len", str(a.max_len), "--ig-steps", str(a.ig_steps), "--explain-memory-mb",
            str(a.explain_memory_mb), "--aopc-ratios", a.aopc_ratios, "--attributions", "ig", "--model", a.model,
            "--device", "cpu"] + (["--data-dir", a.data_dir] if a.data_dir else [])
    args = rx.resolve(rx.parse_args(argv))
    tok = common.load_tokenizer(a.model)
    model = rx.new_model(args, a.model).eval()
    clf = rx.as_classifier(model, tok)
    raw = rx.read_text_task("movies", common.resolve_data_dir(args.data_dir))["train"][:a.n or 1]
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


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=None, help="folder holding eraser_movies/ (an existing folder)")
    p.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2", help="encoder (a name or a folder)")
    p.add_argument("--n", default="50,500", help="comma-separated corpus sizes (integers >= 1)")
    p.add_argument("--max-len", type=int, default=512, help="wordpieces per document (an integer >= 8)")
    p.add_argument("--ig-steps", type=int, default=2, help="IG steps (an integer >= 1)")
    p.add_argument("--explain-memory-mb", type=int, default=1024, help="the suite's budget (an integer >= 16)")
    p.add_argument("--aopc-ratios", default="0.1", help="AOPC bins (comma-separated numbers in (0, 1])")
    p.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n-one", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.mode:
        a.n = a.n_one
        print(json.dumps(child(a)))
        return
    sizes = [int(x) for x in a.n.split(",")]
    if a.max_len < 8 or a.ig_steps < 1 or a.explain_memory_mb < 16 or min(sizes) < 1:
        p.error("--max-len >= 8, --ig-steps >= 1, --explain-memory-mb >= 16, --n integers >= 1")
    base = [sys.executable, __file__, "--max-len", str(a.max_len), "--ig-steps", str(a.ig_steps),
            "--explain-memory-mb", str(a.explain_memory_mb), "--aopc-ratios", a.aopc_ratios, "--model", a.model] + \
        (["--data-dir", a.data_dir] if a.data_dir else [])
    rows = []
    for mode, n in [("load", 1), ("chunk", 1)] + [("suite", n) for n in sizes]:
        r = subprocess.run(base + ["--mode", mode, "--n-one", str(n)], capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"bench_faithfulness.py: the {mode} run failed: {r.stderr.strip().splitlines()[-1]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    chunk = next(r for r in rows if r["mode"] == "chunk")["peak_rss_mb"]
    print(f"MiniLM, {a.max_len} wordpieces, --explain-memory-mb {a.explain_memory_mb}, IG {a.ig_steps} steps, "
          f"AOPC bins {a.aopc_ratios}; peak RSS (MiB):")
    for r in rows:
        print(f"  {r['mode']:6s} N={r['n']:<4d} {r['peak_rss_mb']:8.1f}  {r['peak_rss_mb'] / chunk:5.2f} x chunk  "
              f"({r['seconds']} s)")


if __name__ == "__main__":
    main()
