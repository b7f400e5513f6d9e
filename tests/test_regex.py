"""REGEX: the losses against finite differences, VAT against random directions, the K% mask, comp / suff against a
hand computation, a known-faithful attribution against random, IG completeness, smoke runs, bad input."""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import common
import regex_robust as rx

ROOT = Path(__file__).resolve().parents[1]

POS = ["a warm funny engaging film", "a stirring and moving story", "great acting and a clever script",
       "the best film of the year", "charming , witty and delightful", "a gorgeous , heartfelt movie"]
NEG = ["a dull and lifeless mess", "the plot is boring and predictable", "terrible acting and a weak script",
       "the worst film of the year", "tedious , flat and forgettable", "an ugly , pointless movie"]


def write_tiny_text_data(root: Path) -> Path:
    """sst2 (12 sentences per split), imdb (12 reviews per split) and ERASER movies (6 documents with evidence)."""
    rows = [f"1 {s}" for s in POS] + [f"0 {s}" for s in NEG]
    (root / "sst2").mkdir(parents=True, exist_ok=True)
    for split in ("train", "dev", "test"):
        (root / "sst2" / f"stsa.binary.{split}").write_text("\n".join(rows) + "\n")
    (root / "imdb").mkdir(exist_ok=True)
    for split in ("train", "test"):
        recs = [{"id": f"{split}/{i}", "text": s + " .<br /><br />" + s, "label": int(i < 6)}
                for i, s in enumerate(POS + NEG)] * (2 if split == "train" else 1)
        (root / "imdb" / f"imdb_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    d = root / "eraser_movies"
    (d / "docs").mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        recs = []
        for i, s in enumerate(POS[:3] + NEG[:3]):
            doc = f"{split}_{i}.txt"
            (d / "docs" / doc).write_text("i saw it yesterday .\n" + s + " .\n")
            recs.append({"annotation_id": doc, "classification": "POS" if i < 3 else "NEG",
                         "evidences": [[{"docid": doc, "start_token": 5, "end_token": 5 + len(s.split())}]]})
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    return root


@pytest.fixture(scope="module")
def text_data(tmp_path_factory) -> Path:
    return write_tiny_text_data(tmp_path_factory.mktemp("text-data"))


@pytest.fixture(scope="module")
def tok(tiny_model):
    return common.load_tokenizer(tiny_model)


def tiny_clf(tiny_model, tok, seed=0, double=True):
    torch.manual_seed(seed)
    model = common.TaskModel(common.load_encoder(tiny_model), "cls", 2, 0.1).eval()
    with torch.no_grad():  # larger head weights so the random model's probabilities are not all 1/2
        model.head.weight.normal_(0, 0.5)
    return rx.as_classifier(model.double() if double else model, tok)


def tiny_batch(tok, sentences=("a warm funny engaging film", "the plot is boring", "great acting and a clever script")):
    ex = [rx.encode_text(tok, s.split(), 32, 1, i) for i, s in enumerate(sentences)]
    return common.collate(ex, tok.pad_token_id), ex


def default_args(*extra):
    return rx.resolve(rx.parse_args(list(extra)))


# ---------------------------------------------------------------------------------------------- IGR (Eq. 2)
def test_igr_equals_finite_difference(tiny_model, tok):
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)  # three lengths: the shorter rows carry padding
    e = clf.embed(batch["input_ids"]).detach().requires_grad_(True)
    ce = torch.nn.functional.cross_entropy(clf.forward(e, batch)[0], batch["label"], reduction="none")
    got = rx.igr_loss(ce, e, batch["attention_mask"].double())
    h, norms = 1e-5, []
    with torch.no_grad():
        for b in range(e.size(0)):  # central differences of l_CE(x_b) along every (token, dim) of e_b, batched
            n, H = int(batch["attention_mask"][b].sum()), e.size(-1)
            one = {k: batch[k][b:b + 1].expand(2 * n * H, -1) for k in ("attention_mask", "token_type_ids")}
            x = e[b:b + 1].detach().repeat(2 * n * H, 1, 1)
            for j in range(n * H):
                x[2 * j, j // H, j % H] += h
                x[2 * j + 1, j // H, j % H] -= h
            loss = torch.nn.functional.cross_entropy(clf.forward(x, one)[0], batch["label"][b].expand(2 * n * H),
                                                     reduction="none")
            norms.append(((loss[0::2] - loss[1::2]) / (2 * h)).pow(2).sum())
    want = torch.stack(norms).mean()
    assert torch.allclose(got, want, rtol=1e-6), (got, want)


def test_igr_parameter_gradient_by_double_backward_matches_finite_difference(tiny_model, tok):
    """d L_IGR / d theta (the double-backward path the training step relies on) for one head weight."""
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)
    w = clf.module.head.weight

    def L_igr():
        e = clf.embed(batch["input_ids"])
        ce = torch.nn.functional.cross_entropy(clf.forward(e, batch)[0], batch["label"], reduction="none")
        return rx.igr_loss(ce, e, batch["attention_mask"].double())

    (g,) = torch.autograd.grad(L_igr(), w)
    h, w0 = 1e-6, w[0, 3].item()
    vals = []
    for v in (w0 + h, w0 - h):
        with torch.no_grad():
            w[0, 3] = v
        vals.append(L_igr().item())
    with torch.no_grad():
        w[0, 3] = w0
    up, down = vals
    assert abs(g[0, 3].item() - (up - down) / (2 * h)) < 1e-6 * max(1.0, abs(g[0, 3].item()))


# ---------------------------------------------------------------------------------------------- VAT (Eqs. 3-4)
def test_vat_direction_beats_random_direction_of_same_norm(tiny_model, tok):
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)
    mask = batch["attention_mask"].double()
    e = clf.embed(batch["input_ids"]).detach()
    log_p = torch.log_softmax(clf.forward(e, batch)[0], -1)
    torch.manual_seed(0)
    eps = 0.1 * e.flatten(1).norm(dim=1).min().item()  # 10% of the sequence norm

    def kl_at(r):
        return rx.kl(log_p, torch.log_softmax(clf.forward(e + r, batch)[0], -1))

    with torch.enable_grad():
        d = rx.vat_direction(clf, e, batch, log_p, mask, xi=1e-3, iters=1)
    assert torch.allclose(d.flatten(1).norm(dim=1), torch.ones(3, dtype=d.dtype))
    assert (d * (1 - mask)[..., None]).abs().max() == 0  # padding is never perturbed
    with torch.no_grad():
        adv = kl_at(eps * d)
        rand = torch.stack([kl_at(eps * rx.l2_normalise(torch.randn_like(e), mask)) for _ in range(20)])
    assert (adv > rand.max(0).values).all(), (adv, rand.max(0).values)


