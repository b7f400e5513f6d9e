"""Print a sweep's table (Markdown, optionally CSV and a plot) with paired comparisons against its baseline row.

Reads the sweep's records in the repository, `results/<sweep>/` (its jobs.json and one record per finished job,
written by bench/sweep.py; format in results/README.md), and for a job without a record its run directory under
`<root>/<sweep>/` (jobs.json, the job's `results.json` and `predictions.jsonl` beside it). A job that has both
is read from its record; `--source runs` reads the run directories only, `--source records` the records only.

Per cell: mean +- sample std over seeds (median [q25:q75], numpy linear percentiles, for sweeps whose summary
is `median`, e.g. SMaT) beside the paper's number. Per row and column, against the baseline row of the same
column over the seeds both have:

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

A corrupt, truncated or non-finite results.json or record is an error naming its file (never a smaller
table), and so is a metric that the predictions leave undefined.

`--plot out.png`: per column, each method's paired difference with the baseline (a diamond), its 95% interval
over seeds (thick bar) and over test examples (thin bar), the per-seed differences (dots) and a line at 0; for a
`median` sweep (SMaT) also each row's median with its [q25:q75] range, the per-seed values and the paper's.

Usage:
    python bench/table.py uimer-ic1-paired                   # results/uimer-ic1-paired, else runs/sweeps/...
    python bench/table.py uimer-ic1-paired --plot ic1.png    # and the plot
    python bench/table.py runs/sweeps/smat-table1 --csv smat.csv --source runs
    python bench/table.py uimer-table2 --root path/to/sweeps --bootstrap-seed 1 --example-resamples 5000
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import re
import sys
import zlib
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import records  # noqa: E402
import sweeps as named_sweeps  # noqa: E402
import toolbox as tb  # noqa: E402
from records import read_predictions  # noqa: E402, F401  (table.read_predictions: used by tests and readers)
from toolbox import UsageError  # noqa: E402

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


infer_kind = records.infer_kind


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
def locate(target: str, root: Path, results: Path, source: str) -> tuple[dict, Path | None, Path | None]:
    """(layout, run sweep directory or None, records folder or None) of a sweep name (-> <results>/<name> and
    <root>/<name>), a sweep directory of runs, a records folder, or a jobs.json in either. The layout is the
    records' jobs.json when records are read, else the runs'."""
    path = Path(target)
    if path.name == "jobs.json":
        path = path.parent
    if "/" not in target and not (path / "jobs.json").is_file():  # a name
        sweep_dir, records_dir, name = root / target, results / target, target
    elif not (path / "jobs.json").is_file():
        raise UsageError(f"no jobs.json in {path}: give a sweep name, a sweep folder or its jobs.json")
    else:
        layout = records.read_layout(path / "jobs.json")
        name = layout["sweep"]
        if layout.get("format") == records.LAYOUT_FORMAT:
            records_dir, sweep_dir = path, root / name
        else:
            sweep_dir, records_dir = path, results / name
    use_records = source != "runs" and (records_dir / "jobs.json").is_file()
    use_runs = source != "records" and (sweep_dir / "jobs.json").is_file()
    if source == "records" and not use_records:
        raise UsageError(f"--source records: no jobs.json in {records_dir} (record a finished sweep with "
                         f"`python bench/sweep.py {name} --record-only`)")
    if not use_records and not use_runs:
        hint = f" (named sweeps: {', '.join(named_sweeps.SWEEPS)})" if name not in named_sweeps.SWEEPS else ""
        where = f"{records_dir} nor in {sweep_dir}" if source == "auto" else str(sweep_dir)
        raise UsageError(f"no jobs.json in {where}: run `python bench/sweep.py {name}` first{hint}")
    layout = records.read_layout((records_dir if use_records else sweep_dir) / "jobs.json")
    return layout, sweep_dir if use_runs else None, records_dir if use_records else None


def dig(obj, path: list[str]):
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def load_job(jid: str, job: dict, sweep_dir: Path | None, records_dir: Path | None, check_command: bool):
    """(results, where, predictions loader or None) of a job from its record, else its run directory; None when
    neither has it. The loader returns (rows, metric kind inferred when the record was made, or None)."""
    if records_dir is not None and records.record_path(records_dir, jid).exists():
        where = records.record_path(records_dir, jid)
        record = records.read_record(where, jid, job if check_command else None)
        enc = record["predictions"]
        load = (lambda: (records.decode_predictions(enc, where), enc.get("kind"))) if enc else None
        return record["results"], where, load
    path = records.results_file(sweep_dir / jid) if sweep_dir is not None else None
    if path is None:
        return None
    preds = path.parent / "predictions.jsonl"
    load = (lambda: (read_predictions(preds), None)) if preds.is_file() else None
    return tb.read_json(path, "results.json"), path, load


def load_runs(manifest: dict, sweep_dir: Path | None, records_dir: Path | None = None) -> dict:
    """(row, column) -> {seed: {"value": the number, "predictions": a loader of the test predictions or None,
    "where": the file it came from, "job": id}}."""
    runs: dict = {}
    check_command = manifest.get("format") == records.LAYOUT_FORMAT  # the records' own layout: same commands
    for jid, job in manifest["jobs"].items():
        if not job.get("table", True):
            continue
        got = load_job(jid, job, sweep_dir, records_dir, check_command)
        if got is None:
            continue
        results, where, preds = got
        value = dig(results, manifest["metric_key"])
        if value is None and "key_override" in manifest:
            continue  # --key: this run did not compute that number (e.g. evaluated with fewer methods)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise UsageError(f"{where}: no number at {'.'.join(manifest['metric_key'])}")
        runs.setdefault((job["row"], job["column"]), {})[job["seed"]] = {
            "value": float(value), "predictions": preds if "key_override" not in manifest else None, "job": jid,
            "where": where}
    if "key_override" in manifest and not runs:
        raise UsageError(f"no finished run of {manifest['sweep']} has a number at {manifest['key_override']}")
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


def check_predictions(preds: list[dict], kind: str, path: Path) -> None:
    """The predictions hold what the metric needs (else an error naming the file, never a traceback later)."""
    for number, r in enumerate(preds, 1):
        g, p = r["gold"], r["pred"]
        if kind == "span_f1":
            ok = records.is_str_list(g) and records.is_str_list(p)
        elif kind == "pearson":
            ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (g, p))
        else:
            ok = isinstance(g, (str, int, bool)) and isinstance(p, (str, int, bool))
        if not ok:
            need = {"span_f1": "lists of BIO tags", "pearson": "numbers"}.get(kind, "labels (strings or integers)")
            raise UsageError(f"{path}: example {number} ({r['id']!r}): {kind} needs {need} as gold and pred")


def stats_for(run: dict, kind: str, cache: dict, notes: list) -> tuple[list, np.ndarray, str]:
    """(ids, per-example stats, metric kind) of one run's test predictions, cached by the file they came from.
    A recomputed metric that differs from results.json is noted (printed after the table)."""
    where = run["where"]
    if where not in cache:
        preds, recorded_kind = run["predictions"]()
        k = kind if kind != "auto" else recorded_kind or infer_kind(preds)
        check_predictions(preds, k, where)
        ids = [str(r["id"]) for r in preds]
        stats = example_stats(preds, k)
        recomputed = metric(k, stats)
        if not math.isfinite(recomputed):
            raise UsageError(f"{where}: {k} of the predictions is undefined (constant predictions or gold?)")
        if not math.isclose(recomputed, run["value"], abs_tol=1e-6):
            notes.append(f"table.py: warning: {where} gives {k} {recomputed:.6f}, results.json {run['value']:.6f}")
        cache[where] = (ids, stats, k)
    return cache[where]


def compare(method: dict, base: dict, kind: str, row: str, column: str, opts, cache: dict, notes: list) -> dict:
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
        m_ids, m_stats, k = stats_for(method[s], kind, cache, notes)
        b_ids, b_stats, _ = stats_for(base[s], kind, cache, notes)
        if m_ids != b_ids:
            raise UsageError(f"predictions of {method[s]['job']} and {base[s]['job']} (baseline) do not have the "
                             f"same example ids in the same order ({len(m_ids)} vs {len(b_ids)} examples)")
        pairs.append((m_stats, b_stats))
        id_lists.append(m_ids)
    shared = all(ids == id_lists[0] for ids in id_lists)
    samples = example_bootstrap(pairs, k, opts.example_resamples, comparison_rng(opts.bootstrap_seed, row, column, 1),
                                shared)
    bad = int(np.sum(~np.isfinite(samples)))
    if bad:
        raise UsageError(f"{row} vs the baseline in {column!r}: {k} is undefined on {bad} of {len(samples)} "
                         f"resamples of the test examples (near-constant predictions?), e.g. "
                         f"{method[with_preds[0]]['where']}")
    out["example_diff"] = float(np.mean([metric(k, m) - metric(k, b) for m, b in pairs]))
    out["example_ci"] = interval(samples)
    out["n_example_seeds"] = len(with_preds)
    return out


def build(manifest: dict, sweep_dir: Path | None, opts, records_dir: Path | None = None) -> dict:
    baseline = getattr(opts, "baseline", None) or manifest["baseline"]
    if baseline not in manifest["rows"]:
        raise UsageError(f"--baseline {baseline!r}: no such row; rows: {', '.join(manifest['rows'])}")
    manifest = {**manifest, "baseline": baseline}
    if getattr(opts, "key", None):  # another number of results.json: no paper numbers, no example bootstrap
        key = opts.key if isinstance(opts.key, str) else ".".join(opts.key)
        manifest = {**manifest, "metric_key": key.split("."), "paper": {}, "key_override": key}
    runs = load_runs(manifest, sweep_dir, records_dir)
    expected = expected_seeds(manifest)
    cells, comparisons, cache, notes = {}, [], {}, []
    for row in manifest["rows"]:
        for column, kind in manifest["columns"].items():
            got = runs.get((row, column), {})
            cells[(row, column)] = {"summary": summarise([r["value"] for r in got.values()], manifest["summary"])
                                    if got else None, "n_expected": len(expected.get((row, column), [])),
                                    "values": {s: r["value"] for s, r in sorted(got.items())}}
            if row != baseline:
                comparisons.append({"row": row, "column": column, **compare(
                    got, runs.get((baseline, column), {}), kind, row, column, opts, cache, notes)})
    return {"manifest": manifest, "cells": cells, "comparisons": comparisons, "notes": notes}


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

    def label(c):
        return m.get("key_override") or c or ".".join(m["metric_key"])
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


# ------------------------------------------------------------------------------------------------------
# Plot
# ------------------------------------------------------------------------------------------------------
def paper_median(text: str | None) -> tuple[float, float, float] | None:
    """'81.72 [81.24:81.75]' -> (81.72, 81.24, 81.75); '65.71' -> (65.71, 65.71, 65.71); else None."""
    m = re.fullmatch(r"\s*([-+\d.]+)\s*(?:\[\s*([-+\d.]+)\s*:\s*([-+\d.]+)\s*\])?\s*", text or "")
    try:
        return (float(m.group(1)), float(m.group(2) or m.group(1)), float(m.group(3) or m.group(1))) if m else None
    except ValueError:
        return None


def plot(table: dict, path: Path) -> None:
    """The paired differences per column (and, for a median sweep, the medians and [q25:q75] per row) as a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = table["manifest"]
    scale, baseline, columns = m["scale"], m["baseline"], list(m["columns"])
    methods = [r for r in m["rows"] if r != baseline]
    comps = {(c["row"], c["column"]): c for c in table["comparisons"]}
    name = m.get("key_override") or ".".join(m["metric_key"])
    ran = [c for c in columns if any("diff" in comps[(r, c)] for r in methods)]
    if not ran:  # nothing paired yet: one panel saying so rather than none
        ran = columns[:1]
    skipped = [c for c in columns if c not in ran]
    panels = ([("values", c) for c in columns] if m["summary"] == "median" else []) + [("diff", c) for c in ran]
    ncols = min(len(panels), 4)
    nrows = -(-len(panels) // ncols)
    height = 0.42 * (len(m["rows"]) + 1) + 1.4
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, height * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (what, column) in zip(axes.flat, panels, strict=False):
        title = column or name
        if what == "values":
            rows = m["rows"]
            for y, row in enumerate(rows):
                cell = table["cells"][(row, column)]
                s = cell["summary"]
                if s is None:
                    ax.text(0.02, y, "not run", transform=ax.get_yaxis_transform(), va="center", color="grey")
                    continue
                ax.hlines(y, scale * s["q25"], scale * s["q75"], lw=5, color="tab:blue", alpha=0.5)
                ax.plot(scale * s["median"], y, "D", color="black", ms=5)
                vals = list(cell["values"].values())
                ax.plot([scale * v for v in vals], y + np.linspace(-0.15, 0.15, len(vals)), "o", ms=3,
                        color="tab:blue", alpha=0.8)
                ref = paper_median(m["paper"].get(row, {}).get(column))
                if ref:
                    ax.hlines(y + 0.3, ref[1], ref[2], lw=2, color="tab:red")
                    ax.plot(ref[0], y + 0.3, "x", color="tab:red", ms=6)
            ax.set_title(f"{title}: median [q25:q75] (x{scale:g}); paper in red", fontsize=9)
        else:
            rows = methods
            first = next((y for y, row in enumerate(rows) if "diff" in comps[(row, column)]), 0)  # legend labels
            for y, row in enumerate(rows):
                c = comps[(row, column)]
                if "diff" not in c:
                    ax.text(0.02, y, "not run", transform=ax.get_yaxis_transform(), va="center", color="grey")
                    continue
                mine, base = table["cells"][(row, column)]["values"], table["cells"][(baseline, column)]["values"]
                diffs = [scale * (mine[s] - base[s]) for s in sorted(set(mine) & set(base))]
                ax.plot(diffs, y + np.linspace(-0.15, 0.15, len(diffs)), "o", ms=3, color="tab:gray", alpha=0.8,
                        label="per seed" if y == first else None)
                if "seed_ci" in c:
                    ax.hlines(y, *(scale * v for v in c["seed_ci"]), lw=5, color="tab:blue", alpha=0.6,
                              label="95% CI over seeds" if y == first else None)
                if "example_ci" in c:
                    ax.hlines(y + 0.3, *(scale * v for v in c["example_ci"]), lw=2, color="tab:orange",
                              label="95% CI over test examples" if y == first else None)
                ax.plot(scale * c["diff"], y, "D", color="black", ms=5, label="mean difference" if y == first else None)
            ax.axvline(0, color="black", lw=0.8)
            ax.set_title(f"{title}: minus {baseline} (x{scale:g})", fontsize=9)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_ylim(len(rows) - 0.4, -0.6)
        ax.tick_params(axis="x", labelsize=8)
        ax.grid(axis="x", alpha=0.3)
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    legend_cols = len(labels) if ncols >= 2 else 2  # one narrow panel: the legend in two columns, not cut off
    legend_rows = -(-len(labels) // legend_cols) if handles else 0
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=legend_cols, fontsize=8, frameon=False)
    title = f"{m['sweep']}: {name}, paired with {baseline}"
    if skipped:
        title += f"\n(no method run yet, not drawn: {', '.join(skipped)})"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, (0.06 if ncols >= 2 else 0.08) * legend_rows, 1, 0.97))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"--plot {path}: cannot write ({e.strerror or e})") from None


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
            "n_expected": cell["n_expected"],
            **{k: s.get(k, "") if s.get(k) is None or math.isfinite(s[k]) else "" for k in
               ("mean", "std", "median", "q25", "q75")},
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
    """Unscaled values (fractions for UIMER/SMaT/REGEX); `scale` says what the Markdown multiplied by. Written
    atomically."""
    out = io.StringIO(newline="")
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS)
    writer.writeheader()
    writer.writerows(csv_rows(table))
    tb.write_text_atomic(path, out.getvalue())


