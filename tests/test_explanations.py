"""common.py's explanations: the wordpiece -> word map, word aggregation, integrated gradients (completeness, a naive
one-point-at-a-time loop, batching), the plausibility metrics against scikit-learn and direct computations, and the
rows and summary explain_examples() gives (the fields of explanations.jsonl, docs/report.md)."""
import json
import math

import numpy as np
import pytest
import torch
from conftest import REAL_DATA

import common


# ---------------------------------------------------------------------------------------- the map, aggregation
def test_word_of_piece_maps_every_wordpiece_to_its_word_pairs_included():
    tok = common.load_tokenizer(None)
    words = "add step to me to the 50 clasicos playlist".split()
    enc = common.encode_words(tok, words, [0] * len(words), 50)
    want = [-1]
    for w, word in enumerate(words):
        want += [w] * len(tok.tokenize(word))
    assert enc["word_of_piece"] == want + [-1] and len(tok.tokenize("clasicos")) > 1
    pair = common.encode_words(tok, ["a", "dog"], [0, 1], 50, ["it", "runs"], [1, 0])
    assert pair["word_of_piece"] == [-1, 0, 1, -1, 2, 3, -1]  # the second text's words follow the first's
    cut = common.encode_words(tok, words, [0] * len(words), 6)  # [CLS] + 4 pieces + [SEP]
    pieces = common.word_pieces(cut["word_of_piece"], len(words))
    assert pieces[:3] == [[1], [2], [3]] and all(p == [] for p in pieces[4:])


def test_word_scores_are_the_sum_of_the_word_pieces_and_none_when_cut():
    pieces = [[1], [2, 3, 4], [5], []]
    assert common.word_scores([9, 0.5, 1, -2, 0.25, 3, 9], pieces) == [0.5, -0.75, 3.0, None]
    assert common.word_rationale([0, 1, 0, 0, 0, 1, 0], pieces) == [1, 0, 1, None]
    with pytest.raises(ValueError):
        common.word_pieces([-1, 0, 3, -1], 2)


# ---------------------------------------------------------------------------------------- plausibility metrics
def test_average_precision_equals_scikit_learn():
    from sklearn.metrics import average_precision_score
    y, s = [1, 0, 1, 0, 0, 1], [0.9, 0.8, 0.3, 0.3, 0.1, 0.3]  # hand-made, with a tie across the classes
    # by hand: thresholds 0.9 (1 word, P 1, R 1/3), 0.8 (R unchanged), 0.3 (5 words, 3 positive: P 3/5, R 1)
    assert common.average_precision(y, s) == pytest.approx(1 / 3 * 1 + 2 / 3 * 3 / 5)
    assert common.average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 15))
        y = rng.integers(0, 2, n)
        if y.sum() == 0:
            continue
        s = rng.integers(-3, 4, n) / 2  # many ties
        assert common.average_precision(y, s) == pytest.approx(average_precision_score(y, s), abs=1e-12)
    assert common.average_precision([0, 0], [1, 2]) is None


def test_token_f1_is_the_overlap_of_the_top_k_words_with_the_rationale():
    rationale = [0, 1, 1, 0, 0]
    assert common.token_f1(rationale, [0.1, 0.9, 0.2, 0.8, 0.0]) == 0.5  # top-2 = words 1, 3
    assert common.token_f1(rationale, [0.0, 0.5, 0.4, 0.1, 0.2]) == 1.0
    assert common.top_k([1, 2, 2, 0], 2) == [1, 2] and common.top_k([3, 3, 3], 2) == [0, 1]  # ties: earlier word


def eraser_partial_match(truth: list[tuple[int, int]], pred: list[tuple[int, int]], threshold: float = 0.5):
    """ERASER's rationale_benchmark/metrics.py partial_match_score for one instance, with sets of token indices."""
    tps = 0
    for a, b in pred:
        best = 0.0
        for c, d in truth:
            num = len(set(range(a, b)) & set(range(c, d)))
            den = len(set(range(a, b)) | set(range(c, d)))
            best = max(best, num / den if den else 0.0)
        tps += best >= threshold
    r, p = tps / len(truth) if truth else 0, tps / len(pred) if pred else 0
    return 0 if p == 0 or r == 0 else 2 * p * r / (p + r)


