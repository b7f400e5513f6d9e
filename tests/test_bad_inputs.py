"""Bad input never crashes and never passes silently: one table, one row per case (script, arguments, a corruption of
the data, the expected outcome), across the five scripts.

- error rows: exit code 2, exactly one line on stderr naming what is wrong (and where), no traceback, no
  results.json written;
- edge rows: exit code 0 and the edge case counted in results.json.

The rows run in-process through each script's cli() (validation happens before any model is loaded, so most rows take
milliseconds); a few run as real subprocesses at the end. A tiny random model and tiny data keep the edge rows fast.
Corruptions named `out:...` act on the run's --out-dir (a script folder that is a file, a lock held by another
holder), `env:...` on the process (a locale whose encoding is not UTF-8). Further down: a table of hostile arguments
for every flag of every script (no traceback, ever), the word -> wordpiece rule with the real tokenizer, and
sparsemax / 1.5-entmax at extreme but finite coefficients.
"""
import dataclasses
import fcntl
import io
import json
import math
import os
import pickle
import random
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import FIXTURES, write_tiny_esnli, write_tiny_snips
from test_regex import write_tiny_text_data
from test_smat import base as smat_base
from test_smat import (
    bisection_reference,
    brute_force_simplex_projection,
    closed_form_jacobians,
    write_tiny_eraser,
    write_tiny_imdb,
    write_tiny_mlqe,
)

import common
import regex_robust as rx
import smat_jax_free as sm
import uimer_dm as dm
import uimer_gb as gb
import uimer_im as im

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"im": im, "gb": gb, "dm": dm, "rx": rx, "sm": sm}


# ---------------------------------------------------------------------------------------------- data corruptions
def edit_line(path: Path, line: int, text: str) -> None:
    lines = path.read_bytes().decode("utf-8").split("\n")  # not splitlines(): U+2028 and friends are not line breaks
    lines = lines[:-1] if lines[-1] == "" else lines
    lines[line - 1] = text
    path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


def prepend_bytes(path: Path, data: bytes) -> None:
    path.write_bytes(data + path.read_bytes())


def put_bytes(path: Path, line: int, data: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[line - 1] = data
    path.write_bytes(b"\n".join(lines))


def put_text(path: Path, line: int, old: str, new: str) -> None:
    """Replace `old` by `new` in line `line` (1-based, lines split on \\n only) of a UTF-8 file."""
    lines = path.read_bytes().decode("utf-8").split("\n")
    assert old in lines[line - 1], (path, line, old)
    lines[line - 1] = lines[line - 1].replace(old, new, 1)
    path.write_bytes("\n".join(lines).encode("utf-8"))


def mlqe_edit(d: Path, line: int, edit) -> None:
    """Rewrite line `line` of the en-de train TSV inside its archive: edit(bytes) -> bytes."""
    path = d / "mlqe_pe" / "data" / "direct-assessments" / "train" / "en-de-train.tar.gz"
    with tarfile.open(path) as tar:
        member = tar.getmembers()[0]
        lines = tar.extractfile(member).read().split(b"\n")
    lines[line - 1] = edit(lines[line - 1])
    data = b"\n".join(lines)
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member.name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))


def eraser_row(path: Path, line: int, **change) -> None:
    rows = path.read_text().splitlines()
    r = json.loads(rows[line - 1])
    ev = r["evidences"][0][0]
    ev.update(change)
    rows[line - 1] = json.dumps(r)
    path.write_text("\n".join(rows) + "\n")


ZW = "\u200b"  # ZERO WIDTH SPACE: not whitespace for str.split(), dropped by BERT's tokenizer (category Cf)
SNIPS = lambda d: d / "snips"  # noqa: E731
ESNLI_TRAIN = lambda d: d / "esnli" / "train_sample_highlights" / "esnli_train_first1000_highlights.jsonl"  # noqa: E731
def custom_copy(d: Path, split: str, line: int, text: str) -> None:
    """A copy of the jsonl_words fixture as d/mine, with one line of one split replaced."""
    shutil.copytree(FIXTURES / "rationale_data" / "jsonl_words", d / "mine")
    edit_line(d / "mine" / f"{split}.jsonl", line, text)


