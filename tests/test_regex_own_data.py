"""REGEX on your own data and model (issues 21, 22): every classification format of the rationale readers, three
architectures, any number of classes, sentence pairs; special tokens found by the tokenizer, not by position;
explanations.jsonl from the suite's own attributions; the training term in your own loop (regex_loss) equal to the
script's; the page's own-loop code run from a folder holding only regex_robust.py and common.py; bad input."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from doc_blocks import own_loop_blocks

import common
import regex_robust as rx

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "rationale_data"
FORMATS = {"jsonl_words": [], "jsonl_spans": [], "jsonl_pairs": [], "eraser_docs": [], "eraser_query": [],
           "hatexplain": [], "hf_disk": ["--data-format", "hf"]}
PAIRS = {"jsonl_pairs", "eraser_query"}
QUICK = ["--max-epochs", "1", "--max-len", "64", "--ig-steps", "2", "--batch-size", "6", "--eval-batch-size", "8",
         "--igr", "--egt", "--egt-start", "0", "--attributions", "random,attention,ig", "--explain-examples", "4"]


def run_custom(folder: Path, model: str, out: Path, *extra: str) -> dict:
    return rx.main(rx.parse_args(["--task", "custom", "--data", str(folder), "--model", model, "--out-dir", str(out),
                                  *QUICK, *extra]))


def check_run(r: dict, dataset: dict, n_explained: int = 4) -> list[dict]:
    """What a custom run must write: the data's labels, the alignment counts, the suite on the test set, plausibility
    against the data's own rationales (the suite's wordpiece table and the explanations' summary), and
    explanations.jsonl with one row per explained example and a score per word for every explainer."""
    run = Path(r["run_dir"])
    assert r["labels"] == dataset["labels"] and r["pair"] == dataset["pair"]
    assert r["alignment"]["train"]["n_examples"] == r["n_train"] == len(dataset["train"])
    assert r["n_test"] == len(dataset["test"]) and 0 <= r["test"]["accuracy"] <= 1
    assert set(r["faithfulness"]) == {"random", "attention", "ig"}
    assert all(math.isfinite(v) for row in r["faithfulness"].values() for k, v in row.items()
               if k != "gain_over_random")
    wp = r["wordpiece_plausibility"]["ig"]
    assert wp["n_docs"] > 0 and 0 <= wp["token_auc"] <= 1
    plaus = json.loads((run / "results.json").read_text(), parse_constant=pytest.fail)["plausibility"]
    assert plaus == r["plausibility"] and plaus["n_explained"] == n_explained and plaus["own"] == "regex_ig"
    assert set(plaus["explainers"]) == {"ig", "regex_ig", "random", "attention"}
    assert plaus["n_used"] + plaus["n_no_rationale"] + plaus["n_all_rationale"] == n_explained
    rows = [json.loads(line) for line in (run / "explanations.jsonl").read_text().splitlines()]
    assert [x["index"] for x in rows] == list(range(n_explained))
    for x in rows:
        assert set(x["scores"]) == {"ig", "regex_ig", "random", "attention"}
        assert (x["pair_start"] is not None) == dataset["pair"] and x["rationale"] is not None
        assert x["gold"] in dataset["labels"] and x["pred"] in dataset["labels"]
        for s in x["scores"].values():
            assert len(s) == len(x["words"]) and all(v is None or math.isfinite(v) for v in s)
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_training_and_the_suite_on_every_classification_format(fmt, tiny_model, tmp_path):
    dataset = common.read_rationale_data(str(FIXTURES / fmt), FORMATS[fmt][1] if FORMATS[fmt] else "auto")
    r = run_custom(FIXTURES / fmt, tiny_model, tmp_path, *FORMATS[fmt])
    check_run(r, dataset)
    assert r["pair"] == (fmt in PAIRS)


@pytest.fixture(scope="module")
def archs(tmp_path_factory) -> dict[str, str]:
    from tiny_models import make_tiny_model
    return {a: str(make_tiny_model(a, tmp_path_factory.mktemp(a))) for a in ("bert", "roberta", "distilbert")}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_three_architectures_single_texts_and_pairs(arch, archs, tmp_path):
    """Three classes of single texts with the ERASER definitions and EGT towards the human rationale; sentence pairs
    with ferret's (candidates and re-tokenising found by the tokenizer's special ids: RoBERTa's </s></s>)."""
    words = common.read_rationale_data(str(FIXTURES / "jsonl_words"))
    r = run_custom(FIXTURES / "jsonl_words", archs[arch], tmp_path / "w", "--egt-saliency", "rationale")
    check_run(r, words)
    steps = [json.loads(s) for s in (Path(r["run_dir"]) / "log.jsonl").read_text().splitlines() if '"L_EGT"' in s]
    assert steps and all(0 < s["n_egt"] <= 6 and math.isfinite(s["L_EGT"]) for s in steps)
    pairs = common.read_rationale_data(str(FIXTURES / "jsonl_pairs"))
    r = run_custom(FIXTURES / "jsonl_pairs", archs[arch], tmp_path / "p", "--convention", "ferret")
    check_run(r, pairs)
    assert r["faithfulness"]["ig"]["n_taucorr_loo"] > 0


