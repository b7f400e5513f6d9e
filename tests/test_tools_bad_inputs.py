"""The tools under the same promise as the method scripts: data/fetch.py, bench/sweep.py, bench/table.py and every
bench/bench_*.py. One table, one row per bad input (the tool, its arguments, a damaged file, the words the one error
line must hold): exit code 2, exactly one line on stderr starting `<tool>: error:`, no traceback. Then every flag of
every tool against a table of hostile values (empty, huge, NaN, unbalanced quotes, paths under a plain file,
unwritable paths): whatever the value, never a traceback and never more than one line. The rows run in-process
(a benchmark's own work is replaced by a no-op where a row would pass validation); a few run as real processes."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "data"))
import bench_faithfulness  # noqa: E402
import bench_ferret  # noqa: E402
import bench_paper_shapes  # noqa: E402
import bench_quick  # noqa: E402
import bench_read_align  # noqa: E402
import bench_regex  # noqa: E402
import bench_smat  # noqa: E402
import bench_uimer  # noqa: E402
import fetch  # noqa: E402
import records  # noqa: E402
import report  # noqa: E402
import sweep  # noqa: E402
import table  # noqa: E402
from test_sweep import class_preds  # noqa: E402

BENCHES = {"bench_uimer.py": bench_uimer, "bench_regex.py": bench_regex, "bench_smat.py": bench_smat,
           "bench_paper_shapes.py": bench_paper_shapes, "bench_quick.py": bench_quick,
           "bench_faithfulness.py": bench_faithfulness, "bench_ferret.py": bench_ferret,
           "bench_read_align.py": bench_read_align}
REAL_SLICES = ROOT / "tests" / "fixtures" / "real_slices"  # 6 ERASER Movie Reviews documents per split
SYS_UNWRITABLE = "/sys/tools-test/x"  # refused even to root (sysfs); a non-root user cannot write there either


def call(tool: str, argv: list[str]) -> int:
    """The tool's in-process entry point; argparse's errors exit through SystemExit."""
    entry = {"sweep.py": sweep.cli, "table.py": table.cli, "fetch.py": fetch.main, "report.py": report.cli,
             **{name: mod.cli for name, mod in BENCHES.items()}}[tool]
    try:
        return entry(argv)
    except SystemExit as e:
        return e.code


def one_error_line(capsys, tool: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"{tool}: error: "), lines[0]
    return lines[0]


# ---------------------------------------------------------------------------------------------- a small world
def tar_gz(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_world(tmp_path: Path) -> dict:
    """Files the rows point at: a plain file, a finished two-row sweep with its records, archives."""
    w = {"tmp": tmp_path, "file": tmp_path / "plain.txt", "dir": tmp_path / "folder"}
    w["file"].write_text("x\n")
    w["dir"].mkdir()
    sw = sweep.adhoc_sweep(["python x.py --a", "python x.py --b"], ["base", "other"], [1, 2], ["test"], "mean", None)
    runs = tmp_path / "runs"
    sweep_dir = runs / "syn"
    sweep_dir.mkdir(parents=True)
    jobs = sweep.expand(sw, sweep_dir)
    sweep.write_json(sweep_dir / "jobs.json", sweep.make_manifest("syn", sw, jobs, sweep_dir, None, None))
    for job in jobs:
        preds = class_preds(np.random.default_rng(job["seed"]), 30, 0.7 if job["row"] == "other" else 0.5)
        run = sweep_dir / job["id"] / "x" / "run"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps({"test": float(np.mean([p["pred"] == p["gold"]
                                                                             for p in preds]))}))
        (run / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
    assert sweep.record_only("syn", sweep_dir, tmp_path / "results" / "syn", stream=io.StringIO()) == 0
    w.update(runs=runs, sweep_dir=sweep_dir, results=tmp_path / "results", records=tmp_path / "results" / "syn")
    w["run"] = records.find_results(sweep_dir / "other-s1").parent
    w["archive"] = tar_gz(tmp_path / "movies.tar.gz", {f"movies/{s}.jsonl": b"{}\n" for s in ("train", "val", "test")}
                          | {"movies/docs/a.txt": b"a film"})
    w["imdb_bad"] = tar_gz(tmp_path / "imdb.tar.gz", {"aclImdb/train/neg/0_1.txt": b"bad \xff\xfe bytes",
                                                      "aclImdb/train/pos/1_9.txt": b"good", "aclImdb/test/neg/0_2.txt":
                                                      b"x", "aclImdb/test/pos/1_8.txt": b"y"})
    (tmp_path / "junk.tar.gz").write_bytes(b"\x1f\x8b\x08\x00" + bytes(range(256)) * 4)  # a gzip header, then junk
    w["junk"] = tmp_path / "junk.tar.gz"
    w["truncated_gz"] = tmp_path / "truncated.tar.gz"
    w["truncated_gz"].write_bytes(w["archive"].read_bytes()[:60])
    w["bad_utf8"] = tmp_path / "bad.sha256"
    w["bad_utf8"].write_bytes(b"0123  movies/train.jsonl\n\xff\xfe  x\n")
    return w


@pytest.fixture(scope="module")
def world_template(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tools-world") / "w"
    path.mkdir()
    make_world(path)
    return path


@pytest.fixture()
def world(world_template, tmp_path, monkeypatch) -> dict:
    """A fresh copy of the world for each row (the rows damage its files). Nothing in it depends on where it is."""
    shutil.copytree(world_template, tmp_path / "w")
    monkeypatch.chdir(tmp_path / "w")  # anything a row writes by a relative path lands here
    w = tmp_path / "w"
    return {"tmp": w, "file": w / "plain.txt", "dir": w / "folder", "runs": w / "runs", "sweep_dir": w / "runs" / "syn",
            "results": w / "results", "records": w / "results" / "syn",
            "run": records.find_results(w / "runs" / "syn" / "other-s1").parent, "archive": w / "movies.tar.gz",
            "imdb_bad": w / "imdb.tar.gz", "junk": w / "junk.tar.gz", "truncated_gz": w / "truncated.tar.gz",
            "bad_utf8": w / "bad.sha256"}


def damage(path: Path, how: str) -> None:
    text = path.read_bytes()
    path.write_bytes({"truncate": text[: len(text) // 2], "empty": b"", "not_utf8": b"\xff\xfe" + text,
                      "nan": text.replace(b'"test": 0.', b'"test": NaN, "x": 0.', 1),
                      "huge": text.replace(b'"test": 0.', b'"test": 1e400, "x": 0.', 1),
                      "list": b"[1, 2]\n", "cut_tail": text[:-10]}[how])


SWEEP = ["--root", "{runs}", "--results", "{results}"]
TABLE = ["{sweep_dir}", "--results", "{results}", "--seed-resamples", "20", "--example-resamples", "20"]
RUNS = [*TABLE, "--source", "runs"]
NAMED = ["syn", "--root", "{runs}", "--results", "{results}"]
# (tool, argv with {placeholders} from the world, a damage (file key or path, how) or None, words of the error line)
ROWS = [
    # bench/sweep.py: flags
    ("sweep.py", ["uimer-table2", "--dry-run", "--root", "{file}"], None, "--root: must be a folder"),
    ("sweep.py", ["uimer-table2", "--dry-run", "--root", "{file}/sub"], None, "--root: must be a folder"),
    ("sweep.py", ["uimer-table2", "--root", "{runs}", "--results", SYS_UNWRITABLE], None, SYS_UNWRITABLE),
    ("sweep.py", ["uimer-table2", "--dry-run", "--results", "{file}/sub"], None, "--results: must be a folder"),
    ("sweep.py", ["--name", "a", "--seeds", "1", "--command", "python x.py 'unclosed", *SWEEP], None,
     "--command: must be a non-empty shell command line (balanced quotes)"),
    ("sweep.py", ["uimer-table2", "--dry-run", "--extra-args", '--lr "1', *SWEEP], None, "--extra-args: must be"),
    ("sweep.py", ["--name", "a", "--seeds", "nan", "--command", "python x.py"], None, "--seeds: must be"),
    ("sweep.py", ["--name", "a", "--seeds", "9" * 5000, "--command", "python x.py"], None, "(5000 characters)"),
    ("sweep.py", ["--name", "a", "--seeds", "1,1", "--command", "python x.py"], None, "distinct"),
    ("sweep.py", ["--name", "Bad Name", "--seeds", "1", "--command", "python x.py"], None, "--name: must be"),
    ("sweep.py", ["--name", "a", "--seeds", "1", "--command", "python x.py", "--label", ""], None, "--label"),
    ("sweep.py", ["uimer-table2", "--workers", "99999999999999999999999"], None, "--workers: must be"),
    ("sweep.py", ["uimer-table2", "--launcher", "slurm", "--time", "nan", "--dry-run"], None, "--time: must be"),
    ("sweep.py", ["uimer-table2", "--launcher", "slurm", "--mem", "9" * 400, "--dry-run"], None, "--mem: must be"),
    ("sweep.py", ["uimer-table2", "--sbatch", "=x", "--dry-run"], None, "--sbatch: must be KEY=VALUE"),
    ("sweep.py", ["uimer-table2", "--data-dir", "{file}"], None, "must be an existing folder"),
    ("sweep.py", ["uimer-table2", "--device", "cuda:x"], None, "--device: must be auto, cpu, cuda or cuda:N"),
    ("sweep.py", ["uimer-table2", "--columns", "IC 1-shot,,SF 1-shot"], None, "--columns: must be"),
    ("sweep.py", ["uimer-table2", "--columns", "NLI 100", "--dry-run", *SWEEP], None, "not a column of"),
    ("sweep.py", ["uimer-table2", "--no-such-flag"], None, "unrecognized arguments: --no-such-flag"),
    ("sweep.py", ["uimer-table2", "--workers"], None, "expected one argument"),
    ("sweep.py", ["--record-only", *SWEEP], None, "--record-only takes a named sweep"),
    # bench/sweep.py: files
    ("sweep.py", ["--name", "syn", "--record-only", *SWEEP], ("{sweep_dir}/jobs.json", "truncate"),
     "jobs.json:"),
    ("sweep.py", ["--name", "syn", "--record-only", *SWEEP], ("{sweep_dir}/jobs.json", "empty"), "empty jobs.json"),
    ("sweep.py", ["--name", "syn", "--record-only", *SWEEP], ("{sweep_dir}/jobs.json", "not_utf8"),
     "jobs.json:1: not UTF-8"),
    ("sweep.py", ["--name", "syn", "--record-only", *SWEEP], ("{sweep_dir}/jobs.json", "list"),
     "jobs.json: expected a JSON object"),
    ("sweep.py", ["--name", "syn", "--record-only", *SWEEP], ("{run}/predictions.jsonl", "not_utf8"),
     "predictions.jsonl:1: not UTF-8"),
    ("sweep.py", ["--run-job", "{sweep_dir}/base-s1"], ("{sweep_dir}/jobs.json", "truncate"), "jobs.json:"),
    ("sweep.py", ["--name", "syn", "--seeds", "1,2", "--command", "python x.py --a", "--command", "python x.py --b",
                  "--label", "base", "--label", "other", "--dry-run", *SWEEP], ("{records}/other-s1.json", "truncate"),
     "other-s1.json:"),
    ("sweep.py", ["--name", "syn", "--seeds", "1,2", "--command", "python x.py --a", "--command", "python x.py --b",
                  "--label", "base", "--label", "other", "--dry-run", *SWEEP], ("{records}/other-s1.json", "empty"),
     "other-s1.json: empty record"),
    ("sweep.py", ["--name", "syn", "--seeds", "1,2", "--command", "python x.py --a", "--command", "python x.py --c",
                  "--label", "base", "--label", "other", *SWEEP], None, "recorded with command"),
    # bench/table.py: flags
    ("table.py", [*TABLE, "--csv", "{file}/t.csv"], None, "--csv: must be a file path"),
    ("table.py", [*TABLE, "--csv", "{dir}"], None, "--csv: must be a file path"),
    ("table.py", [*TABLE, "--plot", "{tmp}/plot.jpg"], None, "--plot: must be a .png file path"),
    ("table.py", [*TABLE, "--plot", "{file}/p.png"], None, "--plot: must be a .png"),
    ("table.py", [*TABLE, "--seed-resamples", "1000000000000"], None,
     "--seed-resamples: must be an integer in [1, 1000000]"),
    ("table.py", [*TABLE, "--example-resamples", "nan"], None, "--example-resamples: must be"),
    ("table.py", [*TABLE, "--bootstrap-seed", "-1"], None, "--bootstrap-seed: must be"),
    ("table.py", [*TABLE, "--key", "a..b"], None, "--key: must be a dotted path"),
    ("table.py", [*TABLE, "--baseline", "nobody"], None, "--baseline 'nobody': no such row"),
    ("table.py", [*TABLE, "--source", "nowhere"], None, "invalid choice"),
    ("table.py", ["{file}"], None, "no jobs.json in"),
    ("table.py", [""], None, "must be a sweep name"),
    ("table.py", ["no-such-sweep", "--root", "{runs}", "--results", "{results}"], None,
     "run `python bench/sweep.py no-such"),
    ("table.py", ["syn", "--source", "records", "--results", "{tmp}/none", "--root", "{runs}"], None,
     "--source records: no"),
    # bench/table.py: files (a damaged results.json is an error, never a smaller table)
    ("table.py", RUNS, ("{run}/results.json", "truncate"), "results.json:1: not valid JSON"),
    ("table.py", RUNS, ("{run}/results.json", "empty"), "results.json: empty results.json"),
    ("table.py", RUNS, ("{run}/results.json", "nan"), "non-finite number NaN"),
    ("table.py", RUNS, ("{run}/results.json", "huge"), "too large (not finite)"),
    ("table.py", RUNS, ("{run}/results.json", "not_utf8"), "results.json:1: not UTF-8"),
    ("table.py", RUNS, ("{run}/predictions.jsonl", "not_utf8"), "predictions.jsonl:1: not UTF-8"),
    ("table.py", RUNS, ("{run}/predictions.jsonl", "cut_tail"),
     "predictions.jsonl:30: not strict JSON"),
    ("table.py", RUNS, ("{sweep_dir}/jobs.json", "truncate"), "jobs.json:"),
    ("table.py", RUNS, ("{sweep_dir}/jobs.json", "list"), "jobs.json: expected a JSON object"),
    ("table.py", NAMED, ("{records}/jobs.json", "empty"), "empty jobs.json"),
    ("table.py", NAMED, ("{records}/other-s2.json", "truncate"),
     "other-s2.json:"),
    ("table.py", NAMED, ("{records}/other-s2.json", "not_utf8"),
     "other-s2.json:1: not UTF-8"),
    ("table.py", NAMED, ("{records}/other-s2.json", "nan"),
     "other-s2.json: non-finite number NaN"),
    ("table.py", NAMED, ("{records}/other-s2.json", "payload"),
     "other-s2.json: damaged predictions"),
    ("table.py", NAMED, ("{records}/other-s2.json", "other_job"),
     "other-s2.json: not a record of job other-s2"),
    ("table.py", NAMED, ("{records}/other-s2.json", "constant_pearson"),
     "undefined"),
    # data/fetch.py
    ("fetch.py", ["imdb", "--to", "{file}"], None, "--to: must be a folder that exists or can be created"),
    ("fetch.py", ["imdb", "--to", "{file}/sub"], None, "--to: must be a folder"),
    ("fetch.py", ["imdb", "--to", SYS_UNWRITABLE, "--url", "file:///x.tar.gz"], None, SYS_UNWRITABLE),
    ("fetch.py", ["imdb", "--url", ""], None, "--url: must be a URL"),
    ("fetch.py", ["imdb", "--url", "http://a b"], None, "--url: must be a URL"),
    ("fetch.py", ["imdb", "--sha256", "nan"], None, "--sha256: must be 64 hexadecimal digits"),
    ("fetch.py", ["imdb", "--checksums", "{dir}"], None, "--checksums: must be an existing file"),
    ("fetch.py", ["nope"], None, "invalid choice: 'nope'"),
    ("fetch.py", ["all", "--url", "file:///x"], None, "take one dataset, not 'all'"),
    ("fetch.py", ["imdb", "--to", "{tmp}/d", "--url", "file://{tmp}/none.tar.gz"], None, "cannot download"),
    ("fetch.py", ["eraser_movies", "--to", "{tmp}/d", "--url", "file://{junk}"], None, "cannot unpack the download"),
    ("fetch.py", ["eraser_movies", "--to", "{tmp}/d", "--url", "file://{truncated_gz}"], None,
     "cannot unpack the download"),
    ("fetch.py", ["imdb", "--to", "{tmp}/d", "--url", "file://{archive}"], None, "checksum mismatch"),
    ("fetch.py", ["imdb", "--to", "{tmp}/d", "--url", "file://{imdb_bad}", "--sha256", "IMDB_SHA"], None,
     "aclImdb/train/neg/0_1.txt:1: not UTF-8"),
    ("fetch.py", ["eraser_movies", "--to", "{tmp}/d", "--url", "file://{archive}", "--checksums", "{bad_utf8}"], None,
     "bad.sha256:2: not UTF-8"),
    ("fetch.py", ["eraser_movies", "--to", "{tmp}", "--url", "file://{archive}"], ("{tmp}/eraser_movies", "mkfile"),
     "already exists"),
    # bench/bench_*.py
    ("bench_uimer.py", ["--repeats", "0"], None, "--repeats: must be an integer in [1, 1000]"),
    ("bench_uimer.py", ["--only", "im,nope"], None, "--only: must be comma-separated distinct names of im, gbdm"),
    ("bench_uimer.py", ["--model", "{file}/m"], None, "does not exist"),
    ("bench_uimer.py", ["--model", "{dir}"], None, "has no config.json"),
    ("bench_uimer.py", ["--data-dir", "{file}"], None, "--data-dir: must be an existing folder"),
    ("bench_uimer.py", ["--data-dir", "{dir}"], None, "dataset 'snips' not found"),
    ("bench_regex.py", ["--ig-steps", "1,,2"], None, "--ig-steps: must be"),
    ("bench_regex.py", ["--batch-size", "1e3"], None, "--batch-size: must be"),
    ("bench_regex.py", ["--device", "gpu"], None, "--device: must be auto, cpu, cuda or cuda:N"),
    ("bench_smat.py", ["--teacher-dir", "{file}/t"], None, "--teacher-dir: must be a folder path"),
    ("bench_smat.py", ["--kinds", "smat,magic"], None, "--kinds: must be"),
    ("bench_smat.py", ["--max-len", "100000"], None, "--max-len: must be an integer in [8, 512]"),
    ("bench_paper_shapes.py", ["--only", ""], None, "--only: must be"),
    ("bench_paper_shapes.py", ["--repeats", "nan"], None, "--repeats: must be"),
    ("bench_paper_shapes.py", ["--tiny", "--unknown"], None, "unrecognized arguments"),
    ("bench_quick.py", ["--repeats", "0"], None, "--repeats: must be an integer in [1, 100]"),
    ("bench_quick.py", ["--before=-x"], None, "--before: must be a git revision"),
    ("bench_quick.py", ["--before", "HEAD", "--without", ""], None, "give --before or --without, not both"),
    ("bench_quick.py", ["--without", "'a"], None, "--without: must be shell words"),
    ("bench_quick.py", ["--config", "all"], None, "invalid choice: 'all'"),
    ("bench_quick.py", ["--data-dir", "{file}"], None, "--data-dir: must be an existing folder"),
    ("bench_faithfulness.py", ["--n", "0"], None, "--n: must be comma-separated distinct integers in [1, 1000000]"),
    ("bench_faithfulness.py", ["--n", "50,50"], None, "--n: must be comma-separated distinct integers"),
    ("bench_faithfulness.py", ["--aopc-ratios", "0,0.5"], None, "--aopc-ratios: must be comma-separated distinct "
     "numbers in (0, 1]"),
    ("bench_faithfulness.py", ["--aopc-ratios", "nan"], None, "--aopc-ratios: must be"),
    ("bench_faithfulness.py", ["--explain-memory-mb", "8"], None, "--explain-memory-mb: must be an integer in [16,"),
    ("bench_faithfulness.py", ["--max-len", "1024"], None, "--max-len 1024 is above the model's position limit"),
    ("bench_faithfulness.py", ["--model", "{dir}"], None, "has no config.json"),
    ("bench_faithfulness.py", ["--data-dir", "{dir}"], None, "dataset 'eraser_movies' not found"),
    ("bench_faithfulness.py", ["--data-dir", str(REAL_SLICES), "--n", "2,7"], None,
     "--n 7: the ERASER Movie Reviews training split holds 6 documents"),
    ("bench_faithfulness.py", ["--data-dir", "{tmp}/eraser"], ("{tmp}/eraser", "eraser_not_utf8"),
     "train.jsonl:2: "),
    ("bench_faithfulness.py", ["--mode", "all"], None, "--mode: invalid choice: 'all'"),
    ("bench_faithfulness.py", ["--n-one", "nan"], None, "--n-one: must be an integer"),
    ("bench_ferret.py", ["--n", "5000"], None, "--n 5000: the SST-2 test split holds 1821 sentences"),
    ("bench_ferret.py", ["--repeats", "0"], None, "--repeats: must be an integer in [1, 1000]"),
    ("bench_ferret.py", ["--eval-batch-size", "1e3"], None, "--eval-batch-size: must be an integer"),
    ("bench_ferret.py", ["--ferret-python", "{dir}"], None, "--ferret-python: must be an existing file"),
    ("bench_ferret.py", ["--ferret-python", "{file}"], None, "not executable"),
    ("bench_ferret.py", ["--data-dir", "{dir}"], None, "dataset 'sst2' not found"),
    ("bench_ferret.py", ["--model", "{file}/m"], None, "does not exist"),
    ("bench_read_align.py", ["--n", "0"], None, "--n: must be an integer in [1, 10000000]"),
    ("bench_read_align.py", ["--words", "nan"], None, "--words: must be"),
    ("bench_read_align.py", ["--seed", "-1"], None, "--seed: must be"),
    ("bench_read_align.py", ["--max-len", "1024"], None, "--max-len 1024 is above the model's position limit"),
    ("bench_read_align.py", ["--model", "{dir}"], None, "has no config.json"),
    # bench/report.py
    ("report.py", ["{file}"], None, "run directory does not exist"),
    ("report.py", ["{run}"], None, "explanations.jsonl: missing"),
    ("report.py", ["{run}", "-o", "{dir}"], ("{run}/explanations.jsonl", "explanations"), "is a folder"),
    ("report.py", ["{run}", "-o", "{file}/r.html"], ("{run}/explanations.jsonl", "explanations"), "does not exist"),
    ("report.py", ["{run}", "--explainer", "lime"], ("{run}/explanations.jsonl", "explanations"),
     "--explainer lime: the run"),
    ("report.py", ["{run}", "--against", "{dir}"], ("{run}/explanations.jsonl", "explanations"),
     "explanations.jsonl: missing"),
    ("report.py", ["{run}"], ("{run}/explanations.jsonl", "explanations_bad_line"),
     "explanations.jsonl:2: malformed JSON"),
    ("report.py", ["{run}"], ("{run}/explanations.jsonl", "explanations_nan"), "explanations.jsonl:1: malformed JSON"),
    ("report.py", ["{run}", "--unknown"], None, "unrecognized arguments"),
]


def fill(text: str, w: dict) -> str:
    return text.format(**{k: v for k, v in w.items()})


def apply_damage(spec, w: dict) -> None:
    if spec is None:
        return
    where, how = spec
    path = Path(fill(where, w))
    if how == "mkfile":
        path.write_text("")
    elif how == "eraser_not_utf8":  # the ERASER slice, a byte that is not UTF-8 on line 2 of train.jsonl
        shutil.copytree(REAL_SLICES / "eraser_movies", path / "eraser_movies")
        train = path / "eraser_movies" / "train.jsonl"
        lines = train.read_bytes().split(b"\n")
        train.write_bytes(b"\n".join([lines[0], b"\xff" + lines[1], *lines[2:]]))
    elif how.startswith("explanations"):  # an explanations.jsonl for bench/report.py: one valid row, then damage
        row = {"id": "ex0", "words": ["a", "film"], "gold": 1, "pred": 1, "scores": {"ig": [0.5, -0.25]}}
        path.write_text({"explanations": json.dumps(row) + "\n", "explanations_bad_line": json.dumps(row) + "\n{\n",
                         "explanations_nan": json.dumps(row).replace("0.5", "NaN") + "\n"}[how])
    elif how in ("payload", "other_job", "constant_pearson"):
        rec = json.loads(path.read_text())
        if how == "payload":
            rec["predictions"]["data"] = rec["predictions"]["data"][:40]
        elif how == "other_job":
            rec["job"] = "base-s1"
        else:
            rec["predictions"] = records.encode_predictions([{"id": f"ex{i}", "gold": float(i), "pred": 1.0}
                                                             for i in range(30)])
            base = json.loads((path.parent / "base-s2.json").read_text())
            base["predictions"] = records.encode_predictions([{"id": f"ex{i}", "gold": float(i), "pred": float(i)}
                                                              for i in range(30)])
            (path.parent / "base-s2.json").write_text(json.dumps(base))
        path.write_text(json.dumps(rec))
    else:
        damage(path, how)


@pytest.mark.parametrize("tool,argv,spec,words", ROWS, ids=[f"{r[0]}-{i}" for i, r in enumerate(ROWS)])
def test_bad_input_is_one_line_exit_2(tool, argv, spec, words, world, capsys):
    if "IMDB_SHA" in argv:
        argv = [a.replace("IMDB_SHA", fetch.sha256(world["imdb_bad"])) for a in argv]
    apply_damage(spec, world)
    code = call(tool, [fill(a, world) for a in argv])
    line = one_error_line(capsys, tool)
    assert code == 2 and words in line, line


# ---------------------------------------------------------------------------------------------- hostile values
HOSTILE = ["", " ", "nan", "-inf", "-1", "9" * 5000, "1e400", "'unbalanced", 'a "b', "x\ny", "{file}/under",
           SYS_UNWRITABLE]


def value_flags(parser) -> list[str]:
    """Every option of a parser that takes a value (help hidden or not)."""
    return sorted(a.option_strings[-1] for a in parser._actions if a.option_strings and a.nargs != 0)


def base_args(tool: str, w: dict) -> list[str]:
    return {"sweep.py": ["uimer-table2", "--dry-run", "--root", str(w["runs"]), "--results", str(w["results"])],
            "table.py": [str(w["sweep_dir"]), "--seed-resamples", "20", "--example-resamples", "20"],
            "fetch.py": ["imdb", "--to", str(w["tmp"] / "fetched"), "--url", f"file://{w['tmp']}/none.tar.gz"],
            "report.py": [str(w["run"])],
            "bench_faithfulness.py": ["--data-dir", str(REAL_SLICES)]}.get(tool, [])


def parsers() -> dict:
    return {"sweep.py": sweep.build_parser(), "table.py": table.build_parser(), "fetch.py": fetch.build_parser(),
            "report.py": report.build_parser(), **{name: mod.build_parser() for name, mod in BENCHES.items()}}


def assert_outcome(code, capsys) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err and code in (0, 1, 2), (code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("tool", ["sweep.py", "table.py", "fetch.py", "report.py", *BENCHES])
def test_no_tool_prints_a_traceback_for_hostile_values(tool, world, capsys, monkeypatch):
    """Every flag (and the positional argument) of every tool with every hostile value. A benchmark that accepts its
    arguments does not run (its main is replaced): this is about validation."""
    if tool in BENCHES:
        monkeypatch.setattr(BENCHES[tool], "main", lambda a: None)
    flags = value_flags(parsers()[tool])
    base = base_args(tool, world)
    tried = 0
    for value in HOSTILE:
        value = fill(value, world) if value.startswith("{") else value
        for flag in flags:
            code = call(tool, [*base, flag, value])
            assert_outcome(code, capsys)
            tried += 1
        code = call(tool, [value, *base[1:]] if tool in ("sweep.py", "table.py", "fetch.py", "report.py") else [value])
        assert_outcome(code, capsys)
    assert len(flags) >= 3 and tried == len(HOSTILE) * len(flags)


def test_table_refuses_to_tabulate_around_a_truncated_results_json(world, capsys):
    """Before: '(1/2 seeds)' and exit 0. Now: an error naming the file."""
    assert table.cli([str(world["sweep_dir"]), "--source", "runs", "--seed-resamples", "20", "--example-resamples",
                      "20"]) == 0
    assert "(1/2 seeds)" not in capsys.readouterr().out
    damage(world["run"] / "results.json", "truncate")
    assert table.cli([str(world["sweep_dir"]), "--source", "runs"]) == 2
    assert str(world["run"] / "results.json") in one_error_line(capsys, "table.py")
    assert sweep.find_results(world["sweep_dir"] / "other-s1") is None  # the launcher: an incomplete job, rerun


def test_help_texts_are_whole_sentences_and_every_flag_has_help(capsys):
    for tool, parser in parsers().items():
        assert parser.description.endswith("."), (tool, parser.description)
        for action in parser._actions:
            if action.help == "==SUPPRESS==" or not action.option_strings and action.dest == "help":
                continue
            assert action.help and action.help.strip(), (tool, action.dest)
            if action.nargs != 0:  # a value: its domain is declared or a choice
                assert action.choices or action.help.rstrip().endswith("]"), (tool, action.dest, action.help)
    assert fetch.build_parser().description.endswith("layout the readers in common.py expect.")
    assert bench_uimer.build_parser().description.endswith("measured in one run.")


# ---------------------------------------------------------------------------------------------- real processes
@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["bench/sweep.py", "--name", "a", "--seeds", "1", "--command", "python x.py 'unclosed"],
    ["bench/sweep.py", "uimer-table2", "--root", "{file}/under"],
    ["bench/table.py", "{sweep_dir}", "--csv", "{file}/x.csv"],
    ["bench/table.py", "{sweep_dir}", "--source", "runs"],
    ["data/fetch.py", "imdb", "--to", "{file}"],
    ["bench/bench_uimer.py", "--data-dir", "{dir}"],
    ["bench/bench_paper_shapes.py", "--device", "cuda:7x"],
    ["bench/bench_faithfulness.py", "--data-dir", "{dir}"],
    ["bench/bench_ferret.py", "--ferret-python", "{file}"],
    ["bench/report.py", "{run}"],
])
def test_tools_as_processes_print_one_line(argv, world):
    damage(world["run"] / "results.json", "truncate")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.run([sys.executable, str(ROOT / argv[0]), *[fill(a, world) for a in argv[1:]]],
                       capture_output=True, text=True, timeout=300, cwd=world["tmp"], env=env)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith(f"{Path(argv[0]).name}: error: ")


def test_a_record_reads_with_the_standard_library_alone(world):
    """A record is strict JSON; its predictions are base64 of xz of JSON (results/README.md)."""
    import base64
    import lzma
    rec = json.loads((world["records"] / "other-s1.json").read_text())
    payload = json.loads(lzma.decompress(base64.b64decode(rec["predictions"]["data"])))
    assert set(payload) == {"vocab", "id", "gold", "pred"} and rec["predictions"]["n"] == 30
    assert payload["id"] == {"runs": [["ex", 0, 30]]} and sorted(payload["vocab"]) == ["a", "b", "c"]