CORRUPT = {
    "none": lambda d: None,
    "custom_bad_json": lambda d: custom_copy(d, "train", 3, '{"text": "a b", "label": '),
    "custom_rationale_length": lambda d: custom_copy(d, "train", 2, json.dumps({"text": "two words", "label": (
        FIXTURES / "rationale_data" / "jsonl_words" / "labels.txt").read_text().split()[0], "rationale": [1]})),
    "custom_unseen_label": lambda d: custom_copy(d, "test", 1, json.dumps({"text": "a b", "label": "never-seen"})),
    "bom_label_file": lambda d: prepend_bytes(SNIPS(d) / "intent_label.txt", b"\xef\xbb\xbf"),
    "bom_seq_in": lambda d: prepend_bytes(SNIPS(d) / "train" / "seq.in", b"\xef\xbb\xbf"),
    "bad_utf8_seq_in": lambda d: put_bytes(SNIPS(d) / "train" / "seq.in", 3, b"book a \xff\xfe table"),
    "seq_out_short": lambda d: (SNIPS(d) / "train" / "seq.out").write_text(
        "".join((SNIPS(d) / "train" / "seq.out").read_text().splitlines(keepends=True)[:-1])),
    "unknown_intent": lambda d: edit_line(SNIPS(d) / "train" / "label", 2, "OrderPizza"),
    "bad_bio": lambda d: edit_line(SNIPS(d) / "train" / "seq.out", 1, "O X-entity_name I-entity_name I-entity_name O O "
                                                                        "B-playlist I-playlist O"),
    "empty_sentence": lambda d: (edit_line(SNIPS(d) / "train" / "seq.in", 4, ""),
                                 edit_line(SNIPS(d) / "train" / "seq.out", 4, "")),
    "one_word_and_no_rationale": lambda d: (edit_line(SNIPS(d) / "train" / "seq.in", 5, "weather"),
                                            edit_line(SNIPS(d) / "train" / "seq.out", 5, "O"),
                                            edit_line(SNIPS(d) / "train" / "seq.in", 6, "zzz"),
                                            edit_line(SNIPS(d) / "train" / "seq.out", 6, "O")),
    "esnli_truncated": lambda d: ESNLI_TRAIN(d).write_text(ESNLI_TRAIN(d).read_text()[:-30]),
    "esnli_label": lambda d: edit_line(ESNLI_TRAIN(d), 2, json.dumps({"premise": "a b", "hypothesis": "c d",
                                                                      "label": "maybe"})),
    "esnli_number": lambda d: edit_line(ESNLI_TRAIN(d), 2, json.dumps({"premise": 5, "hypothesis": "c d",
                                                                       "label": "neutral"})),
    "esnli_not_object": lambda d: edit_line(ESNLI_TRAIN(d), 3, "[1, 2]"),
    "esnli_bad_utf8": lambda d: put_bytes(ESNLI_TRAIN(d), 2,
                                          b'{"premise": "a \xff b", "hypothesis": "c", "label": "neutral"}'),
    "sst2_label": lambda d: edit_line(d / "sst2" / "stsa.binary.train", 2, "2 a fine film"),
    "sst2_empty": lambda d: edit_line(d / "sst2" / "stsa.binary.train", 3, "1 "),
    "sst2_bom": lambda d: prepend_bytes(d / "sst2" / "stsa.binary.train", b"\xef\xbb\xbf"),
    "sst2_bad_utf8": lambda d: put_bytes(d / "sst2" / "stsa.binary.dev", 2, b"1 caf\xe9 is good"),
    "imdb_label_pos": lambda d: edit_line(d / "imdb" / "imdb_train.jsonl", 2, json.dumps({"id": "x", "text": "good",
                                                                                          "label": "pos"})),
    "imdb_label_bool": lambda d: edit_line(d / "imdb" / "imdb_test.jsonl", 1, json.dumps({"id": "x", "text": "good",
                                                                                          "label": True})),
    "imdb_truncated": lambda d: (d / "imdb" / "imdb_test.jsonl").write_text(
        (d / "imdb" / "imdb_test.jsonl").read_text()[:-20]),
    "eraser_doc_bad_utf8": lambda d: put_bytes(next((d / "eraser_movies" / "docs").glob("test_0*")), 1,
                                               b"i saw \xff it"),
    "eraser_bad_offsets": lambda d: edit_line(d / "eraser_movies" / "val.jsonl", 1, json.dumps(
        {"annotation_id": "val_0.txt", "classification": "POS",
         "evidences": [[{"start_token": "a", "end_token": 2}]]})),
    "eraser_missing_doc": lambda d: edit_line(d / "eraser_movies" / "train.jsonl", 1, json.dumps(
        {"annotation_id": "nope.txt", "classification": "POS", "evidences": []})),
    # ---- issue 24: Unicode line separators are not line breaks; every reader names the line of a bad byte
    "u2028_then_bad_intent": lambda d: (put_text(SNIPS(d) / "train" / "seq.in", 2, " ", "\u2028"),
                                        put_text(SNIPS(d) / "train" / "seq.in", 3, " ", "\x85"),
                                        put_text(SNIPS(d) / "train" / "seq.in", 4, " ", "\x0c\x1c"),
                                        edit_line(SNIPS(d) / "train" / "label", 5, "OrderPizza")),
    "crlf_then_bad_bio": lambda d: ((SNIPS(d) / "train" / "seq.out").write_bytes(
        (SNIPS(d) / "train" / "seq.out").read_bytes().replace(b"\n", b"\r\n")),
        put_text(SNIPS(d) / "train" / "seq.out", 6, "O", "Q")),
    "sst2_u2029_then_bad_label": lambda d: (put_text(d / "sst2" / "stsa.binary.train", 2, " and ", "\u2029and\x0b"),
                                            edit_line(d / "sst2" / "stsa.binary.train", 4, "2 a fine film")),
    "imdb_bad_utf8": lambda d: put_bytes(d / "imdb" / "imdb_train.jsonl", 3,
                                         b'{"id": "x", "text": "caf\xe9 good", "label": 1}'),
    "eraser_jsonl_bad_utf8": lambda d: put_bytes(d / "eraser_movies" / "val.jsonl", 2, b'{"annotation_id": "\xff"}'),
    "eraser_beyond_doc": lambda d: eraser_row(d / "eraser_movies" / "val.jsonl", 1, end_token=99),
    "eraser_other_doc": lambda d: eraser_row(d / "eraser_movies" / "test.jsonl", 2, docid="test_5.txt"),
    "eraser_bool_offset": lambda d: eraser_row(d / "eraser_movies" / "train.jsonl", 1, start_token=True),
    "zero_width_sf": lambda d: (edit_line(SNIPS(d) / "train" / "seq.in", 3, f"{ZW} {ZW}"),
                                edit_line(SNIPS(d) / "train" / "seq.out", 3, "O O"),
                                edit_line(SNIPS(d) / "train" / "seq.in", 7, f"play some {ZW} music by queen \ufffd"),
                                edit_line(SNIPS(d) / "train" / "seq.out", 7, "O O O O O B-artist O")),
    "sst2_zero_width": lambda d: edit_line(d / "sst2" / "stsa.binary.train", 2, f"1 {ZW} a warm {ZW} film"),
    # SMaT (its own copy of the shared data)
    "sm_mlqe_bad_utf8": lambda d: mlqe_edit(d, 3, lambda b: b.replace(b"the cat", b"the \xff cat")),
    "sm_mlqe_u2028_then_bad_z": lambda d: (mlqe_edit(d, 2, lambda b: b.replace(b"the cat", "the\u2028cat".encode())),
                                           mlqe_edit(d, 4, lambda b: b.rsplit(b"\t", 2)[0] + b"\tx\t-0.3")),
    "sm_mlqe_nan_z": lambda d: mlqe_edit(d, 5, lambda b: b.rsplit(b"\t", 2)[0] + b"\tnan\t-0.3"),
    "sm_imdb_bad_utf8": lambda d: put_bytes(d / "imdb" / "imdb_test.jsonl", 4,
                                            b'{"id": "x", "text": "\xc3(", "label": 1}'),
    "sm_eraser_beyond_doc": lambda d: eraser_row(d / "eraser_movies" / "test.jsonl", 1, end_token=50),
}


