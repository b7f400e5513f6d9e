"""Print a sweep's table (Markdown, optionally CSV) with paired comparisons against its baseline row.

Reads `<root>/<sweep>/jobs.json` (written by bench/sweep.py), each job's `results.json` and, where present,
its `predictions.jsonl` (beside results.json). Per cell: mean +- sample std over seeds (median [q25:q75],
numpy linear percentiles, for sweeps whose summary is `median`, e.g. SMaT) beside the paper's number. Per row
and column, against the baseline row of the same column over the seeds both have:

- the mean difference over seeds, with a 95% percentile bootstrap interval that resamples the per-seed
  differences with replacement (`--seed-resamples`, default 10,000);
- a paired bootstrap over test examples (`--example-resamples`, default 2,000): resample test examples with
  replacement, the same indices for method and baseline (and, when the test set is the same for every seed,
  for every seed), recompute the metric from predictions.jsonl, average the difference over seeds; 95%
  percentile interval. Metrics: accuracy = mean(pred == gold); span F1 = micro chunk F1 in seqeval's default
  (conlleval) mode from per-sentence counts; Pearson r for regression.

A difference is marked `*` when its seed interval excludes 0 and `†` when its example interval does. Each
comparison draws from its own generator, seeded by `--bootstrap-seed` and the row and column names, so the
output is deterministic and a cell's interval does not change when other cells are added.

Usage:
    python bench/table.py uimer-ic1-paired                   # <root>/uimer-ic1-paired (root: runs/sweeps)
    python bench/table.py runs/sweeps/smat-table1 --csv smat.csv
    python bench/table.py uimer-table2 --root path/to/sweeps --bootstrap-seed 1 --example-resamples 5000
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweeps as named_sweeps  # noqa: E402
from sweep import OneLineParser, UsageError, find_results, non_negative_int, positive_int, run_cli  # noqa: E402

MARK_SEEDS, MARK_EXAMPLES = "*", "†"
CHUNK_ELEMENTS = 2 ** 21  # resampled indices held at once (rows x test examples)


# ------------------------------------------------------------------------------------------------------
# Per-example statistics: every metric is a function of sums over examples, so a resample is a sum
# ------------------------------------------------------------------------------------------------------
def span_counts(gold: list[str], pred: list[str]) -> tuple[int, int, int]:
    """(true positives, predicted chunks, gold chunks) of one sentence, seqeval default mode."""
    from seqeval.metrics.sequence_labeling import get_entities
    g, p = set(get_entities(list(gold))), set(get_entities(list(pred)))
    return len(g & p), len(p), len(g)


def example_stats(preds: list[dict], kind: str) -> np.ndarray:
    """n x k per-example statistics whose column sums give the metric (see `metric_from_sums`)."""
    if kind == "accuracy":
        return np.array([[float(r["pred"] == r["gold"]), 1.0] for r in preds]).reshape(-1, 2)
    if kind == "span_f1":
        return np.array([span_counts(r["gold"], r["pred"]) for r in preds], dtype=float).reshape(-1, 3)
    if kind == "pearson":
        x = np.array([float(r["pred"]) for r in preds])
        y = np.array([float(r["gold"]) for r in preds])
        return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=1)
    raise ValueError(f"unknown metric {kind!r}")


def metric_from_sums(kind: str, sums: np.ndarray) -> np.ndarray:
    """The metric from column sums (..., k) of `example_stats` (weighted by resample counts)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "accuracy":
            return sums[..., 0] / sums[..., 1]
        if kind == "span_f1":
            tp, n_pred, n_gold = sums[..., 0], sums[..., 1], sums[..., 2]
            return np.where(tp > 0, 2 * tp / (n_pred + n_gold), 0.0)
        if kind == "pearson":
            n, sx, sy, sxx, syy, sxy = (sums[..., i] for i in range(6))
            return (n * sxy - sx * sy) / np.sqrt((n * sxx - sx ** 2) * (n * syy - sy ** 2))
    raise ValueError(f"unknown metric {kind!r}")


def metric(kind: str, stats: np.ndarray) -> float:
    return float(metric_from_sums(kind, stats.sum(axis=0)))


