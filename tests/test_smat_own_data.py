"""SMaT on your own data: --task custom on every classification format of tests/fixtures/rationale_data/ (sentence
pairs included: one input "[CLS] text [SEP] pair [SEP]", as MLQE-PE's) and on three architectures; every run's
explanations and plausibility against the data's own rationales; the own-loop term on a Hugging Face classifier
(against the run's own code and against Eq. 11 rebuilt from Hugging Face's attention probabilities), the docs' loops
run from a folder holding only smat_jax_free.py and common.py; bad input (one stderr line, exit 2)."""
import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import check_explanations
from doc_blocks import own_loop_blocks

import common
import smat_jax_free as sm

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "fixtures" / "rationale_data"
FORMATS = {"jsonl_words": [], "jsonl_spans": [], "jsonl_pairs": [], "eraser_docs": [], "eraser_query": [],
           "hatexplain": [], "hf_disk": ["--data-format", "hf"]}  # jsonl_tagging: refused (bad-input table)
PAIRS = {"jsonl_pairs", "eraser_query"}  # eraser_query: the query is the second text (--eraser-query auto)
N_EXPLAIN = 4


def make_tiny_bert_without_pad_token(path: Path) -> Path:
    from conftest import make_tiny_bert
    from transformers import AutoTokenizer
    make_tiny_bert(path)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.pad_token = None
    tok.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Tiny random encoders saved as local folders (tests/tiny_models.py; "slow": a slow tokenizer only; "nopad": a
    tokenizer without a padding token), built on first use."""
    from tiny_models import make_slow_tokenizer_model, make_tiny_model
    root, made = tmp_path_factory.mktemp("smat-models"), {}

    def get(arch: str) -> str:
        if arch not in made:
            made[arch] = str(make_slow_tokenizer_model(root / arch) if arch == "slow" else
                             make_tiny_bert_without_pad_token(root / arch) if arch == "nopad" else
                             make_tiny_model(arch, root / arch))
        return made[arch]
    return get


def custom_argv(fmt: str, out: Path, *extra: str) -> list[str]:
    return ["--task", "custom", "--data", str(DATA / fmt), *FORMATS.get(fmt, []), "--out-dir", str(out),
            "--max-len", "64", "--eval-batch-size", "16", "--explain-examples", str(N_EXPLAIN), "--ig-steps", "3",
            "--device", "cpu", *extra]


def read_dataset(fmt: str) -> dict:
    return common.read_rationale_data(str(DATA / fmt), "hf" if fmt == "hf_disk" else "auto")


# ---------------------------------------------------------------------------------------------- splits and encoding
def test_custom_defaults_splits_and_pair_encoding():
    """Unset --num-examples is the whole training split, the teacher's warm-up a third of an epoch (IMDB's 500 of
    1,563 steps); the pool is train shuffled with RandomState(0) (the same for every seed), valid and test are dev
    and test in file order; a pair is one input with its token types, its words those of both texts."""
    cache = {}
    args = sm.resolve(sm.parse_args(["--setup", "teacher", "--task", "custom", "--data", str(DATA / "jsonl_words")]),
                      cache)
    ds = cache["dataset"]
    assert args.num_examples == len(ds["train"]) == 24 and args.warmup_steps == math.ceil(500 / 1563 * 2) == 1
    assert (args.lr, args.batch_size, args.patience, args.max_len) == (5e-5, 16, 5, 256)
    student = sm.resolve(sm.parse_args(["--setup", "smat", "--task", "custom", "--data", str(DATA / "jsonl_words"),
                                        "--num-examples", "10"]))
    assert (student.lr, student.batch_size, student.patience, student.meta_lr, student.beta) == (5e-3, 32, 10, 5e-4,
                                                                                                5.0)
    sp = sm.load_splits(student, None, "student", ds)
    order = list(range(24))
    np.random.RandomState(0).shuffle(order)
    assert [e["id"] for e in sp["train"]] == [ds["train"][i]["id"] for i in order[:10]]
    assert sp["valid"] == ds["dev"] and sp["test"] == ds["test"]
    # a sentence pair (ERASER with a query): token types, both texts' words, the rationale of both
    tok = common.load_tokenizer(None)
    pairs = read_dataset("eraser_query")
    assert pairs["pair"]
    enc, counts = sm.encode_custom(pairs["test"], tok, 64, pairs["labels"])
    assert counts["n_examples"] == len(pairs["test"])
    for x, e in zip(enc, pairs["test"], strict=True):
        assert x["words"] == (e["words"], e["pair_words"])
        assert set(x["token_type_ids"]) == {0, 1}  # BERT: the second text has type 1
        pieces = common.word_pieces(x["word_of_piece"], len(e["words"]) + len(e["pair_words"]))
        assert all(pieces[len(e["words"]):])  # the second text's words survive (short fixture texts)
        want = [None if w is None else w + (len(e["words"]) if s == 1 else 0)
                for w, s in zip(tok(e["words"], e["pair_words"], is_split_into_words=True, truncation=True,
                                    max_length=64).word_ids(),
                                tok(e["words"], e["pair_words"], is_split_into_words=True, truncation=True,
                                    max_length=64).sequence_ids(), strict=True)]
        assert [None if w < 0 else w for w in x["word_of_piece"]] == want  # the pre-split tokenisation's map


# ---------------------------------------------------------------------------------------------- end to end
def check_student_explanations(r: dict, n: int, teacher_explainer: bool) -> list[dict]:
    """A student run's explanations.jsonl: the documented fields, scores of `attention` (the student's own, the
    default of the report), `teacher` (the explanation it was taught with) and `ig`, the data's rationale."""
    run = Path(r["run_dir"])
    rows = [json.loads(line) for line in (run / "explanations.jsonl").read_text().splitlines()]
    names = {"attention", "ig"} | ({"teacher"} if teacher_explainer else set())
    assert len(rows) == n and [row["index"] for row in rows] == list(range(n))
    for row in rows:
        assert set(row["scores"]) == names and 0 <= row["p_pred"] <= 1
        for name, s in row["scores"].items():
            assert len(s) == len(row["words"]) and all(x is None or math.isfinite(x) for x in s)
            if name != "ig":  # attention explanations are distributions: a word's score is its pieces' mass
                assert all(x >= 0 for x in s) and sum(s) <= 1 + 1e-5
    plaus = r["plausibility"]
    assert plaus["own"] == "attention" and set(plaus["explainers"]) == names and plaus["n_explained"] == n
    assert plaus["n_used"] + plaus["n_no_rationale"] + plaus["n_all_rationale"] + plaus["n_no_rationale_data"] == n
    assert plaus["n_no_rationale_data"] == 0  # the dataset has rationales
    return rows


