"""What the bench tools share (bench/sweep.py, bench/table.py, bench/records.py, bench/bench_*.py): flags that
declare their domain (shown in -h, checked once, at parsing), bad input as one line on stderr with exit code 2 and
no traceback, strict JSON read with errors that name the file, and JSON written atomically. No torch here.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


class UsageError(Exception):
    """A user mistake or a bad file: one line on stderr, exit code 2."""


def one_line(text) -> str:
    """A message on one line (line breaks and runs of blanks become one space)."""
    return " ".join(str(text).split())


def shown(text: str, limit: int = 60) -> str:
    """A value for an error message: repr, cut to `limit` characters (a 5,000-digit number stays one short line)."""
    text = str(text)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def first_paragraph(doc: str | None) -> str:
    """A module docstring's first paragraph on one line (for argparse's description: never cut mid-sentence)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line: `<prog>: error: <message> (see --help)`, exit code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see --help)\n")


# ------------------------------------------------------------------------------------------------------
# Domains: the values a flag accepts. `text` goes into --help and error messages; `convert(text)` returns
# the value or raises ValueError.
# ------------------------------------------------------------------------------------------------------
class Domain:
    def __init__(self, text: str, convert: Callable[[str], object]):
        self.text, self.convert = text, convert

    def argtype(self):
        def convert(value: str):
            try:
                return self.convert(value)
            except (ValueError, TypeError, OverflowError, OSError):  # OSError: e.g. a name too long for a path
                raise argparse.ArgumentTypeError(f"must be {self.text}, got {shown(value)}") from None
        convert.__name__ = self.text  # argparse names the type in some messages
        return convert


def add(parser, *names: str, domain: Domain | None = None, help: str, **kw):
    """parser.add_argument with the domain's text appended to the help ("... [an integer >= 1]")."""
    if domain is not None:
        kw["type"] = domain.argtype()
        help = f"{help} [{domain.text}]"
    return parser.add_argument(*names, help=help, **kw)


def _int_in(lo: int | None, hi: int | None):
    def convert(text: str) -> int:
        if not re.fullmatch(r"\s*[+-]?\d{1,30}\s*", text):  # no 5,000-digit numbers, no 1e3, no nan
            raise ValueError(text)
        value = int(text)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValueError(text)
        return value
    return convert


def Int(lo: int | None = None, hi: int | None = None) -> Domain:
    text = "an integer" + (f" in [{lo}, {hi}]" if lo is not None and hi is not None else
                           f" >= {lo}" if lo is not None else f" <= {hi}" if hi is not None else "")
    return Domain(text, _int_in(lo, hi))


def _text(value: str) -> str:
    if not value.strip() or any(c in value for c in "\n\r\x00"):
        raise ValueError(value)
    return value


TEXT = Domain("a non-empty string on one line", _text)


def _shell(allow_empty: bool):
    def convert(value: str) -> str:
        if "\x00" in value:
            raise ValueError(value)
        words = shlex.split(value)  # ValueError on an unbalanced quote or a trailing backslash
        if not words and not allow_empty:
            raise ValueError(value)
        return value
    return convert


SHELL_COMMAND = Domain("a non-empty shell command line (balanced quotes)", _shell(False))
SHELL_ARGS = Domain("shell words (balanced quotes; may be empty)", _shell(True))


def _path(value: str) -> Path:
    if not value.strip() or "\x00" in value or value.startswith("~"):
        raise ValueError(value)
    return Path(value)


def nearest_existing(path: Path) -> Path:
    """The path itself if it exists, else its nearest existing ancestor."""
    p = path.absolute()
    while not p.exists() and p.parent != p:
        p = p.parent
    return p


def _out_dir(value: str) -> Path:
    """A folder we can create (or that exists): nothing on the way is a plain file."""
    path = _path(value)
    base = nearest_existing(path)
    if not base.is_dir() or not os.access(base, os.W_OK | os.X_OK):
        raise ValueError(value)
    return path


def _out_file(suffix: str | None):
    def convert(value: str) -> Path:
        path = _path(value)
        if suffix and path.suffix.lower() != suffix:
            raise ValueError(value)
        if path.is_dir() or not path.absolute().parent.is_dir() or not os.access(path.absolute().parent, os.W_OK):
            raise ValueError(value)
        return path
    return convert


def _existing_dir(value: str) -> Path:
    path = _path(value)
    if not path.is_dir():
        raise ValueError(value)
    return path


def _existing_file(value: str) -> Path:
    path = _path(value)
    if not path.is_file():
        raise ValueError(value)
    return path


