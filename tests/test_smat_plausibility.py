"""SMaT plausibility scoring (Table 2) with synthetic explainers of known AUC, through the whole pipeline (ERASER
Movie Reviews, and the same documents as --task custom data, single texts and pairs):
ERASER reading, wordpiece tokenisation of the pre-split words, truncation at --max-len, [CLS]/[SEP] removal,
wordpiece -> word aggregation (word_level: sum of probabilities), per-document ROC AUC, mean over documents.
An explainer whose mass lies exactly on the gold words must score 1.0, its complement 0.0, a constant 0.5."""
import json
import math
from pathlib import Path

import pytest
import torch

import common
import smat_jax_free as sm

# words with several wordpieces (un ##watch ##able, schwarz ##ene ##gger, me ##sm ##eri ##zing), punctuation
# split into several pieces ("...", "--", "n't"), and gold spans on both sides of the truncation point
DOCS = {
    "negR_000.txt": ("this unwatchable mess stars schwarzenegger as a cop .\nthe plot is n't even there ... "
                     "it drags -- and drags .\nby the end i had stopped caring about anyone on screen at all .",
                     [(1, 3), (11, 15), (23, 30)]),
    "posR_000.txt": ("a mesmerizing , moving story .\ngreat acting throughout from schwarzenegger and the "
                     "whole cast .\nthe final scene is simply perfect and stays with you .",
                     [(1, 4), (6, 8), (24, 27)]),
    "posR_001.txt": ("no evidence marked in this review at all .", []),
    "negR_001.txt": ("the first words are plain but the whole of this sentence is unwatchable -- marked "
                     "as evidence , all of it .", [(0, 22)]),
}
MAX_LEN = 24  # cuts the last gold span of the first two documents away


def write_eraser(root: Path) -> Path:
    d = root / "eraser_movies"
    (d / "docs").mkdir(parents=True, exist_ok=True)
    rows = []
    for docid, (text, spans) in DOCS.items():
        (d / "docs" / docid).write_text(text)
        rows.append({"annotation_id": docid, "classification": "POS" if docid.startswith("pos") else "NEG",
                     "evidences": [[{"docid": docid, "start_token": a, "end_token": b, "text": ""}]
                                   for a, b in spans]})
    for split in ("train", "val", "test"):
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


# ---- synthetic explainers: per document, token probabilities (T,) from the example's word ids alone
def oracle(ex, doc):
    """Mass spread evenly over the wordpieces of gold words (plus a large share on [CLS]/[SEP], which must not
    matter: they are dropped)."""
    v = torch.tensor([0.0 if w is None else float(doc["evidence"][w]) for w in ex["word_ids"]])
    v = v / v.sum()
    v[0] = v[-1] = 5.0  # attention-sink-like mass on [CLS]/[SEP]
    return v / v.sum()


def complement(ex, doc):
    v = torch.tensor([0.0 if w is None else 1.0 - doc["evidence"][w] for w in ex["word_ids"]])
    return v / v.sum()


def constant_per_word(ex, doc):
    """Every word gets the same total: all of it on its first wordpiece, 0 on the others (exact ties; an even
    split 1/3 + 1/3 + 1/3 need not round to the total of a one-piece word, and near-ties are not ties for AUC)."""
    first = [w is not None and (p == 0 or ex["word_ids"][p - 1] != w) for p, w in enumerate(ex["word_ids"])]
    v = torch.tensor([float(f) for f in first])
    return v / v.sum()


def uniform_per_token(ex, doc):
    return torch.full((len(ex["word_ids"]),), 1.0 / len(ex["word_ids"]))


def scored(fn, docs, examples):
    """Mean per-document AUC through word_level + roc_auc (skipping one-class documents), and the count."""
    aucs = [common.roc_auc(*sm.word_level(fn(e, d).tolist(), e["word_ids"], d["evidence"]))
            for d, e in zip(docs, examples, strict=True)]
    aucs = [a for a in aucs if not math.isnan(a)]
    return (sum(aucs) / len(aucs) if aucs else float("nan")), len(aucs)