def test_iou_f1_against_a_hand_count_and_erasers_set_computation():
    rationale = [0, 1, 1, 1, 0, 0, 1, 0]  # gold spans [1, 4) and [6, 7)
    scores = [0.0, 0.9, 0.8, 0.0, 0.7, 0.0, 0.0, 0.6]  # top-4 = 1, 2, 4, 7: spans [1, 3), [4, 5), [7, 8)
    got = common.iou_f1(rationale, scores)
    # [1, 3) vs [1, 4): IOU 2/3 -> match; [4, 5) and [7, 8) match nothing: P = 1/3, R = 1/2, F1 = 0.4
    assert (got["matched"], got["n_pred"], got["n_gold"]) == (1, 3, 2) and got["f1"] == pytest.approx(0.4)
    assert common.spans([1, 1, 0, 1]) == [(0, 2), (3, 4)] and common.spans([0, 0]) == []
    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(2, 12))
        r = rng.integers(0, 2, n).tolist()
        if sum(r) in (0, n):
            continue
        s = rng.normal(size=n).tolist()
        pred = [0] * n
        for i in common.top_k(s, sum(r)):
            pred[i] = 1
        want = eraser_partial_match(common.spans(r), common.spans(pred))
        assert common.iou_f1(r, s)["f1"] == pytest.approx(want)


def test_examples_without_a_usable_rationale_are_skipped_and_nothing_is_nan():
    assert common.example_plausibility([0, 0, 0], [1, 2, 3]) == (None, "no rationale")
    assert common.example_plausibility([1, 1, None], [1, 2, None]) == (None, "all rationale")
    res, why = common.example_plausibility([1, 0, None], [2.0, 1.0, None])  # the cut word is left out
    assert why == "used" and res["ap"] == res["token_f1"] == res["iou_f1"] == 1.0
    empty = common.summarise_plausibility([])
    assert empty["n"] == 0 and all(v is None for k, v in empty.items() if k != "n")
    json.dumps(empty, allow_nan=False)


# ---------------------------------------------------------------------------------------- integrated gradients
def encoded(task: str, tok, n: int = 6) -> tuple[list[dict], list, list[str]]:
    """The first n real test examples of a UIMER task, encoded as load_uimer_task does, with their words."""
    if task == "nli":
        raw = common.read_esnli(REAL_DATA, "dev")[:n]
        ex = [common.encode_words(tok, r["premise"], r["premise_rationale"], 128, r["hypothesis"],
                                  r["hypothesis_rationale"]) | {"label": common.NLI_LABELS.index(r["label"])}
              for r in raw]
        words = [(r["premise"], r["hypothesis"]) for r in raw]
        labels = list(common.NLI_LABELS)
    else:
        raw = common.read_snips(REAL_DATA, "test")[:n]
        labels = sorted({t for r in common.read_snips(REAL_DATA, "test") for t in r["tags"]}) if task == "sf" \
            else sorted({r["intent"] for r in common.read_snips(REAL_DATA, "test")})
        ex = []
        for r in raw:
            mask = common.ic_rationale(r["words"], r["intent"]) if task == "ic" else common.sf_rationale(r["words"])
            e = common.encode_words(tok, r["words"], mask, 50)
            if task == "ic":
                e["label"] = labels.index(r["intent"])
            else:
                e["tags"] = [labels.index(t) for t in r["tags"][:len(e["word_index"])]]
            ex.append(e)
        words = [r["words"] for r in raw]
    for i, e in enumerate(ex):
        e.update(index=i, id=f"test-{i}")
    return ex, words, labels


@pytest.fixture(scope="module")
def tok():
    return common.load_tokenizer(None)


