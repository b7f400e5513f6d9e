"""Rationale datasets (common.py, section "Rationale datasets"): every reader on its fixture in
tests/fixtures/rationale_data, format recognition, bad input (one stderr line naming file:line, exit 2), and the
word -> wordpiece alignment against independent computations: the existing encode_words on SNIPS, a character scan
for spans, and decoding each word's wordpieces back to the word."""
import json
import shutil
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import common

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "rationale_data"

TAGS = ["B-city", "B-date", "B-from", "B-guests", "B-time", "B-to", "I-date", "I-time", "I-to", "O"]
FIXTURES = {  # folder: (format, kind, pair, labels, sizes of train / dev / test)
    "jsonl_words": ("jsonl", "classification", False, ["negative", "neutral", "positive"], (24, 8, 8)),
    "jsonl_spans": ("jsonl", "classification", False, ["0", "1", "2", "10"], (22, 7, 7)),
    "jsonl_pairs": ("jsonl", "classification", True, ["contradiction", "entailment", "neutral"], (18, 6, 6)),
    "jsonl_tagging": ("jsonl", "tagging", False, TAGS, (18, 6, 6)),
    "eraser_docs": ("eraser", "classification", False, ["NEG", "POS"], (18, 6, 6)),
    "eraser_query": ("eraser", "classification", True, ["False", "True"], (18, 6, 6)),
    "hatexplain": ("hatexplain", "classification", False, ["hatespeech", "normal", "offensive"], (22, 6, 6)),
    "hf_disk": ("hf", "classification", False, ["business", "science", "sport"], (18, 6, 6)),
}


@pytest.fixture(scope="module")
def tok():
    return common.load_tokenizer(None)


def read(name, **kw):
    return common.read_rationale_data(str(FIX / name), **kw)


@pytest.mark.parametrize("name", FIXTURES)
def test_every_fixture_is_recognised_and_read_into_one_representation(name):
    fmt, kind, pair, labels, sizes = FIXTURES[name]
    d = read(name)
    assert (d["format"], d["kind"], d["pair"], d["labels"]) == (fmt, kind, pair, labels)
    assert tuple(len(d[s]) for s in ("train", "dev", "test")) == sizes
    assert read(name, data_format=fmt)["labels"] == labels  # named explicitly: the same
    for split in ("train", "dev", "test"):
        ids = [e["id"] for e in d[split]]
        assert len(set(ids)) == len(ids)
        for e in d[split]:
            assert set(e) == {"id", "words", "pair_words", "label", "tags", "rationale", "pair_rationale", "where"}
            assert e["words"] and all(isinstance(w, str) and w for w in e["words"])
            assert (e["pair_words"] is not None) == pair
            assert (e["rationale"] is None) == (e["pair_rationale"] is None) if pair else e["pair_rationale"] is None
            if e["rationale"] is not None:
                assert len(e["rationale"]) == len(e["words"]) and set(e["rationale"]) <= {0, 1}
            if pair and e["pair_rationale"] is not None:
                assert len(e["pair_rationale"]) == len(e["pair_words"])
            if kind == "tagging":
                assert e["label"] is None and len(e["tags"]) == len(e["words"]) and set(e["tags"]) <= set(labels)
            else:
                assert e["tags"] is None and e["label"] in labels
            assert ":" in e["where"]


def fixtures_module():
    sys.path.insert(0, str(FIX))
    try:
        import make_fixtures
    finally:
        sys.path.remove(str(FIX))
    return make_fixtures


def test_jsonl_word_lists_hold_the_marked_words_and_labels_follow_labels_txt():
    mk = fixtures_module()
    d = read("jsonl_words")
    assert d["labels"] == (FIX / "jsonl_words" / "labels.txt").read_text().split()  # not sorted: labels.txt order
    by_id = {e["id"]: e for s in ("train", "dev", "test") for e in d[s]}
    for i, (y, s) in enumerate(mk.REVIEWS):
        e = by_id[f"r{i:02d}"]
        marked = [w.strip("*") for w in s.split() if w.startswith("*")]
        assert e["label"] == y
        if e["rationale"] is not None:
            assert [w for w, r in zip(e["words"], e["rationale"], strict=True) if r] == marked


def brute_spans_mask(text: str, spans) -> list[int]:
    """A span marks every word one of whose characters it covers: a plain character scan."""
    word_of, k, inside = [], -1, False
    for c in text:
        if c.isspace():
            inside = False
            word_of.append(None)
        else:
            k += 0 if inside else 1
            inside = True
            word_of.append(k)
    mask = [0] * (k + 1)
    for s, e in spans:
        for c in range(s, e):
            if word_of[c] is not None:
                mask[word_of[c]] = 1
    return mask


