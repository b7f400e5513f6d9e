"""What --save-model writes loads in one line without this repository: transformers.pipeline (ic, nli, cls) or
AutoModelForTokenClassification + the CRF's transitions (sf) reproduce the run's predictions.jsonl (labels exactly;
probabilities to float tolerance, since the run scored padded batches). One tiny-model run per script that saves."""
import json
from pathlib import Path

import pytest
import torch
from conftest import write_tiny_snips

import common

ROOT = Path(__file__).resolve().parents[1]


def read_rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]


def check_pipeline(model_dir: Path, texts: list[str], rows: list[dict], names: list) -> None:
    """pipeline's top label is the run's prediction (names[label2id[label]] == pred) and its probability of the gold
    label is the run's p_gold."""
    from transformers import pipeline
    clf = pipeline("text-classification", model=str(model_dir), top_k=None, device="cpu")
    label2id = clf.model.config.label2id
    for text, row, out in zip(texts, rows, clf(texts), strict=True):
        scores = {names[label2id[o["label"]]]: o["score"] for o in out}
        top = max(out, key=lambda o: o["score"])
        assert names[label2id[top["label"]]] == row["pred"], (text, out, row)
        assert abs(scores[row["gold"]] - row["p_gold"]) < 1e-5, (text, out, row)


@pytest.mark.slow
def test_regex_saved_model_pipeline_reproduces_predictions(tiny_model, tmp_path):
    from test_regex import NEG, POS, write_tiny_text_data

    import regex_robust as rx
    data = write_tiny_text_data(tmp_path / "d")
    r = rx.main(rx.parse_args(["--model", tiny_model, "--data-dir", str(data), "--out-dir", str(tmp_path),
                               "--max-epochs", "1", "--batch-size", "6", "--attributions", "random",
                               "--no-randomization"]))
    run = Path(r["run_dir"])
    rows = read_rows(run)
    texts = [(POS + NEG)[int(row["id"].split("-")[1])] for row in rows]
    meta = json.loads((run / "model" / "task.json").read_text())
    assert meta["format"] == "standard" and meta["labels"] == ["negative", "positive"]
    check_pipeline(run / "model", texts, rows, [0, 1])
    assert "pipeline" in (run / "model" / "model_card.md").read_text()


def uimer_run(script: str, task: str, tiny_model: str, data: Path, out: Path) -> Path:
    import importlib
    mod = importlib.import_module(script)
    extra = {"uimer_dm": ["--warmup-epochs", "1", "--extractor-epochs", "1"]}.get(script, [])
    r = mod.main(mod.parse_args(["--model", tiny_model, "--data-dir", str(data), "--out-dir", str(out), "--task", task,
                                 "--shots", "1", "--max-epochs", "1", "--save-model", *extra]))
    return Path(r["run_dir"])


def snips_names(data: Path, task: str) -> list[str]:
    d = data / "snips"
    if task == "ic":
        return [y for y in (d / "intent_label.txt").read_text().splitlines() if y and y != "UNK"]
    return [y for y in (d / "slot_label.txt").read_text().splitlines() if y and y not in ("PAD", "UNK")]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["uimer_im", "uimer_gb", "uimer_dm"])
def test_uimer_ic_saved_model_pipeline_reproduces_predictions(tiny_model, tmp_path, script):
    data = write_tiny_snips(tmp_path / "d")
    run = uimer_run(script, "ic", tiny_model, data, tmp_path / "runs")
    rows = read_rows(run)
    texts = (data / "snips" / "test" / "seq.in").read_text().splitlines()
    assert json.loads((run / "model" / "task.json").read_text())["format"] == "standard"
    check_pipeline(run / "model", texts, rows, snips_names(data, "ic"))


@pytest.mark.slow
@pytest.mark.parametrize("script", ["uimer_im", "uimer_gb", "uimer_dm"])
def test_uimer_sf_saved_model_and_its_crf_reproduce_predictions(tiny_model, tmp_path, script):
    """sf: AutoModelForTokenClassification gives the emissions, crf.safetensors the transitions (the model card's
    recipe, written out): Viterbi tags equal the run's, exp(CRF log-likelihood of the gold tags) its p_gold; and
    common.load_task_model gives the same."""
    from safetensors.torch import load_file
    from torchcrf import CRF
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    data = write_tiny_snips(tmp_path / "d")
    run = uimer_run(script, "sf", tiny_model, data, tmp_path / "runs")
    rows, names = read_rows(run), snips_names(data, "sf")
    model = AutoModelForTokenClassification.from_pretrained(run / "model").eval()
    tok = AutoTokenizer.from_pretrained(run / "model")
    crf = CRF(model.config.num_labels, batch_first=True)
    crf.load_state_dict(load_file(run / "model" / "crf.safetensors"))
    label2id = model.config.label2id
    for line, row in zip((data / "snips" / "test" / "seq.in").read_text().splitlines(), rows, strict=True):
        words = line.split()
        enc = tok(words, is_split_into_words=True, return_tensors="pt")
        first = [enc.word_ids().index(w) for w in range(len(words))]
        with torch.no_grad():
            em = model(**enc).logits[:, first]
            tags = crf.decode(em)[0]
            gold = torch.tensor([[names.index(t) for t in row["gold"]]])
            p_gold = crf(em, gold, reduction="none").exp().item()
        assert [names[label2id[model.config.id2label[t]]] for t in tags] == row["pred"], (line, tags, row)
        assert abs(p_gold - row["p_gold"]) < 1e-5 * max(1.0, row["p_gold"]), (line, p_gold, row)
    again, meta = common.load_task_model(run / "model")
    assert meta["task"] == "sf" and again.crf.transitions.shape == crf.transitions.shape
    assert torch.equal(again.crf.transitions, crf.transitions)