# ---------------------------------------------------------------------------------------------- the table
E, OK = "error", "ok"
DEVICE_ERR = "--device must be auto, cpu, cuda or cuda:N (N in [0, 1023]"
U_FAST = ["--max-epochs", "1", "--eval-batch-size", "64"]
ROWS = [  # (id, script, args, corruption, expected, what the message or the results must show)
    # ---- the UIMER files on your own data (--task custom, docs/own_data.md)
    ("im-custom-no-data", "im", ["--task", "custom"], "none", E, "--task custom needs --data"),
    ("gb-data-with-paper-task", "gb", ["--data", "{fix}/jsonl_words"], "none", E, "--data is for --task custom"),
    ("dm-custom-shots-and-size", "dm", ["--task", "custom", "--data", "{fix}/jsonl_words", "--shots", "1",
                                        "--train-size", "5"], "none", E, "give --shots or --train-size, not both"),
    ("im-custom-no-folder", "im", ["--task", "custom", "--data", "{tmp}/no-such-data"], "none", E,
     "no-such-data: not an existing folder"),
    ("gb-custom-format", "gb", ["--task", "custom", "--data", "{fix}/jsonl_words", "--data-format", "csv"], "none", E,
     "invalid choice: 'csv'"),
    ("im-custom-wrong-format", "im", ["--task", "custom", "--data", "{fix}/jsonl_words", "--data-format", "eraser"],
     "none", E, "no documents"),
    ("dm-custom-too-many", "dm", ["--task", "custom", "--data", "{fix}/jsonl_words", "--train-size", "100000"], "none",
     E, "--train-size 100000: the training split holds"),
    ("gb-custom-shots-short", "gb", ["--task", "custom", "--data", "{fix}/jsonl_words", "--shots", "500"], "none", E,
     "--shots 500: the training pool"),
    ("im-custom-bad-json", "im", ["--task", "custom", "--data", "{data}/mine"], "custom_bad_json", E,
     "mine/train.jsonl:3: malformed JSON"),
    ("gb-custom-rationale-length", "gb", ["--task", "custom", "--data", "{data}/mine"], "custom_rationale_length", E,
     "mine/train.jsonl:2:"),
    ("dm-custom-unseen-label", "dm", ["--task", "custom", "--data", "{data}/mine"], "custom_unseen_label", E,
     "mine/test.jsonl:1:"),
    ("im-custom-text-column", "im", ["--task", "custom", "--data", "{fix}/hf_disk", "--data-format", "hf",
                                     "--text-column", "nope"], "none", E, "nope"),
    # ---- UIMER-IM: flags
    ("im-batch0", "im", ["--batch-size", "0"], "none", E, "--batch-size"),
    ("im-evalbatch0", "im", ["--eval-batch-size", "0"], "none", E, "--eval-batch-size"),
    ("im-epochs0", "im", ["--max-epochs", "0"], "none", E, "--max-epochs"),
    ("im-dropout2", "im", ["--dropout", "2"], "none", E, "--dropout"),
    ("im-dropout-neg", "im", ["--dropout", "-0.1"], "none", E, "--dropout"),
    ("im-lr-nan", "im", ["--lr", "nan"], "none", E, "--lr"),
    ("im-lr-inf", "im", ["--lr", "inf"], "none", E, "--lr"),
    ("im-lr0", "im", ["--lr", "0"], "none", E, "--lr"),
    ("im-lower-bound-neg", "im", ["--lower-bound", "-1"], "none", E, "--lower-bound"),
    ("im-lower-bound-1", "im", ["--lower-bound", "1"], "none", E, "--lower-bound"),
    ("im-seed-overflow", "im", ["--seed", "99999999999999999999999"], "none", E, "--seed"),
    ("im-seed-neg", "im", ["--seed", "-1"], "none", E, "--seed"),
    ("im-seeds-dup", "im", ["--seeds", "55,55"], "none", E, "distinct"),
    ("im-seeds-text", "im", ["--seeds", "1,x"], "none", E, "--seeds"),
    ("im-num-samples0", "im", ["--num-samples", "0"], "none", E, "--num-samples"),
    ("im-epsilon-inf", "im", ["--epsilon", "inf"], "none", E, "--epsilon"),
    ("im-epsilon-neg", "im", ["--epsilon", "-1"], "none", E, "--epsilon"),
    ("im-alpha-nan", "im", ["--alpha", "nan"], "none", E, "--alpha"),
    ("im-patience-neg", "im", ["--patience", "-1"], "none", E, "--patience"),
    ("im-maxlen1", "im", ["--max-len", "1"], "none", E, "--max-len"),
    ("im-maxlen-huge", "im", ["--max-len", "100000"], "none", E, "position limit of 512"),
    ("im-shots0", "im", ["--shots", "0"], "none", E, "--shots"),
    ("im-shots-text", "im", ["--shots", "x"], "none", E, "--shots"),
    ("im-trainsize0", "im", ["--task", "nli", "--train-size", "0"], "none", E, "--train-size"),
    ("im-warmup-neg", "im", ["--warmup-epochs", "-1"], "none", E, "--warmup-epochs"),
    ("im-warmup-word", "im", ["--warmup-epochs", "soon"], "none", E, "--warmup-epochs"),
    ("im-warmupfrac1", "im", ["--warmup-fraction", "1"], "none", E, "--warmup-fraction"),
    ("im-warmupfrac-nan", "im", ["--warmup-fraction", "nan"], "none", E, "--warmup-fraction"),
    ("im-ratfrac0", "im", ["--max-rationale-fraction", "0"], "none", E, "--max-rationale-fraction"),
    ("im-mlm-steps0", "im", ["--mlm-adapt-steps", "0"], "none", E, "--mlm-adapt-steps"),
    ("im-maxeval0", "im", ["--max-eval-examples", "0"], "none", E, "--max-eval-examples"),
    ("im-device", "im", ["--device", "tpu"], "none", E, "--device"),
    ("im-strategy", "im", ["--strategy", "lime"], "none", E, "invalid choice"),
    ("im-flag", "im", ["--lambda", "1"], "none", E, "unrecognized"),
    ("im-task", "im", ["--task", "qa"], "none", E, "invalid choice"),
    ("im-bert-no-mlm", "im", ["--strategy", "bert"], "none", E, "masked LM"),
    ("im-model-missing", "im", ["--model", "{tmp}/no-such-model"], "none", E, "does not exist"),
    ("im-outdir-file", "im", ["--out-dir", "{file}/runs"], "none", E, "--out-dir"),
    ("im-datadir", "im", ["--data-dir", "{tmp}/nowhere"], "none", E, "--data-dir"),
    ("im-outdir-tilde", "im", ["--out-dir=~/runs"], "none", E, "no leading ~"),  # not expanded after '='
    ("im-datadir-tilde", "im", ["--data-dir=~"], "none", E, "no leading ~"),
    ("im-shots-pool", "im", ["--shots", "5"], "none", E, "--allow-smaller"),
    ("im-nli-pool", "im", ["--task", "nli", "--train-size", "100000"], "none", E, "--allow-smaller"),
    # ---- UIMER-IM: data
    ("im-bom-seq", "im", U_FAST, "bom_seq_in", E, "seq.in:1: starts with a UTF-8 byte-order mark"),
    ("im-utf8", "im", U_FAST, "bad_utf8_seq_in", E, "seq.in:3: not valid UTF-8"),
    ("im-lines", "im", U_FAST, "seq_out_short", E, "seq.in has 14 lines, seq.out 13"),
    ("im-intent", "im", U_FAST, "unknown_intent", E, "label:2: unknown intent label 'OrderPizza'"),
    ("im-bio", "im", U_FAST, "bad_bio", E, "seq.out:1: malformed BIO tag 'X-entity_name'"),
    ("im-empty", "im", U_FAST, "empty_sentence", E, "seq.in:4: empty sentence"),
    ("im-esnli-trunc", "im", ["--task", "nli", "--train-size", "6", *U_FAST], "esnli_truncated", E,
     "esnli_train_first1000_highlights.jsonl:12: malformed JSON"),
    ("im-esnli-label", "im", ["--task", "nli", "--train-size", "6", *U_FAST], "esnli_label", E,
     ":2: unknown label 'maybe'"),
    ("im-esnli-number", "im", ["--task", "nli", "--train-size", "6", *U_FAST], "esnli_number", E,
     ":2: field 'premise' must be str"),
    ("im-esnli-array", "im", ["--task", "nli", "--train-size", "6", *U_FAST], "esnli_not_object", E,
     ":3: expected a JSON object"),
    ("im-esnli-utf8", "im", ["--task", "nli", "--train-size", "6", *U_FAST], "esnli_bad_utf8", E,
     ":2: not valid UTF-8"),
    # ---- UIMER-IM: legitimate edge cases (exit 0, counted)
    ("im-bom-labels", "im", U_FAST, "bom_label_file", OK, "n_train=7"),
    ("im-edge-words", "im", ["--shots", "full", *U_FAST], "one_word_and_no_rationale", OK,
     "only_rationale>=1,without_rationale>=1"),
    ("im-allow-smaller", "im", ["--shots", "5", "--allow-smaller", *U_FAST], "none", OK, "shortfall"),
    # ---- UIMER-GB
    ("gb-guard0", "gb", ["--variant", "huang", "--order", "--guard", "0"], "none", E, "--guard"),
    ("gb-guard-nan", "gb", ["--guard", "nan"], "none", E, "--guard"),
    ("gb-warmup-neg", "gb", ["--warmup-epochs", "-1"], "none", E, "--warmup-epochs"),
    ("gb-alpha-inf", "gb", ["--alpha", "inf"], "none", E, "--alpha"),
    ("gb-alpha-nan", "gb", ["--alpha", "nan"], "none", E, "--alpha"),
    ("gb-lr-inf", "gb", ["--lr", "inf"], "none", E, "--lr"),
    ("gb-gate-ghaeini", "gb", ["--gate"], "none", E, "--variant huang"),
    ("gb-variant", "gb", ["--variant", "smith"], "none", E, "invalid choice"),
    ("gb-batch0", "gb", ["--batch-size", "0"], "none", E, "--batch-size"),
    ("gb-epochs0", "gb", ["--max-epochs", "0"], "none", E, "--max-epochs"),
    ("gb-seeds-dup", "gb", ["--seeds", "1,1"], "none", E, "distinct"),
    ("gb-dropout5", "gb", ["--dropout", "5"], "none", E, "--dropout"),
    ("gb-patience-neg", "gb", ["--patience", "-1"], "none", E, "--patience"),
    ("gb-maxlen-huge", "gb", ["--max-len", "100000"], "none", E, "position limit"),
    ("gb-nonfinite", "gb", ["--variant", "huang", "--lr", "1e30", "--max-epochs", "3"], "none", E, "non-finite loss"),
    ("gb-wrt", "gb", ["--wrt", "embeddings"], "none", E, "invalid choice"),
    ("gb-order-ghaeini", "gb", ["--variant", "ghaeini", "--order"], "none", E, "--variant huang"),
    ("gb-task", "gb", ["--task", "qa"], "none", E, "invalid choice"),
    ("gb-shots0", "gb", ["--shots", "0"], "none", E, "--shots"),
    ("gb-flag", "gb", ["--no-such-flag"], "none", E, "unrecognized"),
    ("gb-datadir", "gb", ["--data-dir", "{tmp}/nowhere"], "none", E, "--data-dir"),
    # ---- UIMER-DM
    ("dm-kl-nan", "dm", ["--kl-margin", "nan"], "none", E, "--kl-margin"),
    ("dm-kl-neg", "dm", ["--kl-margin", "-1"], "none", E, "--kl-margin"),
    ("dm-lambda-lr-neg", "dm", ["--lambda-lr", "-1"], "none", E, "--lambda-lr"),
    ("dm-lambda-lr0", "dm", ["--lambda-lr", "0"], "none", E, "--lambda-lr"),
    ("dm-lambda-max-neg", "dm", ["--lambda-max", "-1"], "none", E, "--lambda-max"),
    ("dm-rounds0", "dm", ["--schedule", "multi-round", "--rounds", "0"], "none", E, "--rounds"),
    ("dm-rounds-onepass", "dm", ["--rounds", "3"], "none", E, "multi-round"),
    ("dm-warmup-word", "dm", ["--warmup-epochs", "later"], "none", E, "--warmup-epochs"),
    ("dm-ext-epochs-neg", "dm", ["--extractor-epochs", "-1"], "none", E, "--extractor-epochs"),
    ("dm-lr-ext0", "dm", ["--lr-extractor", "0"], "none", E, "--lr-extractor"),
    ("dm-guard0", "dm", ["--guard", "0"], "none", E, "--guard"),
    ("dm-warmup-patience-neg", "dm", ["--warmup-patience", "-1"], "none", E, "--warmup-patience"),
    ("dm-warmup-max0", "dm", ["--warmup-max-epochs", "0"], "none", E, "--warmup-max-epochs"),
    ("dm-l0", "dm", ["--l0", "sqrt"], "none", E, "invalid choice"),
    ("dm-schedule", "dm", ["--schedule", "two-pass"], "none", E, "invalid choice"),
    ("dm-alpha-nan", "dm", ["--alpha", "nan"], "none", E, "--alpha"),
    ("dm-lr-inf", "dm", ["--lr", "inf"], "none", E, "--lr"),
    ("dm-task", "dm", ["--task", "qa"], "none", E, "invalid choice"),
    ("dm-shots0", "dm", ["--shots", "0"], "none", E, "--shots"),
    ("dm-flag", "dm", ["--no-such-flag"], "none", E, "unrecognized"),
    ("dm-utf8", "dm", U_FAST, "bad_utf8_seq_in", E, "seq.in:3: not valid UTF-8"),
    ("dm-edge-words", "dm", ["--shots", "full", "--warmup-epochs", "1", "--extractor-epochs", "1", *U_FAST],
     "one_word_and_no_rationale",
     OK, "only_rationale>=1,without_rationale>=1"),
    # ---- REGEX: flags
    ("rx-lambda-g-nan", "rx", ["--lambda-g", "nan"], "none", E, "--lambda-g"),
    ("rx-lambda-v-neg", "rx", ["--lambda-v", "-1"], "none", E, "--lambda-v"),
    ("rx-lambda-e-inf", "rx", ["--lambda-e", "inf"], "none", E, "--lambda-e"),
    ("rx-vat-eps-inf", "rx", ["--vat-eps", "inf"], "none", E, "--vat-eps"),
    ("rx-vat-xi0", "rx", ["--vat-xi", "0"], "none", E, "--vat-xi"),
    ("rx-vat-iters0", "rx", ["--vat-iters", "0"], "none", E, "--vat-iters"),
    ("rx-mask0", "rx", ["--mask-ratio", "0"], "none", E, "--mask-ratio"),
    ("rx-mask1", "rx", ["--mask-ratio", "1"], "none", E, "--mask-ratio"),
    ("rx-ig0", "rx", ["--ig-steps", "0"], "none", E, "--ig-steps"),
    ("rx-warmup-nan", "rx", ["--warmup-ratio", "nan"], "none", E, "--warmup-ratio"),
    ("rx-warmup1", "rx", ["--warmup-ratio", "1"], "none", E, "--warmup-ratio"),
    ("rx-ratio0", "rx", ["--rationale-ratio", "0"], "none", E, "--rationale-ratio"),
    ("rx-ratio15", "rx", ["--rationale-ratio", "1.5"], "none", E, "--rationale-ratio"),
    ("rx-aopc-text", "rx", ["--aopc-ratios", "0.1,x"], "none", E, "--aopc-ratios"),
    ("rx-aopc-zero", "rx", ["--aopc-ratios", "0,0.5"], "none", E, "--aopc-ratios"),
    ("rx-aopc-dup", "rx", ["--aopc-ratios", "0.1,0.1"], "none", E, "--aopc-ratios"),
    ("rx-attr-anchors", "rx", ["--attributions", "random,anchors"], "none", E, "--attributions"),
    ("rx-attr-empty", "rx", ["--attributions", ""], "none", E, "--attributions"),
    ("rx-plaus0", "rx", ["--plausibility-size", "0"], "none", E, "--plausibility-size"),
    ("rx-train0", "rx", ["--train-size", "0"], "none", E, "--train-size"),
    ("rx-train-pool", "rx", ["--train-size", "100000"], "none", E, "--allow-smaller"),
    ("rx-dev0", "rx", ["--dev-size", "0"], "none", E, "--dev-size"),
    ("rx-test0", "rx", ["--test-size", "0"], "none", E, "--test-size"),
    ("rx-maxlen-huge", "rx", ["--task", "movies", "--max-len", "100000"], "none", E, "position limit"),
    ("rx-maxlen4", "rx", ["--max-len", "4"], "none", E, "--max-len"),
    ("rx-evalonly", "rx", ["--evaluate-only"], "none", E, "--checkpoint"),
    ("rx-ckpt-bytes", "rx", ["--evaluate-only", "--checkpoint", "{tmp}/junk.pt"], "none", E,
     "cannot be loaded as weights"),
    ("rx-ckpt-pickle", "rx", ["--evaluate-only", "--checkpoint", "{tmp}/evil.pt"], "none", E, "holds objects other"),
    ("rx-ckpt-missing", "rx", ["--evaluate-only", "--checkpoint", "{tmp}/none"], "none", E, "not found"),
    ("rx-lr-nan", "rx", ["--lr", "nan"], "none", E, "--lr"),
    ("rx-seeds-dup", "rx", ["--seeds", "1,2,1"], "none", E, "distinct"),
    ("rx-igrows0", "rx", ["--ig-max-rows", "0"], "none", E, "--ig-max-rows"),
    ("rx-egt-start-neg", "rx", ["--egt-start", "-1"], "none", E, "--egt-start"),
    ("rx-subsample-neg", "rx", ["--subsample-seed", "-2"], "none", E, "--subsample-seed"),
    ("rx-task", "rx", ["--task", "yelp"], "none", E, "invalid choice"),
    ("rx-nonfinite", "rx", ["--no-egt", "--lr", "1e30", "--max-epochs", "2", "--train-size", "12"], "none", E,
     "non-finite loss"),
    # ---- REGEX: data
    ("rx-sst2-label", "rx", [], "sst2_label", E, "stsa.binary.train:2: expected '<0|1> <sentence>'"),
    ("rx-sst2-empty", "rx", [], "sst2_empty", E, "stsa.binary.train:3: empty text"),
    ("rx-sst2-bom", "rx", [], "sst2_bom", E, "stsa.binary.train:1: starts with a UTF-8 byte-order mark"),
    ("rx-sst2-utf8", "rx", [], "sst2_bad_utf8", E, "stsa.binary.dev:2: not valid UTF-8"),
    ("rx-imdb-pos", "rx", ["--task", "imdb"], "imdb_label_pos", E, "imdb_train.jsonl:2: field 'label' must be int"),
    ("rx-imdb-bool", "rx", ["--task", "imdb"], "imdb_label_bool", E, "imdb_test.jsonl:1: field 'label' must be int"),
    ("rx-imdb-trunc", "rx", ["--task", "imdb"], "imdb_truncated", E, "imdb_test.jsonl:12: malformed JSON"),
    ("rx-eraser-utf8", "rx", ["--task", "movies"], "eraser_doc_bad_utf8", E, "not valid UTF-8"),
    ("rx-eraser-offsets", "rx", ["--task", "movies"], "eraser_bad_offsets", E, "val.jsonl:1: evidences must be"),
    ("rx-eraser-doc", "rx", ["--task", "movies"], "eraser_missing_doc", E,
     "train.jsonl:1: document 'nope.txt' missing"),
    # ---- REGEX: edge cases
    ("rx-allow-smaller", "rx", ["--train-size", "100000", "--allow-smaller", "--no-egt", "--no-vat", "--max-epochs",
                                "1",
                                "--attributions", "random", "--no-randomization"], "none", OK, "shortfall"),
    # ---- SMaT
    ("sm-ig0", "sm", ["--ig-steps", "0"], "none", E, "--ig-steps"),
    ("sm-ig1", "sm", ["--ig-steps", "1"], "none", E, "--ig-steps"),
    ("sm-num0", "sm", ["--num-examples", "0"], "none", E, "--num-examples"),
    ("sm-beta-nan", "sm", ["--explainer", "attention_all", "--beta", "nan"], "none", E, "--beta"),
    ("sm-beta-neg", "sm", ["--beta", "-1"], "none", E, "--beta"),
    ("sm-beta0-smat", "sm", ["--setup", "smat", "--beta", "0"], "none", E, "--beta must be > 0"),
    ("sm-metalr-inf", "sm", ["--setup", "smat", "--meta-lr", "inf"], "none", E, "--meta-lr"),
    ("sm-metalr0", "sm", ["--meta-lr", "0"], "none", E, "--meta-lr"),
    ("sm-lr-nan", "sm", ["--lr", "nan"], "none", E, "--lr"),
    ("sm-epochs0", "sm", ["--setup", "teacher", "--max-epochs", "0"], "none", E, "--max-epochs"),
    ("sm-maxtest-neg", "sm", ["--max-test-examples", "-1"], "none", E, "--max-test-examples"),
    ("sm-maxvalid0", "sm", ["--max-valid-examples", "0"], "none", E, "--max-valid-examples"),
    ("sm-teachersize0", "sm", ["--setup", "teacher", "--teacher-train-size", "0"], "none", E, "--teacher-train-size"),
    ("sm-splits2", "sm", ["--imdb-split-sizes", "1,2"], "none", E, "--imdb-split-sizes"),
    ("sm-splits0", "sm", ["--imdb-split-sizes", "0,1,2"], "none", E, "--imdb-split-sizes"),
    ("sm-headcoeffs-missing", "sm", ["--setup", "plausibility", "--head-coeffs", "{tmp}/none.csv"], "none", E,
     "--head-coeffs"),
    ("sm-seeds-dup", "sm", ["--seeds", "0,0"], "none", E, "--seeds"),
    ("sm-batch0", "sm", ["--batch-size", "0"], "none", E, "--batch-size"),
    ("sm-patience-neg", "sm", ["--patience", "-1"], "none", E, "--patience"),
    ("sm-maxlen-huge", "sm", ["--setup", "teacher", "--max-len", "100000"], "none", E, "position limit"),
    ("sm-setup", "sm", ["--setup", "pupil"], "none", E, "invalid choice"),
    ("sm-explainer", "sm", ["--explainer", "lime"], "none", E, "invalid choice"),
    ("sm-maxdocs0", "sm", ["--max-docs", "0"], "none", E, "--max-docs"),
    ("sm-warmup-neg", "sm", ["--warmup-steps", "-5"], "none", E, "--warmup-steps"),
    ("sm-teacher-bytes", "sm", ["--teacher-dir", "{tmp}/junk-teacher", "--num-examples", "16"], "none", E,
     "cannot be loaded as weights"),  # a pool of 30: the pool size is checked before the teacher loads
    ("sm-teacher-json", "sm", ["--teacher-dir", "{tmp}/bad-json-teacher"], "none", E, "teacher.json"),
    ("sm-no-teacher", "sm", ["--teacher-dir", "{tmp}/no-teacher"], "none", E, "no trained teacher"),
    ("sm-pool", "sm", ["--teacher-dir", "{teacher}", "--num-examples", "1000"], "none", E,
     "larger than the student pool"),
    ("sm-headcoeffs-nan", "sm", ["--setup", "plausibility", "--teacher-dir", "{teacher}", "--head-coeffs",
                                 "{tmp}/nan_coeffs.csv"], "none", E, "phi is not a finite number"),
    ("sm-headcoeffs-count", "sm", ["--setup", "plausibility", "--teacher-dir", "{teacher}", "--head-coeffs",
                                   "{tmp}/short_coeffs.csv"], "none", E, "head coefficients, but"),
    ("sm-plaus-maxlen", "sm", ["--setup", "plausibility", "--teacher-dir", "{teacher}", "--max-len", "100000"], "none",
     E, "position limit"),
    ("sm-plaus-edge", "sm", ["--setup", "plausibility", "--teacher-dir", "{teacher}", "--explainer", "gradient_l2",
                             "--eraser-split", "test"], "none", OK, "plausibility_docs"),
    # ---- issue 24. Text: lines split on \n (and \r\n) only, so a valid line holding U+2028, U+0085, \f or \x1c
    # keeps the line numbers right; undecodable bytes are file:line in every reader
    ("im-u2028-lines", "im", U_FAST, "u2028_then_bad_intent", E, "label:5: unknown intent label 'OrderPizza'"),
    ("gb-crlf-lines", "gb", U_FAST, "crlf_then_bad_bio", E, "seq.out:6: malformed BIO tag 'Q'"),
    ("dm-u2028-lines", "dm", U_FAST, "u2028_then_bad_intent", E, "label:5: unknown intent label"),
    ("rx-sst2-u2029-lines", "rx", [], "sst2_u2029_then_bad_label", E,
     "stsa.binary.train:4: expected '<0|1> <sentence>'"),
    ("rx-imdb-utf8", "rx", ["--task", "imdb"], "imdb_bad_utf8", E, "imdb_train.jsonl:3: not valid UTF-8"),
    ("rx-eraser-jsonl-utf8", "rx", ["--task", "movies"], "eraser_jsonl_bad_utf8", E, "val.jsonl:2: not valid UTF-8"),
    ("sm-mlqe-utf8", "sm", ["--setup", "teacher", "--task", "mlqe"], "sm_mlqe_bad_utf8", E,
     "en-de-train.tar.gz:en-de-train/train.ende.df.short.tsv:3: not valid UTF-8"),
    ("sm-mlqe-u2028-lines", "sm", ["--setup", "teacher", "--task", "mlqe"], "sm_mlqe_u2028_then_bad_z", E,
     "train.ende.df.short.tsv:4: z_mean is not a finite number: 'x'"),
    ("sm-mlqe-nan", "sm", ["--setup", "teacher", "--task", "mlqe"], "sm_mlqe_nan_z", E,
     "tsv:5: z_mean is not a finite"),
    ("sm-imdb-utf8", "sm", ["--setup", "teacher"], "sm_imdb_bad_utf8", E, "imdb_test.jsonl:4: not valid UTF-8"),
    ("sm-headcoeffs-utf8", "sm", ["--setup", "plausibility", "--teacher-dir", "{teacher}", "--head-coeffs",
                                  "{tmp}/bad_utf8_coeffs.csv"], "none", E, "bad_utf8_coeffs.csv:3: not valid UTF-8"),
    # ---- offsets checked against their document
    ("rx-eraser-beyond", "rx", ["--task", "movies"], "eraser_beyond_doc", E,
     "val.jsonl:1: evidence tokens 5:99 of document 'val_0.txt' go beyond its 11 words"),
    ("rx-eraser-other-doc", "rx", ["--task", "movies"], "eraser_other_doc", E,
     "test.jsonl:2: an evidence of 'test_1.txt' names document 'test_5.txt'"),
    ("rx-eraser-bool", "rx", ["--task", "movies"], "eraser_bool_offset", E, "train.jsonl:1: evidences must be"),
    ("sm-eraser-beyond", "sm", ["--setup", "plausibility", "--teacher-dir", "{teacher}", "--explainer", "gradient_l2"],
     "sm_eraser_beyond_doc", E, "test.jsonl:1: evidence tokens 3:50 of document 'negR_000.txt' go beyond its 15 words"),
    # ---- the run directory claim: one line naming the path and what could not be done
    ("im-claim-folder-file", "im", U_FAST, "out:file:uimer_im", E, "cannot create the folder"),
    ("gb-claim-folder-file", "gb", U_FAST, "out:file:uimer_gb", E, "uimer_gb for run directory"),
    ("dm-claim-folder-file", "dm", U_FAST, "out:file:uimer_dm", E, "cannot create the folder"),
    ("rx-claim-folder-file", "rx", [], "out:file:regex_robust", E, "cannot create the folder"),
    ("sm-claim-folder-file", "sm", ["--setup", "teacher"], "out:file:smat_jax_free", E, "cannot create the folder"),
    ("im-claim-run-is-file", "im", U_FAST, "out:file:uimer_im/ic-1shot-uniform-55", E,
     "uimer_im/ic-1shot-uniform-55 to make the run directory: it is a file"),
    ("im-claim-held", "im", U_FAST, "out:lock:uimer_im/ic-1shot-uniform-55", E,
     "is in use by another run (lock file {out}/uimer_im/.ic-1shot-uniform-55.lock"),
    ("sm-claim-held", "sm", ["--setup", "teacher"], "out:lock:smat_jax_free/imdb-teacher", E,
     "lock file {out}/smat_jax_free/.imdb-teacher.lock"),
    ("rx-outdir-proc", "rx", ["--out-dir", "/proc/reliab-no-such/runs"], "none", E, "/proc/reliab-no-such/runs"),
    ("sm-outdir-proc", "sm", ["--setup", "teacher", "--out-dir", "/proc/reliab-no-such"], "none", E,
     "/proc/reliab-no-such"),
    # ---- locales: under a locale whose encoding is not UTF-8, a non-ASCII path is refused before anything runs
    ("im-ascii-locale", "im", ["--out-dir", "{tmp}/r\u00fcns"], "env:ascii_locale", E, "is not ASCII"),
    ("gb-ascii-locale", "gb", ["--data-dir", "{tmp}/d\u00e4ta"], "env:ascii_locale", E, "PYTHONUTF8=1"),
    ("dm-ascii-locale", "dm", ["--model", "{tmp}/m\u00f6del"], "env:ascii_locale", E, "is not ASCII"),
    ("rx-ascii-locale", "rx", ["--out-dir", "{tmp}/\u8fd0\u884c"], "env:ascii_locale", E, "LC_ALL=C.UTF-8"),
    ("sm-ascii-locale", "sm", ["--teacher-dir", "{tmp}/t\u00e9acher"], "env:ascii_locale", E, "is not ASCII"),
    # ---- values: a device index is checked by its domain, never by torch's parser
    ("im-device-huge", "im", ["--device", "cuda:99999999999999999999"], "none", E, DEVICE_ERR),
    ("gb-device-neg", "gb", ["--device", "cuda:-1"], "none", E, DEVICE_ERR),
    ("dm-device-zero-pad", "dm", ["--device", "cuda:01"], "none", E, DEVICE_ERR),
    ("rx-device-1024", "rx", ["--device", "cuda:1024"], "none", E, DEVICE_ERR),
    ("sm-device-arabic-digit", "sm", ["--device", "cuda:\u0663"], "none", E, DEVICE_ERR),
    ("im-device-space", "im", ["--device", "cuda: 1"], "none", E, DEVICE_ERR),
    ("sm-headcoeffs-1e308", "sm", ["--setup", "plausibility", "--teacher-dir", "{teacher}", "--head-coeffs",
                                   "{tmp}/huge_coeffs.csv"], "none", E,
     "huge_coeffs.csv:3: phi 1e+308 is beyond float32"),
    # ---- noise: a broken model folder is one line, nothing of the libraries before it
    ("im-model-no-weights", "im", ["--model", "{tmp}/m_noweights"], "none", E, "cannot load an encoder"),
    ("gb-model-corrupt", "gb", ["--model", "{tmp}/m_corrupt"], "none", E, "cannot load an encoder"),
    ("dm-model-bad-tokenizer", "dm", ["--model", "{tmp}/m_badtok"], "none", E, "cannot load a tokenizer"),
    ("rx-ckpt-bad-tokenizer", "rx", ["--evaluate-only", "--checkpoint", "{tmp}/m_badtok", "--model", "{tmp}/m_badtok"],
     "none", E, "cannot load a tokenizer"),
    ("rx-model-unknown-type", "rx", ["--model", "{tmp}/m_unknown"], "none", E, "cannot read the model config"),
    ("sm-model-corrupt", "sm", ["--setup", "teacher", "--model", "{tmp}/m_corrupt"], "none", E,
     "cannot load an encoder"),
    # ---- edge cases: a word without wordpiece keeps its place (no shift), a zero-width-only sentence too
    ("im-sf-zero-width", "im", ["--task", "sf", "--shots", "full", *U_FAST], "zero_width_sf", OK, "ran"),
    ("rx-zero-width", "rx", ["--train-size", "12", "--no-egt", "--no-vat", "--max-epochs", "1", "--attributions",
                             "random", "--no-randomization"], "sst2_zero_width", OK, "ran"),
]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    """A tiny teacher (trained once), junk checkpoints and coefficient files shared by the rows."""
    root = tmp_path_factory.mktemp("bad-inputs")
    data = root / "data"
    write_tiny_imdb(data)
    write_tiny_eraser(data)
    write_tiny_mlqe(data)
    teacher = sm.main(sm.parse_args(smat_base(data, root / "runs") + ["--setup", "teacher", "--model", tiny_model,
                                                                      "--max-epochs", "1", "--warmup-steps", "0"]))
    (root / "junk.pt").write_bytes(random.Random(0).randbytes(300))  # fixed junk: the test is the same each run

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {root / 'pwned'}",))
    (root / "evil.pt").write_bytes(pickle.dumps({"state_dict": Payload()}))
    for name, content in (("junk-teacher", None), ("bad-json-teacher", "{not json")):
        d = root / name
        d.mkdir()
        (d / "teacher.pt").write_bytes(random.Random(1).randbytes(300))
        (d / "teacher.json").write_text(content or json.dumps({"model": tiny_model, "task": "imdb", "max_len": 24}))
    (root / "nan_coeffs.csv").write_text("layer,head,phi,lambda\n0,0,0.5,0.5\n0,1,nan,0\n1,0,0.5,0.5\n1,1,0,0\n")
    (root / "short_coeffs.csv").write_text("layer,head,phi,lambda\n0,0,0.5,0.5\n")
    (root / "huge_coeffs.csv").write_text("layer,head,phi,lambda\n0,0,0.5,0.5\n0,1,1e308,0\n1,0,0,0\n1,1,0,0\n")
    (root / "bad_utf8_coeffs.csv").write_bytes(b"layer,head,phi,lambda\n0,0,0.5,0.5\n0,1,0.\xff,0\n")
    (root / "a_file").write_text("x")
    for name, keep, damage in (("m_noweights", ("config.json", "tokenizer.json", "tokenizer_config.json"), None),
                               ("m_corrupt", None, ("model.safetensors", b"\x10\x00")),
                               ("m_badtok", None, ("tokenizer.json", b'{"x": ')),
                               ("m_unknown", None, ("config.json", b'{"model_type": "nosuchmodel"}'))):
        d = root / name
        shutil.copytree(tiny_model, d)
        for f in d.iterdir():
            if keep is not None and f.name not in keep:
                f.unlink()
        if damage:
            (d / damage[0]).write_bytes(damage[1])
    return {"root": root, "teacher": teacher["dir"], "smat_data": data}


