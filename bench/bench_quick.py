"""Where the time of one UIMER run goes, and its wall time before and after a change, measured in one run.

    python bench/bench_quick.py                                   # profile the README quick config
    python bench/bench_quick.py --config nli100 --threads 1       # one NLI 100 run (IM, dev subsample), one thread
    python bench/bench_quick.py --before b13badb --repeats 3      # wall time of REF's tree vs this tree, interleaved
    python bench/bench_quick.py --without "--explain-examples 0"  # what writing explanations costs, interleaved

Profile: the run is executed in this process with timers around the steps that are not the method: start-up (a
separate `python -c "import uimer_im"`), the tokenizer and encoder load, reading and encoding the data
(`common.load_uimer_task`), the dev evaluations after every epoch and the test pass (`common.evaluate`), the
explanations of the first test examples (`common.explain_examples`); the rest of
`train_one_seed` is training (forward, L_int, backward, optimiser). Before/after: the same command runs in a copy of
the tree at git revision REF (`git archive`) and in this tree, alternately, `--repeats` times each; medians, their
ratio, and whether the two trees wrote the same results.json bytes (if not: whether every key of REF's kept its
value, and which keys were added). `--without ARGS`: the same, in this tree, with
and without ARGS appended (e.g. the cost of the explanations: `--without "--explain-examples 0"`). Absolute
seconds hold for this machine only.
"""
import contextlib
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from timing import run_bench  # noqa: E402

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


def _git_ref(value: str) -> str:
    if not re.fullmatch(r"[\w./~^@{}-]{1,200}", value) or value.startswith("-"):
        raise ValueError(value)
    return value


REF = tb.Domain("a git revision of this repository (a commit, tag or branch)", _git_ref)


def build_parser():
    p = tb.OneLineParser(prog="bench_quick.py", description=tb.first_paragraph(__doc__))
    p.add_argument("--config", choices=sorted(CONFIGS), default="quick", help="the run to measure: quick (the "
                   "README quick command) or nli100 (IM +Uniform (warm.) at NLI 100, dev subsample 1000)")
    tb.add(p, "--before", domain=REF, help="time REF's tree against this one instead of profiling")
    tb.add(p, "--without", domain=tb.SHELL_ARGS, help="time the run as it is against the run with these arguments "
           "appended (e.g. \"--explain-examples 0\"), alternately, in this tree")
    tb.add(p, "--repeats", default=1, domain=tb.Int(1, 100), help="with --before or --without: runs of each (they "
           "alternate)")
    tb.add(p, "--threads", domain=tb.Int(1, 4096), help="OMP/MKL threads of the run (default: torch's choice)")
    tb.add(p, "--data-dir", domain=tb.EXISTING_DIR, help="passed to the run (default: the shipped data/)")
    return p


def parse_args(argv=None):
    a = build_parser().parse_args(argv)
    if a.before and a.without is not None:
        raise tb.UsageError("give --before or --without, not both")
    return a


def profile(argv: list[str]) -> dict:
    """Run argv in this process with timers on the steps around the method; seconds per step."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {Path(argv[0]).stem}"], cwd=ROOT, check=True)
    startup = time.perf_counter() - t0
    sys.path.insert(0, str(ROOT))
    import common
    script = __import__(Path(argv[0]).stem)
    spent = {"load tokenizer and encoder": 0.0, "read, sample, encode data": 0.0, "explanations (IG and the own "
             "explainer)": 0.0}
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

    saved = {n: getattr(common, n) for n in ("load_tokenizer", "load_encoder", "load_uimer_task", "evaluate",
                                              "explain_examples")}
    common.load_tokenizer = timed(common.load_tokenizer, "load tokenizer and encoder")
    common.load_encoder = timed(common.load_encoder, "load tokenizer and encoder")
    common.load_uimer_task = timed(common.load_uimer_task, "read, sample, encode data")
    common.evaluate = timed(common.evaluate, into=evals)
    common.explain_examples = timed(common.explain_examples, "explanations (IG and the own explainer)")
    try:
        with tempfile.TemporaryDirectory() as out, open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
            t = time.perf_counter()
            script.main(script.parse_args(argv[1:] + ["--out-dir", out]))
            total = time.perf_counter() - t
    finally:
        for n, fn in saved.items():
            setattr(common, n, fn)
    spent[f"dev evaluations ({len(evals) - 1})"] = sum(evals[:-1])
    spent["test pass"] = evals[-1]
    spent["training (forward, L_int, backward, optimiser)"] = total - sum(spent.values())
    return {"start-up (python, imports)": startup, **spent}


def run_tree(tree: Path, argv: list[str], out: Path, env: dict) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, *argv, "--out-dir", str(out)], cwd=tree, env=env, capture_output=True,
                       text=True)
    if p.returncode:
        raise tb.UsageError(f"the run failed in {tree}: {tb.one_line(p.stderr.strip().splitlines()[-1:])}")
    return time.perf_counter() - t


def with_without(extra: list[str], argv: list[str], repeats: int, env: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        times = {"as is": [], "with ARGS": []}
        for r in range(repeats):
            for name, run in (("as is", argv), ("with ARGS", argv + extra)):
                times[name].append(run_tree(ROOT, run, Path(tmp) / f"{name.replace(' ', '-')}-{r}", env))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"{' '.join(argv)}\n{cpu_name()}, threads: {env.get('OMP_NUM_THREADS', 'default')}, {repeats} run(s) each")
    for name in times:
        print(f"  {name:9s}: median {med[name]:6.1f} s  {' '.join(f'{t:.1f}' for t in times[name])}")
    print(f"  ARGS = {' '.join(extra)}; as is / with ARGS = {med['as is'] / med['with ARGS']:.3f}")


def before_after(ref: str, argv: list[str], repeats: int, env: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True)
        if archive.returncode:
            raise tb.UsageError(f"--before {ref}: not a git revision of this repository")
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
          f"{compare_results(results['before'], results['after'])}")


def compare_results(before: bytes, after: bytes) -> str:
    """'identical' (same bytes); else whether every key of `before` kept its value in `after` (a key added by the
    change, e.g. plausibility, is named, not hidden); else DIFFERENT with the keys that changed."""
    if before == after:
        return "identical"
    old, new = json.loads(before), json.loads(after)
    changed = sorted(k for k in old if k not in new or json.dumps(old[k]) != json.dumps(new[k]))
    added = sorted(set(new) - set(old))
    if changed:
        return f"DIFFERENT (changed or removed: {', '.join(changed)})"
    return f"every key of before identical; added: {', '.join(added)}"


def main(a) -> None:
    run = CONFIGS[a.config] + (["--data-dir", str(a.data_dir)] if a.data_dir else [])
    env = dict(os.environ)
    if a.threads:
        for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[k] = os.environ[k] = str(a.threads)
    if a.before:
        return before_after(a.before, run, a.repeats, env)
    if a.without is not None:
        return with_without(shlex.split(a.without), run, a.repeats, env)
    spent = profile(run)
    total = sum(spent.values())
    print(f"{' '.join(run)}\n{cpu_name()}, threads: {env.get('OMP_NUM_THREADS', 'default')}")
    for k, sec in spent.items():
        print(f"  {k:48s} {sec:7.1f} s  {100 * sec / total:5.1f} %")
    print(f"  {'total':48s} {total:7.1f} s")


def cli(argv=None) -> int:
    return run_bench(main, parse_args, "bench_quick.py", argv)


if __name__ == "__main__":
    sys.exit(cli())