@pytest.mark.slow
def test_three_classes_saved_and_evaluated_again(tiny_model, tmp_path):
    """A 3-class run saves a standard folder with the data's label names (pipeline-loadable), and --evaluate-only on
    it gives the run's test numbers and faithfulness table again."""
    from transformers import pipeline
    dataset = common.read_rationale_data(str(FIXTURES / "jsonl_words"))
    r = run_custom(FIXTURES / "jsonl_words", tiny_model, tmp_path / "a", "--convention", "ferret")
    assert len(r["labels"]) == 3
    model_dir = Path(r["run_dir"]) / "model"
    clf = pipeline("text-classification", model=str(model_dir), top_k=None)
    scores = clf(["the waiter was friendly"])[0]  # every label's probability
    assert {d["label"] for d in scores} == set(dataset["labels"])
    preds = [json.loads(x) for x in (Path(r["run_dir"]) / "predictions.jsonl").read_text().splitlines()]
    assert {p["pred"] for p in preds} <= {0, 1, 2} and len(preds) == 8
    e = rx.main(rx.parse_args(["--task", "custom", "--data", str(FIXTURES / "jsonl_words"), "--evaluate-only",
                               "--checkpoint", r["run_dir"], "--out-dir", str(tmp_path / "b"), *QUICK,
                               "--convention", "ferret"]))
    assert e["test"] == r["test"] and e["faithfulness"] == r["faithfulness"] and e["n_train"] == 0
    assert e["plausibility"]["explainers"] == r["plausibility"]["explainers"]


# ---------------------------------------------------------------------------------------------- special tokens
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_special_tokens_are_found_by_the_tokenizer_not_by_position(arch, archs):
    """Pairs put special tokens mid-sequence (BERT's [SEP], RoBERTa's </s></s>): ferret's candidates leave out exactly
    the tokens the tokenizer added (its special_tokens_mask), re-tokenising with nothing removed gives the input
    back, rebuilt rows get the tokenizer's own token types, and a text whose first text is removed entirely stays a
    pair."""
    tok = common.load_tokenizer(archs[arch])
    ex = [{"id": str(i), "words": a.split(), "pair_words": b.split(), "rationale": None, "pair_rationale": None,
           "label": "x"} for i, (a, b) in enumerate([("a woman is walking her dog", "a person is outside"),
                                                      ("three musicians perform", "a band plays music")])]
    enc, _ = common.encode_rationale_split(tok, ex, ["x"], 64)
    batch = common.collate(enc, tok.pad_token_id)
    clf = rx.as_classifier(common.TaskModel(common.load_encoder(archs[arch]), "cls", 2), tok)
    interior = rx.interior_positions(clf, batch)
    for r, x in enumerate(enc):
        assert interior[r, :x["length"]].tolist() == [not s for s in x["special_tokens_mask"]]
        assert not interior[r, x["length"]:].any()
    keep = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    rows = rx.removed_rows(batch["input_ids"], batch["attention_mask"], keep, "retokenize", clf, 64)
    assert [list(r) for r in rows] == [x["input_ids"] for x in enc]
    types = rx.row_types(batch["input_ids"], batch["attention_mask"], clf)
    for r, x in enumerate(enc):
        want = x["token_type_ids"] if "token_type_ids" in tok.model_input_names else [0] * x["length"]
        assert types[r, :x["length"]].tolist() == want
    first = keep.clone()
    first[0, 1:1 + len(ex[0]["words"])] = True  # BERT: every wordpiece of a one-piece-per-word first text
    row = rx.removed_rows(batch["input_ids"], batch["attention_mask"], first if arch != "roberta" else
                          torch.tensor([x == 0 for x in enc[0]["special_tokens_mask"]])[None] &
                          torch.tensor([w < len(ex[0]["words"]) for w in enc[0]["word_of_piece"]])[None],
                          "retokenize", clf, 64)[0]
    assert list(row) == tok("", " ".join(ex[0]["pair_words"]))["input_ids"]