def test_character_spans_mark_every_word_they_touch():
    d = read("jsonl_spans")
    rows = [json.loads(line) for line in (FIX / "jsonl_spans" / "train.jsonl").read_text().splitlines()]
    assert d["labels"] == ["0", "1", "2", "10"]  # integer labels sort as numbers
    partial = 0
    for row, e in zip(rows, d["train"], strict=True):
        assert e["words"] == row["text"].split() and e["label"] == str(row["label"])
        if "rationale_spans" not in row:
            assert e["rationale"] is None
            continue
        assert e["rationale"] == brute_spans_mask(row["text"], row["rationale_spans"])
        partial += any(row["text"][s:t] not in row["text"].split() for s, t in row["rationale_spans"])
    assert partial > 5  # spans covering part of a word ("re" of "refund") mark the word


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab \t\n\u00a0\u3000\u2009é😊")), min_size=1, max_size=40),
       st.lists(st.tuples(st.integers(0, 40), st.integers(1, 20)), max_size=4))
def test_spans_mask_equals_a_character_scan(text, raw):
    if not text.split():
        return
    spans = [[s, s + n] for s, n in raw if s + n <= len(text)]
    assert common._spans_mask(spans, text, "k", "f", 1) == brute_spans_mask(text, spans)
    starts, ends = common.word_bounds(text)
    assert [text[s:e] for s, e in zip(starts, ends, strict=True)] == text.split()


def test_the_whitespace_table_is_exactly_str_isspace():
    assert sorted(common._WHITESPACE.tolist()) == [c for c in range(0x110000) if chr(c).isspace()]


def test_pairs_read_word_lists_and_spans_and_val_jsonl_is_the_dev_split():
    mk = fixtures_module()
    d = read("jsonl_pairs")
    by_id = {e["id"]: e for s in ("train", "dev", "test") for e in d[s]}
    assert all(e["where"].split(":")[0].endswith("val.jsonl") for e in d["dev"])
    for i, (y, p, h) in enumerate(mk.PAIRS):
        e = by_id[str(i)]
        assert e["label"] == y and " ".join(e["words"]) == p.replace("*", "")
        assert e["pair_words"] == h.replace("*", "").split()
        assert [w for w, r in zip(e["pair_words"], e["pair_rationale"], strict=True) if r] == \
            [w.strip("*") for w in h.split() if "*" in w]


def test_tagging_rows_keep_tokens_tags_and_rationale():
    rows = [json.loads(x) for x in (FIX / "jsonl_tagging" / "train.jsonl").read_text().splitlines()]
    d = read("jsonl_tagging")
    for row, e in zip(rows, d["train"], strict=True):
        assert (e["words"], e["tags"], e["rationale"], e["id"]) == (row["tokens"], row["tags"], row["rationale"],
                                                                  row["id"])


def test_eraser_evidence_offsets_mark_the_evidence_text_and_a_constant_query_is_dropped():
    d = read("eraser_docs")
    assert not d["pair"] and d["notes"]["eraser_query"].startswith("dropped: every training annotation asks")
    assert d["notes"]["eraser_evidence_text_mismatch"] == 0
    rows = [json.loads(x) for x in (FIX / "eraser_docs" / "train.jsonl").read_text().splitlines()]
    for row, e in zip(rows, d["train"], strict=True):
        doc = (FIX / "eraser_docs" / "docs" / row["annotation_id"]).read_text().split()
        assert e["words"] == doc and e["id"] == row["annotation_id"] and e["label"] == row["classification"]
        if not row["evidences"]:
            assert e["rationale"] is None
            continue
        expect = [0] * len(doc)
        for group in row["evidences"]:
            for ev in group:
                assert " ".join(doc[ev["start_token"]:ev["end_token"]]) == ev["text"]
                expect[ev["start_token"]:ev["end_token"]] = [1] * (ev["end_token"] - ev["start_token"])
        assert e["rationale"] == expect
    assert not read("eraser_docs", eraser_query="drop")["pair"]
    forced = read("eraser_docs", eraser_query="pair")
    assert forced["pair"] and forced["train"][0]["pair_words"] == "What is the sentiment of this review?".split()


def test_eraser_query_is_the_second_text_and_docs_jsonl_is_read():
    d = read("eraser_query")
    assert d["pair"] and d["notes"]["eraser_query"] == "pair"
    rows = [json.loads(x) for x in (FIX / "eraser_query" / "train.jsonl").read_text().splitlines()]
    for row, e in zip(rows, d["train"], strict=True):
        assert e["pair_words"] == row["query"].split() and e["pair_rationale"] == [0] * len(e["pair_words"])
        ev = row["evidences"][0][0]
        assert [w for w, r in zip(e["words"], e["rationale"], strict=True) if r] == ev["text"].split()
    assert not read("eraser_query", eraser_query="drop")["pair"]


