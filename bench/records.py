"""Sweep records: the evidence of a finished job kept in the repository, under `results/<sweep>/`.

`results/<sweep>/jobs.json` is the sweep's layout (rows, columns, the paper's numbers, every job's row, column,
seed, stage and command), and `results/<sweep>/<job id>.json` one record per finished job: its results.json and
config.json as they were (paths made portable), the SHA-256 of the run's original files, and its test predictions
(id, gold, pred of every test example) compressed, so that bench/table.py recomputes every number and interval
of a table, the paired bootstrap over test examples included, from a clone without runs/. The format is
documented in results/README.md. bench/sweep.py writes records; bench/table.py reads them.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
import lzma
import os
import re
import shlex
from pathlib import Path

from toolbox import REPO, UsageError, ensure_dir, loads_strict, read_json, read_text, write_json_atomic

RECORD_FORMAT = "sweep-record/1"
LAYOUT_FORMAT = "sweep-layout/1"
PREDICTIONS_ENCODING = "json+xz+base64"
SWEEP_DIR_TAG, ELSEWHERE_TAG = "{sweep_dir}", "{elsewhere}"


# ------------------------------------------------------------------------------------------------------
# A job's run directory
# ------------------------------------------------------------------------------------------------------
def results_files(job_dir: Path) -> list[Path]:
    return sorted(job_dir.rglob("results.json")) if job_dir.is_dir() else []


def find_results(job_dir: Path) -> Path | None:
    """The job's results.json if one below `job_dir` is complete (strict JSON, an object), else None. For the
    launcher: an incomplete job is rerun."""
    for path in results_files(job_dir):
        try:
            if isinstance(loads_strict(path.read_text(encoding="utf-8")), dict):
                return path
        except (OSError, ValueError):
            continue
    return None


def results_file(job_dir: Path) -> Path | None:
    """For the table: the job's results.json, None if it has none yet; a corrupt one is an error naming it."""
    files = results_files(job_dir)
    if files:
        read_json(files[0], "results.json")
        return files[0]
    return None