def test_vat_loss_is_kl_at_the_adversarial_point(tiny_model, tok):
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)
    mask = batch["attention_mask"].double()
    e = clf.embed(batch["input_ids"])
    logits = clf.forward(e, batch)[0]
    torch.manual_seed(3)
    L = rx.vat_loss(clf, e, batch, logits, mask, eps=0.7, xi=1e-3, iters=2)
    torch.manual_seed(3)
    log_p = torch.log_softmax(logits.detach(), -1)
    r = 0.7 * rx.vat_direction(clf, e, batch, log_p, mask, 1e-3, 2)
    want = rx.kl(log_p, torch.log_softmax(clf.forward(e + r, batch)[0], -1)).mean()
    assert torch.allclose(L, want) and L.requires_grad


# ---------------------------------------------------------------------------------------------- IG (Eq. 5)
@pytest.mark.parametrize("baseline", ["zero", "pad", "mask"])
def test_ig_completeness(tiny_model, tok, baseline):
    """sum of IG attributions = f(x) - f(baseline) for the target logit (midpoint rule, 64 steps)."""
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)
    e = clf.embed(batch["input_ids"]).detach()
    e0 = rx.baseline_embeddings(clf, batch, e, baseline)
    target = torch.tensor([0, 1, 1])
    a = rx.integrated_gradients(clf, batch, e, e0, target, steps=64)
    with torch.no_grad():
        f = clf.forward(e, batch)[0].gather(1, target[:, None])[:, 0]
        f0 = clf.forward(e0, batch)[0].gather(1, target[:, None])[:, 0]
    tol = 2e-3 * (f - f0).abs().max().item() + 1e-8
    assert torch.allclose(a.sum((1, 2)), f - f0, atol=tol), (a.sum((1, 2)), f - f0)
    special = ~rx.content_positions(clf, batch)
    assert a[special].abs().max() == 0  # [CLS], [SEP] and padding keep their embedding in the baseline


def test_ig_batching_equals_one_example_at_a_time(tiny_model, tok):
    clf = tiny_clf(tiny_model, tok)
    batch, ex = tiny_batch(tok)
    e = clf.embed(batch["input_ids"]).detach()
    e0 = rx.baseline_embeddings(clf, batch, e, "zero")
    target = torch.tensor([1, 0, 1])
    all_at_once = rx.integrated_gradients(clf, batch, e, e0, target, steps=5, max_rows=1000)
    chunked = rx.integrated_gradients(clf, batch, e, e0, target, steps=5, max_rows=5)  # one example per forward
    assert torch.allclose(all_at_once, chunked, atol=1e-10)
    for b, x in enumerate(ex):  # alone, unpadded
        one = common.collate([x], tok.pad_token_id)
        e1 = clf.embed(one["input_ids"]).detach()
        a1 = rx.integrated_gradients(clf, one, e1, rx.baseline_embeddings(clf, one, e1, "zero"), target[b:b + 1], 5)
        assert torch.allclose(a1[0], all_at_once[b, :e1.size(1)], atol=1e-8)