def test_eraser_reader_agrees_with_the_movies_reader_on_real_eraser_rows():
    """The real ERASER Movie Reviews rows of tests/fixtures/real_slices, read by the generic reader and by the
    existing common.read_eraser_movies: the same words and evidence; the evidence texts match their offsets."""
    real = ROOT / "tests" / "fixtures" / "real_slices"
    d = common.read_rationale_data(str(real / "eraser_movies"))
    assert (d["format"], d["pair"], d["labels"]) == ("eraser", False, ["NEG"])  # the first rows: negative reviews
    assert d["notes"]["eraser_evidence_text_mismatch"] == 0
    for split, old in (("train", "train"), ("dev", "val"), ("test", "test")):
        ref = common.read_eraser_movies(real, old)
        assert [e["id"] for e in d[split]] == [r["id"] for r in ref]
        for e, r in zip(d[split], ref, strict=True):
            assert e["words"] == r["words"] and e["rationale"] == r["evidence"]
            assert e["label"] == ("POS" if r["label"] else "NEG")


def write_jsonl(path: Path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def esnli_like(root: Path, with_docids: bool) -> Path:
    """ERASER e-SNLI layout: premise and hypothesis are two documents of one annotation, a fixed query."""
    d = root / ("esnli_docids" if with_docids else "esnli")
    d.mkdir()
    docs, rows = [], []
    for i, (y, p, h) in enumerate([("entailment", "a man plays a guitar", "a man makes music"),
                                   ("contradiction", "a dog sleeps", "a dog runs"),
                                   ("neutral", "two girls walk", "the girls are sisters")]):
        docs += [{"docid": f"a{i}_premise", "document": p}, {"docid": f"a{i}_hypothesis", "document": h}]
        rows.append({"annotation_id": f"a{i}", "classification": y, "query": "What is the relationship?",
                     "evidences": [[{"docid": f"a{i}_hypothesis", "start_token": 2, "end_token": 3, "text": ""}]],
                     **({"docids": [f"a{i}_premise", f"a{i}_hypothesis"]} if with_docids else {})})
    write_jsonl(d / "docs.jsonl", docs)
    for split in ("train", "val", "test"):
        write_jsonl(d / f"{split}.jsonl", rows)
    return d


@pytest.mark.parametrize("with_docids", [True, False])
def test_eraser_two_documents_make_a_pair_and_the_query_is_not_added(tmp_path, with_docids):
    folder = esnli_like(tmp_path, with_docids)
    d = common.read_rationale_data(str(folder))
    e = d["train"][0]
    assert d["pair"] and (e["words"], e["pair_words"]) == ("a man plays a guitar".split(), "a man makes music".split())
    assert e["rationale"] == [0] * 5 and e["pair_rationale"] == [0, 0, 1, 0]
    assert d["notes"]["eraser_evidence_text_mismatch"] == 9  # 3 splits x 3; the evidence texts above are empty
    with pytest.raises(common.DataError, match="train.jsonl:1: --eraser-query pair: this annotation already has two"):
        common.read_rationale_data(str(folder), eraser_query="pair")


def test_hatexplain_majority_label_majority_rationale_and_normal_posts_without_rationale():
    raw = json.loads((FIX / "hatexplain" / "dataset.json").read_text())
    d = read("hatexplain")
    union = read("hatexplain", hatexplain_rationale="union")
    assert d["notes"]["hatexplain_no_majority_dropped"] == {"train": 2, "dev": 0, "test": 0}
    kept = {e["id"] for s in ("train", "dev", "test") for e in d[s]}
    assert {"1015_twitter", "1025_twitter"}.isdisjoint(kept)  # three different labels: no majority, dropped
    differ = 0
    for e, u in zip(d["train"], union["train"], strict=True):
        post = raw[e["id"]]
        labels = [a["label"] for a in post["annotators"]]
        assert labels.count(e["label"]) >= 2
        rats = post["rationales"]
        if not rats:
            assert e["rationale"] is None and u["rationale"] is None
            continue
        assert e["rationale"] == [int(sum(col) * 2 > len(rats)) for col in zip(*rats, strict=True)]
        assert u["rationale"] == [int(any(col)) for col in zip(*rats, strict=True)]
        differ += e["rationale"] != u["rationale"]
    assert differ > 0
    assert all(e["rationale"] is None for e in d["train"] if e["label"] == "normal")


def test_hf_folder_reads_class_label_names_and_missing_rationales():
    import datasets
    ds = datasets.load_from_disk(str(FIX / "hf_disk"))
    d = read("hf_disk")
    assert d["labels"] == ds["train"].features["label"].names
    for row, e in zip(ds["train"], d["train"], strict=True):
        assert e["words"] == row["text"].split() and e["label"] == d["labels"][row["label"]]
        assert e["rationale"] == row["rationale"]
    assert sum(e["rationale"] is None for e in d["train"]) > 0
    assert read("hf_disk", rationale_column="rationale")["train"][1]["rationale"] == d["train"][1]["rationale"]


def hf_pairs_and_tags(root: Path) -> tuple[Path, Path]:
    """Two tiny DatasetDicts: pairs with word-list texts and character-span rationales; tagging with ClassLabel tags."""
    import datasets
    pairs = datasets.Dataset.from_list([
        {"premise": "a man plays a guitar", "hypothesis": ["someone", "makes", "music"], "y": "yes",
         "why": [[2, 7]], "why_pair": [0, 0, 1]},
        {"premise": "a dog sleeps", "hypothesis": ["a", "dog", "runs"], "y": "no", "why": None, "why_pair": None}])
    a = root / "hf_pairs"
    datasets.DatasetDict({"train": pairs, "validation": pairs, "test": pairs}).save_to_disk(str(a))
    feats = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                               "ner": datasets.Sequence(datasets.ClassLabel(names=["O", "B-city", "I-city"]))})
    tags = datasets.Dataset.from_list([{"tokens": ["fly", "to", "new", "york"], "ner": [0, 0, 1, 2]},
                                       {"tokens": ["hi"], "ner": [0]}], features=feats)
    b = root / "hf_tags"
    datasets.DatasetDict({"train": tags, "dev": tags, "test": tags}).save_to_disk(str(b))
    return a, b


