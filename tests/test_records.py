"""Sweep records (results/<sweep>/, bench/records.py): the compressed predictions decode to exactly what the run wrote,
a record of the real SNIPS SF and e-SNLI test sets stays under 20 KB, records hold no absolute path, bench/table.py
gives the same table (Markdown, CSV, every interval) from the records as from the run directories, bench/sweep.py
records finished jobs, skips recorded ones (runs/ gone: a clone), reruns the job a job to run needs, refuses a
record made by another command; `--plot` draws a PNG; the full-data sweep's dry runs."""
from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
import records  # noqa: E402
import sweep  # noqa: E402
import sweeps  # noqa: E402
import table  # noqa: E402
from test_sweep import FAKE_JOB, random_tags, run_sweep  # noqa: E402

RECORD_BUDGET = 20_000  # bytes, the most a record may take (results/README.md)


# ---------------------------------------------------------------------------------------------- encoding
def rows_of(kind: str, rng: random.Random, n: int) -> list[dict]:
    if kind == "accuracy":
        labels = ["AddToPlaylist", "BookRestaurant", "GetWeather"]
        return [{"id": f"test-{i}", "gold": rng.choice(labels), "pred": rng.choice(labels), "p_gold": rng.random()}
                for i in range(n)]
    if kind == "span_f1":
        tags = random_tags(np.random.default_rng(rng.randrange(100)), n)
        return [{"id": f"test-{i}", "gold": g, "pred": [t if rng.random() < 0.8 else "O" for t in g],
                 "p_gold": rng.random()} for i, g in enumerate(tags)]
    return [{"id": f"doc{rng.randrange(10**6)}.txt", "gold": rng.gauss(0, 1), "pred": rng.gauss(0, 1)}
            for _ in range(n)]


@pytest.mark.parametrize("kind", ["accuracy", "span_f1", "pearson"])
def test_predictions_decode_to_exactly_what_the_run_wrote(kind):
    rows = rows_of(kind, random.Random(0), 300)
    enc = records.encode_predictions(rows)
    assert enc["kind"] == kind and enc["n"] == 300
    back = records.decode_predictions(json.loads(json.dumps(enc)), Path("r.json"))
    assert back == [{"id": r["id"], "gold": r["gold"], "pred": r["pred"]} for r in rows]
    assert records.encode_predictions(rows) == enc  # deterministic: the same run gives the same record bytes


@pytest.mark.parametrize("ids", [["test-0", "test-1", "test-2", "dev-7", "dev-8", "x", "a01", "a02"],
                                 [f"test-{i}" for i in range(1000)], ["9", "10", "11", "007"], [1, 2, 3]])
def test_ids_round_trip(ids):
    assert records.decode_ids(json.loads(json.dumps(records.encode_ids(ids)))) == ids


def snips_gold(split: str = "test") -> list[list[str]]:
    return [line.split() for line in (ROOT / "data" / "snips" / split / "seq.out").read_text().splitlines()]


