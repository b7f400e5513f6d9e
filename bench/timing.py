"""What the step-time benchmarks (bench_uimer.py, bench_regex.py, bench_smat.py, bench_paper_shapes.py) share: wait
for the device, the one interleaved timing loop, and their command-line entry point (one-line errors, libraries
kept quiet so that nothing is printed before that line)."""
from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox  # noqa: E402


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (for timing); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device | str) -> float:
    """Seconds of one call of `fn`, its device work included."""
    synchronize(device)
    t0 = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - t0


def interleaved_medians(steps: dict[str, Callable[[], object]], repeats: int, device: torch.device | str,
                        warmup: int = 1, abba: bool = False,
                        after_warmup: Callable[[], object] | None = None) -> dict[str, float]:
    """Median seconds per step function over `repeats` rounds. Within a round the steps run in turn (A B C; with
    `abba`, every other round in reverse order: A B, B A, ...), so load on the machine hits all alike. `warmup`
    rounds come first and are not counted; then `after_warmup()` (e.g. resetting the peak-memory counter)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for r in range(warmup + repeats):
        if r == warmup and after_warmup is not None:
            after_warmup()
        for name in (names[::-1] if abba and r % 2 else names):
            seconds = timed(steps[name], device)
            if r >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def quiet_libraries() -> None:
    """No progress bars or library warnings on stderr, so that an error stays the only line there."""
    import warnings
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def run_bench(main: Callable, parse_args: Callable, prog: str, argv=None, errors: tuple = ()) -> int:
    """parse_args(argv), then main(args): bad input (argparse, toolbox.UsageError, or one of `errors`, e.g.
    common.UsageError) is one line on stderr and exit code 2, never a traceback."""
    quiet_libraries()

    def run(a):
        try:
            main(parse_args(a))
        except errors as e:
            raise toolbox.UsageError(str(e)) from None
        return 0
    return toolbox.run_cli(run, prog, argv)