def test_hf_columns_named_by_flags_pairs_spans_and_tags(tmp_path):
    a, b = hf_pairs_and_tags(tmp_path)
    d = common.read_rationale_data(str(a), "hf", text_column="premise", pair_column="hypothesis", label_column="y",
                                   rationale_column="why", rationale_pair_column="why_pair")
    e = d["train"][0]
    assert d["pair"] and d["labels"] == ["no", "yes"]
    assert (e["rationale"], e["pair_words"], e["pair_rationale"]) == ([0, 1, 1, 0, 0], ["someone", "makes", "music"],
                                                                      [0, 0, 1])
    assert d["train"][1]["rationale"] is None
    t = common.read_rationale_data(str(b), text_column="tokens", tags_column="ner")
    assert t["kind"] == "tagging" and t["labels"] == ["O", "B-city", "I-city"]
    assert t["train"][0]["tags"] == ["O", "O", "B-city", "I-city"] and t["train"][0]["rationale"] is None


# --- format recognition
def test_an_ambiguous_or_unknown_folder_is_one_error_listing_the_choices(tmp_path):
    amb = tmp_path / "amb"
    shutil.copytree(FIX / "jsonl_words", amb)
    for f in ("dataset.json", "post_id_divisions.json"):
        shutil.copy(FIX / "hatexplain" / f, amb / f)
    with pytest.raises(common.UsageError, match=r"matches more than one format .*--data-format \{jsonl,hatexplain\}"):
        common.read_rationale_data(str(amb))
    (amb / "labels.txt").unlink()  # the JSONL dataset's labels would apply to the HateXplain one too
    assert common.read_rationale_data(str(amb), "hatexplain")["format"] == "hatexplain"
    (tmp_path / "empty").mkdir()
    with pytest.raises(common.UsageError, match="no rationale dataset format recognised.*eraser.*hatexplain.*hf"):
        common.read_rationale_data(str(tmp_path / "empty"))
    with pytest.raises(common.UsageError, match="not an existing folder.*needs --data-format hf"):
        common.read_rationale_data("someone/some-dataset")


def test_the_flags_parse_with_their_domains():
    a = common.parse_dataclass(common.RationaleDataArgs, ["--data", str(FIX / "jsonl_words"), "--data-format",
                                                          "jsonl", "--text-column", "review"], "x")
    assert (a.data_format, a.text_column, a.eraser_query, a.hatexplain_rationale) == ("jsonl", "review", "auto",
                                                                                     "majority")
    common.check_args(a)
    for bad in (["--data-format", "csv"], ["--eraser-query", "maybe"], ["--hatexplain-rationale", "any"]):
        with pytest.raises(SystemExit):  # enumerated flags: checked against their choices at parsing
            common.parse_dataclass(common.RationaleDataArgs, bad, "x")
    for bad, flag in ((["--text-column", " "], "--text-column"), (["--data", "~/x"], "--data"),
                      (["--data", "no/such/dir/here"], "--data")):
        with pytest.raises(common.UsageError, match=f"^{flag} must be"):  # the others: their domain, once
            common.check_args(common.parse_dataclass(common.RationaleDataArgs, bad, "x"))


# --- bad input: one line naming file:line, exit code 2
def edit(file: str, line: int, **change):
    """Replace fields of row `line` of `file` (a value None deletes the field)."""
    def apply(d: Path):
        lines = (d / file).read_text().splitlines()
        row = json.loads(lines[line - 1])
        for k, v in change.items():
            row.pop(k, None) if v is None else row.__setitem__(k, v)
        lines[line - 1] = json.dumps(row)
        (d / file).write_text("\n".join(lines) + "\n")
    return apply