@pytest.fixture(scope="module")
def eraser(tmp_path_factory):
    data = write_eraser(tmp_path_factory.mktemp("eraser"))
    docs = common.read_eraser_movies(data, "test")
    tok = common.load_tokenizer(None)
    return data, docs, tok


def test_tokenisation_truncation_and_word_ids(eraser):
    _, docs, tok = eraser
    examples = sm.eraser_examples(docs, tok, MAX_LEN)
    for d, e in zip(docs, examples, strict=True):
        assert len(e["input_ids"]) <= MAX_LEN
        assert e["word_ids"][0] is None and e["word_ids"][-1] is None  # [CLS], [SEP]
        assert all(w is not None for w in e["word_ids"][1:-1])
        kept = sorted({w for w in e["word_ids"] if w is not None})
        assert kept == list(range(len(kept)))  # a prefix of the document's words
        gold, score = sm.word_level([1.0] * len(e["word_ids"]), e["word_ids"], d["evidence"])
        assert gold == d["evidence"][:len(kept)] and len(score) == len(kept)
    ex0 = examples[0]
    assert ex0["word_ids"][1:5] == [0, 1, 1, 1]  # "this un ##watch ##able"
    assert max(w for w in ex0["word_ids"] if w is not None) < len(docs[0]["words"]) - 1  # truncated
    assert sum(docs[0]["evidence"][:max(w for w in ex0["word_ids"] if w is not None) + 1]) < sum(docs[0]["evidence"])


@pytest.mark.parametrize("max_len", [MAX_LEN, 512])
def test_synthetic_explainers_have_known_auc(eraser, max_len):
    _, docs, tok = eraser
    examples = sm.eraser_examples(docs, tok, max_len)
    n_two_class = 2  # posR_001 has no evidence; negR_001 is evidence throughout (all gold)
    assert scored(oracle, docs, examples) == (pytest.approx(1.0), n_two_class)
    assert scored(complement, docs, examples) == (pytest.approx(0.0), n_two_class)
    assert scored(constant_per_word, docs, examples) == (pytest.approx(0.5), n_two_class)
    # a constant per *token* is not a constant per word: summing wordpiece probabilities scores a word by its
    # number of wordpieces, which is what a uniform explanation measures under this aggregation
    by_pieces = []
    for d, e in zip(docs, examples, strict=True):
        n = {}
        for w in e["word_ids"]:
            if w is not None:
                n[w] = n.get(w, 0) + 1
        by_pieces.append(common.roc_auc([d["evidence"][w] for w in sorted(n)], [n[w] for w in sorted(n)]))
    by_pieces = [a for a in by_pieces if not math.isnan(a)]
    uniform = scored(uniform_per_token, docs, examples)[0]
    assert uniform == pytest.approx(sum(by_pieces) / len(by_pieces)) and uniform != pytest.approx(0.5)


