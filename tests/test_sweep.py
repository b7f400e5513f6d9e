"""bench/sweep.py (launcher) and bench/table.py (table, paired bootstraps): the statistics against naive
implementations, the named sweeps, resume after SIGTERM, failures, SLURM parameters, and end to end runs
(fake jobs, a tiny model, submitit's local executor, and a real one-node SLURM when one is installed)."""
from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import sweep  # noqa: E402
import sweeps  # noqa: E402
import table  # noqa: E402

SWEEP_PY, TABLE_PY = str(ROOT / "bench" / "sweep.py"), str(ROOT / "bench" / "table.py")

FAKE_JOB = r'''
import argparse, json, os, random, sys, time
p = argparse.ArgumentParser()
p.add_argument("--seed", type=int, required=True)
p.add_argument("--out-dir", required=True)
p.add_argument("--sleep", type=float, default=0.0)
p.add_argument("--fail", action="store_true")
p.add_argument("--marker-dir")
p.add_argument("--require")
a = p.parse_args()
if a.marker_dir:
    open(os.path.join(a.marker_dir, f"s{a.seed}-{os.getpid()}"), "w").close()
print("fake job", a.seed)
time.sleep(a.sleep)
if a.require and not any(n == "results.json" for _, _, fs in os.walk(a.require) for n in fs):
    sys.exit(4)
if a.fail:
    print("failing on purpose", file=sys.stderr)
    sys.exit(3)
run = os.path.join(a.out_dir, "fake", f"run-{a.seed}")
os.makedirs(run, exist_ok=True)
json.dump({"test": random.Random(a.seed).random()}, open(os.path.join(run, "results.json"), "w"))
'''


@pytest.fixture()
def fake_job(tmp_path) -> str:
    path = tmp_path / "fake_job.py"
    path.write_text(FAKE_JOB)
    return f"python {shlex.quote(str(path))}"


def opts(**kw):
    return SimpleNamespace(**{"seed_resamples": 10_000, "example_resamples": 2_000, "bootstrap_seed": 0, **kw})


# ---------------------------------------------------------------------------------------------- metrics
TAGS = ["O", "B-a", "I-a", "B-b", "I-b"]


def random_tags(rng, n_sentences=60):
    out = []
    for _ in range(n_sentences):
        length = int(rng.integers(1, 9))
        out.append([TAGS[int(rng.integers(0, len(TAGS)))] for _ in range(length)])
    return out


@pytest.mark.parametrize("seed", range(5))
def test_span_f1_from_counts_equals_seqeval(seed):
    from seqeval.metrics import f1_score
    rng = np.random.default_rng(seed)
    gold = random_tags(rng)
    pred = [[t if rng.random() < 0.7 else TAGS[int(rng.integers(0, len(TAGS)))] for t in g] for g in gold]
    stats = table.example_stats([{"gold": g, "pred": p} for g, p in zip(gold, pred, strict=True)], "span_f1")
    assert table.metric("span_f1", stats) == pytest.approx(f1_score(gold, pred), abs=1e-12)
    # any subset (with repeats) too: the counts are additive over sentences
    idx = rng.integers(0, len(gold), size=len(gold))
    sub = table.resampled_metric("span_f1", stats, idx[None, :])[0]
    assert sub == pytest.approx(f1_score([gold[i] for i in idx], [pred[i] for i in idx]), abs=1e-12)


def test_span_f1_edge_cases_match_seqeval():
    from seqeval.metrics import f1_score
    cases = [([["I-a", "I-a"]], [["B-a", "I-a"]]),  # conlleval mode: I- starts a chunk, so this is a hit
             ([["B-a", "O"]], [["O", "O"]]), ([["O"]], [["B-a"]]), ([["B-a", "B-a"]], [["B-a", "I-a"]])]
    for gold, pred in cases:
        stats = table.example_stats([{"gold": g, "pred": p} for g, p in zip(gold, pred, strict=True)], "span_f1")
        assert table.metric("span_f1", stats) == pytest.approx(f1_score(gold, pred)), (gold, pred)


def test_pearson_and_accuracy_from_sums():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=50), rng.normal(size=50)
    rows = [{"pred": float(a), "gold": float(b)} for a, b in zip(x, y, strict=True)]
    assert table.metric("pearson", table.example_stats(rows, "pearson")) == pytest.approx(np.corrcoef(x, y)[0, 1])
    rows = [{"pred": int(a > 0), "gold": 1} for a in x]
    assert table.metric("accuracy", table.example_stats(rows, "accuracy")) == pytest.approx(np.mean(x > 0))


# ---------------------------------------------------------------------------------------------- bootstraps
def test_seed_bootstrap_matches_naive_loop():
    diffs = np.array([0.03, -0.01, 0.05, 0.02, 0.00])
    got = table.seed_bootstrap(diffs, 300, np.random.default_rng(7))
    idx = np.random.default_rng(7).integers(0, len(diffs), size=(300, len(diffs)))
    naive = []
    for b in range(300):
        total = 0.0
        for j in idx[b]:
            total += diffs[j]
        naive.append(total / len(diffs))
    assert np.allclose(got, naive)
    lo, hi = table.interval(got)
    assert lo == pytest.approx(np.percentile(naive, 2.5)) and hi == pytest.approx(np.percentile(naive, 97.5))


