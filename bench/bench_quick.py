"""Where the time of one UIMER run goes, and its wall time before and after a change, measured in one run.

    python bench/bench_quick.py                                   # profile the README quick config
    python bench/bench_quick.py --config nli100 --threads 1       # one NLI 100 run (IM, dev subsample), one thread
    python bench/bench_quick.py --before b13badb --repeats 3      # wall time of REF's tree vs this tree, interleaved

Profile: the run is executed in this process with timers around the steps that are not the method: start-up (a
separate `python -c "import uimer_im"`), the tokenizer and encoder load, reading and encoding the data
(`common.load_uimer_task`), the dev evaluations after every epoch and the test pass (`common.evaluate`); the rest of
`train_one_seed` is training (forward, L_int, backward, optimiser). Before/after: the same command runs in a copy of
the tree at git revision REF (`git archive`) and in this tree, alternately, `--repeats` times each; medians, their
ratio, and whether the two trees wrote the same results.json bytes. Absolute seconds hold for this machine only.
"""
import argparse
import contextlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "quick": ["uimer_im.py", "--task", "ic", "--shots", "1", "--strategy", "uniform"],
    "nli100": ["uimer_im.py", "--task", "nli", "--train-size", "100", "--strategy", "uniform", "--warmup", "paper",
               "--dev-size", "1000"],
}


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="bench_quick.py", description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="quick", help="the run to measure: quick (the "
                   "README quick command) or nli100 (IM +Uniform (warm.) at NLI 100, dev subsample 1000)")
    p.add_argument("--before", metavar="REF", help="a git revision of this repository: time its tree against this "
                   "one instead of profiling")
    p.add_argument("--repeats", type=positive_int, default=1, help="with --before: runs of each tree (an integer "
                   ">= 1; the trees alternate)")
    p.add_argument("--threads", type=positive_int, help="OMP/MKL threads of the run (an integer >= 1; default: "
                   "torch's choice)")
    p.add_argument("--data-dir", help="passed to the run (an existing folder; default: the shipped data/)")
    return p


def profile(argv: list[str]) -> dict:
    """Run argv in this process with timers on the steps around the method; seconds per step."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {Path(argv[0]).stem}"], cwd=ROOT, check=True)
    startup = time.perf_counter() - t0
    sys.path.insert(0, str(ROOT))
    import common
    script = __import__(Path(argv[0]).stem)
    spent = {"load tokenizer and encoder": 0.0, "read, sample, encode data": 0.0}
    evals = []

    def timed(fn, key=None, into=None):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                (into.append if into is not None else lambda s: spent.__setitem__(key, spent[key] + s))(
                    time.perf_counter() - t)
        return wrapper

    common.load_tokenizer = timed(common.load_tokenizer, "load tokenizer and encoder")
    common.load_encoder = timed(common.load_encoder, "load tokenizer and encoder")
    common.load_uimer_task = timed(common.load_uimer_task, "read, sample, encode data")
    common.evaluate = timed(common.evaluate, into=evals)
    with tempfile.TemporaryDirectory() as out, contextlib.redirect_stdout(open(os.devnull, "w")):
        t = time.perf_counter()
        script.main(script.parse_args(argv[1:] + ["--out-dir", out]))
        total = time.perf_counter() - t
    spent[f"dev evaluations ({len(evals) - 1})"] = sum(evals[:-1])
    spent["test pass"] = evals[-1]
    spent["training (forward, L_int, backward, optimiser)"] = total - sum(spent.values())
    return {"start-up (python, imports)": startup, **spent}


def run_tree(tree: Path, argv: list[str], out: Path, env: dict) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, *argv, "--out-dir", str(out)], cwd=tree, env=env, capture_output=True,
                       text=True)
    if p.returncode:
        raise SystemExit(f"bench_quick.py: error: the run failed in {tree}: {p.stderr.strip().splitlines()[-1:]}")
    return time.perf_counter() - t


def before_after(ref: str, argv: list[str], repeats: int, env: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True)
        if archive.returncode:
            raise SystemExit(f"bench_quick.py: error: --before {ref}: not a git revision of this repository")
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        times = {"before": [], "after": []}
        for r in range(repeats):
            for name, tree in (("before", old), ("after", ROOT)):
                times[name].append(run_tree(tree, argv, Path(tmp) / f"{name}-{r}", env))
        results = {name: next((Path(tmp) / f"{name}-0").rglob("results.json")).read_bytes() for name in times}
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{' '.join(argv)}\n{cpu_name()}, threads: {env.get('OMP_NUM_THREADS', 'default')}, {repeats} run(s) each")
    for name in times:
        print(f"  {name:6s} ({ref if name == 'before' else 'this tree'}): median {med[name]:6.1f} s  "
              f"{' '.join(f'{t:.1f}' for t in times[name])}")
    print(f"  after / before = {med['after'] / med['before']:.3f}; results.json "
          f"{'identical' if results['before'] == results['after'] else 'DIFFERENT'}")


def main(argv=None) -> int:
    a = build_parser().parse_args(argv)
    if a.data_dir is not None and not Path(a.data_dir).is_dir():
        print(f"bench_quick.py: error: --data-dir {a.data_dir}: no such folder", file=sys.stderr)
        return 2
    run = CONFIGS[a.config] + (["--data-dir", a.data_dir] if a.data_dir else [])
    env = dict(os.environ)
    if a.threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = os.environ[k] = str(a.threads)
    if a.before:
        before_after(a.before, run, a.repeats, env)
        return 0
    spent = profile(run)
    total = sum(spent.values())
    print(f"{' '.join(run)}\n{cpu_name()}, threads: {env.get('OMP_NUM_THREADS', 'default')}")
    for k, s in spent.items():
        print(f"  {k:48s} {s:7.1f} s  {100 * s / total:5.1f} %")
    print(f"  {'total':48s} {total:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