def read_predictions(path: Path) -> list[dict]:
    """predictions.jsonl: one strict JSON object per line with id, gold, pred; errors name file:line."""
    rows = []
    for number, line in enumerate(read_text(path, "predictions file").split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = loads_strict(line)
        except ValueError as e:
            raise UsageError(f"{path}:{number}: not strict JSON ({e}; truncated?)") from None
        if not isinstance(row, dict) or not {"id", "gold", "pred"} <= set(row):
            raise UsageError(f"{path}:{number}: expected an object with id, gold, pred (and p_gold)")
        rows.append(row)
    if not rows:
        raise UsageError(f"{path}: no predictions")
    return rows


def infer_kind(preds: list[dict]) -> str:
    """The metric of a sweep that does not declare it: list gold -> span F1, float gold without p_gold -> Pearson r,
    else accuracy."""
    first = preds[0]
    if isinstance(first["gold"], list):
        return "span_f1"
    if isinstance(first["gold"], float) and first.get("p_gold") is None:
        return "pearson"
    return "accuracy"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------------------------------
# Portable paths: nothing machine-specific goes into results/
# ------------------------------------------------------------------------------------------------------
def portable_path(text: str, sweep_dir: Path, repo: Path = REPO) -> str:
    """An absolute path -> `{sweep_dir}/...` below the sweep directory, relative below the repository, else
    `{elsewhere}/<last part>`; anything else as it is."""
    if not os.path.isabs(text):
        return text
    path = Path(os.path.normpath(text))
    for base, tag in ((Path(os.path.normpath(sweep_dir)), SWEEP_DIR_TAG), (repo, None)):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        if tag is None:
            return str(rel)
        return tag if str(rel) == "." else f"{tag}/{rel}"
    return f"{ELSEWHERE_TAG}/{path.name}"


def portable_command(command: str, sweep_dir: Path) -> str:
    """A shell command with every absolute path in it made portable (also in --flag=PATH)."""
    words = []
    for word in shlex.split(command):
        flag, eq, value = word.partition("=")
        words.append(f"{flag}={portable_path(value, sweep_dir)}" if eq and flag.startswith("-")
                     else portable_path(word, sweep_dir))
    return shlex.join(words)


def portable(value, sweep_dir: Path):
    """Every string of a JSON value that is an absolute path, made portable."""
    if isinstance(value, dict):
        return {k: portable(v, sweep_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [portable(v, sweep_dir) for v in value]
    if isinstance(value, str):
        return portable_path(value, sweep_dir)
    return value


# ------------------------------------------------------------------------------------------------------
# Layout (jobs.json)
# ------------------------------------------------------------------------------------------------------
def _need(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise UsageError(f"{path}: {what} (a damaged jobs.json? bench/sweep.py writes it)")


def is_str_list(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def check_layout(manifest, path: Path) -> dict:
    """A jobs.json (of runs/ or results/) with every key the tools read, of the right type; else a UsageError
    naming the file and the key."""
    _need(isinstance(manifest, dict), path, "expected a JSON object")
    for key, ok in (("sweep", lambda v: isinstance(v, str) and v), ("metric_key", lambda v: is_str_list(v) and v),
                    ("scale", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v != 0),
                    ("summary", lambda v: v in ("mean", "median")), ("baseline", lambda v: isinstance(v, str)),
                    ("stages", lambda v: is_str_list(v) and v), ("rows", is_str_list),
                    ("columns", lambda v: isinstance(v, dict) and all(isinstance(m, str) for m in v.values())),
                    ("paper", lambda v: isinstance(v, dict) and all(isinstance(p, dict) for p in v.values())),
                    ("jobs", lambda v: isinstance(v, dict))):
        _need(key in manifest and ok(manifest[key]), path, f"key {key!r} is missing or of the wrong type")
    for jid, job in manifest["jobs"].items():
        _need(isinstance(job, dict), path, f"job {jid!r} is not an object")
        for key, ok in (("row", lambda v: isinstance(v, str)), ("column", lambda v: isinstance(v, str)),
                        ("seed", lambda v: isinstance(v, int) and not isinstance(v, bool)),
                        ("stage", lambda v: v in manifest["stages"]), ("command", lambda v: isinstance(v, str)),
                        ("table", lambda v: isinstance(v, bool)), ("needs", is_str_list)):
            if key in ("table", "needs") and key not in job:
                continue
            _need(key in job and ok(job[key]), path, f"job {jid!r}: key {key!r} is missing or of the wrong type")
    return manifest


def read_layout(path: Path) -> dict:
    return check_layout(read_json(path, "jobs.json"), path)


def layout_of(manifest: dict, sweep_dir: Path) -> dict:
    """results/<sweep>/jobs.json: runs/'s jobs.json without what is machine-specific (cwd, argv, the records
    folder), commands with portable paths."""
    jobs = {jid: {k: (portable_command(v, sweep_dir) if k == "command" else v) for k, v in job.items() if k != "argv"}
            for jid, job in manifest["jobs"].items()}
    skip = {"cwd", "records", "jobs", "format"}
    return {"format": LAYOUT_FORMAT, **{k: v for k, v in manifest.items() if k not in skip}, "jobs": jobs}


# ------------------------------------------------------------------------------------------------------
# Predictions, compressed: columns id, gold, pred as JSON, xz, base64
# ------------------------------------------------------------------------------------------------------
ID_PATTERN = re.compile(r"(.*?)(0|[1-9]\d{0,17})")
# xz at its strongest setting, with a 1 MiB window (a payload is far smaller; the default 64 MiB costs time only)
XZ_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "dict_size": 1 << 20}]


def encode_ids(ids: list) -> dict:
    """Ids as runs [prefix, first number, count] where they read `<prefix><n>`, `<prefix><n+1>`, ...;
    else the list."""
    runs: list[list] = []
    for i in ids:
        m = ID_PATTERN.fullmatch(i) if isinstance(i, str) else None
        if m is None:
            return {"list": ids}
        prefix, n = m.group(1), int(m.group(2))
        if runs and runs[-1][0] == prefix and runs[-1][1] + runs[-1][2] == n:
            runs[-1][2] += 1
        else:
            runs.append([prefix, n, 1])
    return {"runs": runs} if 3 * len(runs) < len(ids) else {"list": ids}


def decode_ids(enc: dict) -> list:
    if "list" in enc:
        return list(enc["list"])
    return [f"{prefix}{n + k}" for prefix, n, count in enc["runs"] for k in range(count)]


def encode_column(values: list, index: dict) -> dict:
    """Labels and lists of labels (tags) as indices into the record's vocabulary; anything else as it is."""
    if all(isinstance(v, str) for v in values):
        return {"labels": [index[v] for v in values]}
    if all(is_str_list(v) for v in values):
        return {"lengths": [len(v) for v in values], "labels": [index[t] for v in values for t in v]}
    return {"values": values}


def decode_column(enc: dict, vocab: list[str]) -> list:
    if "values" in enc:
        return list(enc["values"])
    labels = [vocab[i] for i in enc["labels"]]
    if "lengths" not in enc:
        return labels
    out, start = [], 0
    for n in enc["lengths"]:
        out.append(labels[start:start + n])
        start += n
    if start != len(labels):
        raise ValueError("lengths do not add up to the labels")
    return out


def encode_predictions(rows: list[dict]) -> dict:
    strings = set()
    for r in rows:
        for key in ("gold", "pred"):
            value = r[key]
            if isinstance(value, str):
                strings.add(value)
            elif is_str_list(value):
                strings.update(value)
    vocab = sorted(strings)
    index = {s: i for i, s in enumerate(vocab)}
    payload = {"vocab": vocab, "id": encode_ids([r["id"] for r in rows]),
               "gold": encode_column([r["gold"] for r in rows], index),
               "pred": encode_column([r["pred"] for r in rows], index)}
    raw = json.dumps(payload, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
    data = base64.b64encode(lzma.compress(raw, filters=XZ_FILTERS)).decode("ascii")
    return {"n": len(rows), "kind": infer_kind(rows), "encoding": PREDICTIONS_ENCODING, "data": data}


def decode_predictions(enc: dict, path: Path) -> list[dict]:
    """The rows {id, gold, pred} of a record's predictions; a damaged payload is an error naming the record."""
    try:
        if enc.get("encoding") != PREDICTIONS_ENCODING:
            raise ValueError(f"unknown encoding {enc.get('encoding')!r}")
        payload = loads_strict(lzma.decompress(base64.b64decode(enc["data"], validate=True)).decode("utf-8"))
        vocab = payload["vocab"]
        ids = decode_ids(payload["id"])
        gold, pred = decode_column(payload["gold"], vocab), decode_column(payload["pred"], vocab)
        if not len(ids) == len(gold) == len(pred) == enc["n"]:
            raise ValueError(f"{len(ids)} ids, {len(gold)} gold, {len(pred)} pred, n = {enc['n']}")
    except (ValueError, KeyError, TypeError, IndexError, lzma.LZMAError, binascii.Error, UnicodeDecodeError) as e:
        raise UsageError(f"{path}: damaged predictions ({type(e).__name__}: {e})") from None
    return [{"id": i, "gold": g, "pred": p} for i, g, p in zip(ids, gold, pred, strict=True)]


# ------------------------------------------------------------------------------------------------------
# Records
# ------------------------------------------------------------------------------------------------------
def make_record(sweep: str, jid: str, entry: dict, job_dir: Path, sweep_dir: Path) -> dict:
    """The record of a finished job (its results.json, config.json, predictions.jsonl beside it)."""
    results_path = results_file(job_dir)
    if results_path is None:
        raise UsageError(f"{job_dir}: no results.json below it (the job has not finished)")
    run = results_path.parent
    results = read_json(results_path, "results.json")
    files = {"results.json": sha256(results_path)}
    config = None
    if (run / "config.json").is_file():
        config = portable(read_json(run / "config.json", "config.json"), sweep_dir)
        files["config.json"] = sha256(run / "config.json")
    predictions = None
    if (run / "predictions.jsonl").is_file():
        predictions = encode_predictions(read_predictions(run / "predictions.jsonl"))
        files["predictions.jsonl"] = sha256(run / "predictions.jsonl")
    return {"format": RECORD_FORMAT, "sweep": sweep, "job": jid, "row": entry["row"], "column": entry["column"],
            "seed": entry["seed"], "stage": entry["stage"], "command": portable_command(entry["command"], sweep_dir),
            "run": str(run.relative_to(job_dir)), "sha256": files, "results": portable(results, sweep_dir),
            "config": config, "predictions": predictions}


def record_path(records_dir: Path, jid: str) -> Path:
    return records_dir / f"{jid}.json"


def write_record(records_dir: Path, record: dict) -> Path:
    path = record_path(ensure_dir(records_dir, "records folder"), record["job"])
    write_json_atomic(path, record, indent=1)
    return path


def read_record(path: Path, jid: str, job: dict | None = None) -> dict:
    """A record, checked: strict JSON, its format, the job it says it is; with `job` (the layout's entry of that
    job), the same row, column, seed and command. A damaged or mismatched record is an error naming it."""
    record = read_json(path, "record")
    checks = (("format", lambda v: v == RECORD_FORMAT), ("job", lambda v: v == jid),
              ("results", lambda v: isinstance(v, dict)), ("command", lambda v: isinstance(v, str)),
              ("predictions", lambda v: v is None or (isinstance(v, dict) and {"n", "encoding", "data"} <= set(v))))
    for key, ok in checks:
        if key not in record or not ok(record[key]):
            raise UsageError(f"{path}: not a record of job {jid} (key {key!r} missing or wrong; see results/README.md)")
    if job is not None:
        for key in ("row", "column", "seed", "command"):
            if record.get(key) != job[key]:
                raise UsageError(f"{path}: recorded with {key} {record.get(key)!r}, but the sweep's jobs.json has "
                                 f"{job[key]!r}; remove the record to rerun the job, or record it again")
    return record