def infer_kind(preds: list[dict]) -> str:
    """For sweeps that do not declare their metric: list gold -> span F1, float gold without p_gold -> Pearson."""
    first = preds[0]
    if isinstance(first["gold"], list):
        return "span_f1"
    if isinstance(first["gold"], float) and first.get("p_gold") is None:
        return "pearson"
    return "accuracy"


# ------------------------------------------------------------------------------------------------------
# Bootstraps
# ------------------------------------------------------------------------------------------------------
def seed_bootstrap(diffs: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` resamples (with replacement) of the per-seed differences."""
    idx = rng.integers(0, len(diffs), size=(n_resamples, len(diffs)))
    return diffs[idx].mean(axis=1)


def index_chunks(rng: np.random.Generator, n: int, n_resamples: int):
    """Resampled test-example indices, `rows x n` at a time (rows fixed by n, so the draws are reproducible)."""
    rows = max(1, CHUNK_ELEMENTS // max(n, 1))
    for start in range(0, n_resamples, rows):
        yield rng.integers(0, n, size=(min(rows, n_resamples - start), n))


def resampled_metric(kind: str, stats: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The metric on each resample (row of `idx`)."""
    return metric_from_sums(kind, stats[idx].sum(axis=1))


def example_bootstrap(pairs: list[tuple[np.ndarray, np.ndarray]], kind: str, n_resamples: int,
                      rng: np.random.Generator, shared: bool) -> np.ndarray:
    """Paired bootstrap over test examples: per resample, mean over seeds of metric(method) - metric(baseline)
    on the same resampled examples. `pairs` = per seed (method stats, baseline stats); `shared`: one draw of
    indices per resample for all seeds (the same test set), else one per seed."""
    if shared:
        out = []
        for idx in index_chunks(rng, len(pairs[0][0]), n_resamples):
            out.append(np.mean([resampled_metric(kind, m, idx) - resampled_metric(kind, b, idx) for m, b in pairs],
                               axis=0))
        return np.concatenate(out)
    per_seed = []
    for m, b in pairs:
        per_seed.append(np.concatenate([resampled_metric(kind, m, idx) - resampled_metric(kind, b, idx)
                                        for idx in index_chunks(rng, len(m), n_resamples)]))
    return np.mean(per_seed, axis=0)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def comparison_rng(bootstrap_seed: int, row: str, column: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([bootstrap_seed, zlib.crc32(f"{row}\x00{column}".encode()), stream])


# ------------------------------------------------------------------------------------------------------
# Reading a sweep
# ------------------------------------------------------------------------------------------------------
def sweep_dir_of(target: str, root: str) -> Path:
    """A sweep name (-> <root>/<name>), a sweep directory, or its jobs.json."""
    path = Path(target)
    if path.name == "jobs.json":
        path = path.parent
    if not (path / "jobs.json").is_file() and "/" not in target:
        path = Path(root) / target
    if not (path / "jobs.json").is_file():
        hint = f" (named sweeps: {', '.join(named_sweeps.SWEEPS)})" if target not in named_sweeps.SWEEPS else ""
        raise UsageError(f"no jobs.json in {path}: run `python bench/sweep.py {target}` first{hint}")
    return path


def dig(obj, path: list[str]):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def read_predictions(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise UsageError(f"{path}:{number}: not JSON ({e})")
            if not isinstance(row, dict) or not {"id", "gold", "pred"} <= set(row):
                raise UsageError(f"{path}:{number}: expected an object with id, gold, pred (and p_gold)")
            rows.append(row)
    if not rows:
        raise UsageError(f"{path}: no predictions")
    return rows


def load_runs(manifest: dict, sweep_dir: Path) -> dict:
    """(row, column) -> {seed: {"value": metric from results.json, "predictions": path or None}}."""
    runs: dict = {}
    for jid, job in manifest["jobs"].items():
        if not job.get("table", True):
            continue
        path = find_results(sweep_dir / jid)
        if path is None:
            continue
        value = dig(json.loads(path.read_text()), manifest["metric_key"])
        if value is None and "key_override" in manifest:
            continue  # --key: this run did not compute that number (e.g. evaluated with fewer methods)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UsageError(f"{path}: no number at {'.'.join(manifest['metric_key'])}")
        preds = path.parent / "predictions.jsonl"
        runs.setdefault((job["row"], job["column"]), {})[job["seed"]] = {
            "value": float(value), "predictions": preds if preds.is_file() and "key_override" not in manifest else None,
            "job": jid}
    if "key_override" in manifest and not runs:
        raise UsageError(f"no results.json below {sweep_dir} has a number at {manifest['key_override']}")
    return runs


def expected_seeds(manifest: dict) -> dict:
    out: dict = {}
    for job in manifest["jobs"].values():
        out.setdefault((job["row"], job["column"]), []).append(job["seed"])
    return out


# ------------------------------------------------------------------------------------------------------
# The table
# ------------------------------------------------------------------------------------------------------
def summarise(values: list[float], how: str) -> dict:
    v = np.asarray(values, dtype=float)
    out = {"n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else float("nan"),
           "median": float(np.median(v)), "q25": float(np.percentile(v, 25)), "q75": float(np.percentile(v, 75))}
    out["how"] = how
    return out


def stats_for(run: dict, kind: str, cache: dict) -> tuple[list, np.ndarray, str]:
    """(ids, per-example stats, metric kind) of one run's predictions.jsonl, cached by path."""
    path = run["predictions"]
    if path not in cache:
        preds = read_predictions(path)
        k = infer_kind(preds) if kind == "auto" else kind
        if k == "span_f1" and not isinstance(preds[0]["gold"], list):
            raise UsageError(f"{path}: span F1 needs lists of BIO tags as gold and pred")
        ids = [str(r["id"]) for r in preds]
        stats = example_stats(preds, k)
        recomputed = metric(k, stats)
        if not math.isclose(recomputed, run["value"], abs_tol=1e-6):
            print(f"table.py: warning: {path} gives {k} {recomputed:.6f}, results.json {run['value']:.6f}",
                  file=sys.stderr)
        cache[path] = (ids, stats, k)
    return cache[path]


def compare(method: dict, base: dict, kind: str, row: str, column: str, opts, cache: dict) -> dict:
    """Paired statistics of one row against the baseline in one column."""
    common_seeds = sorted(set(method) & set(base))
    out = {"n_paired": len(common_seeds), "n_excluded": len(set(method) ^ set(base))}
    if not common_seeds:
        return out
    diffs = np.array([method[s]["value"] - base[s]["value"] for s in common_seeds])
    out["diff"] = float(diffs.mean())
    if len(common_seeds) >= 2:
        means = seed_bootstrap(diffs, opts.seed_resamples, comparison_rng(opts.bootstrap_seed, row, column, 0))
        out["seed_ci"] = interval(means)
    with_preds = [s for s in common_seeds if method[s]["predictions"] and base[s]["predictions"]]
    if not with_preds:
        return out
    pairs, id_lists = [], []
    for s in with_preds:
        m_ids, m_stats, k = stats_for(method[s], kind, cache)
        b_ids, b_stats, _ = stats_for(base[s], kind, cache)
        if m_ids != b_ids:
            raise UsageError(f"predictions of {method[s]['job']} and {base[s]['job']} (baseline) do not have the "
                             f"same example ids in the same order ({len(m_ids)} vs {len(b_ids)} examples)")
        pairs.append((m_stats, b_stats))
        id_lists.append(m_ids)
    shared = all(ids == id_lists[0] for ids in id_lists)
    samples = example_bootstrap(pairs, k, opts.example_resamples, comparison_rng(opts.bootstrap_seed, row, column, 1),
                                shared)
    out["example_diff"] = float(np.mean([metric(k, m) - metric(k, b) for m, b in pairs]))
    out["example_ci"] = interval(samples)
    out["n_example_seeds"] = len(with_preds)
    return out


def build(manifest: dict, sweep_dir: Path, opts) -> dict:
    baseline = getattr(opts, "baseline", None) or manifest["baseline"]
    if baseline not in manifest["rows"]:
        raise UsageError(f"--baseline {baseline!r}: no such row; rows: {', '.join(manifest['rows'])}")
    manifest = {**manifest, "baseline": baseline}
    if getattr(opts, "key", None):  # another number of results.json: no paper numbers, no example bootstrap
        manifest = {**manifest, "metric_key": opts.key.split("."), "paper": {}, "key_override": opts.key}
    runs = load_runs(manifest, sweep_dir)
    expected = expected_seeds(manifest)
    cells, comparisons, cache = {}, [], {}
    for row in manifest["rows"]:
        for column, kind in manifest["columns"].items():
            got = runs.get((row, column), {})
            cells[(row, column)] = {"summary": summarise([r["value"] for r in got.values()], manifest["summary"])
                                    if got else None, "n_expected": len(expected.get((row, column), [])),
                                    "values": {s: r["value"] for s, r in sorted(got.items())}}
            if row != baseline:
                comparisons.append({"row": row, "column": column, **compare(
                    got, runs.get((baseline, column), {}), kind, row, column, opts, cache)})
    return {"manifest": manifest, "cells": cells, "comparisons": comparisons}


# ------------------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------------------
def fmt_cell(cell: dict, scale: float) -> str:
    s = cell["summary"]
    if s is None:
        return "not run"
    if s["how"] == "median":
        text = f"{scale * s['median']:.2f} [{scale * s['q25']:.2f}:{scale * s['q75']:.2f}]"
    else:
        text = f"{scale * s['mean']:.2f} +- {scale * s['std']:.2f}" if s["n"] > 1 else f"{scale * s['mean']:.2f}"
    return text if s["n"] == cell["n_expected"] else f"{text} ({s['n']}/{cell['n_expected']} seeds)"


def fmt_ci(ci, scale: float, mark: str) -> str:
    if ci is None:
        return "-"
    lo, hi = ci
    return f"[{scale * lo:+.2f}, {scale * hi:+.2f}]" + (f" {mark}" if lo > 0 or hi < 0 else "")


def markdown(table: dict, opts) -> str:
    m = table["manifest"]
    scale = m["scale"]
    columns = list(m["columns"])
    label = lambda c: m.get("key_override") or c or ".".join(m["metric_key"])
    how = ("median [q25:q75]" if m["summary"] == "median" else "mean +- sample std") + " over seeds"
    note = " 'not run': no finished run of the row has this number." if "key_override" in m else ""
    lines = [f"### {m['sweep']}" + (f": {m['title']}" if m["title"] else ""), "",
             (f"{how}; x{scale:g}." if scale != 1 else f"{how}.") + note, ""]
    has_paper = any(m["paper"].get(r) for r in m["rows"])
    head = ["method"] + [h for c in columns for h in ([label(c), "paper"] if has_paper else [label(c)])]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row in m["rows"]:
        cells = [row]
        for c in columns:
            cells.append(fmt_cell(table["cells"][(row, c)], scale))
            if has_paper:
                cells.append(m["paper"].get(row, {}).get(c, "-"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Paired with {m['baseline']}: method - baseline, mean over the seeds both have, x{scale:g}.", "",
              "| method | column | seeds | difference | 95% CI over seeds | 95% CI over test examples |",
              "| --- | --- | --- | --- | --- | --- |"]
    for c in table["comparisons"]:
        seeds = str(c["n_paired"]) + (f" ({c['n_excluded']} excluded)" if c["n_excluded"] else "")
        diff = f"{scale * c['diff']:+.2f}" if "diff" in c else "not run"
        ex = fmt_ci(c.get("example_ci"), scale, MARK_EXAMPLES) if "example_ci" in c else \
            ("-" if "diff" not in c else "not per example" if "key_override" in m else "no predictions")
        if "example_ci" in c and c["n_example_seeds"] != c["n_paired"]:
            ex += f" ({c['n_example_seeds']} seeds)"
        lines.append(f"| {c['row']} | {label(c['column'])} | {seeds} | {diff} | "
                     f"{fmt_ci(c.get('seed_ci'), scale, MARK_SEEDS)} | {ex} |")
    lines += ["", f"{MARK_SEEDS}: the 95% bootstrap interval over seeds excludes 0 (percentile interval of the mean "
              f"of the per-seed differences, {opts.seed_resamples:,} resamples of the seeds with replacement; "
              f"needs 2 seeds). {MARK_EXAMPLES}: the 95% paired bootstrap interval over test examples excludes 0 "
              f"({opts.example_resamples:,} resamples of the test examples with replacement, the same for method "
              f"and baseline, metric recomputed from predictions.jsonl, difference averaged over seeds). Seeds where "
              f"one side is missing are excluded and counted. Bootstrap seed {opts.bootstrap_seed}; no correction "
              f"for multiple comparisons."]
    return "\n".join(lines) + "\n"


CSV_FIELDS = ["sweep", "row", "column", "n_seeds", "n_expected", "mean", "std", "median", "q25", "q75", "paper",
              "per_seed", "baseline", "n_paired", "n_excluded", "diff", "seed_ci_low", "seed_ci_high",
              "seed_ci_excludes_0", "example_diff", "example_ci_low", "example_ci_high", "example_ci_excludes_0",
              "n_example_seeds", "scale"]


def csv_rows(table: dict) -> list[dict]:
    m = table["manifest"]
    comps = {(c["row"], c["column"]): c for c in table["comparisons"]}
    rows = []
    for (row, column), cell in table["cells"].items():
        s = cell["summary"] or {}
        c = comps.get((row, column), {})
        seed_ci, ex_ci = c.get("seed_ci"), c.get("example_ci")
        rows.append({
            "sweep": m["sweep"], "row": row, "column": column, "n_seeds": s.get("n", 0),
            "n_expected": cell["n_expected"], **{k: s.get(k, "") for k in ("mean", "std", "median", "q25", "q75")},
            "paper": m["paper"].get(row, {}).get(column, ""),
            "per_seed": ";".join(f"{seed}:{v:.6g}" for seed, v in cell["values"].items()),
            "baseline": m["baseline"], "n_paired": c.get("n_paired", ""), "n_excluded": c.get("n_excluded", ""),
            "diff": c.get("diff", ""), "seed_ci_low": seed_ci[0] if seed_ci else "",
            "seed_ci_high": seed_ci[1] if seed_ci else "",
            "seed_ci_excludes_0": (seed_ci[0] > 0 or seed_ci[1] < 0) if seed_ci else "",
            "example_diff": c.get("example_diff", ""), "example_ci_low": ex_ci[0] if ex_ci else "",
            "example_ci_high": ex_ci[1] if ex_ci else "",
            "example_ci_excludes_0": (ex_ci[0] > 0 or ex_ci[1] < 0) if ex_ci else "",
            "n_example_seeds": c.get("n_example_seeds", ""), "scale": m["scale"]})
    return rows


def write_csv(table: dict, path: Path) -> None:
    """Unscaled values (fractions for UIMER/SMaT/REGEX); `scale` says what the Markdown multiplied by."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(table))


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="table.py", description=__doc__.split("\n")[0])
    p.add_argument("sweep", help="a sweep name (looked up under --root), a sweep directory or its jobs.json")
    p.add_argument("--root", default="runs/sweeps", help="where named sweeps live (bench/sweep.py --root; "
                   "default: runs/sweeps)")
    p.add_argument("--csv", metavar="PATH", help="also write the table as CSV (unscaled values) to PATH")
    p.add_argument("--key", metavar="PATH", help="tabulate another number of results.json, a dotted path (e.g. "
                   "faithfulness.ig.gain_over_random.norm_comp); paired over seeds only")
    p.add_argument("--baseline", metavar="ROW", help="compare every row with this row instead of the sweep's "
                   "baseline (e.g. \"IM +Uniform (warm.)\" to isolate one deviation)")
    p.add_argument("--seed-resamples", type=positive_int, default=10_000, help="bootstrap resamples over seeds "
                   "(default: 10000)")
    p.add_argument("--example-resamples", type=positive_int, default=2_000, help="bootstrap resamples over test "
                   "examples (default: 2000)")
    p.add_argument("--bootstrap-seed", type=non_negative_int, default=0,
                   help="seed of the bootstrap draws (default: 0)")
    return p


def main(argv=None) -> int:
    opts = build_parser().parse_args(argv)
    if opts.csv and not Path(opts.csv).resolve().parent.is_dir():
        raise UsageError(f"--csv {opts.csv}: its directory does not exist")
    sweep_dir = sweep_dir_of(opts.sweep, opts.root)
    manifest = json.loads((sweep_dir / "jobs.json").read_text())
    table = build(manifest, sweep_dir, opts)
    sys.stdout.write(markdown(table, opts))
    if opts.csv:
        write_csv(table, Path(opts.csv))
    return 0


def cli(argv=None) -> int:
    return run_cli(main, "table.py", argv)


if __name__ == "__main__":
    sys.exit(cli())