def raw(file: str, line: int, data: bytes):
    """Replace line `line` of `file` with raw bytes (line 0: prepend)."""
    def apply(d: Path):
        lines = (d / file).read_bytes().split(b"\n")
        if line == 0:
            lines[0] = data + lines[0]
        else:
            lines[line - 1] = data
        (d / file).write_bytes(b"\n".join(lines))
    return apply


def set_item(file: str, line: int, key: str, index: int, value):
    """Set row[key][index] of row `line` of `file`."""
    def apply(d: Path):
        lines = (d / file).read_text().splitlines()
        row = json.loads(lines[line - 1])
        row[key][index] = value
        lines[line - 1] = json.dumps(row)
        (d / file).write_text("\n".join(lines) + "\n")
    return apply


def remove(file: str):
    return lambda d: (d / file).unlink()


def copy(src: str, dst: str):
    return lambda d: shutil.copy(d / src, d / dst)


def write(file: str, text: str):
    return lambda d: (d / file).write_text(text)


def hatexplain_edit(fn):
    def apply(d: Path):
        data = json.loads((d / "dataset.json").read_text())
        fn(data)
        (d / "dataset.json").write_text(json.dumps(data, indent=1))
    return apply


def docs_jsonl(d: Path):
    shutil.rmtree(d / "docs", ignore_errors=True)
    (d / "docs.jsonl").write_text('{"docid": "x", "document": "a b"}\n')