def naive_metric(kind, preds):
    from seqeval.metrics import f1_score
    if kind == "accuracy":
        return sum(p["pred"] == p["gold"] for p in preds) / len(preds)
    if kind == "span_f1":
        return f1_score([p["gold"] for p in preds], [p["pred"] for p in preds])
    return np.corrcoef([p["pred"] for p in preds], [p["gold"] for p in preds])[0, 1]


def synthetic_preds(kind, rng, n):
    if kind == "accuracy":
        gold = rng.integers(0, 3, size=n)
        return [[{"gold": int(g), "pred": int(g if rng.random() < q else (g + 1) % 3)} for g in gold]
                for q in (0.7, 0.6)]
    if kind == "span_f1":
        gold = random_tags(rng, n)
        return [[{"gold": g, "pred": [t if rng.random() < q else "O" for t in g]} for g in gold] for q in (0.8, 0.6)]
    gold = rng.normal(size=n)
    return [[{"gold": float(g), "pred": float(g + s * rng.normal())} for g in gold] for s in (0.5, 1.0)]


@pytest.mark.parametrize("kind", ["accuracy", "span_f1", "pearson"])
@pytest.mark.parametrize("shared", [True, False])
def test_paired_example_bootstrap_matches_naive_loop(kind, shared):
    rng = np.random.default_rng(1)
    n, B = 25, 40
    seeds = [synthetic_preds(kind, rng, n) for _ in range(3)]  # per seed: (method, baseline) predictions
    pairs = [(table.example_stats(m, kind), table.example_stats(b, kind)) for m, b in seeds]
    got = table.example_bootstrap(pairs, kind, B, np.random.default_rng(3), shared)
    draw = np.random.default_rng(3)
    if shared:
        idx = np.concatenate(list(table.index_chunks(draw, n, B)))
        per_seed_idx = [idx] * len(seeds)
    else:
        per_seed_idx = [np.concatenate(list(table.index_chunks(draw, n, B))) for _ in seeds]
    naive = []
    for b in range(B):
        diffs = []
        for (m, base), idx in zip(seeds, per_seed_idx, strict=True):
            diffs.append(naive_metric(kind, [m[i] for i in idx[b]]) - naive_metric(kind, [base[i] for i in idx[b]]))
        naive.append(sum(diffs) / len(diffs))
    assert np.allclose(got, naive, atol=1e-12)


def test_index_chunks_cover_the_resamples_in_fixed_blocks(monkeypatch):
    monkeypatch.setattr(table, "CHUNK_ELEMENTS", 100)
    chunks = list(table.index_chunks(np.random.default_rng(0), 30, 10))
    assert [c.shape for c in chunks] == [(3, 30), (3, 30), (3, 30), (1, 30)]


# ---------------------------------------------------------------------------------------------- table
def write_run(job_dir: Path, value: float, preds: list[dict] | None = None):
    run = job_dir / "script" / "run"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"test": value, "other": {"twice": 2 * value}}))
    if preds is not None:
        (run / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))


def class_preds(rng, n, p_correct):
    out = []
    for i in range(n):
        gold = ["a", "b", "c"][i % 3]
        pred = gold if rng.random() < p_correct else ["a", "b", "c"][(i + 1) % 3]
        out.append({"id": f"ex{i}", "gold": gold, "pred": pred, "p_gold": 0.5})
    return out


def synthetic_sweep(root: Path, rows: dict, seeds=(1, 2, 3, 4, 5), n=300, skip=()):
    """rows: label -> probability of a correct prediction; writes jobs.json and the runs; `skip`: (row, seed)."""
    labels = list(rows)
    sw = sweep.adhoc_sweep([f"python x.py --p {rows[r]}" for r in labels], labels, list(seeds), ["test"], "mean", None)
    sweep_dir = root / "synthetic"
    sweep_dir.mkdir(parents=True)
    jobs = sweep.expand(sw, sweep_dir)
    sweep.write_json(sweep_dir / "jobs.json", sweep.make_manifest("synthetic", sw, jobs, sweep_dir, None, None))
    for job in jobs:
        if (job["row"], job["seed"]) in skip:
            continue
        rng = np.random.default_rng([job["seed"], labels.index(job["row"])])
        preds = class_preds(rng, n, rows[job["row"]])
        write_run(sweep_dir / job["id"], float(np.mean([p["pred"] == p["gold"] for p in preds])), preds)
    return sweep_dir