def make_data(kind: str, tmp: Path, world) -> Path:
    d = tmp / "data"
    write_tiny_snips(d)
    write_tiny_esnli(d)
    write_tiny_text_data(d)
    if kind == "sm":
        d = world["smat_data"]
    return d


def call(script: str, argv: list[str], capfd) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the script's cli() in this process, stderr captured at the file descriptor."""
    capfd.readouterr()
    try:
        code = SCRIPTS[script].cli(argv)
    except SystemExit as e:  # argparse errors exit through SystemExit(2)
        code = e.code
    out, err = capfd.readouterr()
    return code, out, err


@pytest.mark.parametrize("row", [pytest.param(r, id=r[0], marks=[pytest.mark.slow] if r[4] == OK else [])
                                 for r in ROWS])  # the edge rows train a model end to end: slow
def test_bad_input_row(row, world, tiny_model, tmp_path, capfd, monkeypatch):
    rid, script, args, corruption, expected, want = row
    data = make_data(script, tmp_path, world)
    out_dir = tmp_path / "runs"
    held = []
    if corruption.startswith("out:"):  # the run's --out-dir: a plain file where a folder goes, a held lock
        _, kind, rel = corruption.split(":", 2)
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if kind == "file":
            target.write_text("not a folder")
        else:  # another holder of the run's lock (flock: another open file description, as another process)
            fd = os.open(target.parent / f".{target.name}.lock", os.O_RDWR | os.O_CREAT)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.write(fd, b"4242 elsewhere")
            held.append(fd)
    elif corruption == "env:ascii_locale":  # what Python reports under LC_ALL=C with PYTHONUTF8=0
        monkeypatch.setattr(sys, "getfilesystemencoding", lambda: "ascii")
    elif script == "sm" and corruption != "none":  # the shared SMaT data stays intact: corrupt a copy
        data = Path(shutil.copytree(world["smat_data"], tmp_path / "smat-data"))
        CORRUPT[corruption](data)
    elif script != "sm":
        CORRUPT[corruption](data)
    fill = {"tmp": str(world["root"]), "file": str(world["root"] / "a_file"), "teacher": world["teacher"],
            "fix": str(FIXTURES / "rationale_data"), "data": str(data)}
    args = [a.format(**fill) for a in args]
    base = ["--data-dir", str(data), "--out-dir", str(out_dir), "--model", tiny_model, "--device", "cpu"]
    if script == "sm":
        base += ["--imdb-split-sizes", "40,10,20", "--max-len", "24"]
    argv = base + args  # argparse keeps the last value: a row's own --data-dir / --out-dir / --max-len wins
    try:
        code, out, err = call(script, argv, capfd)
    finally:
        for fd in held:
            os.close(fd)
    lines = [line for line in err.splitlines() if line.strip()]
    want = want.replace("{out}", str(out_dir))
    if expected == E:
        assert code == 2, f"{rid}: exit {code}\n{err[-2000:]}"
        assert len(lines) == 1 and "Traceback" not in err, f"{rid}: stderr has {len(lines)} lines:\n{err[-2000:]}"
        assert want in lines[0], f"{rid}: {want!r} not in {lines[0]!r}"
        assert not list(out_dir.rglob("results.json")), f"{rid}: results.json written despite the error"
    else:
        assert code == 0, f"{rid}: exit {code}\n{err[-2000:]}"
        res = [json.loads(p.read_text()) for p in out_dir.rglob("results.json")]
        assert res, rid
        r = res[0]
        if want == "shortfall":
            assert r["shortfall"], r
        elif want == "n_train=7":
            assert r["n_train"] == 7
        elif want.startswith("only_rationale"):
            st = r["rationale_stats"]
            assert st["n_only_rationale"] >= 1 and st["n_without_rationale"] >= 1, st
            assert r["n_skipped_by_L_int"] >= 2
        elif want == "plausibility_docs":  # one of the three documents has no evidence: skipped and counted
            assert r["auc"]["gradient_l2"]["n_docs"] == 2 and r["n_docs"] == 3
        else:
            assert want == "ran", want
    assert not (world["root"] / "pwned").exists()