BAD = [  # (fixture, change, extra reader arguments, what the one line says)
    ("jsonl_words", raw("train.jsonl", 3, b"{not json"), {}, "train.jsonl:3: malformed JSON"),
    ("jsonl_words", raw("train.jsonl", 3, b"[1, 2]"), {}, "train.jsonl:3: expected a JSON object"),
    ("jsonl_words", edit("train.jsonl", 2, text=None), {}, "train.jsonl:2: missing field 'text'"),
    ("jsonl_words", edit("train.jsonl", 4, label=None), {}, "train.jsonl:4: missing field 'label'"),
    ("jsonl_words", edit("train.jsonl", 4, label=1.5), {}, "train.jsonl:4: field 'label' must be a string or an int"),
    ("jsonl_words", edit("dev.jsonl", 1, label="mixed"), {}, "dev.jsonl:1: label 'mixed' not in labels.txt"),
    ("jsonl_spans", edit("test.jsonl", 2, label=99), {}, "test.jsonl:2: label '99' never seen in train.jsonl"),
    ("jsonl_spans", edit("train.jsonl", 3, label="billing"), {}, "train.jsonl:3: labels mix integers and strings"),
    ("jsonl_words", edit("train.jsonl", 1, rationale=[0, 1, 0]), {},
     "train.jsonl:1: field 'rationale' has 3 values for 9 words"),
    ("jsonl_words", edit("train.jsonl", 1, rationale=[0, 2, 0, 0, 0, 0, 0, 0, 0]), {},
     "train.jsonl:1: field 'rationale' must hold only 0 and 1"),
    ("jsonl_spans", edit("train.jsonl", 1, rationale_spans=[[0, 500]]), {},
     "train.jsonl:1: field 'rationale_spans': span [0, 500] is outside its text of 60 characters"),
    ("jsonl_spans", edit("train.jsonl", 1, rationale_spans=[[-1, 3]]), {}, "span [-1, 3] is outside its text"),
    ("jsonl_spans", edit("train.jsonl", 2, rationale_spans=[[5, 5]]), {},
     "train.jsonl:2: field 'rationale_spans': span [5, 5] has start >= end"),
    ("jsonl_spans", edit("train.jsonl", 2, rationale_spans=[[1, "a"]]), {}, "a span must be [start, end]"),
    ("jsonl_spans", edit("train.jsonl", 2, rationale=[0] * 9), {}, "train.jsonl:2: give 'rationale' or"),
    ("jsonl_words", edit("train.jsonl", 2, rationale_pair=[1]), {}, "train.jsonl:2: a pair rationale without"),
    ("jsonl_pairs", edit("train.jsonl", 2, text_pair=None, rationale_pair=None, rationale_pair_spans=None), {},
     "train.jsonl:2: no second text, but the first training example has one"),
    ("jsonl_pairs", edit("test.jsonl", 1, text_pair="   "), {}, "test.jsonl:1: empty text_pair"),
    ("jsonl_words", raw("train.jsonl", 5, b'{"text": "caf\xe9 au lait", "label": "neutral"}'), {},
     "train.jsonl:5: not valid UTF-8"),
    ("jsonl_words", raw("dev.jsonl", 0, common.BOM), {}, "dev.jsonl:1: starts with a UTF-8 byte-order mark"),
    ("jsonl_words", edit("train.jsonl", 6, id="r00"), {}, "train.jsonl:6: duplicate id 'r00' (first at line 1)"),
    ("jsonl_words", edit("test.jsonl", 3, text=" \t "), {}, "test.jsonl:3: empty text"),
    ("jsonl_pairs", copy("val.jsonl", "dev.jsonl"), {}, "holds both dev.jsonl and val.jsonl"),
    ("jsonl_words", remove("test.jsonl"), {}, "test.jsonl: file missing"),
    ("jsonl_words", write("labels.txt", "negative\nneutral\npositive\nneutral\n"), {},
     "labels.txt:4: label 'neutral' listed twice (first at line 2)"),
    ("jsonl_tagging", set_item("train.jsonl", 2, "tags", 1, "X-to"), {}, "train.jsonl:2: malformed BIO tag \"X-to\""),
    ("jsonl_tagging", edit("train.jsonl", 2, tags=["O"]), {}, "train.jsonl:2: field 'tags' must be a list of one"),
    ("jsonl_tagging", set_item("dev.jsonl", 1, "tags", 2, "B-zz"), {},
     "dev.jsonl:1: tag 'B-zz' never seen in train.jsonl"),
    ("jsonl_tagging", edit("train.jsonl", 3, tokens=None, text="a b"), {}, "train.jsonl:3: a classification row"),
    ("eraser_docs", edit("train.jsonl", 1, evidences=[[{"docid": "posR_000.txt", "start_token": 5,
                                                        "end_token": 999}]]), {},
     "train.jsonl:1: evidence [5, 999) is beyond document 'posR_000.txt' of 41 tokens"),
    ("eraser_docs", edit("train.jsonl", 1, evidences=[[{"docid": "posR_000.txt", "start_token": 5,
                                                        "end_token": 3}]]), {}, "train.jsonl:1: evidence [5, 3)"),
    ("eraser_docs", edit("train.jsonl", 1, evidences=[[{"docid": "negR_001.txt", "start_token": 0,
                                                        "end_token": 1}]]), {},
     "train.jsonl:1: evidence in document 'negR_001.txt', which the annotation does not name"),
    ("eraser_docs", remove("docs/posR_002.txt"), {}, "train.jsonl:2: document 'posR_002.txt' missing under docs/"),
    ("eraser_docs", lambda d: (remove("docs/posR_002.txt")(d), edit("train.jsonl", 2, evidences=[])(d)), {},
     "train.jsonl:2: cannot tell the document of annotation 'posR_002.txt'"),
    ("eraser_docs", edit("train.jsonl", 2, docids=["nope.txt"]), {}, "train.jsonl:2: document 'nope.txt' missing"),
    ("eraser_docs", edit("train.jsonl", 2, docids=["../train.jsonl"]), {}, "document '../train.jsonl' missing"),
    ("eraser_docs", edit("train.jsonl", 3, classification=None), {}, "train.jsonl:3: missing field 'classification'"),
    ("eraser_docs", raw("docs/posR_000.txt", 0, common.BOM), {}, "posR_000.txt:1: starts with a UTF-8 byte-order"),
    ("eraser_docs", write("docs.jsonl", ""), {}, "holds both docs/ and docs.jsonl"),
    ("eraser_docs", docs_jsonl, {}, "train.jsonl:1: document 'posR_000.txt' is not in docs.jsonl"),
    ("eraser_query", raw("docs.jsonl", 3, b'{"docid": "orchestra", "document": '), {}, "docs.jsonl:3: malformed JSON"),
    ("eraser_query", edit("val.jsonl", 2, classification="Maybe"), {}, "val.jsonl:2: label 'Maybe' never seen"),
    ("hatexplain", hatexplain_edit(lambda d: d.pop("1003_twitter")), {},
     "post_id_divisions.json:4: post '1003_twitter' of the train split is not in dataset.json"),
    ("hatexplain", hatexplain_edit(lambda d: d["1004_gab"]["rationales"][0].append(1)), {},
     "dataset.json:144: field 'rationales' has 9 values for 8 words"),
    ("hatexplain", raw("dataset.json", 10, b'  "post_id": 1001_gab,'), {}, "dataset.json:10: malformed JSON"),
    ("hf_disk", lambda d: None, {"text_column": "sentence"}, "--text-column 'sentence' is not a column of"),
    ("hf_disk", lambda d: None, {"rationale_column": "highlights"}, "--rationale-column 'highlights' is not a column"),
    ("hf_disk", lambda d: None, {"data_format": "hf", "tags_column": "label"}, "train:1: field 'tags' must be a list"),
]