def tiny_task_model(tiny_model: str, task: str, num_labels: int) -> common.TaskModel:
    torch.manual_seed(0)
    return common.TaskModel(common.load_encoder(tiny_model), task, num_labels).eval()


def content_of(batch: dict, examples: list[dict]) -> torch.Tensor:
    c = torch.zeros_like(batch["input_ids"], dtype=torch.bool)
    for b, i in enumerate(batch["index"].tolist()):
        wop = examples[i]["word_of_piece"]
        c[b, :len(wop)] = torch.tensor(wop) >= 0
    return c


@pytest.mark.parametrize("task", ["ic", "sf"])
def test_integrated_gradients_is_complete_and_converges_with_the_steps(task, tiny_model, tok):
    ex, _, labels = encoded(task, tok)
    model = tiny_task_model(tiny_model, task, len(labels))
    batch = common.collate(ex, tok.pad_token_id)
    target, _, _ = common.predict_target(model, batch)
    content = content_of(batch, ex)
    gaps = []
    for steps in (2, 64):
        a, fx, fx0 = common.integrated_gradients(model, batch, target, content, tok.pad_token_id, steps)
        gaps.append((a.sum(1) - (fx - fx0)).abs().max().item())
        assert (a[~content] == 0).all()  # [CLS], [SEP] and padding keep their embedding: no attribution
    delta = (fx - fx0).abs()
    assert gaps[1] < gaps[0] and gaps[1] <= 2e-3 * delta.max().item() + 1e-6, (gaps, delta)


def test_integrated_gradients_equals_a_naive_loop_and_does_not_depend_on_the_batch(tiny_model, tok):
    ex, _, labels = encoded("ic", tok, n=5)
    model = tiny_task_model(tiny_model, "ic", len(labels))
    batch = common.collate(ex, tok.pad_token_id)
    target, _, _ = common.predict_target(model, batch)
    steps = 5
    a, _, _ = common.integrated_gradients(model, batch, target, content_of(batch, ex), tok.pad_token_id, steps,
                                          max_rows=7)  # chunks of 1 example
    for b, e in enumerate(ex):  # one example alone, no padding, one interpolation point per forward/backward
        one = common.collate([e], tok.pad_token_id)
        x = model.embed(one["input_ids"]).detach()
        ids0 = torch.where(torch.tensor([e["word_of_piece"]]) >= 0, tok.pad_token_id, one["input_ids"])
        x0 = model.embed(ids0).detach()
        g = torch.zeros_like(x)
        for k in range(steps):
            xk = (x0 + (k + 0.5) / steps * (x - x0)).requires_grad_(True)
            logp = torch.log_softmax(model(one, inputs_embeds=xk), -1)[0, target[b]]
            g += torch.autograd.grad(logp, xk)[0] / steps
        naive = ((x - x0) * g).sum(-1)[0]
        n = len(e["input_ids"])
        torch.testing.assert_close(a[b, :n], naive, rtol=1e-4, atol=1e-6)
        assert (a[b, n:] == 0).all()


# ---------------------------------------------------------------------------------------- the driver
ROW_FIELDS = {"id", "index", "words", "pair_start", "pieces", "gold", "pred", "p_pred", "correct", "rationale",
              "skipped", "scores", "plausibility"}