def check_custom_run(r: dict, ds: dict, split_sizes: dict) -> None:
    run = Path(r.get("run_dir") or r["dir"])
    saved = json.loads((run / "results.json").read_text())
    assert saved["alignment"].keys() == {"train", "valid", "test"}
    assert {s: c["n_examples"] for s, c in saved["alignment"].items()} == split_sizes
    assert saved["alignment"]["test"]["n_without_rationale"] == sum(e["rationale"] is None for e in ds["test"])
    preds = (run / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == len(ds["test"])


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
def test_teacher_student_smat_and_plausibility_on_every_format(fmt, tiny_model, tmp_path):
    ds = read_dataset(fmt)
    n = min(N_EXPLAIN, len(ds["test"]))
    sizes = {"train": len(ds["train"]), "valid": len(ds["dev"]), "test": len(ds["test"])}
    t = sm.main(sm.parse_args(custom_argv(fmt, tmp_path, "--setup", "teacher", "--model", tiny_model,
                                          "--max-epochs", "2", "--warmup-steps", "0", "--lr", "3e-3")))
    assert math.isfinite(t["valid"]) and 0 <= t["student_test_metric"] <= 1 and t["n_train"] == len(ds["train"])
    check_custom_run(t, ds, sizes)
    meta = json.loads((Path(t["dir"]) / "teacher.json").read_text())
    assert meta["labels"] == ds["labels"] and meta["task"] == "custom"
    rows = check_explanations(Path(t["dir"]), "attention", n, has_rationale=True)
    if fmt in PAIRS:
        assert all(row["pair_start"] is not None and 0 < row["pair_start"] < len(row["words"]) for row in rows)
    for setup, explainer in (("student", "attention_all"), ("smat", "attention_all"), ("student", "none")):
        r = sm.main(sm.parse_args(custom_argv(fmt, tmp_path, "--setup", setup, "--explainer", explainer,
                                              "--max-epochs", "1", "--batch-size", "8")))
        assert 0 <= r["test"] <= 1 and r["n_train"] == len(ds["train"]) and r["metric"] == "accuracy"
        check_custom_run(r, ds, sizes)
        check_student_explanations(r, n, teacher_explainer=explainer != "none")
        if setup == "smat":
            assert (Path(r["run_dir"]) / "head_coeffs.csv").is_file()
    p = sm.main(sm.parse_args(custom_argv(fmt, tmp_path, "--setup", "plausibility")))
    assert set(p["auc"]) == set(sm.EXPLAINERS[1:]) and p["n_docs"] == len(ds["test"])
    assert p["n_without_rationale"] == sum(e["rationale"] is None for e in ds["test"])
    two_class = [e for e in ds["test"] if e["rationale"] is not None and 0 < sum(e["rationale"]) + sum(
        e["pair_rationale"] or []) < len(e["words"]) + len(e["pair_words"] or [])]
    for kind, v in p["auc"].items():
        assert v["n_docs"] == len(two_class) and (v["auc"] is None or 0 <= v["auc"] <= 1), kind
    assert Path(p["run_dir"]).name == "custom-plausibility-test"


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
def test_three_architectures(arch, models, tmp_path):
    """BERT (WordPiece), RoBERTa (byte-level BPE, one token type) and DistilBERT (q_lin/k_lin, no token type ids),
    on single texts and on sentence pairs: the teacher, a SMaT student, the explanations, plausibility."""
    model = models(arch)
    for fmt in ("jsonl_words", "jsonl_pairs"):
        out = tmp_path / fmt
        sm.main(sm.parse_args(custom_argv(fmt, out, "--setup", "teacher", "--model", model, "--max-epochs", "1",
                                          "--warmup-steps", "0", "--lr", "3e-3")))
        r = sm.main(sm.parse_args(custom_argv(fmt, out, "--setup", "smat", "--max-epochs", "1", "--batch-size", "8")))
        assert 0 <= r["test"] <= 1
        check_student_explanations(r, N_EXPLAIN, teacher_explainer=True)
        steps = [json.loads(x) for x in (Path(r["run_dir"]) / "log.jsonl").read_text().splitlines() if '"L_outer"' in x]
        assert steps and all(math.isfinite(s["L_outer"]) and math.isfinite(s["metagrad_norm"]) for s in steps)
        p = sm.main(sm.parse_args(custom_argv(fmt, out, "--setup", "plausibility", "--explainer", "attention_all")))
        assert p["auc"]["attention_all"]["n_docs"] > 0


@pytest.mark.slow
def test_same_seed_same_bytes_on_custom_data(tiny_model, tmp_path):
    for out in (tmp_path / "a", tmp_path / "b"):
        sm.main(sm.parse_args(custom_argv("jsonl_spans", out, "--setup", "teacher", "--model", tiny_model,
                                          "--max-epochs", "1")))
        sm.main(sm.parse_args(custom_argv("jsonl_spans", out, "--setup", "smat", "--max-epochs", "1")))
    for rel in ("custom-teacher/results.json", "custom-smat-attention_all-n22-0/results.json",
                "custom-smat-attention_all-n22-0/explanations.jsonl"):
        a, b = (tmp_path / x / "smat_jax_free" / rel for x in ("a", "b"))
        assert a.read_bytes() == b.read_bytes(), rel


# ---------------------------------------------------------------------------------------------- the own-loop term
def hf_and_run_models(path: str, num_labels: int = 3):
    """The same encoder weights as a Hugging Face sequence classifier and as the run's Model, both in eval mode."""
    from transformers import AutoModelForSequenceClassification
    hf = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels, attn_implementation="eager")
    return hf.eval(), sm.Model(common.load_encoder(path), num_labels, image=False).eval()


