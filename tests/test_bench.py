"""The benchmark scripts run end to end on tiny models (they time nothing useful here; this only keeps them working):
each prints its table of ratios, one row per method, every ratio a positive finite number."""
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