def test_encode_text_takes_special_positions_from_the_tokenizer(tiny_model):
    tok = common.load_tokenizer(tiny_model)
    e = rx.encode_text(tok, "the unbelievably good film".split(), 32, 1, 0)
    assert e["word_ids"][0] == e["word_ids"][-1] == -1 and -1 not in e["word_ids"][1:-1]
    assert e["word_ids"] == e["word_of_piece"]  # one text: the same map as encode_words gives


# ---------------------------------------------------------------------------------------------- explanations
@pytest.mark.slow
def test_explanations_are_the_suites_attributions_and_sst2_has_no_rationale_rows(tiny_model, tmp_path):
    """explanations.jsonl's REGEX explainers are the suite's own scores (word = sum of its wordpieces), looked up,
    not computed again; SST-2 has no rationales: every row's rationale is null and nothing is used; --explain-examples
    0 writes neither the file nor the key."""
    from test_regex import write_tiny_text_data
    data = write_tiny_text_data(tmp_path / "d")
    argv = ["--model", tiny_model, "--data-dir", str(data), "--out-dir", str(tmp_path / "o"), "--max-epochs", "1",
            "--ig-steps", "2", "--attributions", "random,ig,deeplift", "--no-randomization", "--explain-examples", "5",
            "--egt", "--egt-saliency", "input_x_gradient", "--egt-start", "0"]
    args = rx.resolve(rx.parse_args(argv))
    r = rx.run_one_seed(args, 1)
    rows = [json.loads(x) for x in (Path(r["run_dir"]) / "explanations.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all(x["rationale"] is None and x["skipped"] == "no rationale data" for x in rows)
    plaus = r["plausibility"]
    assert plaus["n_no_rationale_data"] == 5 and plaus["n_used"] == 0 and plaus["own"] == "regex_ig"
    assert set(plaus["explainers"]) == {"ig", "regex_ig", "random", "deeplift"}
    by_index = {e["index"]: e for e in r["_examples"]}
    for x in rows:
        for name, method in (("regex_ig", "ig"), ("deeplift", "deeplift"), ("random", "random")):
            piece = r["_attributions"][method][x["index"]].tolist()
            want = [sum(piece[p] for p in ps) for ps in x["pieces"]]
            assert x["scores"][name] == pytest.approx(want, rel=1e-6, abs=1e-12)
        assert x["gold"] in rx.LABELS and x["words"] == by_index[x["index"]]["words"]
    off = rx.main(rx.parse_args([*argv[:5], str(tmp_path / "off"), *argv[6:-5], "--explain-examples", "0"]))
    assert "plausibility" not in off and not (Path(off["run_dir"]) / "explanations.jsonl").exists()


# ---------------------------------------------------------------------------------------------- your own loop
@pytest.fixture(scope="module")
def twins(tiny_model, tmp_path_factory):
    """A TaskModel with a trained-looking head and the standard Hugging Face classifier save_task_model writes from it
    (the same logits exactly), both in double precision."""
    from transformers import AutoModelForSequenceClassification
    tok = common.load_tokenizer(tiny_model)
    torch.manual_seed(0)
    ours = common.TaskModel(common.load_encoder(tiny_model), "cls", 3, 0.1)
    with torch.no_grad():
        ours.head.weight.normal_(0, 0.5)
    out = tmp_path_factory.mktemp("twin")
    common.save_task_model(out, ours, tok, {"method": "test"}, labels=["a", "b", "c"])
    hf = AutoModelForSequenceClassification.from_pretrained(out, attn_implementation="eager", dtype=torch.float32)
    return ours.double().eval(), hf.double().eval(), tok


def hf_batch(tok, rationale=True):
    words = [("a warm funny engaging film".split(), [0, 1, 1, 0, 0]), ("the plot is boring".split(), [0, 1, 0, 1]),
             ("great acting and a clever script".split(), [1, 0, 0, 0, 1, 0])]
    enc = tok([w for w, _ in words], is_split_into_words=True, padding=True, return_tensors="pt")
    batch = {**enc, "labels": torch.tensor([2, 0, 1])}
    if rationale:
        batch["rationale"] = torch.tensor([[0 if w is None else r[w] for w in enc.word_ids(b)]
                                           for b, (_, r) in enumerate(words)])
    return batch


@pytest.mark.parametrize("opts", [dict(igr=True, vat=True, egt=True), dict(egt=True, egt_mode="align"),
                                  dict(igr=True, egt=True, egt_saliency="rationale", lambda_e=0.5),
                                  dict(vat=True, vat_iters=2, lambda_v=1.0)])
def test_regex_loss_on_a_hf_classifier_equals_the_scripts_terms(twins, opts):
    """regex_loss on a Hugging Face classifier = the script's train_step L minus L_CE on our TaskModel with the same
    weights (eval mode: no dropout; the same VAT draw)."""
    ours, hf, tok = twins
    batch = hf_batch(tok)
    args = rx.term_options(**{"igr": False, "vat": False, "egt": False, **opts})
    ours_batch = {**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}, "label": batch["labels"],
                  "rationale": batch["rationale"].double()}
    torch.manual_seed(5)
    L, rec = rx.train_step(rx.as_classifier(ours, tok), ours_batch, args, rx.acts(args, "egt"))
    term = rx.regex_loss(hf, batch, tok, **{"igr": False, "vat": False, "egt": False, **opts},
                         generator=torch.Generator().manual_seed(5))
    assert term.requires_grad
    torch.testing.assert_close(term, L - rec["L_CE"], rtol=1e-7, atol=1e-9)
    grads = [g for g in torch.autograd.grad(term, list(hf.parameters()), allow_unused=True) if g is not None]
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_regex_loss_rationale_saliency_skips_examples_without_a_rationale(twins):
    """egt_saliency='rationale': an example without a rationale word (or with nothing but) does not count; a batch
    without any gives 0."""
    _, hf, tok = twins
    batch = hf_batch(tok)
    opts = dict(vat=False, egt=True, egt_saliency="rationale")
    full = rx.regex_loss(hf, batch, tok, **opts)
    one = {k: v[:1] for k, v in batch.items()}
    batch["rationale"][1:] = 0
    assert rx.regex_loss(hf, batch, tok, **opts).item() == pytest.approx(rx.regex_loss(hf, one, tok, **opts).item())
    assert full.item() != pytest.approx(rx.regex_loss(hf, one, tok, **opts).item())
    batch["rationale"][:] = 0
    assert rx.regex_loss(hf, batch, tok, **opts).item() == 0


def test_regex_loss_defaults_are_the_scripts_and_bad_options_say_what(twins):
    import inspect
    _, hf, tok = twins
    sig = inspect.signature(rx.regex_loss).parameters
    defaults = rx.Args()
    for name in ("igr", "vat", "egt", "lambda_g", "lambda_v", "lambda_e"):
        assert sig[name].default == getattr(defaults, name), name
    assert rx.term_options().ig_baseline == "zero" and rx.term_options().attr_reduce == "ood_faith"
    batch = hf_batch(tok)
    for bad, expect in ((dict(lambda_v=-1.0), "lambda_v"), (dict(mask_ratio=1.0), "mask_ratio"),
                        (dict(egt_mode="all"), "egt_mode"), (dict(ig_steps=0), "ig_steps"),
                        (dict(lambda_g=float("nan")), "lambda_g"), (dict(igr="yes"), "igr")):
        with pytest.raises(ValueError, match=expect):
            rx.regex_loss(hf, batch, tok, **bad)
    with pytest.raises(TypeError, match="unknown options"):
        rx.regex_loss(hf, batch, tok, lambda_x=1.0)
    with pytest.raises(ValueError, match="rationale"):
        rx.regex_loss(hf, {k: v for k, v in batch.items() if k != "rationale"}, tok, egt=True,
                      egt_saliency="rationale")
    with pytest.raises(ValueError, match="labels"):
        rx.regex_loss(hf, {k: v for k, v in batch.items() if k != "labels"}, tok, igr=True)
    assert rx.regex_loss(hf, batch, tok, vat=False).item() == 0  # no term acts


def test_regex_loss_under_sdpa_says_to_load_eager(tiny_model):
    from transformers import BertConfig, BertForSequenceClassification
    tok = common.load_tokenizer(tiny_model)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=3, attn_implementation="sdpa")
    model = BertForSequenceClassification(cfg)
    with pytest.raises(ValueError, match="eager"):
        rx.regex_loss(model, hf_batch(tok), tok, vat=False, egt=True, egt_mode="align")