def test_explain_examples_rows_and_summary(tiny_model, tok, tmp_path):
    ex, words, labels = encoded("ic", tok, n=8)
    model = tiny_task_model(tiny_model, "ic", len(labels)).train()
    calls = []

    def own(batch, target):  # an explainer of the method: here the wordpiece ids, to check the word sums
        calls.append(target.clone())
        return batch["input_ids"].float()

    rows, summary = common.explain_examples(model, ex, words, {"own": own}, 6, pad_id=tok.pad_token_id,
                                            label_names=labels, batch_size=4, ig_steps=4)
    assert model.training  # the mode is restored
    assert len(rows) == 6 and [r["id"] for r in rows] == [f"test-{i}" for i in range(6)]
    n_skipped = {"no rationale": 0, "all rationale": 0}
    for r, e, w in zip(rows, ex, words, strict=False):
        assert set(r) == ROW_FIELDS and r["words"] == w and r["pair_start"] is None
        assert r["pieces"] == common.word_pieces(e["word_of_piece"], len(w))
        assert r["gold"] == labels[e["label"]] and r["pred"] in labels and 0 < r["p_pred"] <= 1
        assert r["correct"] == (r["gold"] == r["pred"])
        assert r["rationale"] == [int(bool(e["rationale"][p[0]])) for p in r["pieces"]]
        assert r["scores"]["own"] == [float(sum(e["input_ids"][p] for p in ps)) for ps in r["pieces"]]
        assert list(r["scores"]) == ["own", "ig"] and len(r["scores"]["ig"]) == len(w)
        for m in ("own", "ig"):
            want, why = common.example_plausibility(r["rationale"], r["scores"][m])
            assert r["plausibility"][m] == (None if want is None else {k: want[k] for k in ("ap", "token_f1",
                                                                                              "iou_f1")})
            assert r["skipped"] == (None if why == "used" else why)
        n_skipped[r["skipped"]] = n_skipped.get(r["skipped"], 0) + 1
    assert summary["n_explained"] == 6 and summary["own"] == "own"
    assert summary["n_used"] + summary["n_no_rationale"] + summary["n_all_rationale"] == 6
    assert summary["n_no_rationale"] == n_skipped["no rationale"] and summary["n_used"] == n_skipped[None] > 0
    used = [r["plausibility"]["ig"] for r in rows if r["plausibility"]["ig"]]
    assert summary["explainers"]["ig"]["token_ap"] == pytest.approx(np.mean([u["ap"] for u in used]))
    assert summary["explainers"]["ig"]["n"] == len(used) and summary["ig"]["steps"] == 4
    assert sum(len(c) for c in calls) == 6  # the explainer saw the predicted class of every example
    path = tmp_path / "explanations.jsonl"
    common.write_explanations(path, rows)
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == rows
    json.dumps(summary, allow_nan=False)


def test_explain_examples_on_pairs_tags_non_finite_scores_and_no_rationale(tiny_model, tok):
    ex, words, labels = encoded("nli", tok, n=3)
    model = tiny_task_model(tiny_model, "nli", 3)
    rows, summary = common.explain_examples(model, ex, words, {"nan": lambda b, t: torch.full(b["input_ids"].shape,
                                                                                              math.nan)}, 3,
                                            pad_id=tok.pad_token_id, label_names=labels, ig_steps=2)
    assert rows[0]["pair_start"] == len(words[0][0]) and rows[0]["words"] == [*words[0][0], *words[0][1]]
    assert all(r["scores"]["nan"] is None and r["plausibility"]["nan"] is None for r in rows)
    assert summary["explainers"]["nan"]["n_nonfinite"] == 3 and summary["explainers"]["nan"]["token_ap"] is None
    rows, summary = common.explain_examples(model, ex, words, {}, 3, pad_id=tok.pad_token_id, has_rationale=False,
                                            ig_steps=2)
    assert all(r["rationale"] is None and r["skipped"] == "no rationale data" for r in rows)
    assert summary["n_no_rationale_data"] == 3 and summary["own"] == "ig" and isinstance(rows[0]["gold"], int)
    ex, words, labels = encoded("sf", tok, n=3)
    model = tiny_task_model(tiny_model, "sf", len(labels))
    rows, _ = common.explain_examples(model, ex, words, {}, 3, pad_id=tok.pad_token_id, label_names=labels,
                                      ig_steps=2)
    for r, e in zip(rows, ex, strict=True):
        assert r["gold"] == [labels[t] for t in e["tags"]] and len(r["pred"]) == len(r["gold"])
        assert 0 < r["p_pred"] <= 1  # the CRF's probability of the whole decoded sequence
    with pytest.raises(ValueError):
        common.explain_examples(model, ex, words, {"ig": lambda b, t: b["input_ids"]}, 3, pad_id=0)