# ---------------------------------------------------------------------------------------------- EGT (Eqs. 6-9)
def test_mask_lowest_hand_example():
    #                      CLS   a    b    c    d    e   SEP  pad
    scores = torch.tensor([[-9., 0.5, 0.1, 0.9, 0.2, 0.3, -9., -9.]])
    content = torch.tensor([[0, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    assert rx.mask_lowest(scores, content, 0.4).tolist() == [[False, False, True, False, True, False, False, False]]
    assert rx.mask_lowest(scores, content, 0.1).sum() == 0  # floor(0.1 * 5) = 0
    assert rx.mask_lowest(scores, content, 0.99).tolist() == [[False, True, True, False, True, True, False, False]]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=5), st.floats(0.01, 0.99), st.integers(0, 10**6))
def test_mask_lowest_hides_exactly_the_lowest_content_tokens(lengths, ratio, seed):
    g = torch.Generator().manual_seed(seed)
    L = max(lengths) + 2
    content = torch.zeros(len(lengths), L, dtype=torch.bool)
    for b, n in enumerate(lengths):
        content[b, 1:n + 1] = True  # [CLS] at 0, [SEP] at n + 1, padding after
    scores = torch.randint(0, 5, (len(lengths), L), generator=g).float()  # ties on purpose
    scores[~content] = -100.0  # special tokens and padding score lowest: they must still never be masked
    got = rx.mask_lowest(scores, content, ratio)
    for b, n in enumerate(lengths):
        pos = sorted(range(1, n + 1), key=lambda i: (scores[b, i].item(), i))  # naive: sort, ties by position
        want = set(pos[:math.floor(ratio * n)])
        assert {i for i in range(L) if got[b, i]} == want


def test_align_loss_hand_computation():
    A = torch.zeros(1, 2, 4, 4)
    A[0, 0, 0] = torch.tensor([0.4, 0.2, 0.3, 0.1])
    A[0, 1, 0] = torch.tensor([0.2, 0.4, 0.1, 0.3])
    content = torch.tensor([[False, True, True, False]])
    s = torch.tensor([[5.0, 3.0, 1.0, 7.0]])
    alpha = np.array([0.3, 0.2]) / 0.5  # mean over heads at content positions, renormalised
    s_hat = np.array([0.75, 0.25])
    want = float((s_hat * np.log(s_hat / alpha)).sum())
    assert abs(rx.align_loss(A, s, content, "saliency_attention").item() - want) < 1e-6
    want_rev = float((alpha * np.log(alpha / s_hat)).sum())
    assert abs(rx.align_loss(A, s, content, "attention_saliency").item() - want_rev) < 1e-6


def test_egt_loss_masks_and_flows_gradient(tiny_model, tok):
    clf = tiny_clf(tiny_model, tok, double=False)
    clf.module.train()
    batch, _ = tiny_batch(tok)
    args = default_args("--egt-start", "0", "--ig-steps", "3", "--igr", "--vat", "--egt", "--lambda-g", "0.1",
                        "--lambda-v", "2", "--lambda-e", "0.5")  # every term on, whatever the defaults
    L, rec = rx.train_step(clf, batch, args, egt_on=True)
    assert {"L_CE", "L_IGR", "L_VAT", "L_EGT", "L_align", "L_mask"} <= set(rec)
    n = rx.content_positions(clf, batch).sum(1)
    assert abs(rec["masked_share"] - float(torch.floor(0.3 * n).sum() / n.sum())) < 1e-9
    assert abs(rec["L"] - (rec["L_CE"] + 0.1 * rec["L_IGR"] + 2 * rec["L_VAT"] + 0.5 * rec["L_EGT"])) < 1e-5  # Eq. 1
    L.backward()
    assert clf.module.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_use_egt_schedule():
    assert not rx.use_egt(4, 5) and rx.use_egt(5, 5) and rx.use_egt(0, 0)


# ---------------------------------------------------------------------------------------------- faithfulness
def hand_faithfulness(clf, tok, ex, scores, ratio, op):
    """comp / suff / normalised for one example written out on Python lists."""
    def p_of(ids):
        b = common.collate([{**ex, "input_ids": ids, "token_type_ids": [0] * len(ids), "rationale": [0] * len(ids)}],
                           tok.pad_token_id)
        with torch.no_grad():
            return torch.softmax(clf.forward(clf.embed(b["input_ids"]), b)[0], -1)[0]

    ids = ex["input_ids"]
    content = [i for i in range(len(ids)) if ex["content"][i]]
    k = max(1, math.ceil(ratio * len(content)))
    top = sorted(content, key=lambda i: (-scores[i], i))[:k]
    full = p_of(ids)
    y = int(full.argmax())

    def removed(pos):
        if op == "delete":
            return [t for i, t in enumerate(ids) if i not in pos]
        fill = tok.pad_token_id if op == "pad" else tok.mask_token_id
        return [fill if i in pos else t for i, t in enumerate(ids)]

    p, p_comp = full[y].item(), p_of(removed(set(top)))[y].item()
    p_suff, p0 = p_of(removed(set(content) - set(top)))[y].item(), p_of(removed(set(content)))[y].item()
    suff0 = 1 - max(0.0, p - p0) - 1e-4
    return {"comp": p - p_comp, "suff": p - p_suff,
            "norm_comp": min(1, max(0, max(0, p - p_comp) / (1 - suff0))),
            "norm_suff": min(1, max(0, (1 - max(0, p - p_suff) - suff0) / (1 - suff0)))}


@pytest.mark.parametrize("op", ["pad", "mask", "delete"])
def test_comprehensiveness_sufficiency_equal_hand_computation(tiny_model, tok, op):
    clf = tiny_clf(tiny_model, tok)
    _, ex = tiny_batch(tok)
    g = torch.Generator().manual_seed(1)
    attrs = {"x": {e["index"]: torch.rand(len(e["input_ids"]), generator=g, dtype=torch.float64) for e in ex}}
    args = default_args("--removal", op, "--rationale-ratio", "0.4", "--aopc-ratios", "0.2,0.6")
    got = rx.faithfulness(clf, ex, attrs, args)["x"]
    per = {r: [hand_faithfulness(clf, tok, e, attrs["x"][e["index"]].tolist(), r, op) for e in ex]
           for r in (0.4, 0.2, 0.6)}
    for key in ("comp", "suff", "norm_comp", "norm_suff"):
        assert abs(got[key] - np.mean([h[key] for h in per[0.4]])) < 1e-9, key
        aopc = (np.mean([h[key] for h in per[0.2]]) + np.mean([h[key] for h in per[0.6]])) / 3  # sum / (bins + 1)
        assert abs(got["aopc_" + key] - aopc) < 1e-9, key


def bag_of_words_classifier(vocab=50, important=(7, 11, 13)):
    """A tiny synthetic model behind the `Classifier` interface: only the `important` token ids move the logits."""
    emb = torch.nn.Embedding(vocab, 4)
    with torch.no_grad():
        emb.weight.zero_()
        for k, t in enumerate(important):
            emb.weight[t] = torch.tensor([1.0 + k, -1.0, 0.5, 0.0])
    head = torch.nn.Linear(4, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]]))
        head.bias.zero_()
    module = torch.nn.ModuleDict({"emb": emb, "head": head})

    def forward(e, batch, attentions=False):
        h = (e * batch["attention_mask"][..., None]).sum(1)
        return head(h), None
    return rx.Classifier(emb, forward, module, special_ids=[1, 2], pad_id=0, mask_id=3)


def test_known_faithful_attribution_beats_random_on_synthetic_model():
    clf = bag_of_words_classifier()
    g = torch.Generator().manual_seed(0)
    ex = []
    for i in range(30):
        body = torch.randint(20, 50, (10,), generator=g).tolist()
        body[i % 10] = [7, 11, 13][i % 3]  # one token the model uses, somewhere
        ids = [1] + body + [2]
        ex.append({"input_ids": ids, "token_type_ids": [0] * 12, "rationale": [0] * 12, "label": 0, "index": i,
                   "content": [0] + [1] * 10 + [0]})
    faithful = {e["index"]: torch.tensor([float(t in (7, 11, 13)) for t in e["input_ids"]]) for e in ex}
    rand = {e["index"]: torch.rand(12, generator=g) for e in ex}
    args = default_args("--rationale-ratio", "0.1")
    table = rx.faithfulness(clf, ex, {"faithful": faithful, "random": rand}, args)
    assert table["faithful"]["comp"] > table["random"]["comp"] + 0.1
    assert table["faithful"]["suff"] < table["random"]["suff"]
    assert table["faithful"]["gain_over_random"]["comp"] > 0.1
    # IG through the same interface recovers the used tokens (the model is linear in e)
    attrs = rx.attribute_all(clf, ex, ["ig", "input_x_gradient"], dataclasses.replace(args, eval_batch_size=8), 0)
    table = rx.faithfulness(clf, ex, {**attrs, "random": rand}, args)
    assert table["ig"]["comp"] > table["random"]["comp"] + 0.1