@pytest.mark.slow
def test_end_to_end_plausibility_with_injected_explainers(eraser, tiny_model, tmp_path):
    """plausibility() itself (reading, encoding, length-sorted padded batches, pad columns, [CLS]/[SEP] removal,
    word aggregation, AUC, averaging) with the synthetic explainers injected beside the teacher's."""
    data, docs, _ = eraser
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    sm.save_teacher(teacher_dir, sm.build_model(tiny_model, "imdb"), {"model": tiny_model, "task": "imdb"})

    def batched(fn):
        def explain(batch, examples, docs_):
            T = batch["inputs_mask"].shape[1]
            rows = []
            for i in batch["index"].tolist():
                v = fn(examples[i], docs_[i])
                rows.append(torch.cat([v, torch.zeros(T - len(v))]))  # pad columns: probability 0
            return torch.stack(rows)
        return explain

    injected = {"oracle": batched(oracle), "complement": batched(complement),
                "constant_per_word": batched(constant_per_word)}
    args = sm.resolve(sm.parse_args(["--setup", "plausibility", "--task", "imdb", "--data-dir", str(data),
                                     "--out-dir", str(tmp_path / "runs"), "--teacher-dir", str(teacher_dir),
                                     "--max-len", str(MAX_LEN), "--eraser-split", "test", "--explainer",
                                     "attention_all", "--eval-batch-size", "8"]))
    r = sm.plausibility(args, data, explainers=injected)
    assert r["n_docs"] == len(DOCS)
    assert r["auc"]["oracle"] == {"auc": pytest.approx(1.0), "n_docs": 2}
    assert r["auc"]["complement"] == {"auc": pytest.approx(0.0), "n_docs": 2}
    assert r["auc"]["constant_per_word"] == {"auc": pytest.approx(0.5), "n_docs": 2}
    assert r["auc"]["attention_all"]["n_docs"] == 2 and 0 <= r["auc"]["attention_all"]["auc"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("pair", [False, True])
def test_custom_data_plausibility_with_injected_explainers(tiny_model, tmp_path, pair):
    """--task custom: the same documents written in the JSONL rationale format (plus one without a rationale; with
    `pair`, a second text whose rationale marks one word) go through plausibility() on the test split of --data:
    the oracle scores 1.0, its complement 0.0, a constant per word 0.5; the unannotated example is counted apart."""
    data = tmp_path / "mydata"
    data.mkdir()
    rows = []
    for docid, (text, spans) in [*DOCS.items(), ("unannotated", ("nobody marked this review", None))]:
        words = text.split()
        row = {"id": docid, "text": " ".join(words), "label": "pos" if docid.startswith("pos") else "neg"}
        if spans is not None:
            row["rationale"] = [int(any(a <= i < b for a, b in spans)) for i in range(len(words))]
        if pair:
            row["text_pair"] = "was it any good ?"
            if spans is not None:
                row["rationale_pair"] = [0, 0, 0, 1, 0]
        rows.append(row)
    for split in ("train", "dev", "test"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    sm.save_teacher(teacher_dir, sm.build_model(tiny_model, "custom", outputs=2),
                    {"model": tiny_model, "task": "custom", "labels": ["neg", "pos"]})

    def batched(fn):
        def explain(batch, examples, docs_):
            T = batch["inputs_mask"].shape[1]
            out = []
            for i in batch["index"].tolist():
                v = fn(examples[i], docs_[i]) if docs_[i]["evidence"] is not None else uniform_per_token(
                    examples[i], docs_[i])
                out.append(torch.cat([v, torch.zeros(T - len(v))]))
            return torch.stack(out)
        return explain

    injected = {"oracle": batched(oracle), "complement": batched(complement),
                "constant_per_word": batched(constant_per_word)}
    cache = {}
    args = sm.resolve(sm.parse_args(["--setup", "plausibility", "--task", "custom", "--data", str(data),
                                     "--out-dir", str(tmp_path / "runs"), "--teacher-dir", str(teacher_dir),
                                     "--max-len", str(MAX_LEN + 8 * pair), "--explainer", "attention_all",
                                     "--eval-batch-size", "8"]), cache)
    r = sm.plausibility(args, None, explainers=injected, dataset=cache["dataset"])
    # the two-class documents: negR_000 and posR_000; with a pair also posR_001 (its rationale word is in the pair)
    # and negR_001 (all rationale, but its pair has non-rationale words)
    n = 4 if pair else 2
    assert r["n_docs"] == len(DOCS) + 1 and r["n_without_rationale"] == 1
    assert r["auc"]["oracle"] == {"auc": pytest.approx(1.0), "n_docs": n}
    assert r["auc"]["complement"] == {"auc": pytest.approx(0.0), "n_docs": n}
    assert r["auc"]["constant_per_word"] == {"auc": pytest.approx(0.5), "n_docs": n}
    assert r["auc"]["attention_all"]["n_docs"] == n and r["alignment"]["test"]["n_examples"] == len(DOCS) + 1