# ---------------------------------------------------------------------------------------------- as real processes
@pytest.mark.slow
@pytest.mark.parametrize("script,args", [("uimer_im.py", ["--batch-size", "0"]), ("uimer_gb.py", ["--alpha", "nan"]),
                                         ("uimer_dm.py", ["--kl-margin", "inf"]),
                                         ("regex_robust.py", ["--ig-steps", "0"]),
                                         ("smat_jax_free.py", ["--num-examples", "0"])])
def test_bad_flags_as_real_processes(script, args, tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / script), *args, "--out-dir", str(tmp_path)], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.startswith(f"{script}: error: ") and not list(tmp_path.rglob("results.json"))


def test_every_flag_declares_its_domain():
    """Every numeric or string flag of every script declares a domain (or its choices); bools need none."""
    import dataclasses
    for name, mod in SCRIPTS.items():
        for f in dataclasses.fields(mod.Args):
            meta = f.metadata
            if str(f.type).startswith("bool"):
                continue
            assert meta.get("domain") is not None or meta.get("choices") is not None, f"{name}: --{f.name}"


@pytest.mark.parametrize("script,flag", [("im", "--num-samples"), ("sm", "--ig-steps"), ("sm", "--num-examples")])
def test_an_explicit_zero_reaches_validation(script, flag, capfd):
    """`x or default` would turn an explicit 0 into the default: the 0 must reach validation and be refused."""
    code, _, err = call(script, [flag, "0", "--device", "cpu"], capfd)
    assert code == 2 and flag in err and "got 0" in err