def test_deeplift_and_ig_are_exact_on_a_linear_model():
    """On the bag-of-words model f is linear in e: IG and DeepLift both equal (e - e') * W exactly."""
    clf = bag_of_words_classifier()
    ids = torch.tensor([[1, 7, 30, 11, 2], [1, 40, 13, 2, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "token_type_ids": torch.zeros_like(ids)}
    args = default_args("--attr-reduce", "sum", "--ig-steps", "4")
    gen = torch.Generator().manual_seed(0)
    ig, target = rx.token_scores("ig", clf, batch, None, args, gen)
    dl, _ = rx.token_scores("deeplift", clf, batch, None, args, gen)
    e = clf.embed(ids).detach()
    w = clf.module["head"].weight.detach()
    exact = (e * rx.content_positions(clf, batch)[..., None]) @ w[target].unsqueeze(-1)  # e' = 0 at content tokens
    assert torch.allclose(ig, exact[..., 0], atol=1e-5) and torch.allclose(dl, exact[..., 0], atol=1e-5)


def test_captum_deeplift_on_a_transformer_is_signed_input_x_gradient(tiny_model, tok):
    """Documented in docs/regex.md: captum's DeepLift rules cover nn.ReLU/Tanh/Softmax/... modules only; BERT's GELU
    module and functional softmax get plain gradients, so at content tokens (zero baseline) DeepLift =
    sum_h e * grad."""
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)
    args = default_args("--attr-reduce", "sum")
    dl, target = rx.token_scores("deeplift", clf, batch, None, args, None)
    ixg, _ = rx.token_scores("input_x_gradient", clf, batch, target, args, None)
    c = rx.content_positions(clf, batch)
    assert torch.allclose(dl[c], ixg[c], atol=1e-8) and dl[~c].abs().max() == 0


def test_attention_scores_are_the_last_layer_cls_row(tiny_model, tok):
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)
    att, _ = rx.token_scores("attention", clf, batch, None, default_args(), None)
    ref = clf.module.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                             output_attentions=True).attentions[-1][:, :, 0, :].mean(1)  # HF's own output
    assert torch.allclose(att, ref)


def test_removal_operators():
    clf = bag_of_words_classifier()
    ids = torch.tensor([[1, 20, 21, 22, 2, 0], [1, 30, 31, 2, 0, 0]])
    att = (ids != 0).long()
    remove = torch.tensor([[0, 1, 0, 1, 0, 0], [0, 0, 1, 0, 0, 0]], dtype=torch.bool)
    assert rx.apply_removal(ids, att, remove, "pad", clf)[0].tolist() == [[1, 0, 21, 0, 2, 0], [1, 30, 0, 2, 0, 0]]
    assert rx.apply_removal(ids, att, remove, "mask", clf)[0].tolist() == [[1, 3, 21, 3, 2, 0], [1, 30, 3, 2, 0, 0]]
    new, new_att = rx.apply_removal(ids, att, remove, "delete", clf)
    assert new.tolist() == [[1, 21, 2, 0, 0, 0], [1, 30, 2, 0, 0, 0]]
    assert new_att.tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]]


def test_agreement_hand_example():
    ex = [{"index": 0, "content": [0, 1, 1, 1, 1, 0]}]
    a = {0: torch.tensor([9., 4., 3., 2., 1., 9.])}
    b = {0: torch.tensor([0., 1., 2., 3., 4., 0.])}
    r = rx.agreement(a, b, ex, 0.5)  # top-2 {1, 2} vs {3, 4}
    assert abs(r["spearman"] + 1) < 1e-12 and r["jaccard"] == 0.0
    r = rx.agreement(a, a, ex, 0.5)
    assert abs(r["spearman"] - 1) < 1e-12 and r["jaccard"] == 1.0


def test_random_init_like_redraws_every_layer_and_leaves_the_model_alone(tiny_model, tok):
    """Randomisation test 2 compares against this model: every weight matrix must be re-drawn (Adebayo et al.)."""
    clf = tiny_clf(tiny_model, tok)
    before = {k: v.clone() for k, v in clf.module.state_dict().items()}
    rnd = rx.random_init_like(clf.module, 5)
    for k, v in clf.module.state_dict().items():
        assert torch.equal(v, before[k]), k  # the trained model is untouched
    changed = [k for k, v in rnd.state_dict().items() if v.dtype.is_floating_point and v.dim() == 2
               and not torch.equal(v, before[k])]
    assert len(changed) == sum(1 for k, v in before.items() if v.dtype.is_floating_point and v.dim() == 2)
    assert not rnd.training


def test_rationale_words_sum_wordpieces_and_keep_sentence_order(tok):
    e = rx.encode_text(tok, "the clasicos film was great".split(), 32, 1, 0)
    assert len(tok.tokenize("clasicos")) > 1
    scores = torch.zeros(len(e["input_ids"]))
    for pos, w in enumerate(e["word_ids"]):
        if w == 1:
            scores[pos] = 0.3  # each piece of 'clasicos' small, their sum large
        if w == 4:
            scores[pos] = 0.5
    words = "the clasicos film was great".split()
    assert rx.rationale_words({**e, "words": words}, scores, 0.4) == ["clasicos", "great"]


def test_plausibility_against_sklearn():
    from sklearn.metrics import average_precision_score, roc_auc_score
    ex = [{"index": 0, "content": [0, 1, 1, 1, 1, 0], "rationale": [0, 1, 0, 1, 0, 0]},
          {"index": 1, "content": [0, 1, 1, 0], "rationale": [0, 1, 1, 0]}]  # only evidence: skipped
    s = {"m": {0: torch.tensor([5., .9, .1, .4, .6, 5.]), 1: torch.tensor([0., 1., 2., 0.])}}
    got = rx.plausibility(s, ex)["m"]
    y, x = [1, 0, 1, 0], [.9, .1, .4, .6]
    assert got["n_docs"] == 1 and abs(got["token_auc"] - roc_auc_score(y, x)) < 1e-12
    assert abs(got["token_average_precision"] - average_precision_score(y, x)) < 1e-12


# ---------------------------------------------------------------------------------------------- end to end
def argv(tiny_model, data, out, *extra):
    return ["--model", tiny_model, "--data-dir", str(data), "--out-dir", str(out), "--max-epochs", "1",
            "--ig-steps", "3", "--egt-start", "1", "--batch-size", "6", "--eval-batch-size", "8", *extra]


FAST = ["--attributions", "random,ig", "--no-randomization"]
TERMS = [(igr, vat, egt) for igr in (0, 1) for vat in (0, 1) for egt in (0, 1)]


@pytest.mark.parametrize("igr,vat,egt,mode", [(i, v, e, m) for i, v, e in TERMS
                                               for m in (["align", "mask", "both"] if e else ["both"])])