def hf_batch(path: str) -> dict:
    tok = common.load_tokenizer(path)
    enc = tok(["the food was great", "an awful , unbelievable mess of a film", "ok"],
              ["yes", "no it was not", "fine"], padding=True, return_tensors="pt")
    return dict(enc)


def eq11_from_attention_probabilities(hf, batch: dict, phi: torch.Tensor) -> torch.Tensor:
    """Eq. 11 from Hugging Face's own attention probabilities (eval mode, no dropout): log p_it = logit_it - c_i, so
    the mean over the non-pad query rows of log p differs from s^h_t by a constant over t, which the softmax over t
    removes: an independent route to the explanation."""
    kw = {k: v for k, v in batch.items() if k != "token_type_ids" or common.takes_token_type_ids(hf)}
    with torch.no_grad():
        att = hf(**kw, output_attentions=True).attentions
    mask = batch["attention_mask"].double()
    w = mask / mask.sum(-1, keepdim=True)
    s = torch.cat([torch.einsum("bq,bhqt->bht", w, torch.log(torch.where(mask[:, None, None, :] > 0, A.double(), 1.0)))
                   for A in att], 1)
    z = torch.einsum("h,bht->bt", sm.sparsemax(phi.double()), s)
    return torch.softmax(z.masked_fill(mask == 0, -math.inf), -1)