def test_help_shows_the_domain_of_every_numeric_flag(capfd):
    for name, mod in SCRIPTS.items():
        with pytest.raises(SystemExit):
            mod.parse_args(["-h"])
        text = " ".join(capfd.readouterr().out.split())
        assert "an integer >= 1" in text and "a finite number" in text, name


def test_any_corrupt_checkpoint_is_one_usage_error(tmp_path):
    """Random bytes, also behind a pickle or zip header, fail in many ways inside torch's unpickler (IndexError,
    KeyError, UnicodeDecodeError, ...); each is the one-line 'cannot be loaded as weights' error, never a traceback."""
    path = tmp_path / "junk.pt"
    for seed in range(300):
        rng = random.Random(seed)
        head = (b"", b"\x80\x02", b"PK\x03\x04")[seed % 3]
        path.write_bytes(head + rng.randbytes(rng.randint(0, 400)))
        with pytest.raises(common.UsageError, match="cannot be loaded as weights"):
            common.load_weights(path)


# ---------------------------------------------------------------------------------------------- hostile arguments
NUMBER_VALUES = ["", " ", "1e400", "-1e400", str(10**30), "-" + str(10**30), "nan", "-nan", "NaN", "inf", "'3", '3"',
                 "0x10", "\x00", "1\n2", "--"]