@pytest.mark.slow
def test_smoke_every_term_combination(tiny_model, text_data, tmp_path, igr, vat, egt, mode):
    flags = [f"--{'' if on else 'no-'}{n}" for n, on in (("igr", igr), ("vat", vat), ("egt", egt))]
    weights = ["--lambda-g", "0.1", "--lambda-v", "1", "--lambda-e", "1"]  # every switched-on term weighs > 0
    r = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, *flags, *weights, "--egt-mode", mode, *FAST)))
    assert 0 <= r["test"]["accuracy"] <= 1 and 0 <= r["test"]["macro_f1"] <= 1
    assert set(r["faithfulness"]) == {"random", "ig"}
    steps = [json.loads(s) for s in (Path(r["run_dir"]) / "log.jsonl").read_text().splitlines() if '"L_CE"' in s]
    assert steps and all(math.isfinite(v) for s in steps for k, v in s.items() if k.startswith("L"))
    assert all(("L_IGR" in s) == bool(igr) and ("L_VAT" in s) == bool(vat) for s in steps)
    assert [s["egt_on"] for s in steps] == [bool(egt) and s["step"] >= 1 for s in steps]
    if egt:
        on = [s for s in steps if s["egt_on"]]
        assert all(("L_align" in s) == (mode != "mask") and ("L_mask" in s) == (mode != "align") for s in on)
    assert (Path(r["run_dir"]) / "model" / "task.json").is_file()  # a standard folder: tests/test_saved_models.py


@pytest.mark.parametrize("extra", [
    ["--removal", "mask", "--ig-baseline", "pad", "--attr-reduce", "sum", "--egt-saliency", "input_x_gradient"],
    ["--removal", "delete", "--ig-baseline", "mask", "--attr-reduce", "l2", "--align-direction", "attention_saliency",
     "--detach-clean", "--vat-iters", "2"],
])
@pytest.mark.slow
def test_smoke_every_attribution_and_evaluation_option(tiny_model, text_data, tmp_path, extra):
    r = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, *extra)))
    assert set(r["faithfulness"]) == set(rx.METHODS)
    for row in r["faithfulness"].values():
        assert all(math.isfinite(v) for k, v in row.items() if k != "gain_over_random")
        assert 0 <= row["norm_comp"] <= 1 and 0 <= row["norm_suff"] <= 1
        assert abs(row["gain_over_random"]["comp"] - (row["comp"] - r["faithfulness"]["random"]["comp"])) < 1e-12
    for agr in r["randomization_trained_vs_random"].values():
        assert 0 <= agr["jaccard"] <= 1


@pytest.mark.slow
def test_smoke_ood_plausibility_select_then_predict(tiny_model, text_data, tmp_path):
    r = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--ood-task", "imdb", "--plausibility",
                                   "--plausibility-size", "6", "--select-then-predict", "--stp-methods", "ig,attention",
                                   *FAST)))
    assert r["ood"]["task"] == "imdb" and 0 <= r["ood"]["test"]["accuracy"] <= 1
    assert set(r["ood"]["faithfulness"]) == {"random", "ig"}
    wp = r["wordpiece_plausibility"]["ig"]
    assert wp["n_docs"] == 6 and 0 <= wp["token_auc"] <= 1
    assert r["plausibility"]["n_no_rationale_data"] == 12  # the explanations: SST-2 test sentences have no rationale
    assert set(r["select_then_predict"]) == {"ig", "attention"}
    assert 0 <= r["select_then_predict"]["ig"]["accuracy"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("task", ["imdb", "movies"])
def test_smoke_other_tasks(tiny_model, text_data, tmp_path, task):
    r = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--task", task, "--max-len", "24", *FAST)))
    assert r["task"] == task and 0 <= r["test"]["accuracy"] <= 1
    if task == "movies":  # the test set has human evidence: plausibility comes for free
        assert r["wordpiece_plausibility"]["ig"]["n_docs"] == 6
        assert r["plausibility"]["n_used"] == 6 and r["plausibility"]["explainers"]["regex_ig"]["n"] == 6
    else:
        assert r["n_dev"] == 2 and r["n_train"] == 22  # imdb: dev carved out of train (10%, fixed RNG)


@pytest.mark.slow
def test_evaluate_only_and_seed_agreement(tiny_model, text_data, tmp_path):
    a = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--seed", "1", "--no-egt", *FAST)))
    b = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--seed", "2", "--no-egt", *FAST)))
    r = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--seed", "1", "--evaluate-only", "--checkpoint",
                                   a["run_dir"], "--compare-checkpoint", b["run_dir"] + "/model", *FAST)))
    assert r["variant"] == "evaluate-only" and r["n_train"] == 0
    assert r["test"] == a["test"] and r["faithfulness"] == a["faithfulness"]  # same model, same report
    assert set(r["randomization_seed_vs_seed"]) == {"random", "ig"}
    self_r = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--evaluate-only", "--checkpoint",
                                        a["run_dir"], "--compare-checkpoint", a["run_dir"], *FAST)))
    assert self_r["randomization_seed_vs_seed"]["ig"]["jaccard"] == 1.0


@pytest.mark.slow
def test_evaluate_only_takes_an_out_dir_holding_one_run(tiny_model, text_data, tmp_path):
    job = tmp_path / "job"  # e.g. a sweep job directory
    a = rx.main(rx.parse_args(argv(tiny_model, text_data, job, "--seed", "1", "--no-egt", *FAST)))
    r = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path / "eval", "--seed", "1", "--evaluate-only",
                                   "--checkpoint", str(job), *FAST)))
    assert r["test"] == a["test"] and r["faithfulness"] == a["faithfulness"]


@pytest.mark.slow
def test_same_seed_same_results_and_seed_summary(tiny_model, text_data, tmp_path):
    args = argv(tiny_model, text_data, tmp_path, "--seeds", "3,4", "--train-size", "8", "--attributions",
                "random,attention")
    s1 = rx.main(rx.parse_args(args))
    first = [(Path(r["run_dir"]) / "results.json").read_bytes() for r in s1["runs"]]
    s2 = rx.main(rx.parse_args(args))
    assert first == [(Path(r["run_dir"]) / "results.json").read_bytes() for r in s2["runs"]]  # byte-identical
    assert s1["accuracy"]["n"] == 2 and s1["runs"][0]["n_train"] == 8
    assert abs(s1["accuracy"]["mean"] - np.mean([r["test"]["accuracy"] for r in s1["runs"]])) < 1e-12
    assert set(s1["randomization_seed_vs_seed"]) == {"random", "attention"}
    assert (tmp_path / "regex_robust" / "sst2-8-vat-seeds" / "summary.json").is_file()
    plain = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--seed", "3", "--train-size", "8",
                                       "--no-igr", "--no-vat", "--no-egt", *FAST)))
    assert plain["variant"] == "plain"

    def cfg(r):
        return json.loads((Path(r["run_dir"]) / "config.json").read_text())

    assert cfg(plain)["seed"] == cfg(s1["runs"][0])["seed"] == 3