def test_a_record_of_the_real_snips_sf_test_set_is_under_20_kb(tmp_path):
    """The worst case: the 700 real SF test sentences, every predicted tag drawn at random (a model that learnt
    nothing, like a 1-epoch run: its predictions compress worst)."""
    gold = snips_gold()
    vocab = sorted({t for g in gold for t in g})
    rng = random.Random(0)
    job = tmp_path / "job"
    run = job / "uimer_gb" / "sf-1shot-ghaeini-55"
    run.mkdir(parents=True)
    (run / "predictions.jsonl").write_text("".join(json.dumps(
        {"id": f"test-{i}", "gold": g, "pred": [rng.choice(vocab) for _ in g], "p_gold": rng.random()}) + "\n"
        for i, g in enumerate(gold)))
    results = {"task": "sf", "setting": "1", "seed": 55, "metric": "f1", "test": 0.0126, "dev": 0.0082,
               "best_epoch": 0, "rationale_stats": {"n_examples": 24, "share_with_rationale": 0.83}}
    (run / "results.json").write_text(json.dumps(results, indent=2))
    config = {"out_dir": str(job), "data_dir": "/somewhere/else/data",
              "model": "sentence-transformers/all-MiniLM-L6-v2", "lr": 1e-5, "max_epochs": 1, "seed": 55,
              "task": "sf", "shots": "1"}
    (run / "config.json").write_text(json.dumps(config, indent=2))
    entry = {"row": "GB Ghaeini", "column": "SF 1-shot", "seed": 55, "stage": "main",
             "command": f"python uimer_gb.py --task sf --shots 1 --variant ghaeini --teacher {job}/x"}
    path = records.write_record(tmp_path / "results", records.make_record("s", "gb-s55", entry, job, tmp_path))
    size = path.stat().st_size
    assert len(gold) == 700 and size <= RECORD_BUDGET, size
    rec = json.loads(path.read_text())
    assert rec["config"]["out_dir"] == "{sweep_dir}/job" and rec["config"]["data_dir"] == "{elsewhere}/data"
    assert rec["command"].endswith("--teacher '{sweep_dir}/job/x'") and rec["run"] == "uimer_gb/sf-1shot-ghaeini-55"
    assert not [s for s in strings(rec) if s.startswith("/") and s != rec["predictions"]["data"]]
    preds = records.decode_predictions(rec["predictions"], path)
    assert [r["gold"] for r in preds] == gold
    stats = table.example_stats(preds, "span_f1")
    from seqeval.metrics import f1_score
    assert table.metric("span_f1", stats) == pytest.approx(f1_score(gold, [r["pred"] for r in preds]), abs=1e-12)


def test_a_record_of_the_full_esnli_test_set_is_under_20_kb():
    import gzip
    with gzip.open(ROOT / "data" / "esnli" / "esnli_test.jsonl.gz", "rt", encoding="utf-8") as f:
        n = sum(1 for line in f if line.strip())
    rng = random.Random(1)
    labels = ["entailment", "neutral", "contradiction"]
    rows = []
    for i in range(n):
        g = rng.choice(labels)
        rows.append({"id": f"test-{i}", "gold": g, "pred": g if rng.random() < 0.55 else rng.choice(labels),
                     "p_gold": rng.random()})
    assert n > 9000 and len(json.dumps(records.encode_predictions(rows))) + 2_000 <= RECORD_BUDGET


def strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)
    elif isinstance(value, str):
        yield value


# ---------------------------------------------------------------------------------------------- the table
def write_run(job_dir: Path, value: float, preds: list[dict]):
    run = job_dir / "script" / "run"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"test": value, "seed": 1}))
    (run / "config.json").write_text(json.dumps({"out_dir": str(job_dir), "lr": 0.1}))
    (run / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))


