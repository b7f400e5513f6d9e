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

