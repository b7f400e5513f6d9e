"""The benchmark scripts run end to end on tiny models (they time nothing useful here; this only keeps them working):
each prints its table of ratios, one row per method, every ratio a positive finite number."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*argv, cwd=ROOT) -> str:
    p = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=600, cwd=cwd,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout


def timed_rows(out: str) -> list[tuple[float, float, float]]:
    """(plain s, method s, ratio) of every row of a plain-text table."""
    return [tuple(map(float, m)) for m in re.findall(r"(\d+\.\d{3})\s+(\d+\.\d{3})\s+(\d+\.\d{2})", out)]


@pytest.mark.slow
def test_paper_shapes_bench_on_tiny_shapes():
    out = run("bench/bench_paper_shapes.py", "--tiny", "--device", "cpu", "--repeats", "1")
    rows = [line for line in out.splitlines() if line.startswith("| ") and "(tiny shape)" in line]
    assert len(rows) == 13, out
    for line in rows:
        ratio = float(line.split("|")[6])
        assert 0 < ratio < 1e3, line


@pytest.mark.slow
@pytest.mark.parametrize("script,extra", [("bench/bench_uimer.py", []), ("bench/bench_regex.py", ["--ig-steps", "2"])])
def test_method_bench_on_a_tiny_model(script, extra, tiny_model):
    out = run(script, "--model", tiny_model, "--repeats", "1", *extra)  # the data shipped in data/
    rows = timed_rows(out)
    assert len(rows) >= 4, out
    for plain, method, ratio in rows:  # the ratio is the method step over the plain step of the same run
        slack = 0.006 + ratio * (0.0006 / plain + 0.0006 / method)  # the printed values are rounded
        assert plain > 0 and abs(ratio - method / plain) <= slack, (plain, method, ratio)



@pytest.mark.slow
def test_smat_bench_on_the_imdb_slice():
    """bench_smat.py's rows (an explainer, SMaT, the meta step by stage) on 4 reviews of the IMDB slice in
    tests/fixtures (its split sizes shrunk to fit), with an untrained teacher."""
    script = ("import sys; sys.path.insert(0, 'bench'); import bench_smat, smat_jax_free as sm; p = sm.parse_args; "
              "sm.parse_args = lambda argv: p(list(argv) + ['--imdb-split-sizes', '8,4,4']); "
              "sys.exit(bench_smat.cli(sys.argv[1:]))")
    out = run("-c", script, "--data-dir", "tests/fixtures/real_slices", "--max-len", "16", "--batch-size", "4",
              "--repeats", "1", "--kinds", "gradient_l2,smat", "--teacher-dir", "runs/no-teacher-here")
    assert "untrained teacher" in out and "meta part alone" in out and "outer_bwd" in out
    ratios = [float(line.split()[-2]) for line in out.splitlines() if line.startswith("student + gradient_l2")]
    assert len(ratios) == 1 and 0 < ratios[0] < 1e3, out


@pytest.mark.slow
def test_faithfulness_bench_on_the_eraser_slice(tiny_model):
    """bench_faithfulness.py's three measurements (load, one IG chunk, the suite on 2 documents), each in a fresh
    process, on the tiny model and the ERASER Movie Reviews slice in tests/fixtures, at its smallest sizes."""
    out = run("bench/bench_faithfulness.py", "--data-dir", "tests/fixtures/real_slices", "--model", tiny_model,
              "--n", "2", "--max-len", "16", "--ig-steps", "1", "--explain-memory-mb", "16")
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [(r["mode"], r["n"]) for r in rows] == [("load", 1), ("chunk", 1), ("suite", 2)], out
    assert all(r["peak_rss_mb"] > 0 and r["rows_per_ig_forward"] >= 1 for r in rows), out
    assert -1 <= rows[2]["faithfulness"] <= 1, rows[2]  # comprehensiveness: a difference of probabilities
    ratios = [float(m) for m in re.findall(r"([\d.]+) x chunk", out)]
    assert len(ratios) == 3 and ratios[1] == 1.0 and all(r > 0 for r in ratios), out


@pytest.mark.slow
def test_ferret_bench_our_side_without_ferret(tiny_model):
    """bench_ferret.py without ferret installed: our side on 3 SST-2 test sentences and the tiny model, beside the
    last measured ferret figure."""
    out = run("bench/bench_ferret.py", "--model", tiny_model, "--n", "3", "--repeats", "1")
    line = next(x for x in out.splitlines() if x.startswith("ours:"))
    total, explain, evaluate = map(float, re.findall(r"([\d.]+) s = explain ([\d.]+) \+ evaluate ([\d.]+)", line)[0])
    assert total > 0 and abs(total - explain - evaluate) <= 0.02, line
    scores = re.findall(r"(input_x_gradient|ig): comp (-?[\d.]+) suff (-?[\d.]+) tau (-?[\d.]+|nan)", line)
    assert [s[0] for s in scores] == ["input_x_gradient", "ig"], line
    assert "ferret: not installed here" in out and "3 SST-2 test sentences" in out, out


def test_quick_bench_profiles_and_compares_on_a_tiny_model(tiny_model, tiny_data, tmp_path, monkeypatch):
    """bench_quick.py's profile sums its parts, and --without times the run with and without extra arguments: run
    in-process on the tiny model and data (the configs' model and data swapped for them)."""
    import subprocess
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_quick
    argv = ["uimer_im.py", "--task", "ic", "--shots", "1", "--strategy", "uniform", "--max-epochs", "2",
            "--model", tiny_model, "--data-dir", str(tiny_data)]
    monkeypatch.setitem(bench_quick.CONFIGS, "quick", argv)
    spent = bench_quick.profile(argv)
    assert set(spent) >= {"start-up (python, imports)", "test pass", "training (forward, L_int, backward, optimiser)"}
    assert all(v >= 0 for v in spent.values()) and any(k.startswith("dev evaluations (2)") for k in spent)
    out = subprocess.run([sys.executable, "-c", "import sys; sys.argv = ['bench_quick.py']; import bench_quick; "
                          f"bench_quick.CONFIGS['quick'] = {argv!r}; "
                          "sys.exit(bench_quick.cli(['--without', '--explain-examples 0']))"],
                         cwd=ROOT / "bench", capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "as is / with ARGS" in out.stdout


def test_quick_bench_compares_results_key_by_key():
    """Same bytes: identical; a key added by the change is named, not hidden; a changed or removed key is DIFFERENT."""
    sys.path.insert(0, str(ROOT / "bench"))
    from bench_quick import compare_results
    assert compare_results(b'{"test": 0.69}', b'{"test": 0.69}') == "identical"
    assert compare_results(b'{"test": 0.69}', b'{"test": 0.69, "plausibility": {}}') == \
        "every key of before identical; added: plausibility"
    assert compare_results(b'{"test": 0.69, "dev": 1}', b'{"test": 0.7}').startswith("DIFFERENT (changed or removed: "
                                                                                      "dev, test)")