def mixed_sweep(root: Path, summary: str = "mean", seeds=(1, 2, 3)) -> Path:
    """A finished sweep with an accuracy, a span F1 and a Pearson column, three rows, one of them partial."""
    sw = {"title": "mixed", "seeds": seeds, "metric_key": ["test"], "scale": 100, "summary": summary,
          "baseline": "base", "stages": ["main"], "rows": [{"name": n, "command": f"python x.py --row {n} {{col}}",
                                                            "paper": {"acc": "50.00"}} for n in ("base", "a", "b")],
          "columns": {"acc": {"args": "--acc", "metric": "accuracy"}, "span": {"args": "--span", "metric": "span_f1"},
                      "r": {"args": "--r", "metric": "auto"}}}
    sweep_dir = root / "mixed"
    sweep_dir.mkdir(parents=True)
    jobs = sweep.expand(sw, sweep_dir)
    sweep.write_json(sweep_dir / "jobs.json", sweep.make_manifest("mixed", sw, jobs, sweep_dir, None, None))
    gold_tags = random_tags(np.random.default_rng(0), 40)
    for job in jobs:
        if job["row"] == "b" and job["seed"] == seeds[-1]:
            continue  # not finished
        rng = np.random.default_rng([job["seed"], ord(job["row"][0]), len(job["column"])])
        q = {"base": 0.6, "a": 0.8, "b": 0.65}[job["row"]]
        if job["column"] == "acc":
            preds = [{"id": f"test-{i}", "gold": i % 3, "pred": i % 3 if rng.random() < q else (i + 1) % 3,
                      "p_gold": 0.5} for i in range(60)]
            value = float(np.mean([p["gold"] == p["pred"] for p in preds]))
        elif job["column"] == "span":
            preds = [{"id": f"test-{i}", "gold": g, "pred": [t if rng.random() < q else "O" for t in g],
                      "p_gold": 0.5} for i, g in enumerate(gold_tags)]
            value = table.metric("span_f1", table.example_stats(preds, "span_f1"))
        else:
            x = rng.normal(size=50)
            preds = [{"id": f"s{i}", "gold": float(v), "pred": float(v + rng.normal() / q)} for i, v in enumerate(x)]
            value = float(np.corrcoef([p["pred"] for p in preds], x)[0, 1])
        write_run(sweep_dir / job["id"], value, preds)
    return sweep_dir


def table_output(args: list[str], capsys) -> str:
    assert table.cli(args) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("summary", ["mean", "median"])
def test_the_table_from_records_is_the_table_from_runs(tmp_path, capsys, summary):
    mixed_sweep(tmp_path / "runs", summary)
    results = tmp_path / "results"
    assert sweep.cli(["--name", "mixed", "--record-only", "--root", str(tmp_path / "runs"), "--results",
                      str(results)]) == 0
    assert "recorded 24 finished job(s) of 27" in capsys.readouterr().out
    assert sorted(p.name for p in (results / "mixed").iterdir())[0] == "a-acc-s1.json"
    common = ["--results", str(results), "--root", str(tmp_path / "runs"), "--seed-resamples", "2000",
              "--example-resamples", "500"]
    outs = {}
    for source in ("runs", "records", "auto"):
        outs[source] = table_output(["mixed", "--source", source, "--csv", str(tmp_path / f"{source}.csv"), *common],
                                    capsys)
        outs[source + ".csv"] = (tmp_path / f"{source}.csv").read_text()
    assert outs["runs"] == outs["records"] == outs["auto"] and outs["runs.csv"] == outs["records.csv"]
    assert "(2/3 seeds)" in outs["runs"] and outs["runs"].count("†") + outs["runs"].count("*") >= 2
    paired = outs["runs"].split("Paired with base:")[1]
    assert paired.count("no predictions") == 0 and paired.count("[") >= 12  # every interval was computed
    # a fresh clone: results/ alone, no runs/
    clone = tmp_path / "clone"
    shutil.copytree(results, clone / "results")
    assert table_output(["mixed", "--results", str(clone / "results"), "--root", str(clone / "runs"),
                         "--seed-resamples", "2000", "--example-resamples", "500"], capsys) == outs["runs"]
    assert table_output([str(clone / "results" / "mixed"), "--root", str(clone / "runs"), "--seed-resamples",
                         "2000", "--example-resamples", "500"], capsys) == outs["runs"]
    layout = json.loads((clone / "results" / "mixed" / "jobs.json").read_text())
    assert layout["format"] == records.LAYOUT_FORMAT and "cwd" not in layout
    assert not [s for s in strings(layout) if "/" + str(tmp_path).strip("/") in s]