@pytest.mark.parametrize("fixture,change,kw,message", BAD, ids=[f"{b[0]}:{b[3][:40]}" for b in BAD])
def test_bad_input_is_one_line_naming_file_and_line_exit_2(tmp_path, capsys, fixture, change, kw, message):
    d = tmp_path / fixture
    shutil.copytree(FIX / fixture, d)
    change(d)
    rc = common.run_cli(lambda _: common.read_rationale_data(str(d), **kw), lambda argv: None, [])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert message in err.replace(str(d) + "/", ""), err


def test_hf_rows_are_named_by_split_and_row(tmp_path):
    import datasets
    ds = datasets.Dataset.from_list([{"text": "a b c", "label": "x", "rationale": [0, 1, 0]},
                                     {"text": "d e", "label": "y", "rationale": [1, 1, 1]}])
    datasets.DatasetDict({"train": ds, "validation": ds, "test": ds}).save_to_disk(str(tmp_path / "h"))
    with pytest.raises(common.DataError, match=r"h/train:2: field 'rationale' has 3 values for 2 words"):
        common.read_rationale_data(str(tmp_path / "h"))


# --- alignment (the packaged MiniLM tokenizer; other architectures in test_models.py)
def norm(s: str) -> str:
    """Lower case without accents (as uncased tokenizers normalise), no spaces."""
    return "".join(c for c in unicodedata.normalize("NFD", s.lower()) if not unicodedata.combining(c) and c != " ")


def check_alignment(tok, examples, enc, max_len):
    """Independent of the offsets: the wordpieces of each word are contiguous and decode back to the word
    (normalised as the tokenizer may: lower case, no accents; a word cut by max_len to a prefix of it), special tokens
    are where the tokenizer puts them, and the rationale of each wordpiece is its word's."""
    for e, x in zip(examples, enc, strict=True):
        words = e["words"] + (e["pair_words"] or [])
        marks = (e["rationale"] or [0] * len(e["words"])) + ((e["pair_rationale"] or [0] * len(e["pair_words"]))
                                                               if e["pair_words"] else [])
        toks = tok.convert_ids_to_tokens(x["input_ids"])
        assert len(x["rationale"]) == len(x["word_of_piece"]) == len(x["input_ids"]) == x["length"]
        assert x["special_tokens_mask"] == [int(w == -1) for w in x["word_of_piece"]]
        seen = [w for w in x["word_of_piece"] if w >= 0]
        assert seen == sorted(seen)  # contiguous, in word order
        last = {max(w for w in seen if (w < len(e["words"])) == first) for first in (True, False)
                if any((w < len(e["words"])) == first for w in seen)}
        for w in set(seen):
            pieces = [t for t, i in zip(toks, x["word_of_piece"], strict=True) if i == w]
            if tok.unk_token in pieces:
                continue
            decoded = norm(tok.convert_tokens_to_string(pieces))
            if x["length"] == max_len and w in last:
                assert norm(words[w]).startswith(decoded), (pieces, words[w])
            else:
                assert decoded == norm(words[w]), (pieces, words[w])
        assert x["rationale"] == [marks[w] if w >= 0 else 0 for w in x["word_of_piece"]]
        assert [x["word_of_piece"][p] for p in x["word_index"]] == list(range(len(x["word_index"])))


@pytest.mark.parametrize("name", FIXTURES)
def test_alignment_marks_exactly_each_rationale_words_wordpieces(tok, name):
    d = read(name)
    for max_len in (512, 16):
        enc, counts = common.align_rationales(tok, d["train"], max_len)
        check_alignment(tok, d["train"], enc, max_len)
        direct = [tok(" ".join(e["words"]), " ".join(e["pair_words"]) if e["pair_words"] else None, truncation=True,
                      max_length=max_len) for e in d["train"]]
        assert [x["input_ids"] for x in enc] == [x["input_ids"] for x in direct]
        assert [x["token_type_ids"] for x in enc] == [x["token_type_ids"] for x in direct]
        assert counts["n_examples"] == len(d["train"])
        assert counts["n_without_rationale"] == sum(e["rationale"] is None for e in d["train"])


def test_rationale_cut_by_max_len_is_counted_against_an_untruncated_alignment(tok):
    d = read("eraser_query")
    full, _ = common.align_rationales(tok, d["train"], 512)
    for max_len in (16, 24, 40):
        cut, counts = common.align_rationales(tok, d["train"], max_len)
        n_cut = n_lost = n_trunc = 0
        for e, a, b in zip(d["train"], full, cut, strict=True):
            marks = e["rationale"] + e["pair_rationale"]
            kept, every = set(b["word_of_piece"]) - {-1}, set(a["word_of_piece"]) - {-1}
            lost = [w for w in every - kept if marks[w]]
            n_cut += bool(lost)
            n_lost += bool(lost) and len(lost) == sum(marks)
            n_trunc += every != kept
            assert b["n_rationale_words_cut"] == len(lost)
        assert (counts["n_rationale_cut"], counts["n_rationale_lost"], counts["n_truncated"]) == (n_cut, n_lost,
                                                                                                 n_trunc)
        assert n_cut > 0