@pytest.mark.parametrize("arch", ["bert", pytest.param("roberta", marks=pytest.mark.slow),
                                  pytest.param("distilbert", marks=pytest.mark.slow)])
def test_hf_attention_explanation_equals_the_runs_and_hf_attention_probabilities(arch, models):
    path = models(arch)
    hf, model = hf_and_run_models(path)
    batch = hf_batch(path)
    hooks = sum(len(m._forward_hooks) for m in hf.modules())
    n = model.num_layers * model.num_heads
    phi = torch.linspace(-0.2, 0.6, n)  # sparsemax keeps a few heads
    with torch.no_grad():
        got = sm.hf_attention_explanation(hf, batch, phi)
        out = model({k: batch.get(k, torch.zeros_like(batch["input_ids"]))
                     for k in ("input_ids", "attention_mask", "token_type_ids")})
        run = sm.attention_explanation(sm.head_scores(out, model.num_heads), phi, "sparsemax", out["mask"])[0]
        last = sm.hf_attention_explanation(hf, batch, phi[:model.num_heads], last_layer_only=True)
        run_last = sm.attention_explanation(sm.head_scores(out, model.num_heads, True), phi[:model.num_heads],
                                            "sparsemax", out["mask"])[0]
    assert torch.equal(got, run) and torch.equal(last, run_last)  # the same hooks, the same code
    assert sum(len(m._forward_hooks) for m in hf.modules()) == hooks  # ours are removed afterwards
    assert torch.allclose(got.double(), eq11_from_attention_probabilities(hf, batch, phi), atol=1e-6)
    assert torch.allclose(got.sum(-1), torch.ones(3)) and (got[batch["attention_mask"] == 0] == 0).all()