def test_a_record_wins_over_its_run_directory_and_runs_wins_with_source_runs(tmp_path, capsys):
    sweep_dir = mixed_sweep(tmp_path / "runs")
    results = tmp_path / "results"
    assert sweep.record_only("mixed", sweep_dir, results / "mixed", stream=open(tmp_path / "log", "w")) == 0
    path = records.find_results(sweep_dir / "base-acc-s1")
    path.write_text(json.dumps({"test": 0.123}))  # the run directory changed after the record was made
    args = ["mixed", "--results", str(results), "--root", str(tmp_path / "runs"), "--seed-resamples", "100",
            "--example-resamples", "50"]
    assert "12.30" not in table_output(args, capsys)
    assert table.cli(args + ["--source", "runs"]) == 0
    captured = capsys.readouterr()
    assert "warning" in captured.err and "base-acc-s1" in captured.err  # recomputed from predictions: differs
    assert captured.out.index("###") == 0  # the warning comes after the table, on stderr


# ---------------------------------------------------------------------------------------------- the launcher
@pytest.fixture()
def fake_job(tmp_path) -> str:
    path = tmp_path / "fake_job.py"
    path.write_text(FAKE_JOB)
    return f"python {path}"


@pytest.mark.slow
def test_sweep_records_jobs_and_resumes_from_records_alone(tmp_path, fake_job):
    markers = tmp_path / "markers"
    markers.mkdir()
    argv = ["--name", "rec", "--seeds", "1,2,3", "--root", str(tmp_path / "runs"), "--workers", "2",
            "--threads-per-job", "1", "--command", f"{fake_job} --marker-dir {markers}", "--label", "job"]
    r = run_sweep(argv)
    assert r.returncode == 0, r.stdout + r.stderr
    results = tmp_path / "runs" / "results" / "rec"  # run_sweep: --results <root>/results
    assert sorted(p.name for p in results.iterdir()) == ["job-s1.json", "job-s2.json", "job-s3.json", "jobs.json"]
    rec = json.loads((results / "job-s2.json").read_text())
    assert rec["results"]["test"] == pytest.approx(random.Random(2).random()) and rec["predictions"] is None
    assert rec["command"] == "python '{elsewhere}/fake_job.py' --marker-dir '{elsewhere}/markers'"
    shutil.move(results.parent, tmp_path / "saved")
    shutil.rmtree(tmp_path / "runs")  # a clone: no runs/, the records only
    (tmp_path / "runs").mkdir()
    shutil.move(tmp_path / "saved", results.parent)
    for m in markers.iterdir():
        m.unlink()
    r = run_sweep(argv)
    assert r.returncode == 0 and "3 of 3 jobs already complete (3 from their records" in r.stdout, r.stdout
    assert not list(markers.iterdir())  # nothing ran


def test_a_job_to_run_reruns_the_recorded_job_it_needs(tmp_path):
    sw = {"title": "", "seeds": (1, 2), "metric_key": ["test"], "scale": 1, "summary": "mean", "baseline": "A",
          "stages": ["first", "second"], "columns": {"": {"args": "", "metric": "auto"}},
          "rows": [{"name": "T", "stage": "first", "seeds": (0,), "table": False, "command": "python t.py"},
                   {"name": "A", "stage": "second", "command": "python a.py --teacher {dir:T}/model"}]}
    sweep_dir, results = tmp_path / "runs" / "two", tmp_path / "results" / "two"
    manifest = sweep.make_manifest("two", sw, sweep.expand(sw, sweep_dir), sweep_dir, None, None)
    assert manifest["jobs"]["a-s1"]["needs"] == ["t-s0"]
    for jid in ("t-s0", "a-s1"):
        write_run(sweep_dir / jid, 0.5, [{"id": "x", "gold": 1, "pred": 1}])
    done, from_records = sweep.survey(manifest, sweep_dir, results)
    assert done == {"t-s0", "a-s1"} and from_records == 0 and (results / "t-s0.json").is_file()
    shutil.rmtree(sweep_dir)
    done, from_records = sweep.survey(manifest, sweep_dir, results)  # a-s2 must run: it needs the teacher's model
    assert done == {"a-s1"} and from_records == 1
    (results / "a-s2.json").write_text((results / "a-s1.json").read_text().replace('"a-s1"', '"a-s2"')
                                       .replace('"seed": 1', '"seed": 2'))
    done, _ = sweep.survey(manifest, sweep_dir, results)  # nothing left to run: the records stand
    assert done == {"t-s0", "a-s1", "a-s2"}