def test_counts_of_empty_full_and_missing_rationales_and_words_without_wordpieces(tok):
    ex = [common._example("a", ["good", "film"], "x", "f:1", rationale=[1, 1]),
          common._example("b", ["a", "film"], "x", "f:2", rationale=[0, 0]),
          common._example("c", ["a", "film"], "x", "f:3"),
          common._example("d", ["so", "\u200b", "good", "\ufffd"], "x", "f:4", rationale=[0, 1, 1, 0])]
    enc, counts = common.align_rationales(tok, ex, 64)
    assert counts == {"n_examples": 4, "n_without_rationale": 1, "n_empty_rationale": 1, "n_full_rationale": 1,
                      "n_truncated": 0, "n_rationale_cut": 0, "n_rationale_lost": 0, "n_words_without_wordpiece": 2}
    x = enc[3]
    assert tok.convert_ids_to_tokens(x["input_ids"]) == ["[CLS]", "so", "good", "[SEP]"]
    assert x["word_of_piece"] == [-1, 0, 2, -1] and x["rationale"] == [0, 0, 1, 0]
    assert x["word_index"] == [1, 2, 2, 2]  # a word without wordpieces takes the next word's (or the last) position
    assert [e["has_rationale"] for e in enc] == [True, True, False, True]


def test_encode_rationale_split_adds_label_ids_tag_ids_and_batches(tok):
    d = read("jsonl_tagging")
    enc, _ = common.encode_rationale_split(tok, d["train"], d["labels"], 8)
    for e, x in zip(d["train"], enc, strict=True):
        assert x["tags"] == [d["labels"].index(t) for t in e["tags"][:len(x["word_index"])]]
        assert x["id"] == e["id"]
    batch = common.collate(enc[:4], tok.pad_token_id)
    assert batch["tags"].shape == batch["word_index"].shape
    c, _ = common.encode_rationale_split(tok, read("jsonl_words")["train"], read("jsonl_words")["labels"], 64)
    assert [x["label"] for x in c] == [["negative", "neutral", "positive"].index(e["label"])
                                       for e in read("jsonl_words")["train"]]


def snips_examples(n: int | None = None) -> list[dict]:
    raw = common.read_snips(ROOT / "data", "train")[:n]
    return [common._example(e["id"], e["words"], e["intent"], "snips", rationale=common.ic_rationale(e["words"],
                                                                                                       e["intent"]))
            for e in raw]


def compare_with_encode_words(tok, examples, max_len):
    enc, _ = common.align_rationales(tok, examples, max_len)
    special, differ = set(tok.all_special_ids), []
    for e, x in zip(examples, enc, strict=True):
        ref = common.encode_words(tok, e["words"], e["rationale"], max_len)
        for k in ("input_ids", "token_type_ids", "rationale"):
            assert x[k] == ref[k], (e["words"], k)
        assert x["content"] == [int(t not in special) for t in ref["input_ids"]]  # as load_uimer_task computes it
        if x["word_index"] != ref["word_index"]:
            differ.append(e["words"])
    return differ


def test_alignment_equals_encode_words_on_snips_ic(tok):
    assert compare_with_encode_words(tok, snips_examples(600), 50) == []


@pytest.mark.slow
def test_alignment_equals_encode_words_on_the_whole_snips_training_set(tok):
    """Same input_ids, token type ids and rationale masks on all 13,084 sentences; word_index differs only for a
    sentence with a word that has no wordpiece (U+FFFD characters), which encode_words skips (shifting the later
    words' positions) and align_rationales gives its neighbour's position."""
    for max_len in (50, 12):
        differ = compare_with_encode_words(tok, snips_examples(), max_len)
        assert len(differ) == 1 and "\ufffd" in " ".join(differ[0])


@pytest.mark.parametrize("argv,words", [(["--n", "0"], "--n: must be an integer in [1, 10000000]"),
                                        (["--max-len", "4096"], "above the model's position limit of 512"),
                                        (["--model", "./no/such/model"], "does not exist")])
def test_the_read_align_bench_stops_on_bad_flags_in_one_line(argv, words, capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import bench_read_align
    finally:
        sys.path.remove(str(ROOT / "bench"))
    try:
        code = bench_read_align.cli(argv)
    except SystemExit as e:  # argparse's errors exit through SystemExit (one line: toolbox.OneLineParser)
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


@pytest.mark.slow
def test_the_read_align_bench_runs():
    import subprocess
    p = subprocess.run([sys.executable, "bench/bench_read_align.py", "--n", "60", "--words", "30", "--repeats", "1"],
                       capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert p.returncode == 0, p.stderr[-2000:]
    assert "read + align =" in p.stdout and "CPU:" in p.stdout