def test_subsample_seed_fixes_the_training_subsample_across_seeds(tiny_model, text_data, tok):
    def ids(seed, *extra):
        args = rx.resolve(rx.parse_args(["--model", tiny_model, "--data-dir", str(text_data), "--train-size", "6",
                                         *extra]))
        return [e["id"] for e in rx.load_data(args, tok, seed)["train"]]

    assert ids(1) != ids(2)  # by default the subsample is drawn with the run's seed
    assert ids(1, "--subsample-seed", "0") == ids(2, "--subsample-seed", "0") == ids(0)
    assert len(ids(1)) == 6


@pytest.mark.slow
def test_evaluate_only_on_a_hugging_face_classifier_folder_and_a_legacy_model_pt(tiny_model, text_data, tmp_path, tok):
    """The faithfulness suite scores a model not trained here (AutoModelForSequenceClassification), and a model.pt of
    older runs still loads (weights only)."""
    from transformers import BertConfig, BertForSequenceClassification
    torch.manual_seed(0)
    hf = tmp_path / "hf-clf"
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, num_labels=2)
    BertForSequenceClassification(cfg).save_pretrained(hf)
    tok.save_pretrained(hf)
    r = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--evaluate-only", "--checkpoint", str(hf), *FAST)))
    assert r["variant"] == "evaluate-only" and set(r["faithfulness"]) == {"random", "ig"}
    assert 0 <= r["test"]["accuracy"] <= 1
    assert len((Path(r["run_dir"]) / "predictions.jsonl").read_text().splitlines()) == 12
    a = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--seed", "1", "--no-egt", *FAST)))
    model, _ = rx.load_checkpoint(a["run_dir"], rx.resolve(rx.parse_args(argv(tiny_model, text_data, tmp_path))))
    torch.save({"state_dict": model.state_dict(), "model": tiny_model, "task": "sst2"}, tmp_path / "legacy.pt")
    old = rx.main(rx.parse_args(argv(tiny_model, text_data, tmp_path, "--seed", "1", "--evaluate-only", "--checkpoint",
                                     str(tmp_path / "legacy.pt"), *FAST)))
    assert old["test"] == a["test"] and old["faithfulness"] == a["faithfulness"]


@pytest.mark.slow
def test_crafted_pickle_checkpoint_is_refused_and_never_runs(tmp_path, tiny_model):
    """torch.load(weights_only=True): a pickle that would run code is a one-line error, and its code never runs."""
    import pickle

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"state_dict": Payload(), "model": tiny_model}))
    (tmp_path / "junk.pt").write_bytes(bytes(range(256)))  # fixed junk; random junk: test_bad_inputs.py
    data = write_tiny_text_data(tmp_path / "d")
    for f in ("evil.pt", "junk.pt"):
        p = run_cli("--data-dir", str(data), "--model", tiny_model, "--out-dir", str(tmp_path / "runs"),
                    "--evaluate-only", "--checkpoint", str(tmp_path / f))
        assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr, p.stderr
        assert "cannot be loaded as weights" in p.stderr
    assert not (tmp_path / "pwned").exists()


# ---------------------------------------------------------------------------------------------- bad input
def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "regex_robust.py"), *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


@pytest.mark.parametrize("case", ["task", "attribution", "mask0", "mask1", "empty", "checkpoint", "no_checkpoint",
                                  "flag", "datadir", "ratio0"])
@pytest.mark.slow
def test_bad_inputs_one_line_exit_2(case, tmp_path, tiny_model):
    data = write_tiny_text_data(tmp_path / "d")
    if case == "empty":
        p = data / "sst2" / "stsa.binary.train"
        lines = p.read_text().splitlines()
        lines[3] = "1 "
        p.write_text("\n".join(lines) + "\n")
    base = ["--data-dir", str(data), "--model", tiny_model, "--out-dir", str(tmp_path / "runs"), "--max-epochs", "1"]
    extra = {"task": ["--task", "yelp"], "attribution": ["--attributions", "random,anchors"],
             "mask0": ["--mask-ratio", "0"], "mask1": ["--mask-ratio", "1.0"], "empty": [],
             "checkpoint": ["--evaluate-only", "--checkpoint", str(tmp_path / "nope")],
             "no_checkpoint": ["--evaluate-only"], "flag": ["--lambda-x", "1"],
             "datadir": ["--data-dir", str(tmp_path / "nowhere")], "ratio0": ["--rationale-ratio", "0"]}[case]
    p = run_cli(*base, *extra)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    expect = {"task": "invalid choice", "attribution": "--attributions", "mask0": "--mask-ratio",
              "mask1": "--mask-ratio", "empty": "stsa.binary.train:4: empty text", "checkpoint": "not found",
              "no_checkpoint": "--checkpoint", "flag": "unrecognized", "datadir": "--data-dir",
              "ratio0": "--rationale-ratio"}[case]
    assert expect in p.stderr, p.stderr


def test_read_text_task_on_real_slices():
    from conftest import REAL_SLICES
    text = rx.read_text_task("movies", REAL_SLICES)
    assert [len(text[s]) for s in ("train", "dev", "test")] == [6, 6, 6]
    assert all(sum(e["evidence"]) > 0 for e in text["test"])


def test_completeness_gap_of_ig_shrinks_with_more_steps_and_is_reported(tiny_model, tok):
    """IG's completeness holds for the integral: with m midpoint steps the gap |sum a - (f(x) - f(x'))| shrinks
    as m grows; DeepLift on a transformer (signed input x gradient) has no such property. Both are reported."""
    clf = tiny_clf(tiny_model, tok)
    batch, ex = tiny_batch(tok)
    args = default_args("--attributions", "ig,deeplift")
    gaps = {}
    for m in (2, 8, 64):
        g = {}
        rx.attribute_all(clf, ex, ["ig", "deeplift"], dataclasses.replace(args, ig_steps=m), 0, g)
        gaps[m] = g["ig"]["relative_gap"]
        assert g["ig"]["ig_steps"] == m and g["deeplift"]["mean_abs_delta"] > 0
    assert gaps[64] < gaps[8] < gaps[2] and gaps[64] < 0.01, gaps