def test_a_record_made_by_another_command_stops_the_sweep(tmp_path, capsys):
    root, results = tmp_path / "runs", tmp_path / "results"
    sw = sweep.adhoc_sweep(["python x.py --lr 1"], ["job"], [1], ["test"], "mean", None)
    sweep_dir = root / "cmd"
    sweep_dir.mkdir(parents=True)
    sweep.write_json(sweep_dir / "jobs.json", sweep.make_manifest("cmd", sw, sweep.expand(sw, sweep_dir), sweep_dir,
                                                                  None, None))
    write_run(sweep_dir / "job-s1", 0.5, [{"id": "x", "gold": 1, "pred": 1}])
    assert sweep.cli(["--name", "cmd", "--record-only", "--root", str(root), "--results", str(results)]) == 0
    assert table.cli(["cmd", "--root", str(root), "--results", str(results), "--source", "records"]) == 0
    capsys.readouterr()
    argv = ["--name", "cmd", "--seeds", "1", "--root", str(root), "--results", str(results), "--command",
            "python x.py --lr 2", "--label", "job"]
    for extra in (["--dry-run"], []):  # nothing runs, nothing is written
        assert sweep.cli(argv + extra) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "job-s1.json: recorded with command 'python x.py --lr 1'" in err[0], err
    assert "--lr 1" in (results / "cmd" / "jobs.json").read_text()


# ---------------------------------------------------------------------------------------------- plots
def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.mark.parametrize("summary", ["mean", "median"])
def test_plot_writes_a_png_of_a_finished_sweep(tmp_path, capsys, summary):
    sweep_dir = mixed_sweep(tmp_path / "runs", summary)
    out = tmp_path / "plot.png"
    text = table_output([str(sweep_dir), "--plot", str(out), "--results", str(tmp_path / "none"), "--seed-resamples",
                         "200", "--example-resamples", "100"], capsys)
    width, height = png_size(out)
    assert text.startswith("###") and width > 600 and height > 200
    import matplotlib.image
    pixels = matplotlib.image.imread(out)
    assert pixels.std() > 0.05  # not a blank canvas


# ---------------------------------------------------------------------------------------------- full data (GPU)
def test_full_data_sweep_dry_runs_locally_and_on_slurm(tmp_path, capsys):
    assert sweep.cli(["uimer-full", "--dry-run", "--root", str(tmp_path), "--results", str(tmp_path / "r"),
                      "--device", "cuda"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert len(lines) == 6 * 2 * 4 and "--shots full" in lines[0] and lines[0].endswith("--device cuda")
    argv = ["uimer-full", "--launcher", "slurm", "--dry-run", "--root", str(tmp_path), "--results",
            str(tmp_path / "r"), "--gpus-per-job", "1", "--cpus-per-job", "8", "--time", "4:00:00", "--mem", "32G",
            "--partition", "gpu", "--device", "cuda"]
    assert sweep.cli(argv) == 0
    out = capsys.readouterr().out
    for flag in ("--gpus-per-node=1", "--cpus-per-task=8", "--time=240", "--mem=32GB", "--partition=gpu",
                 "--array=0-47%48"):
        assert f"#SBATCH {flag}\n" in out
    assert not (tmp_path / "uimer-full").exists() and not (tmp_path / "r").exists()
    assert sweep.cli(["uimer-full", "--columns", "IC full", "--dry-run", "--root", str(tmp_path), "--results",
                      str(tmp_path / "r")]) == 0
    assert capsys.readouterr().out.count("--shots full") == 24
    assert len(sweep.expand(sweeps.SWEEPS["uimer-full"], tmp_path)) == 48