def test_table_marks_a_clear_effect_and_not_noise(tmp_path, capsys):
    sweep_dir = synthetic_sweep(tmp_path, {"base": 0.6, "clear": 0.85, "noise": 0.6})
    assert table.cli([str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    paired = out.split("Paired with base:")[1]
    line = {r.split("|")[1].strip(): r for r in paired.splitlines() if r.startswith("| ")}
    assert "*" in line["clear"] and "†" in line["clear"]
    assert "*" not in line["noise"] and "†" not in line["noise"]
    built = table.build(json.loads((sweep_dir / "jobs.json").read_text()), sweep_dir, opts())
    clear = next(c for c in built["comparisons"] if c["row"] == "clear")
    assert 0.15 < clear["diff"] < 0.35 and clear["diff"] == pytest.approx(clear["example_diff"])
    assert clear["seed_ci"][0] > 0 and clear["example_ci"][0] > 0


def test_table_against_another_row(tmp_path, capsys):
    sweep_dir = synthetic_sweep(tmp_path, {"base": 0.6, "clear": 0.85, "noise": 0.6})
    assert table.cli([str(sweep_dir), "--baseline", "clear"]) == 0
    paired = capsys.readouterr().out.split("Paired with clear:")[1]
    line = {r.split("|")[1].strip(): r for r in paired.splitlines() if r.startswith("| ")}
    assert set(line) - {"method", "---"} == {"base", "noise"} and "*" in line["base"] and "| -" in line["base"]
    assert table.cli([str(sweep_dir), "--baseline", "nobody"]) == 2
    err = capsys.readouterr().err
    assert "--baseline 'nobody': no such row" in err and len(err.strip().splitlines()) == 1


def test_table_of_another_number(tmp_path, capsys):
    sweep_dir = synthetic_sweep(tmp_path, {"base": 0.6, "clear": 0.85})
    main = table.build(json.loads((sweep_dir / "jobs.json").read_text()), sweep_dir, opts())
    other = table.build(json.loads((sweep_dir / "jobs.json").read_text()), sweep_dir, opts(key="other.twice"))
    assert other["comparisons"][0]["diff"] == pytest.approx(2 * main["comparisons"][0]["diff"])
    assert "example_ci" not in other["comparisons"][0]  # predictions hold the main metric only
    assert table.cli([str(sweep_dir), "--key", "other.twice"]) == 0
    assert "| clear | other.twice | 5 |" in capsys.readouterr().out
    assert table.cli([str(sweep_dir), "--key", "other.thrice"]) == 2  # no run has it: a mistyped key
    assert "has a number at other.thrice" in capsys.readouterr().err
    for path in sweep_dir.glob("clear-s*/script/run/results.json"):  # a row evaluated without that number
        path.write_text(json.dumps({"test": 0.85}))
    assert table.cli([str(sweep_dir), "--key", "other.twice"]) == 0
    assert "| clear | not run |" in capsys.readouterr().out
    assert table.cli([str(sweep_dir)]) == 0  # the sweep's own metric is still there


def test_table_is_deterministic_and_writes_csv(tmp_path, capsys):
    sweep_dir = synthetic_sweep(tmp_path, {"base": 0.6, "other": 0.65})
    outs = []
    for k in range(2):
        assert table.cli([str(sweep_dir), "--csv", str(tmp_path / f"t{k}.csv"), "--bootstrap-seed", "3"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and (tmp_path / "t0.csv").read_text() == (tmp_path / "t1.csv").read_text()
    import csv
    rows = list(csv.DictReader(open(tmp_path / "t0.csv")))
    assert [r["row"] for r in rows] == ["base", "other"] and rows[1]["n_paired"] == "5"
    assert table.cli([str(sweep_dir), "--bootstrap-seed", "4"]) == 0
    assert capsys.readouterr().out != outs[0]


def test_table_partial_sweep_counts_excluded_seeds(tmp_path, capsys):
    sweep_dir = synthetic_sweep(tmp_path, {"base": 0.6, "half": 0.7, "missing": 0.7},
                                skip={("half", 4), ("half", 5), ("base", 1)} | {("missing", s) for s in range(1, 6)})
    assert table.cli([str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    assert "(4/5 seeds)" in out and "(3/5 seeds)" in out and "not run" in out
    built = table.build(json.loads((sweep_dir / "jobs.json").read_text()), sweep_dir, opts())
    half = next(c for c in built["comparisons"] if c["row"] == "half")
    assert half["n_paired"] == 2 and half["n_excluded"] == 3  # seeds 2, 3 paired; 1, 4, 5 one-sided


def test_table_rejects_predictions_on_different_examples(tmp_path, capsys):
    sweep_dir = synthetic_sweep(tmp_path, {"base": 0.6, "other": 0.7}, seeds=(1, 2))
    path = next((sweep_dir / "other-s1").rglob("predictions.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[::-1]))
    assert table.cli([str(sweep_dir)]) == 2
    err = capsys.readouterr().err
    assert "same example ids in the same order" in err and len(err.strip().splitlines()) == 1


def test_table_without_predictions_and_bad_input(tmp_path, capsys):
    sweep_dir = synthetic_sweep(tmp_path, {"base": 0.6, "other": 0.7}, seeds=(1, 2))
    for p in sweep_dir.rglob("predictions.jsonl"):
        p.unlink()
    assert table.cli([str(sweep_dir)]) == 0
    assert "no predictions" in capsys.readouterr().out
    assert table.cli([str(tmp_path / "nowhere")]) == 2
    assert table.cli(["no-such-sweep", "--root", str(tmp_path)]) == 2
    with pytest.raises(SystemExit) as e:
        table.cli([str(sweep_dir), "--example-resamples", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()  # three errors, one line each
    assert len(err) == 3 and all(line.startswith("table.py: error: ") for line in err)


def test_table_median_summary_for_smat_style_sweeps(tmp_path, capsys):
    sw = sweep.adhoc_sweep(["python a.py", "python b.py"], ["none", "smat"], [0, 9, 11, 30, 69], ["test"], "median",
                           None)
    sweep_dir = tmp_path / "s"
    sweep_dir.mkdir()
    jobs = sweep.expand(sw, sweep_dir)
    sweep.write_json(sweep_dir / "jobs.json", sweep.make_manifest("s", sw, jobs, sweep_dir, None, None))
    values = {"none": [0.6, 0.7, 0.65, 0.9, 0.5], "smat": [0.8, 0.75, 0.7, 0.95, 0.6]}
    for job in jobs:
        write_run(sweep_dir / job["id"], values[job["row"]][[0, 9, 11, 30, 69].index(job["seed"])])
    assert table.cli([str(sweep_dir)]) == 0
    out = capsys.readouterr().out
    q = np.percentile(values["none"], [25, 75]) * 100
    assert f"{100 * np.median(values['none']):.2f} [{q[0]:.2f}:{q[1]:.2f}]" in out and "median [q25:q75]" in out


# ---------------------------------------------------------------------------------------------- named sweeps
def test_named_sweeps_expand_to_the_documented_jobs(tmp_path):
    d = tmp_path / "root"
    t2 = sweep.expand(sweeps.SWEEPS["uimer-table2"], d / "uimer-table2")
    assert len(t2) == 6 * 8 * 4  # six rows, IC and SF at 1, 3, 10, 30 shots, the paper's 4 seeds
    assert {j["seed"] for j in t2} == {55, 1988, 12333, 42}
    sized = [j for j in t2 if j["row"] == "DM multi-round" and j["column"] in ("IC 3-shot", "IC 10-shot",
                                                                              "IC 30-shot", "SF 30-shot")]
    assert len(sized) == 16 and all(j["command"].endswith("--rounds 10") for j in sized)
    assert not any("--rounds" in j["command"] for j in t2 if j not in sized)
    ic10 = next(j for j in t2 if j["row"] == "BaseModel" and j["column"] == "IC 10-shot")
    assert ic10["command"] == "python uimer_im.py --task ic --shots 10 --strategy uniform --warmup paper --alpha 0"
    full = sweep.expand(sweeps.SWEEPS["uimer-full"], d / "uimer-full")
    assert len(full) == 6 * 2 * 4 and {j["column"] for j in full} == {"IC full", "SF full"}
    paired = sweep.expand(sweeps.SWEEPS["uimer-ic1-paired"], d / "uimer-ic1-paired")
    assert len(paired) == 6 * 10 and len({j["seed"] for j in paired}) == 10
    base = next(j for j in paired if j["row"] == "BaseModel")
    im = next(j for j in paired if j["row"] == "IM +Uniform (warm.)")
    assert base["command"] == ("python uimer_im.py --task ic --shots 1 --strategy uniform --warmup paper "
                               "--alpha 0")
    assert im["command"] == base["command"][:-len(" --alpha 0")]
    smat = sweep.expand(sweeps.SWEEPS["smat-table1"], d / "smat-table1")
    assert [j["stage"] for j in smat] == ["teacher"] + ["students"] * 15
    teacher = smat[0]
    assert teacher["seed"] == 0 and "--setup teacher" in teacher["command"]
    for j in smat[1:]:
        assert f"--teacher-dir {d / 'smat-table1' / teacher['id']}/smat_jax_free/imdb-teacher" in j["command"]
        assert "--lr 0.05 --max-epochs 2" in j["command"]
    regex = sweep.expand(sweeps.SWEEPS["regex-table"], d / "regex-table")
    assert sorted(j["command"].endswith("--no-igr --no-vat --no-egt") for j in regex) == [False] * 3 + [True] * 3
    for jobs in (t2, paired, smat, regex):
        ids = [j["id"] for j in jobs]
        assert len(set(ids)) == len(ids) and all(sweep.slug(i) == i for i in ids)


def test_named_sweeps_are_complete_definitions():
    for name, sw in sweeps.SWEEPS.items():
        table_rows = [r["name"] for r in sw["rows"] if r.get("table", True)]
        assert sw["baseline"] in table_rows, name
        assert sw["summary"] in ("mean", "median") and sw["metric_key"], name
        for col in sw["columns"].values():
            assert col["metric"] in ("accuracy", "span_f1", "pearson"), name
    assert sweeps.SWEEPS["smat-table1"]["summary"] == "median"
    assert sweeps.SWEEPS["regex-table"]["metric_key"] == ["test", "accuracy"]


def test_print_commands_one_per_job_or_per_row(capsys):
    assert sweep.cli(["--print-commands", "uimer-ic1-paired"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 60 and lines[0].startswith("python uimer_im.py --task ic --shots 1")
    assert lines[0].endswith("--seed 55 --out-dir runs/sweeps/uimer-ic1-paired/basemodel-ic-1-shot-s55")
    assert sweep.cli(["--print-commands", "smat-table1", "--by-row"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "# stage: teacher" and lines[2] == "# stage: students" and len(lines) == 6
    assert lines[3].startswith("for S in 0 9 11 30 69; do python smat_jax_free.py --setup student --explainer none")
    assert lines[3].endswith("--seed $S --out-dir runs/sweeps/smat-table1/no-explainer-imdb-n-500-s$S; done")


def test_dir_reference_must_name_an_earlier_single_seed_row(tmp_path):
    sw = {"stages": ["a", "b"], "seeds": (1, 2), "columns": {"": {"args": ""}},
          "rows": [{"name": "A", "stage": "a", "command": "python a.py"},
                   {"name": "B", "stage": "b", "command": "python b.py --x {dir:A}"}]}
    with pytest.raises(sweep.UsageError, match="one seed in an earlier stage"):
        sweep.expand(sw, tmp_path)
    sw["rows"][0]["seeds"] = (7,)
    jobs = sweep.expand(sw, tmp_path)
    assert jobs[-1]["command"] == f"python b.py --x {tmp_path / 'a-s7'}"


# ---------------------------------------------------------------------------------------------- CLI errors
@pytest.mark.parametrize("argv, message", [
    (["no-such-sweep"], "must be a named sweep"),
    (["uimer-table2", "--workers", "0"], "must be an integer in [1, 1024]"),
    (["uimer-table2", "--data-dir", "/no/such/dir"], "must be an existing folder"),
    (["--command", "python x.py", "--seeds", "1"], "needs --name and --seeds"),
    (["--command", "python x.py", "--name", "a", "--seeds", "1,x"], "comma-separated"),
    (["uimer-table2", "--launcher", "slurm", "--time", "0", "--dry-run"], "minutes"),
    (["uimer-table2", "--launcher", "slurm", "--mem", "lots", "--dry-run"], "16G"),
])
def test_sweep_usage_errors_are_one_line_exit_2(argv, message, capsys):
    try:
        code = sweep.cli(argv)
    except SystemExit as e:  # argparse
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_slurm_dry_run_prints_the_sbatch_parameters_of_each_array(capsys, tmp_path):
    argv = ["smat-table1", "--launcher", "slurm", "--dry-run", "--root", str(tmp_path), "--partition", "gpu",
            "--time", "1:30:00", "--gpus-per-job", "1", "--cpus-per-job", "4", "--mem", "16G",
            "--array-parallelism", "3", "--sbatch", "account=proj", "--results", str(tmp_path / "results")]
    assert sweep.cli(argv) == 0  # (records of smat-table1 in the repository's results/ would count as done)
    out = capsys.readouterr().out
    teacher, students = out.split("# stage 'students'")
    for part in (teacher, students):
        for flag in ("--partition=gpu", "--time=90", "--gpus-per-node=1", "--cpus-per-task=4", "--mem=16GB",
                     "--account=proj"):
            assert f"#SBATCH {flag}\n" in part
    assert "#SBATCH --array=0-0%1\n" in teacher and "--dependency" not in teacher
    assert "#SBATCH --array=0-14%3\n" in students and "#SBATCH --dependency='afterok:<array" in students
    assert "--threads-per-job 4 --run-job" in out and not (tmp_path / "smat-table1").exists()


@pytest.mark.parametrize("text,minutes", [("90", 90), ("90:30", 91), ("1:30:00", 90), ("0-1", 60), ("1-12", 2160),
                                          ("1-12:30", 2190), ("1-0:0:30", 1441)])
def test_time_limits_read_as_sbatch_reads_them(text, minutes):
    assert sweep.parse_minutes(text) == minutes  # without a day count M:S; after one, hours first (sbatch --time)


def test_sbatch_lines_agree_with_submitit():
    from submitit.slurm import slurm as submitit_slurm
    args = sweep.build_parser().parse_args(["uimer-table2", "--partition", "p", "--time", "45", "--gpus-per-job", "2",
                                            "--cpus-per-job", "3", "--mem", "1500M", "--array-parallelism", "2"])
    params = sweep.submitit_parameters(args, "sw-main", "123")
    ours = sweep.sbatch_lines(params, 5)
    theirs = submitit_slurm._make_sbatch_string(
        command="x", folder="/tmp/f", job_name="sw-main", partition="p", time=45, nodes=1, ntasks_per_node=1,
        cpus_per_task=3, gpus_per_node=2, mem=submitit_slurm._convert_mem(params["mem_gb"]), array_parallelism=2,
        dependency="afterok:123", map_count=5, additional_parameters=params["slurm_additional_parameters"])
    assert ours and all(line in theirs.splitlines() for line in ours), (ours, theirs)


def test_local_thread_budget(capsys, tmp_path, fake_job):
    base = ["--name", "t", "--seeds", "1", "--command", fake_job, "--root", str(tmp_path), "--dry-run", "--results",
            str(tmp_path / "results")]
    assert sweep.cli(base + ["--workers", str(sweep.cores() + 1)]) == 2  # workers x 1 thread > cores
    assert "cores" in capsys.readouterr().err
    env = sweep.job_env(3)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "3"


# ---------------------------------------------------------------------------------------------- local launcher
def run_sweep(argv, **kw):
    """sweep.py in a subprocess; its records go beside the sweep (`--results <root>/results`), never into the
    repository's results/."""
    root = Path(argv[argv.index("--root") + 1])
    return subprocess.run([sys.executable, SWEEP_PY, *argv, "--results", str(root / "results")], capture_output=True,
                          text=True, timeout=120, **kw)


@pytest.mark.slow
def test_failed_job_is_reported_with_its_log_and_others_run(tmp_path, fake_job):
    argv = ["--name", "f", "--seeds", "1,2", "--root", str(tmp_path), "--workers", "2", "--threads-per-job", "1",
            "--command", fake_job, "--command", fake_job + " --fail", "--label", "ok", "--label", "bad"]
    r = run_sweep(argv)
    assert r.returncode == 1, r.stdout + r.stderr
    for seed in (1, 2):
        log = tmp_path / "f" / f"bad-s{seed}" / "job.log"
        assert f"FAILED bad-s{seed} (exit 3); log: {log}" in r.stdout
        text = log.read_text()
        assert "# command:" in text and "--fail --seed" in text and "failing on purpose" in text
        assert sweep.find_results(tmp_path / "f" / f"ok-s{seed}")
    manifest = json.loads((tmp_path / "f" / "jobs.json").read_text())
    assert manifest["jobs"]["bad-s1"] == {**manifest["jobs"]["bad-s1"], "row": "bad", "column": "", "seed": 1,
                                          "stage": "main"}
    r = run_sweep(argv)  # the two good jobs are skipped, the bad ones rerun (and fail again)
    assert r.returncode == 1 and "2 of 4 jobs already complete" in r.stdout


@pytest.mark.slow
def test_stages_run_in_order_and_a_failed_stage_blocks_the_next(tmp_path, fake_job):
    sw = {"title": "", "seeds": (1, 2), "metric_key": ["test"], "scale": 1, "summary": "mean", "baseline": "A",
          "stages": ["first", "second"], "columns": {"": {"args": "", "metric": "auto"}},
          "rows": [{"name": "T", "stage": "first", "seeds": (0,), "table": False, "command": fake_job + " --sleep 1"},
                   {"name": "A", "stage": "second", "command": fake_job + " --require {dir:T}"},
                   {"name": "B", "stage": "second", "command": fake_job + " --require {dir:T}"}]}
    sweep_dir = tmp_path / "st"
    sweep_dir.mkdir()
    manifest = sweep.make_manifest("st", sw, sweep.expand(sw, sweep_dir), sweep_dir, None, None)
    out = open(tmp_path / "out.txt", "w")
    assert sweep.run_local(manifest, sweep_dir, workers=2, threads=1, stream=out) == 0  # --require would exit 4
    assert all(sweep.find_results(sweep_dir / j) for j in manifest["jobs"])
    shutil.rmtree(sweep_dir)
    sweep_dir.mkdir()
    sw["rows"][0]["command"] += " --fail"
    manifest = sweep.make_manifest("st", sw, sweep.expand(sw, sweep_dir), sweep_dir, None, None)
    assert sweep.run_local(manifest, sweep_dir, workers=2, threads=1, stream=out) == 1
    out.close()
    text = (tmp_path / "out.txt").read_text()
    assert "not started because an earlier stage failed: a-s1, a-s2, b-s1, b-s2" in text
    assert not (sweep_dir / "a-s1").exists()


@pytest.mark.slow
def test_resume_after_sigterm_runs_only_the_missing_jobs(tmp_path, fake_job):
    markers = tmp_path / "markers"
    markers.mkdir()
    seeds = [1, 2, 3, 4, 5, 6]
    argv = ["--name", "r", "--seeds", ",".join(map(str, seeds)), "--root", str(tmp_path), "--workers", "2",
            "--threads-per-job", "1", "--command", f"{fake_job} --sleep 1.5 --marker-dir {markers}", "--label", "job"]
    proc = subprocess.Popen([sys.executable, SWEEP_PY, *argv, "--results", str(tmp_path / "results")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sweep_dir = tmp_path / "r"
    deadline = time.time() + 60
    while time.time() < deadline and sum(bool(sweep.find_results(sweep_dir / f"job-s{s}")) for s in seeds) < 2:
        time.sleep(0.05)
    time.sleep(0.3)  # let the next two jobs start
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, out
    assert "SIGTERM: stopping" in out
    first = {int(m.name.split("-")[0][1:]): int(m.name.split("-")[1]) for m in markers.iterdir()}
    for pid in first.values():  # every child has been stopped and reaped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    done_first = {s for s in seeds if sweep.find_results(sweep_dir / f"job-s{s}")}
    assert 2 <= len(done_first) < len(seeds)
    interrupted = [s for s in seeds if (sweep_dir / f"job-s{s}").exists() and s not in done_first]
    assert interrupted  # two jobs were running when SIGTERM came
    for s in interrupted:
        assert "stopped by sweep.py (SIGTERM)" in (sweep_dir / f"job-s{s}" / "job.log").read_text()
    for m in markers.iterdir():
        m.unlink()
    r = run_sweep(argv)
    assert r.returncode == 0, r.stdout + r.stderr
    second = {int(m.name.split("-")[0][1:]) for m in markers.iterdir()}
    assert second == set(seeds) - done_first
    assert f"{len(done_first)} of 6 jobs already complete" in r.stdout
    assert all(sweep.find_results(sweep_dir / f"job-s{s}") for s in seeds)
    for s in interrupted:  # the incomplete directory was cleared before the rerun
        assert "stopped by sweep.py" not in (sweep_dir / f"job-s{s}" / "job.log").read_text()


# ---------------------------------------------------------------------------------------------- end to end
def tiny_command(tiny_model: str, *extra: str) -> str:
    return shlex.join(["python", "uimer_im.py", "--task", "ic", "--shots", "1", "--strategy", "mask", "--max-epochs",
                       "1", "--eval-batch-size", "64", "--model", tiny_model, *extra])


@pytest.mark.slow
def test_local_launcher_end_to_end_on_a_tiny_model_then_table(tmp_path, tiny_model, tiny_data):
    argv = ["--name", "tiny", "--seeds", "1,2", "--root", str(tmp_path), "--workers", "2", "--threads-per-job", "1",
            "--data-dir", str(tiny_data), "--command", tiny_command(tiny_model, "--alpha", "0"),
            "--command", tiny_command(tiny_model), "--label", "BaseModel", "--label", "IM mask"]
    r = run_sweep(argv)
    assert r.returncode == 0, r.stdout + r.stderr
    sweep_dir = tmp_path / "tiny"
    for jid in ("basemodel-s1", "basemodel-s2", "im-mask-s1", "im-mask-s2"):
        results = sweep.find_results(sweep_dir / jid)
        assert results and results.parent.parent.name == "uimer_im"
    t = subprocess.run([sys.executable, TABLE_PY, str(sweep_dir), "--csv", str(tmp_path / "t.csv"), "--results",
                        str(tmp_path / "results")],
                       capture_output=True, text=True, timeout=60)
    assert t.returncode == 0, t.stderr
    assert "| BaseModel |" in t.stdout and "| IM mask | test | 2 |" in t.stdout
    assert sweep.find_results(sweep_dir / "im-mask-s1").with_name("predictions.jsonl").is_file()
    paired = t.stdout.split("Paired with BaseModel:")[1].splitlines()
    im_line = next(line for line in paired if line.startswith("| IM mask"))
    assert im_line.count("[") == 2 and "no predictions" not in im_line  # seed and test-example intervals
    assert "warning" not in t.stderr  # the metric recomputed from predictions.jsonl equals results.json
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 3
    records = tmp_path / "results" / "tiny"  # written by the sweep as each job finished: the same table from them
    assert sorted(p.name for p in records.iterdir())[-1] == "jobs.json" and len(list(records.iterdir())) == 5
    shutil.rmtree(sweep_dir)
    r = subprocess.run([sys.executable, TABLE_PY, "tiny", "--root", str(tmp_path), "--results",
                        str(tmp_path / "results"), "--csv", str(tmp_path / "r.csv")], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout == t.stdout and (tmp_path / "r.csv").read_text() == \
        (tmp_path / "t.csv").read_text(), r.stderr


@pytest.mark.slow
def test_slurm_path_through_submitits_local_executor(tmp_path, tiny_model, tiny_data):
    argv = ["--name", "viasubmitit", "--seeds", "3", "--root", str(tmp_path), "--launcher", "slurm",
            "--cluster", "local", "--cpus-per-job", "1", "--time", "5", "--data-dir", str(tiny_data), "--device", "cpu",
            "--command", tiny_command(tiny_model), "--label", "tiny"]
    r = run_sweep(argv)
    assert r.returncode == 0, r.stdout + r.stderr
    job_dir = tmp_path / "viasubmitit" / "tiny-s3"
    assert sweep.find_results(job_dir), r.stdout
    log = (job_dir / "job.log").read_text()
    assert "# threads: 1" in log and "--seed 3 --out-dir" in log and "--device cpu" in log and "# finished" in log
    assert list((tmp_path / "viasubmitit" / ".submitit").iterdir())  # submitit's own pickles and logs
    r = run_sweep(argv)
    assert r.returncode == 0 and "all 1 jobs complete" in r.stdout


def two_stage_sweep(fake_job: str) -> dict:
    return {"title": "", "seeds": (1, 2), "metric_key": ["test"], "scale": 1, "summary": "mean", "baseline": "A",
            "stages": ["first", "second"], "columns": {"": {"args": "", "metric": "auto"}},
            "rows": [{"name": "T", "stage": "first", "seeds": (0,), "table": False, "command": fake_job + " --sleep 2"},
                     {"name": "A", "stage": "second", "command": fake_job + " --require {dir:T}"}]}


def run_two_stages_via_submitit(tmp_path, fake_job, cluster, *extra):
    sweep_dir = tmp_path / "two"
    sweep_dir.mkdir()
    sw = two_stage_sweep(fake_job)
    manifest = sweep.make_manifest("two", sw, sweep.expand(sw, sweep_dir), sweep_dir, None, None)
    sweep.write_json(sweep_dir / "jobs.json", manifest)
    args = sweep.build_parser().parse_args(["uimer-table2", "--launcher", "slurm", "--cluster", cluster, "--wait",
                                            "--cpus-per-job", "1", "--time", "5", *extra])
    out = open(tmp_path / "out.txt", "w")
    code = sweep.run_slurm(manifest, sweep_dir, args, threads=1, stream=out)
    out.close()
    return code, sweep_dir, (tmp_path / "out.txt").read_text()


@pytest.mark.slow
def test_stages_through_submitits_local_executor(tmp_path, fake_job):
    code, sweep_dir, out = run_two_stages_via_submitit(tmp_path, fake_job, "local")
    assert code == 0, out
    assert all(sweep.find_results(sweep_dir / j) for j in ("t-s0", "a-s1", "a-s2"))


# ---------------------------------------------------------------------------------------------- real SLURM
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def slurm_cluster(tmp_path, monkeypatch):
    """A one-node SLURM (slurmctld + slurmd on 127.0.0.1, no munge, no accounting) in a temp dir."""
    binaries = ("sbatch", "slurmctld", "slurmd", "sinfo", "squeue", "srun", "scontrol")
    missing = [b for b in binaries if not shutil.which(b)]
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} not found; Debian: apt-get install slurm-wlm)")
    d = tmp_path / "slurm"
    for sub in ("state", "spool", "log"):
        (d / sub).mkdir(parents=True)
    host, user = socket.gethostname().split(".")[0], getpass.getuser()
    conf = d / "slurm.conf"
    conf.write_text("\n".join([
        "ClusterName=sweeptest", f"SlurmctldHost={host}(127.0.0.1)", "AuthType=auth/none", "CredType=cred/none",
        f"SlurmUser={user}", f"SlurmdUser={user}", f"SlurmctldPort={free_port()}", f"SlurmdPort={free_port()}",
        f"StateSaveLocation={d / 'state'}", f"SlurmdSpoolDir={d / 'spool'}", f"SlurmctldPidFile={d / 'ctld.pid'}",
        f"SlurmdPidFile={d / 'd.pid'}", f"SlurmctldLogFile={d / 'log' / 'ctld.log'}",
        f"SlurmdLogFile={d / 'log' / 'd.log'}", "ProctrackType=proctrack/pgid", "TaskPlugin=task/none",
        "SchedulerType=sched/builtin", "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
        "ReturnToService=2", "MpiDefault=none", "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none", "JobCompType=jobcomp/none",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={sweep.cores()} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
    monkeypatch.setenv("SLURM_CONF", str(conf))
    daemons = [subprocess.Popen(cmd, stdout=open(d / "log" / f"{cmd[0]}.out", "w"), stderr=subprocess.STDOUT)
               for cmd in (["slurmctld", "-D", "-i"], ["slurmd", "-D", "-N", host])]
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            r = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
            if r.stdout.strip() == "idle":
                break
            time.sleep(0.5)
        else:
            logs = " | ".join(p.read_text()[-300:] for p in (d / "log").iterdir())
            pytest.skip(f"a one-node SLURM did not come up in 30 s here: {logs}")
        yield "debug"
    finally:  # let the batch steps end first: a slurmstepd whose slurmd is gone waits for it forever
        deadline = time.time() + 30

        def queued():
            return subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip()
        while time.time() < deadline and queued():
            time.sleep(0.5)
        subprocess.run(["scontrol", "shutdown"], capture_output=True)
        for p in daemons:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.mark.slow
def test_stages_on_a_real_one_node_slurm(tmp_path, fake_job, slurm_cluster):
    code, sweep_dir, out = run_two_stages_via_submitit(tmp_path, fake_job, "slurm", "--partition", slurm_cluster)
    assert code == 0, out
    assert all(sweep.find_results(sweep_dir / j) for j in ("t-s0", "a-s1", "a-s2"))  # afterok held stage 2
    assert "stage 'second': array" in out