def test_explanation_term_equals_the_runs_L_expl_and_trains_both(tiny_model):
    """explanation_term on a Hugging Face classifier = the L_expl of the run's student_objective on the same encoder
    weights and the same teacher explanation; its gradient reaches the student's encoder and phi_S."""
    hf, model = hf_and_run_models(tiny_model)
    batch = hf_batch(tiny_model)
    n = model.num_layers * model.num_heads
    g = torch.Generator().manual_seed(0)
    mask = batch["attention_mask"].float()
    t = torch.rand(mask.shape, generator=g) * mask
    batch["teacher_explanation"] = t / t.sum(-1, keepdim=True)
    phi_S = torch.nn.Parameter(torch.full((n,), 1.0 / n) + 0.01 * torch.randn(n, generator=g))
    L = sm.explanation_term(hf, batch, phi_S)
    run_batch = {"inputs": {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}}
    _, _, L_run = sm.student_objective(model, dict(model.named_parameters()), phi_S, run_batch,
                                       torch.zeros(3, dtype=torch.long), batch["teacher_explanation"], 1.0, False,
                                       "sparsemax")
    assert L.item() == pytest.approx(L_run.item(), rel=1e-6) and L.item() > 0
    L.backward()
    query = next(m for name, m in hf.named_modules() if name.endswith("query"))
    assert phi_S.grad.abs().sum() > 0 and query.weight.grad.abs().sum() > 0
    # the term vanishes when the student's explanation is the teacher's
    with torch.no_grad():
        batch["teacher_explanation"] = sm.hf_attention_explanation(hf, batch, phi_S)
    assert sm.explanation_term(hf, batch, phi_S).item() == pytest.approx(0.0, abs=1e-6)