PATH = Domain("a path (no leading ~)", _path)
OUT_DIR = Domain("a folder that exists or can be created, not under a plain file (no leading ~)", _out_dir)
OUT_FILE = Domain("a file path in an existing, writable folder (not a folder; no leading ~)", _out_file(None))
OUT_PNG = Domain("a .png file path in an existing, writable folder (no leading ~)", _out_file(".png"))
EXISTING_DIR = Domain("an existing folder (no leading ~)", _existing_dir)
EXISTING_FILE = Domain("an existing file (no leading ~)", _existing_file)


def _device(value: str) -> str:
    if not re.fullmatch(r"auto|cpu|cuda(:\d{1,3})?", value):
        raise ValueError(value)
    return value


DEVICE = Domain("auto, cpu, cuda or cuda:N", _device)


def names_list(choices: list[str] | None = None) -> Callable[[str], list[str]]:
    """Comma-separated distinct non-empty names (of `choices` when given) -> list."""
    def convert(value: str) -> list[str]:
        names = [n.strip() for n in value.split(",")]
        if not names or any(not n for n in names) or len(set(names)) != len(names):
            raise ValueError(value)
        if choices is not None and not set(names) <= set(choices):
            raise ValueError(value)
        return names
    return convert


def Names(choices: list[str]) -> Domain:
    return Domain(f"comma-separated distinct names of {', '.join(choices)}", names_list(choices))


def int_list(lo: int, hi: int) -> Callable[[str], list[int]]:
    one = _int_in(lo, hi)

    def convert(value: str) -> list[int]:
        values = [one(v) for v in value.split(",")]
        if len(set(values)) != len(values):
            raise ValueError(value)
        return values
    return convert


def IntList(lo: int, hi: int) -> Domain:
    return Domain(f"comma-separated distinct integers in [{lo}, {hi}]", int_list(lo, hi))


SEEDS = IntList(0, 2**32 - 1)


# ------------------------------------------------------------------------------------------------------
# Files
# ------------------------------------------------------------------------------------------------------
def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"the number {text[:40]} is too large (not finite)")
    return value


def _no_constant(name: str):
    raise ValueError(f"non-finite number {name} (not strict JSON)")


def loads_strict(text: str):
    """json.loads that refuses NaN, Infinity and numbers too large to be finite (strict JSON)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def read_text(path: Path, what: str = "file") -> str:
    """A UTF-8 file's text; a missing, unreadable or undecodable file is one UsageError naming it."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise UsageError(f"{path}: is a folder, expected a {what}") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read the {what} ({e.strerror or e})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise UsageError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x})") from None


def read_json(path: Path, what: str = "JSON file", kind: type | None = dict):
    """A strict JSON file (UTF-8, complete, no NaN/Infinity) holding a `kind`; else one UsageError naming it."""
    text = read_text(path, what)
    if not text.strip():
        raise UsageError(f"{path}: empty {what}")
    try:
        value = loads_strict(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path}:{e.lineno}: not valid JSON ({e.msg}; truncated?)") from None
    except ValueError as e:
        raise UsageError(f"{path}: {one_line(e)}") from None
    if kind is not None and not isinstance(value, kind):
        raise UsageError(f"{path}: expected a JSON {'object' if kind is dict else kind.__name__}, "
                         f"got {type(value).__name__}")
    return value


def ensure_dir(path: Path, what: str) -> Path:
    """mkdir -p with one UsageError naming the path when the file system refuses (a plain file on the way, no
    permission, read-only)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"{what} {path}: a plain file is in the way") from None
    except OSError as e:
        raise UsageError(f"{what} {path}: cannot create it ({e.strerror or e})") from None
    return path


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file beside `path`, fsync, rename over it (mode 0644): a crash never leaves half a file."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    except OSError as e:
        raise UsageError(f"{path}: cannot write ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"{path}: cannot write ({e.strerror or e})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj, indent: int | None = 2) -> None:
    """Strict JSON (no NaN: ValueError), written atomically."""
    write_text_atomic(path, json.dumps(obj, indent=indent, allow_nan=False, ensure_ascii=False) + "\n")


# ------------------------------------------------------------------------------------------------------
# Entry point
# ------------------------------------------------------------------------------------------------------
def run_cli(main: Callable, prog: str, argv=None) -> int:
    """main(argv) -> exit code; a UsageError, or a path the file system refused, is one line on stderr, exit 2.
    argparse's own errors are one line too (OneLineParser) and exit with 2 through SystemExit."""
    try:
        return main(argv)
    except UsageError as e:
        print(f"{prog}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    except OSError as e:  # last resort: a path refused where no check named it first
        where = f"{e.filename}: " if e.filename else ""
        print(f"{prog}: error: {where}{one_line(e.strerror or e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