# ---------------------------------------------------------------------------------------------- memory budget
def test_ig_with_the_steps_of_one_example_split_over_forwards_equals_one_forward(tiny_model, tok):
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)
    e = clf.embed(batch["input_ids"]).detach()
    e0 = rx.baseline_embeddings(clf, batch, e, "pad")
    target = torch.tensor([1, 0, 1])
    whole = rx.integrated_gradients(clf, batch, e, e0, target, steps=7, max_rows=7)
    for rows in (1, 3, 6):  # 7 steps in parts of 1, 3 or 6 rows
        torch.testing.assert_close(rx.integrated_gradients(clf, batch, e, e0, target, 7, rows), whole,
                                   rtol=0, atol=1e-12)


@pytest.mark.parametrize("method", rx.METHODS[1:])
def test_budget_sized_forwards_give_the_scores_of_one_forward(tiny_model, tok, method, monkeypatch):
    """With a budget that admits one row per forward, every method's scores and the faithfulness table equal those
    of whole-batch forwards (double precision)."""
    clf = tiny_clf(tiny_model, tok)
    batch, ex = tiny_batch(tok)
    args = default_args("--ig-steps", "4", "--convention", "ferret", "--explain-memory-mb", "1000000")
    want, t = rx.token_scores(method, clf, batch, None, args, torch.Generator().manual_seed(0))
    monkeypatch.setattr(rx, "rows_within", lambda *a, **k: 1)
    got, t1 = rx.token_scores(method, clf, batch, None, args, torch.Generator().manual_seed(0))
    assert torch.equal(t, t1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_row_estimate_grows_with_length_and_gradients(tiny_model, tok):
    clf = tiny_clf(tiny_model, tok, double=False)
    assert rx.row_bytes(clf, 64, True) > rx.row_bytes(clf, 64, False) > 0
    assert rx.row_bytes(clf, 128, True) > 2 * rx.row_bytes(clf, 64, True)
    assert rx.rows_within(clf, 512, True, 16) >= 1


# ---------------------------------------------------------------------------------------------- conventions
def ferret_hand_aopc(clf, tok, e, scores, ratios, removal):
    """ferret-xai 0.4.2's AOPC comprehensiveness / sufficiency and taucorr_loo, written out from its source
    (evaluators/faithfulness_measures.py): tokens between [CLS] and [SEP]; k = int(ratio n); the top k by score that
    score > 0; empty bins and a bin repeating the last kept rationale skipped; mean over kept bins (comp 0, suff 1 if
    none); deletion by decoding the kept ids and tokenising again. removal "pad": [PAD] ids instead (attention kept)."""
    from scipy.stats import kendalltau
    ids = e["input_ids"]
    inner, s = ids[1:-1], np.asarray(scores[1:-1])

    def p_of(token_ids):
        if removal == "retokenize":
            token_ids = tok(tok.decode(token_ids), truncation=True, max_length=128)["input_ids"]
        x = torch.tensor([token_ids])
        with torch.no_grad():
            return torch.softmax(clf.forward(clf.embed(x), {"attention_mask": torch.ones_like(x),
                                                            "token_type_ids": torch.zeros_like(x)})[0], -1)[0]

    def without(drop):
        if removal == "retokenize":
            return list(np.delete(np.asarray(inner), sorted(drop)))
        return [ids[0]] + [tok.pad_token_id if j in drop else t for j, t in enumerate(inner)] + [ids[-1]]
    full = p_of(list(ids) if removal == "pad" else inner)
    y = int(full.argmax())
    p = full[y].item()
    comps, suffs, last = [], [], None
    for v in ratios:
        k = int(v * len(inner) + 1e-9)
        top = [int(i) for i in np.argsort(-s, kind="stable")[:k] if s[i] > 0] if k > 0 else []
        if not top or set(top) == last:
            continue
        last = set(top)
        comps.append(p - p_of(without(set(top)))[y].item())
        suffs.append(p - p_of(without(set(range(len(inner))) - set(top)))[y].item())
    loo = [p - p_of(without({j}))[y].item() for j in range(len(inner))]
    return {"aopc_comp": float(np.mean(comps)) if comps else 0.0, "aopc_suff": float(np.mean(suffs)) if suffs else 1.0,
            "taucorr_loo": kendalltau(loo, s).statistic}


@pytest.mark.parametrize("removal", ["retokenize", "pad"])
def test_ferret_convention_reproduces_a_hand_computed_ferret_aopc_and_taucorr(tiny_model, tok, removal):
    clf = tiny_clf(tiny_model, tok)
    _, ex = tiny_batch(tok, ("a warm funny engaging film , really", "the plot is boring", "great acting and a clever "
                             "script that works"))
    g = torch.Generator().manual_seed(3)
    attrs = {"x": {e["index"]: torch.randn(len(e["input_ids"]), generator=g, dtype=torch.float64) for e in ex}}
    args = default_args("--convention", "ferret", "--removal", removal)
    assert args.aopc_ratios.count(",") == 9 and args.taucorr_loo and args.attr_reduce == "sum"
    got = rx.faithfulness(clf, ex, attrs, args)["x"]
    ratios = np.arange(0.1, 1.1, 0.1)  # ferret's default bins
    hand = [ferret_hand_aopc(clf, tok, e, attrs["x"][e["index"]].tolist(), ratios, removal) for e in ex]
    for key in ("aopc_comp", "aopc_suff", "taucorr_loo"):
        assert abs(got[key] - np.mean([h[key] for h in hand])) < 1e-9, (key, got[key], hand)
    assert got["n_taucorr_loo"] == 3


def test_eraser_and_ferret_conventions_differ_only_where_the_table_says(tiny_model, tok):
    eraser, ferret = default_args(), default_args("--convention", "ferret")
    assert (eraser.removal, eraser.ig_baseline, eraser.attr_reduce, eraser.taucorr_loo) == ("pad", "zero",
                                                                                           "ood_faith", False)
    assert (ferret.removal, ferret.ig_baseline, ferret.attr_reduce) == ("retokenize", "pad", "sum")
    assert default_args("--convention", "ferret", "--removal", "pad").removal == "pad"  # an explicit flag wins
    S = torch.tensor([[0.0, 0.5, -1.0, 0.2, 0.9, 0.0]])
    cand = torch.tensor([[False, True, True, True, True, False]])
    assert rx.select_rationale(S, cand, 0.2, "eraser").tolist() == [[False, False, False, False, True, False]]  # ceil
    assert rx.select_rationale(S, cand, 0.6, "eraser").tolist() == [[False, True, False, True, True, False]]
    assert rx.select_rationale(S, cand, 0.2, "ferret").sum() == 0  # floor(0.8) = 0 tokens: an empty bin
    assert rx.select_rationale(S, cand, 1.0, "ferret").tolist() == [[False, True, False, True, True, False]]  # > 0


def test_retokenize_removal_decodes_and_tokenises_again(tok):
    clf = rx.Classifier(None, None, None, [], tok.pad_token_id, tok.mask_token_id, tok)
    e = rx.encode_text(tok, "the unbelievably good film".split(), 32, 1, 0)
    ids = torch.tensor([e["input_ids"]])
    att = torch.ones_like(ids)
    remove = torch.zeros_like(ids, dtype=torch.bool)
    remove[0, 1] = True  # "the"
    row = rx.removed_rows(ids, att, remove, "retokenize", clf, 32)[0]
    assert list(row) == tok("unbelievably good film")["input_ids"]
    assert rx.removed_rows(ids, att, remove, "delete", clf, 32)[0] == tuple(e["input_ids"][:1] + e["input_ids"][2:])


# ---------------------------------------------------------------------------------------------- SHAP, LIME
@pytest.mark.parametrize("method", rx.PERTURBATION_METHODS)
def test_kernel_shap_and_lime_recover_each_tokens_exact_effect_on_an_additive_model(method):
    """On a model whose logit is a sum over tokens, Shapley values and a linear surrogate's weights are each token's
    own effect f(x) - f(x with the token at its baseline), computed here directly, one token at a time."""
    clf = bag_of_words_classifier()
    ids = torch.tensor([[1, 7, 30, 11, 13, 40, 2, 0], [1, 13, 13, 25, 2, 0, 0, 0]])
    att = (ids != 0).long()
    batch = {"input_ids": ids, "attention_mask": att, "token_type_ids": torch.zeros_like(ids),
             "index": torch.tensor([0, 1])}
    args = default_args("--ig-baseline", "zero", "--shap-samples", "64", "--lime-samples", "64")
    s, target = rx.token_scores(method, clf, batch, None, args, torch.Generator().manual_seed(0))
    e = clf.embed(ids).detach()
    for r in range(2):
        for j in range(ids.size(1)):
            x = e.clone()
            x[r, j] = 0
            with torch.no_grad():
                f, fj = (clf.forward(z, batch)[0][r, target[r]].item() for z in (e, x))
            want = (f - fj) if ids[r, j] not in (0, 1, 2) else 0.0
            assert abs(s[r, j].item() - want) < 1e-4, (method, r, j, s[r, j].item(), want)
    again, _ = rx.token_scores(method, clf, batch, None, args, torch.Generator().manual_seed(0))
    assert torch.equal(s, again)  # seeded per example


def test_kernel_shap_on_a_transformer_sums_to_the_change_of_the_logit(tiny_model, tok):
    """captum's KernelShap keeps efficiency: the scores of an example sum to f(x) - f(baseline) (target logit)."""
    clf = tiny_clf(tiny_model, tok)
    batch, _ = tiny_batch(tok)
    args = default_args("--ig-baseline", "pad", "--shap-samples", "300")
    s, target = rx.token_scores("kernel_shap", clf, batch, None, args, torch.Generator().manual_seed(0))
    e = clf.embed(batch["input_ids"]).detach()
    e0 = rx.baseline_embeddings(clf, batch, e, "pad")
    with torch.no_grad():
        delta = (clf.forward(e, batch)[0] - clf.forward(e0, batch)[0]).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(s.sum(1), delta, rtol=1e-3, atol=1e-6)
    assert (s[~rx.content_positions(clf, batch)] == 0).all()


# ---------------------------------------------------------------------------------------------- save_task_model
def test_the_tanh_head_embedding_is_exact_in_float32():
    """The claim save_task_model rests on: tanh(x) == x in float32 for |x| <= 2^-12 (here 2^-20 h, |h| < 2^8), and
    scaling one factor of a product by 2^-20 and the other by 2^20 changes no bit."""
    g = torch.Generator().manual_seed(0)
    h = (torch.rand(1_000_000, generator=g) * 2 - 1) * 256
    h = torch.cat([h, torch.tensor([255.99998, -255.99998, 1e-30, -1e-30, 0.0])])
    x = h * common.HEAD_SCALE
    assert torch.equal(torch.tanh(x), x)
    w = torch.randn(h.shape, generator=g) * 3
    assert torch.equal(x * (w / common.HEAD_SCALE), h * w)
    assert not torch.equal(torch.tanh(x.double()), x.double())  # float32 only: float64 needs |x| < 2^-26


@pytest.mark.parametrize("flags,expect", [
    (["--convention", "captum"], "invalid choice"), (["--removal", "cut"], "invalid choice"),
    (["--explain-memory-mb", "0"], "--explain-memory-mb"), (["--explain-memory-mb", "nan"], "--explain-memory-mb"),
    (["--shap-samples", "0"], "--shap-samples"), (["--lime-samples", "-3"], "--lime-samples"),
    (["--aopc-ratios", "0.1,nan"], "--aopc-ratios"), (["--attributions", "ig,shap"], "--attributions"),
    (["--ig-max-rows", "0"], "--ig-max-rows")])
def test_new_flags_bad_values_are_one_line_exit_2(flags, expect, capsys):
    """Each flag's domain is checked at parsing (before any model loads): one stderr line naming it, exit 2."""
    try:
        code = rx.cli(flags)
    except SystemExit as e:
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and expect in err, err


def test_new_flags_show_their_domain_in_help(capsys):
    with pytest.raises(SystemExit):
        rx.parse_args(["-h"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--explain-memory-mb", "--shap-samples", "--lime-samples", "--convention", "--taucorr-loo"):
        assert flag in out
    assert "an integer >= 16" in out and "{eraser,ferret}" in out and "retokenize" in out