def test_explanation_term_bad_input_says_what_is_wrong(tiny_model, models):
    hf, _ = hf_and_run_models(tiny_model)
    batch = hf_batch(tiny_model)
    with pytest.raises(ValueError, match="needs 'teacher_explanation'.*got none"):
        sm.explanation_term(hf, batch)
    with pytest.raises(ValueError, match=r"got shape \(3, 2\)"):
        sm.explanation_term(hf, {**batch, "teacher_explanation": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="distribution"):
        sm.explanation_term(hf, {**batch, "teacher_explanation": batch["attention_mask"].float()})
    with pytest.raises(ValueError, match=r"one coefficient per head, 4 \(2 layers x 2 heads\)"):
        sm.hf_attention_explanation(hf, batch, torch.ones(3))
    zeros = {**batch, "teacher_explanation": torch.zeros(batch["input_ids"].shape)}
    assert sm.explanation_term(hf, zeros).item() == 0  # no explanation: nothing to match
    deberta, _ = hf_and_run_models(models("deberta-v2"))
    with pytest.raises(ValueError, match="DebertaV2Model has no query/key projections"):
        sm.hf_attention_explanation(deberta, hf_batch(models("deberta-v2")))


# ---------------------------------------------------------------------------------------------- the docs' loops
PAGE = ROOT / "docs" / "smat.md"


def test_the_page_shows_a_plain_loop_and_a_trainer():
    blocks = own_loop_blocks(PAGE)
    assert set(blocks) == {"smat_jax_free data", "smat_jax_free plain", "smat_jax_free trainer"}
    for name, code in blocks.items():
        compile(code, name, "exec")
    assert "def compute_loss(self, model, inputs, return_outputs=False" in blocks["smat_jax_free trainer"]
    assert "return (loss, outputs) if return_outputs else loss" in blocks["smat_jax_free trainer"]
    assert len(blocks["smat_jax_free plain"].splitlines()) <= 30  # about 20 lines


CHECK = """
import json as _json
_steps = [h["loss"] for h in trainer.state.log_history if "loss" in h] if "trainer" in globals() else []
_phi = (student.smat_phi_S if "trainer" in globals() else phi_S).detach()
print("CHECK " + _json.dumps({"common": common.__file__, "method": smat_jax_free.__file__, "steps": _steps,
                               "phi_moved": float((_phi - 1.0 / len(_phi)).abs().max())}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("form", ["plain", "trainer"])
def test_the_pages_loop_runs_from_a_folder_holding_only_the_method_file_and_common(form, tiny_model, tmp_path):
    """The data block, then the loop, with `python -` in a folder holding only smat_jax_free.py and common.py (the
    working directory), on tiny models (the teacher another random BERT), for one epoch (2 steps): finite losses,
    L_expl > 0, the student's explainer phi_S trained."""
    if form == "trainer":
        pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (pip install accelerate)")
    from conftest import make_tiny_bert
    teacher = str(make_tiny_bert(tmp_path / "teacher", seed=1))
    blocks = own_loop_blocks(PAGE)
    data = blocks["smat_jax_free data"]
    for line, path in (('MODEL = "bert-base-uncased"', tiny_model), ('TEACHER = "path/to/your/teacher"', teacher)):
        assert data.count(line) == 1, line
        data = data.replace(line, f"{line.split(' = ')[0]} = {path!r}")
    loop = blocks[f"smat_jax_free {form}"]
    epochs = "for epoch in range(3):" if form == "plain" else "num_train_epochs=3"
    assert loop.count(epochs) == 1
    loop = loop.replace(epochs, epochs.replace("3", "1"))
    folder = tmp_path / "yours"
    folder.mkdir()
    for name in ("smat_jax_free.py", "common.py"):
        shutil.copy(ROOT / name, folder / name)
    script = "\n".join([data, loop, "import common", CHECK])
    env = {k: v for k, v in os.environ.items() if k not in ("DATA_DIR", "PYTHONPATH")}
    p = subprocess.run([sys.executable, "-"], input=script, cwd=folder, capture_output=True, text=True, timeout=600,
                       env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    check = json.loads(next(line[6:] for line in p.stdout.splitlines() if line.startswith("CHECK ")))
    assert Path(check["common"]).parent == folder and Path(check["method"]).parent == folder
    assert check["phi_moved"] > 0  # phi_S is trained with the student
    if form == "plain":
        steps = [tuple(map(float, m)) for m in re.findall(r"loss (\S+)  L_expl (\S+)", p.stdout)]
        assert len(steps) == 2 and all(math.isfinite(x) for s in steps for x in s) and all(s[1] > 0 for s in steps)
    else:
        assert len(check["steps"]) == 2 and all(math.isfinite(x) for x in check["steps"])


# ---------------------------------------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def bad_world(tmp_path_factory, tiny_model, models):
    """Broken datasets, and teachers the student rows need (trained once: a BERT teacher on jsonl_words; a DeBERTa
    teacher, which has no query/key projections, trained with --no-explain-own; an IMDB teacher.json)."""
    root = tmp_path_factory.mktemp("smat-bad")
    for name, rows in (("badjson", ['{"text": "a b", "label": "x"}', "{not json"]),
                       ("onelabel", ['{"text": "a b", "label": "x"}', '{"text": "c d", "label": "x"}'])):
        (root / name).mkdir()
        for split in ("train", "dev", "test"):
            (root / name / f"{split}.jsonl").write_text("\n".join(rows) + "\n")
    (root / "empty").mkdir()
    imdb = root / "imdb-teacher"
    imdb.mkdir()
    (imdb / "teacher.pt").write_bytes(b"never read")
    (imdb / "teacher.json").write_text(json.dumps({"model": tiny_model, "task": "imdb", "max_len": 24}))
    bert = sm.main(sm.parse_args(custom_argv("jsonl_words", root / "runs", "--setup", "teacher", "--model",
                                             tiny_model, "--max-epochs", "1", "--explain-examples", "0")))
    deberta = sm.main(sm.parse_args(custom_argv("jsonl_words", root / "deberta", "--setup", "teacher", "--model",
                                                models("deberta-v2"), "--max-epochs", "1", "--no-explain-own")))
    return {"tmp": str(root), "teacher": bert["dir"], "deberta_teacher": deberta["dir"],
            "deberta": models("deberta-v2"), "slow": models("slow"), "nopad": models("nopad")}


W, TAG, HF = str(DATA / "jsonl_words"), str(DATA / "jsonl_tagging"), str(DATA / "hf_disk")
BAD = [  # id, arguments after custom_argv("jsonl_words", out) (the last value of a flag wins), expected in the line
    ("no-format", ["--data", "{tmp}/empty"], "no rationale dataset format recognised"),
    ("data-with-imdb", ["--task", "imdb"], "--data is for --task custom"),
    ("data-missing", ["--data", "{tmp}/nowhere"], "--data must be an existing folder"),
    ("data-format", ["--data-format", "csv"], "invalid choice"),
    ("tagging", ["--data", TAG], "token tagging dataset; SMaT trains text classifiers"),
    ("bad-json", ["--data", "{tmp}/badjson"], "badjson/train.jsonl:2: malformed JSON"),
    ("one-label", ["--data", "{tmp}/onelabel"], "one label only"),
    ("hf-column", ["--data", HF, "--data-format", "hf", "--label-column", "stars"], "stars"),
    ("eraser-query", ["--eraser-query", "maybe"], "invalid choice"),
    ("hatexplain-rationale", ["--hatexplain-rationale", "all"], "invalid choice"),
    ("eraser-split", ["--setup", "plausibility", "--eraser-split", "test"], "--eraser-split chooses"),
    ("plausibility-mlqe", ["--setup", "plausibility", "--task", "mlqe"], "--task imdb"),
    ("explain-negative", ["--explain-examples", "-1"], "--explain-examples must be an integer >= 0"),
    ("explain-word", ["--explain-examples", "all"], "--explain-examples"),
    ("text-column-empty", ["--text-column", " "], "--text-column"),
    ("no-teacher", ["--setup", "smat", "--teacher-dir", "{tmp}/none"], "no trained teacher"),
    ("slow-tokenizer", ["--setup", "teacher", "--model", "{slow}"], "slow (Python) tokenizer"),
    ("no-pad-token", ["--setup", "teacher", "--model", "{nopad}"], "has no padding token"),
    ("teacher-of-imdb", ["--setup", "smat", "--teacher-dir", "{tmp}/imdb-teacher"], "trained for --task imdb"),
    ("teacher-labels", ["--setup", "smat", "--data", HF, "--data-format", "hf", "--teacher-dir", "{teacher}"],
     "predicts the labels ['negative', 'neutral', 'positive']"),
    ("pool", ["--setup", "smat", "--num-examples", "25", "--teacher-dir", "{teacher}"],
     "--num-examples 25 is larger than the student pool of 24"),
    ("deberta-explanations", ["--setup", "teacher", "--model", "{deberta}"], "--no-explain-own"),
    ("deberta-smat", ["--setup", "smat", "--teacher-dir", "{deberta_teacher}"], "--setup student --explainer none"),
    ("deberta-gradient-student", ["--setup", "student", "--explainer", "integrated_gradients", "--teacher-dir",
                                  "{deberta_teacher}"], "the student's explainer"),
    ("deberta-plausibility", ["--setup", "plausibility", "--teacher-dir", "{deberta_teacher}"],
     "choose --explainer gradient_l2"),
]


@pytest.mark.slow
@pytest.mark.parametrize("row", BAD, ids=[r[0] for r in BAD])
def test_bad_input_one_line_exit_2_no_run_directory(row, bad_world, tmp_path, capsys):
    _, extra, want = row
    out = tmp_path / "runs"
    argv = custom_argv("jsonl_words", out, *[a.format(**bad_world) for a in extra])
    try:
        code = sm.cli(argv)
    except SystemExit as e:  # argparse: an invalid choice or a value of the wrong type
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert want.format(**bad_world) in err, err
    assert not list(out.rglob("results.json")) and not list(out.rglob("config.json"))  # nothing ran


def test_custom_without_data_is_one_line(tmp_path, capsys):
    assert sm.cli(["--task", "custom", "--setup", "teacher", "--out-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--task custom needs --data FOLDER" in err
    assert not tmp_path.joinpath("smat_jax_free").exists()


@pytest.mark.slow
def test_a_deberta_student_without_explanations_runs(bad_world, tmp_path):
    """What the DeBERTa rows' messages offer works: a student without explanations (and IG alone)."""
    r = sm.main(sm.parse_args(custom_argv("jsonl_words", tmp_path, "--setup", "student", "--explainer", "none",
                                          "--teacher-dir", bad_world["deberta_teacher"], "--max-epochs", "1",
                                          "--no-explain-own")))
    assert 0 <= r["test"] <= 1 and set(r["plausibility"]["explainers"]) == {"ig"}