TEXT_VALUES = ["", " ", "'abc", 'a"b', "{file}/sub", "{file}/sub/deeper", "/proc/reliab-no-such/x", "nan", "1e400",
               "\x00", "a\nb", "\x1b[2J", "~", "-", "\udcff"]


def flag_values(f) -> list[str]:
    """Hostile values for one flag, by its kind: numbers for int/float flags, texts for the others, both for all."""
    typ = str(f.type)
    if typ.startswith("bool"):
        return ["=x", "=", "=1e400", "=nan"]
    return NUMBER_VALUES + TEXT_VALUES[:6] if typ.startswith(("int", "float")) else TEXT_VALUES + NUMBER_VALUES[2:8]


@pytest.mark.parametrize("script", list(SCRIPTS))
def test_hostile_arguments_never_print_a_traceback(script, world, tiny_model, tmp_path, capfd):
    """Every flag of every script, given empty strings, huge numbers, NaN, unbalanced quotes (one argv item),
    control characters, paths under a plain file and unwritable paths: exit 2 with one stderr line, no traceback.
    The data folder is empty, so a value the flag accepts stops at the data, before any model is loaded."""
    empty = tmp_path / "no-data"
    empty.mkdir()
    fill = {"file": str(world["root"] / "a_file")}
    base = ["--data-dir", str(empty), "--model", tiny_model, "--out-dir", str(tmp_path / "runs"), "--device", "cpu"]
    bad = []
    for f in dataclasses.fields(SCRIPTS[script].Args):
        flag = "--" + f.name.replace("_", "-")
        for v in flag_values(f):
            v = v.replace("{file}", fill["file"])
            argv = base + ([flag + v] if v.startswith("=") else [flag, v])
            try:
                code, _, err = call(script, argv, capfd)
            except BaseException as e:  # noqa: B036  anything escaping cli() is a failure of the row
                bad.append(f"{flag} {v!r}: {type(e).__name__}: {e}")
                continue
            lines = [line for line in err.splitlines() if line.strip()]
            if code != 2 or len(lines) != 1 or "Traceback" in err:
                bad.append(f"{flag} {v!r}: exit {code}, {len(lines)} stderr lines: {err[-300:]!r}")
    for extra in (["'"], ['"unbalanced'], ["--"], ["-"], ["--data-dir"], ["a\nb"], ["--out-dir", "a", "b"]):
        code, _, err = call(script, base + extra, capfd)
        if code != 2 or len([x for x in err.splitlines() if x.strip()]) != 1 or "Traceback" in err:
            bad.append(f"{extra!r}: exit {code}: {err[-300:]!r}")
    assert not list((tmp_path / "runs").rglob("results.json"))
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------------------------------------- words and wordpieces
def test_a_word_without_wordpiece_keeps_its_place_in_the_word_map():
    """With the real (MiniLM = bert-base-uncased) tokenizer: zero-width and other characters the tokenizer drops make a
    word with no wordpiece. It takes the first wordpiece of the next word (else the last of the text), as
    align_rationales does: word_index keeps one entry per word, the words after it are not shifted (their tags and
    rationale stay on their own wordpieces), and a sentence of such words has a position per word, never none."""
    tok = common.load_tokenizer(None)
    for word in (ZW, "\u2060", "\ufffd" * 6, "\u00ad", "\x96", "\u200b\u200c\u200d"):
        assert tok(word, add_special_tokens=False)["input_ids"] == [], ascii(word)  # the case this rule is for
        e = common.encode_words(tok, ["play", word, "queen"], [0, 0, 1], 50)
        assert e["input_ids"] == tok(["play", "queen"], is_split_into_words=True)["input_ids"]
        assert e["n_words_without_wordpiece"] == 1 and e["word_index"] == [1, 2, 2]  # "queen" is still word 2
        assert e["rationale"] == [0, 0, 1, 0] and e["word_of_piece"] == [-1, 0, 2, -1]
    e = common.encode_words(tok, ["add", "this", ZW], [0, 0, 1], 50)  # at the end: the text's last wordpiece
    assert e["word_index"] == [1, 2, 2] and e["rationale"] == [0, 0, 0, 0]
    e = common.encode_words(tok, [ZW, ZW], [1, 0], 50)  # a sentence with no visible character
    assert e["input_ids"] == [tok.cls_token_id, tok.sep_token_id] and e["word_index"] == [0, 0]
    e = common.encode_words(tok, ["a", ZW], [0, 1], 50, [ZW, "b"], [1, 0])  # pairs: counted in both texts
    assert e["n_words_without_wordpiece"] == 2 and e["word_index"] == [1, 1]
    assert e["word_of_piece"] == [-1, 0, -1, 3, -1]
    long = ["hello"] * 3 + [ZW] + ["world"] * 10  # truncated: a word cut by max_len is not a word without wordpiece
    e = common.encode_words(tok, long, [0] * 14, 12)
    assert e["n_words_without_wordpiece"] == 1 and e["word_index"] == [1, 2, 3, 4, 4, 5, 6, 7, 8, 9, 10]
    assert common.encode_words(tok, ["hello"] * 20, [0] * 20, 8)["n_words_without_wordpiece"] == 0
    for words, pair in ((["play", ZW, "queen"], None), ([ZW, ZW], None), (["a", ZW], [ZW, "b"]), (long, None)):
        for max_len in (50, 12):  # the same rule as the alignment of your own data
            ref = common.align_rationales(tok, [common._example("x", words, "y", "w", pair)], max_len)[0][0]
            e = common.encode_words(tok, words, [0] * len(words), max_len, pair, [0] * len(pair) if pair else None)
            assert all(ref[k] == e[k] for k in ("input_ids", "word_index", "word_of_piece")), (words, max_len)
    tags = [{"input_ids": [101, 102], "token_type_ids": [0, 0], "index": 0, "id": "x", "tags": [], "word_index": []}]
    with pytest.raises(common.DataError, match="example x has no word to tag"):  # never an empty CRF mask
        common.collate(tags, 0)