# ------------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------------
def _dotted(text: str) -> str:
    if any(not k.strip() for k in text.split(".")):
        raise ValueError(text)
    return text


TARGET = tb.Domain("a sweep name, a sweep folder (of runs or of records) or its jobs.json", tb.TEXT.convert)
RESAMPLES = tb.Int(1, 1_000_000)


def build_parser() -> argparse.ArgumentParser:
    p = tb.OneLineParser(prog="table.py", description=tb.first_paragraph(__doc__))
    tb.add(p, "sweep", domain=TARGET, help="the sweep")
    tb.add(p, "--root", default="runs/sweeps", domain=tb.PATH, help="where the sweeps' run directories are "
           "(bench/sweep.py --root; default: runs/sweeps)")
    tb.add(p, "--results", default=str(tb.REPO / "results"), domain=tb.PATH, help="where the records are "
           "(bench/sweep.py --results; default: results/ at the repository root)")
    p.add_argument("--source", choices=["auto", "records", "runs"], default="auto", help="auto (default): a job's "
                   "record, else its run directory; records or runs: only those [auto, records or runs]")
    tb.add(p, "--csv", metavar="PATH", domain=tb.OUT_FILE, help="also write the table as CSV (unscaled values)")
    tb.add(p, "--plot", metavar="PATH", domain=tb.OUT_PNG, help="also draw the paired differences (and, for a "
           "median sweep, the medians) as a PNG")
    tb.add(p, "--key", metavar="KEY", domain=tb.Domain("a dotted path of keys", _dotted), help="tabulate another "
           "number of results.json (e.g. faithfulness.ig.gain_over_random.norm_comp); paired over seeds only")
    tb.add(p, "--baseline", metavar="ROW", domain=tb.TEXT, help="compare every row with this row instead of the "
           "sweep's baseline (e.g. \"IM +Uniform (warm.)\" to isolate one deviation)")
    tb.add(p, "--seed-resamples", default=10_000, domain=RESAMPLES, help="bootstrap resamples over seeds "
           "(default: 10000)")
    tb.add(p, "--example-resamples", default=2_000, domain=RESAMPLES, help="bootstrap resamples over test "
           "examples (default: 2000)")
    tb.add(p, "--bootstrap-seed", default=0, domain=tb.Int(0, 2**32 - 1), help="seed of the bootstrap draws "
           "(default: 0)")
    return p


def main(argv=None) -> int:
    opts = build_parser().parse_args(argv)
    manifest, sweep_dir, records_dir = locate(opts.sweep, Path(opts.root), Path(opts.results), opts.source)
    table = build(manifest, sweep_dir, opts, records_dir)
    text = markdown(table, opts)  # everything is computed before anything is written
    if opts.plot:
        plot(table, Path(opts.plot))
    if opts.csv:
        write_csv(table, Path(opts.csv))
    sys.stdout.write(text)
    for note in table["notes"]:
        print(note, file=sys.stderr)
    return 0


def cli(argv=None) -> int:
    return tb.run_cli(main, "table.py", argv)


if __name__ == "__main__":
    sys.exit(cli())