PAGE = ROOT / "docs" / "regex.md"


def test_the_page_shows_a_plain_loop_and_a_trainer():
    blocks = own_loop_blocks(PAGE)
    assert set(blocks) == {"regex_robust data", "regex_robust plain", "regex_robust trainer"}
    for name, code in blocks.items():
        compile(code, name, "exec")
    assert "def compute_loss(self, model, inputs, return_outputs=False" in blocks["regex_robust trainer"]
    assert "remove_unused_columns=False" in blocks["regex_robust trainer"]
    assert len(blocks["regex_robust plain"].splitlines()) <= 25, "about 20 lines"


CHECK = """
import json as _json
_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] if "trainer" in globals() else []
print("CHECK " + _json.dumps({"losses": _losses, "common": common.__file__, "method": regex_robust.__file__}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("form", ["plain", "trainer"])
def test_the_pages_loop_runs_from_a_folder_holding_only_regex_robust_and_common(form, tmp_path, tiny_model):
    """The data block, then the loop, with `python -` in a folder that holds only regex_robust.py and common.py (the
    working directory) on the tiny model: one epoch of 2 steps with every REGEX term on (EGT from the first step),
    every loss finite."""
    if form == "trainer":
        pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    blocks = own_loop_blocks(PAGE)
    data = blocks["regex_robust data"]
    for old, new in (('MODEL = "bert-base-uncased"', f"MODEL = {tiny_model!r}"),
                     ("EPOCHS, EGT_FROM = 3, 1", "EPOCHS, EGT_FROM = 1, 0")):
        assert data.count(old) == 1, old
        data = data.replace(old, new)
    folder = tmp_path / "yours"
    folder.mkdir()
    for name in ("regex_robust.py", "common.py"):
        shutil.copy(ROOT / name, folder / name)
    script = "\n".join([data, blocks[f"regex_robust {form}"], "import common", CHECK])
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "PYTHONPATH")}
    p = subprocess.run([sys.executable, "-"], input=script, cwd=folder, capture_output=True, text=True, timeout=600,
                       env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    check = json.loads(next(line[6:] for line in p.stdout.splitlines() if line.startswith("CHECK ")))
    assert Path(check["common"]).parent == folder and Path(check["method"]).parent == folder
    if form == "plain":
        steps = [tuple(map(float, m)) for m in re.findall(r"loss (\S+)  REGEX terms (\S+)", p.stdout)]
        assert len(steps) == 2 and all(math.isfinite(x) and x > 0 for step in steps for x in step)
    else:
        assert len(check["losses"]) == 2 and all(math.isfinite(x) for x in check["losses"])


# ---------------------------------------------------------------------------------------------- bad input
def write(folder: Path, rows: list[dict], split_rows: dict | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in (split_rows or {}).get(
            split, rows)))
    return folder


def bad_data(tmp: Path, case: str) -> Path:
    rows = [{"text": "good food", "label": "pos"}, {"text": "bad food", "label": "neg"}]
    if case == "one_class":
        return write(tmp / case, [{"text": "good food", "label": "pos"}, {"text": "fine food", "label": "pos"}])
    if case == "bad_row":
        folder = write(tmp / case, rows)
        (folder / "train.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n")
        return folder
    if case == "unseen_label":
        return write(tmp / case, rows, {"test": [{"text": "odd food", "label": "meh"}]})
    if case == "span_outside":
        return write(tmp / case, rows + [{"text": "tasty", "label": "pos", "rationale_spans": [[0, 40]]}])
    return write(tmp / case, rows)  # no rationale anywhere


def no_mask_model(tiny_model: str, tmp: Path) -> str:
    out = tmp / "no-mask"
    shutil.copytree(tiny_model, out)
    cfg = json.loads((out / "tokenizer_config.json").read_text())
    cfg["mask_token"] = None
    (out / "tokenizer_config.json").write_text(json.dumps(cfg))
    return str(out)


def two_label_checkpoint(tiny_model: str, tmp: Path) -> str:
    from transformers import BertConfig, BertForSequenceClassification
    tok = common.load_tokenizer(tiny_model)
    out = tmp / "two-labels"
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


W, P, T, H = (str(FIXTURES / f) for f in ("jsonl_words", "jsonl_pairs", "jsonl_tagging", "hf_disk"))
# (name, argv (DATA: a bad dataset written by bad_data, MODEL: the tiny model, NOMASK, CKPT2), what stderr names)
BAD = [
    ("custom-without-data", ["--task", "custom"], "--task custom needs --data"),
    ("data-without-custom", ["--data", W], "--data is for --task custom"),
    ("data-missing", ["--task", "custom", "--data", "{tmp}/nowhere"], "--data"),
    ("data-format", ["--task", "custom", "--data", W, "--data-format", "csv"], "invalid choice"),
    ("text-column-empty", ["--task", "custom", "--data", H, "--data-format", "hf", "--text-column", " "],
     "--text-column"),
    ("label-column-absent", ["--task", "custom", "--data", H, "--data-format", "hf", "--label-column", "stars"],
     "stars"),
    ("pair-column-absent", ["--task", "custom", "--data", H, "--data-format", "hf", "--pair-column", "query"],
     "query"),
    ("rationale-column-absent", ["--task", "custom", "--data", H, "--data-format", "hf", "--rationale-column",
                                 "marks"], "marks"),
    ("eraser-query", ["--task", "custom", "--data", W, "--eraser-query", "both"], "invalid choice"),
    ("hatexplain-rationale", ["--task", "custom", "--data", W, "--hatexplain-rationale", "any"], "invalid choice"),
    ("tagging", ["--task", "custom", "--data", T], "token-tagging"),
    ("one-class", ["--task", "custom", "--data", "DATA:one_class"], "at least 2"),
    ("bad-row", ["--task", "custom", "--data", "DATA:bad_row"], "train.jsonl:2"),
    ("unseen-label", ["--task", "custom", "--data", "DATA:unseen_label"], "test.jsonl:1"),
    ("span-outside", ["--task", "custom", "--data", "DATA:span_outside"], "train.jsonl:3"),
    ("train-size", ["--task", "custom", "--data", W, "--train-size", "1000"], "--allow-smaller"),
    ("ood-custom", ["--task", "custom", "--data", W, "--ood-task", "sst2"], "--ood-task"),
    ("plausibility-custom", ["--task", "custom", "--data", W, "--plausibility"], "--plausibility"),
    ("fresh-pairs", ["--task", "custom", "--data", P, "--select-then-predict"], "sentence pairs"),
    ("egt-rationale-sst2", ["--egt", "--egt-saliency", "rationale"], "--egt-saliency rationale"),
    ("egt-rationale-none", ["--task", "custom", "--data", "DATA:none", "--egt", "--egt-saliency", "rationale"],
     "no training example"),
    ("egt-saliency", ["--egt-saliency", "human"], "invalid choice"),
    ("explain-negative", ["--explain-examples", "-1"], "--explain-examples"),
    ("explain-word", ["--explain-examples", "ten"], "--explain-examples"),
    ("no-mask-egt", ["--egt", "--model", "NOMASK"], "--egt-mode align"),
    ("no-mask-removal", ["--removal", "mask", "--model", "NOMASK"], "--removal pad"),
    ("no-mask-baseline", ["--ig-baseline", "mask", "--model", "NOMASK"], "--ig-baseline zero"),
    ("checkpoint-labels", ["--task", "custom", "--data", W, "--evaluate-only", "--checkpoint", "CKPT2"],
     "has 2 labels; the data has 3"),
]


@pytest.mark.parametrize("name,argv,expect", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_and_exit_2(name, argv, expect, tmp_path, tiny_model, capsys):
    subs = {"MODEL": tiny_model, "NOMASK": "NOMASK" in argv and no_mask_model(tiny_model, tmp_path),
            "CKPT2": "CKPT2" in argv and two_label_checkpoint(tiny_model, tmp_path)}
    argv = [str(bad_data(tmp_path, a[5:])) if a.startswith("DATA:") else subs.get(a) or a.format(tmp=tmp_path)
            for a in argv]
    model = [] if "--model" in argv else ["--model", tiny_model]
    try:
        code = rx.cli([*model, "--out-dir", str(tmp_path / "runs"), "--max-epochs", "1", *argv])
    except SystemExit as e:  # argparse: a value outside its choices or type
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert expect in err, err
    assert not (tmp_path / "runs").exists()  # stopped before any run directory (or model) was made