# ---------------------------------------------------------------------------------------------- extreme coefficients
EXTREME = [[1e308, -1e308], [1e308, 0.0, 0.0], [-1e308, 0.0, 1.0], [1e308, 1e308, -1e308, 0.0], [0.0, -1e308],
           [1e308] * 3, [-1e308] * 3, [1.0, 0.5, -1e308, 0.2], [-1e308, 1e-300, 0.0, -5e-324],
           [1.7976931348623157e308, -1.7976931348623157e308, 0.0, 1e308]]


@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_sparsemax_and_entmax15_at_extreme_finite_coefficients(name):
    """A direct computation: coordinates more than 2 below the max are outside the support of both mappings (tau >=
    max - 1 for sparsemax, z/2 - tau <= 0 there for 1.5-entmax), so p equals the brute-force projection (sparsemax) or
    the bisection (1.5-entmax) over the coordinates near the max, and the Jacobian its closed form; the first and
    second derivatives are finite. float32: coefficients up to its largest finite value. inf/NaN: NaN, no error."""
    fn, entmax15 = getattr(sm, name), name == "entmax15"
    for values in EXTREME:
        for dtype in (torch.float64, torch.float32):
            z = torch.tensor(values, dtype=torch.float64)
            if dtype == torch.float32:
                z = z.clamp(-torch.finfo(torch.float32).max, torch.finfo(torch.float32).max)
            z = z.to(dtype)
            near = z >= z.max() - 2  # exact comparisons; z - max is exact there (Sterbenz)
            ref = torch.zeros(len(values), dtype=torch.float64)
            zn = (z[near] - z.max()).double()
            ref[near] = torch.tensor(brute_force_simplex_projection(zn.tolist()), dtype=torch.float64) \
                if not entmax15 else bisection_reference(zn, True)[0]
            zg = z.clone().requires_grad_()
            p = fn(zg)
            assert torch.allclose(p.double(), ref, atol=1e-6 if dtype == torch.float32 else 1e-12), (values, p, ref)
            J = torch.autograd.functional.jacobian(fn, z)
            assert torch.isfinite(J).all() and torch.allclose(J.double(), closed_form_jacobians(ref, entmax15),
                                                             atol=1e-5), values
            w = torch.arange(len(values), dtype=dtype)
            g = torch.autograd.grad(((p * w).sum()) ** 2, zg, create_graph=True)[0]
            h = torch.autograd.grad((g * g).sum(), zg)[0]
            assert torch.isfinite(g).all() and torch.isfinite(h).all(), values
    for values in ([math.inf, 0.0], [math.nan, 1.0], [-math.inf, 0.0, 1.0]):
        p = fn(torch.tensor([values, [0.0, 1.0, 2.0][:len(values)]]))
        assert torch.isnan(p[0]).all() and torch.isfinite(p[1]).all()
    assert torch.equal(sm.normalize_heads(torch.tensor([1e38, -3e38, 0.0]), name), torch.tensor([1.0, 0.0, 0.0]))
