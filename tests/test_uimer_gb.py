"""UIMER-GB: the saliency losses against naive per-example, per-token loops (finite differences and
single-example gradients), the second-order path, the Gate's expectation, end-to-end smoke runs, bad input."""
import json
import math
from pathlib import Path

import pytest
import torch

import common
import uimer_gb as gb

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"ic": ["--task", "ic", "--shots", "1"], "sf": ["--task", "sf", "--shots", "1"],
            "nli": ["--task", "nli", "--train-size", "6"]}
VARIANTS = {"ghaeini": ["--variant", "ghaeini"], "huang-base": ["--variant", "huang"],
            "huang-gate": ["--variant", "huang", "--gate"], "huang-order": ["--variant", "huang", "--order"],
            "huang-gate-order": ["--variant", "huang", "--gate", "--order"]}


def setup(tiny_model, tiny_data, task, double=True):
    tok = common.load_tokenizer(tiny_model)
    setting = "6" if task == "nli" else "2"
    data = common.load_uimer_task(task, tiny_data, setting, 0, tok, 64, allow_smaller=True)  # some slot types have 1
    torch.manual_seed(0)
    model = common.TaskModel(common.load_encoder(tiny_model), task, len(data["labels"])).eval()
    if double:
        model = model.double()
    batch = common.batches(data["train"], 64, tok.pad_token_id)[0]
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    return tok, data, model, batch, special


def single(example, pad_id):
    return common.collate([example], pad_id)


def f_of_e(model, one, d, variant, wrt="inputs-embeds"):
    """J for one example, as a python float, with perturbation d (1, L, H) added to the input being
    differentiated: the word-embedding output, or (through a forward hook) the embedding module's output."""
    if wrt == "inputs-embeds":
        scores = model(one, inputs_embeds=model.embed(one["input_ids"]) + d)
    else:
        hook = model.encoder.embeddings.register_forward_hook(lambda m, i, o: o + d)
        try:
            scores = model(one)
        finally:
            hook.remove()
    if variant == "ghaeini":
        if model.task == "sf":
            return model.gold_log_likelihood(scores, one).exp().item()
        return scores[0, one["label"][0]].item()
    return -model.gold_log_likelihood(scores, one).item()


# ---------------------------------------------------------------------------------------------- the math
@pytest.mark.parametrize("wrt", ["inputs-embeds", "embedding-output"])
@pytest.mark.parametrize("task", ["ic", "sf", "nli"])
def test_ghaeini_loss_equals_finite_difference_loop(tiny_model, tiny_data, task, wrt):
    """a_i = sum_d dF/de_id is the derivative of F along the all-ones direction at position i: a central finite
    difference per example and per token, then the hinge sum written out with floats."""
    tok, data, model, batch, special = setup(tiny_model, tiny_data, task)
    dJ_de, _ = gb.input_gradients(model, batch, "ghaeini", create_graph=False, wrt=wrt)
    content = common.content_mask(batch, special)
    R = batch["rationale"] * content
    got = gb.ghaeini_loss(gb.attribution(dJ_de, "ghaeini", content), R)
    h = 1e-5
    checked = 0
    for b, i in enumerate(batch["index"].tolist()[:4]):  # 4 examples: enough for a loop of 2 forwards per token
        ex = next(e for e in data["train"] if e["index"] == i)
        one = single(ex, tok.pad_token_id)
        with torch.no_grad():
            L, H = len(ex["input_ids"]), model.encoder.config.hidden_size
            a = []
            for t in range(L):
                d = torch.zeros(1, L, H, dtype=torch.float64)
                d[0, t] = h
                a.append((f_of_e(model, one, d, "ghaeini", wrt) - f_of_e(model, one, -d, "ghaeini", wrt)) / (2 * h))
        want = sum(max(0.0, -a[t]) for t in range(len(a)) if ex["rationale"][t] and ex["content"][t])
        scale = max(max(abs(x) for x in a), dJ_de[b].abs().sum(-1).max().item()) + 1e-300
        assert abs(got[b].item() - want) <= 1e-6 * scale * L, (b, got[b].item(), want)
        assert torch.allclose(dJ_de[b, :L].sum(-1), torch.tensor(a, dtype=torch.float64), rtol=0, atol=1e-6 * scale)
        checked += want > 1e-6 * scale
    if wrt == "embedding-output":
        assert checked > 0  # the hinge is active somewhere (a random model has negative rationale saliencies)


def test_ghaeini_saliency_vanishes_before_layernorm(tiny_model, tiny_data):
    """BERT adds position/type embeddings to e and applies LayerNorm, which ignores a constant shift of all dims:
    F(e_i + c 1) = F(e_i), so sum_d dF/de_id = 0 exactly. The Ghaeini saliency w.r.t. the word-embedding output
    (and the original's embedding-matrix rows, sums of those) is round-off; w.r.t. the embedding output it is not."""
    tok, data, model, batch, special = setup(tiny_model, tiny_data, "ic")
    g_word, _ = gb.input_gradients(model, batch, "ghaeini", create_graph=False, wrt="inputs-embeds")
    g_emb, _ = gb.input_gradients(model, batch, "ghaeini", create_graph=False, wrt="embedding-output")
    assert g_word.abs().sum(-1).max() > 1e-3  # the gradient itself is not zero...
    assert g_word.sum(-1).abs().max() < 1e-12 * g_word.abs().sum(-1).max()  # ...its sum over dims is
    assert g_emb.sum(-1).abs().max() > 1e-6 * g_emb.abs().sum(-1).max()


def naive_huang(s, rat, content, variant, G, guard):
    R = [i for i in range(len(s)) if rat[i] and content[i]]
    N = [i for i in range(len(s)) if not rat[i] and content[i]]
    if variant in ("huang-order", "huang-gate-order"):
        m = max(max(s[j] for j in N), guard)
        L = sum(min(s[i] / m - 1, 0.0) ** 2 for i in R)
    elif variant == "huang-gate":
        L = sum((s[i] - 1) ** 2 for i in R)
    else:
        L = sum((s[i] - 1 / len(R)) ** 2 for i in R)
    return G * L if "gate" in variant else L


@pytest.mark.parametrize("task", ["ic", "sf", "nli"])
def test_huang_losses_equal_per_example_loop(tiny_model, tiny_data, task):
    """Batched s_i and every Huang variant == one example at a time (its own gradient of its own task loss), the
    L1 norm, the normalisation and the loss written out with floats."""
    tok, data, model, batch, special = setup(tiny_model, tiny_data, task)
    dJ_de, _ = gb.input_gradients(model, batch, "huang", create_graph=False)
    content = common.content_mask(batch, special)
    R, N = batch["rationale"] * content, (1 - batch["rationale"]) * content
    s = gb.attribution(dJ_de, "huang", content)
    G = gb.gate_sample(s, R, torch.Generator().manual_seed(3)).double()
    n_both = 0
    for b, i in enumerate(batch["index"].tolist()):
        ex = next(e for e in data["train"] if e["index"] == i)
        one = single(ex, tok.pad_token_id)
        e0 = model.embed(one["input_ids"]).detach().requires_grad_(True)
        J = -model.gold_log_likelihood(model(one, inputs_embeds=e0), one).sum()
        (g,) = torch.autograd.grad(J, e0)
        g1 = [sum(abs(v) for v in g[0, t].tolist()) for t in range(g.size(1))]
        tot = sum(g1[t] for t in range(len(g1)) if ex["content"][t])
        s_naive = [g1[t] / tot if ex["content"][t] else 0.0 for t in range(len(g1))]
        assert torch.allclose(s[b, :len(s_naive)], torch.tensor(s_naive, dtype=torch.float64), rtol=0, atol=1e-12)
        if not (any(r and c for r, c in zip(ex["rationale"], ex["content"], strict=True)) and
                any(c and not r for r, c in zip(ex["rationale"], ex["content"], strict=True))):
            continue
        n_both += 1
        for v in ("huang-base", "huang-gate", "huang-order", "huang-gate-order"):
            got = gb.huang_loss(s, R, N, "gate" in v, "order" in v, G, 1e-6)[b].item()
            want = naive_huang(s_naive, ex["rationale"], ex["content"], v, G[b].item(), 1e-6)
            assert abs(got - want) < 1e-9, (v, got, want)
    assert n_both > 0
    # a finite-difference spot check of the gradient itself, on one coordinate per position of example 0
    ex = next(e for e in data["train"] if e["index"] == batch["index"][0].item())
    one = single(ex, tok.pad_token_id)
    with torch.no_grad():
        e0 = model.embed(one["input_ids"])
        for t in range(e0.size(1)):
            d = torch.zeros_like(e0)
            d[0, t, t % e0.size(2)] = 1e-6
            fd = (f_of_e(model, one, d, "huang") - f_of_e(model, one, -d, "huang")) / 2e-6
            assert abs(fd - dJ_de[0, t, t % e0.size(2)].item()) < 1e-6


def test_order_is_zero_when_rationales_outrank_and_guarded():
    s = torch.tensor([[0.0, 0.4, 0.3, 0.2, 0.1, 0.0]])
    R = torch.tensor([[0, 1, 1, 0, 0, 0.]])
    N = torch.tensor([[0, 0, 0, 1, 1, 0.]])
    assert gb.huang_loss(s, R, N, False, True, None, 1e-6).item() == 0.0
    s2 = torch.tensor([[0.0, 0.1, 0.5, 0.2, 0.2, 0.0]])  # rationale 0.1 < max non-rationale 0.2
    assert abs(gb.huang_loss(s2, R, N, False, True, None, 1e-6).item() - (0.1 / 0.2 - 1) ** 2) < 1e-7
    s3 = torch.tensor([[0.0, 0.5, 0.5, 0.0, 0.0, 0.0]])  # every non-rationale at 0: the guard keeps it finite
    assert gb.huang_loss(s3, R, N, False, True, None, 1e-6).item() == 0.0
    assert gb.ghaeini_loss(torch.tensor([[1.0, -2.0, 3.0, -4.0]]), torch.tensor([[1, 1, 1, 0.]])).item() == 2.0


@pytest.mark.parametrize("variant", ["ghaeini", "huang"])
def test_gradient_reaches_model_through_second_order_path(tiny_model, tiny_data, variant):
    """L_int depends on theta only through the input gradient: with create_graph=True its gradient w.r.t. the
    encoder is non-zero (double backward through eager attention, in eval mode); without, L_int is a constant."""
    tok, data, model, batch, special = setup(tiny_model, tiny_data, "ic", double=False)
    order = ["--order"] if variant == "huang" else []
    args = gb.resolve(gb.parse_args(["--task", "ic", "--variant", variant, *order]))
    if variant == "ghaeini":  # make the hinge active: the loss of a sign-flipped head
        with torch.no_grad():
            model.head.weight.mul_(-1)
    opts = dict(variant=args.variant, gate=args.gate, order=args.order, guard=args.guard, wrt=args.wrt)
    _, L_int, n = gb.gb_loss(model, batch, special, torch.Generator().manual_seed(0), **opts)
    assert n > 0 and L_int.item() > 0
    model.zero_grad()
    L_int.backward()
    q = model.encoder.encoder.layer[0].attention.self.query.weight.grad
    assert q is not None and q.abs().sum() > 0
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    _, L_const, _ = gb.gb_loss(model, batch, special, torch.Generator().manual_seed(0), **opts, create_graph=False)
    assert not L_const.requires_grad


def test_gate_expectation_matches_formula():
    g = torch.Generator().manual_seed(0)
    s = torch.tensor([[0.0, 0.3, 0.2, 0.4, 0.1, 0.0], [0.0, 0.05, 0.05, 0.6, 0.3, 0.0]])
    R = torch.tensor([[0, 1, 1, 0, 0, 0.], [0, 1, 1, 0, 0, 0.]])
    N = torch.tensor([[0, 0, 0, 1, 1, 0.], [0, 0, 0, 1, 1, 0.]])
    n = 40000
    for order in (False, True):
        S, RR, NN = s.repeat(n, 1), R.repeat(n, 1), N.repeat(n, 1)  # n independent draws per example, batched
        draws = gb.huang_loss(S, RR, NN, True, order, gb.gate_sample(S, RR, g), 1e-6).view(n, 2)
        ungated = gb.huang_loss(s, R, N, True, order, torch.ones(2), 1e-6)
        p = (s * R).sum(-1)
        want = (1 - p) * ungated  # E[G] = 1 - p
        sd = ungated * torch.sqrt(p * (1 - p))
        assert (abs(draws.mean(0) - want) <= 4 * sd / math.sqrt(n) + 1e-12).all(), (draws.mean(0), want)
        assert ((draws == 0) | torch.isclose(draws, ungated.expand_as(draws))).all()  # G is 0 or 1


def test_defaults_are_the_baseline_rows_of_uimer_im():
    """gb.PAPER_TABLE = the optimisation settings of uimer_im's '+Uniform (warm.)' rows (those of the BaseModel
    runs)."""
    import uimer_im as im
    for r in gb.PAPER_TABLE.strip().splitlines()[1:]:
        task, setting = r.split()[:2]
        want = im.paper_defaults(task, setting, "uniform", True)
        got = gb.paper_defaults(task, setting)
        assert {k: got[k] for k in ("lr", "batch_size", "max_epochs", "patience")} == \
               {k: want[k] for k in ("lr", "batch_size", "max_epochs", "patience")}, (task, setting)
    a = gb.resolve(gb.parse_args(["--task", "sf", "--shots", "5", "--variant", "huang", "--order"]))
    assert (a.lr, a.alpha, a.patience) == (1e-4, 1.0, 7)  # 5-shot takes the 3-shot row


# ---------------------------------------------------------------------------------------------- end to end
def tiny_argv(tiny_model, tiny_data, out, *extra):
    return ["--model", tiny_model, "--data-dir", str(tiny_data), "--out-dir", str(out), "--max-epochs", "2",
            "--eval-batch-size", "64", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ic", "sf", "nli"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_smoke_every_variant_and_task(tiny_model, tiny_data, tmp_path, task, variant):
    r = gb.main(gb.parse_args(tiny_argv(tiny_model, tiny_data, tmp_path, *SETTINGS[task], *VARIANTS[variant],
                                        "--lr", "1e-3")))
    assert 0.0 <= r["test"] <= 1.0 and r["metric"] == ("f1" if task == "sf" else "accuracy")
    assert r["n_with_both_sets"] > 0 and r["epochs_run"] == 2
    run = Path(r["run_dir"])
    assert run.name == f"{task}-{'6ex' if task == 'nli' else '1shot'}-{variant}-55"
    assert json.loads((run / "results.json").read_text())["test"] == r["test"]
    assert json.loads((run / "config.json").read_text())["variant"] == VARIANTS[variant][1]
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"L_task"' in line]
    assert steps and all(s["int_on"] and math.isfinite(s["L_int"]) and s["L_int"] >= 0 for s in steps)
    assert all(s["n_int"] > 0 for s in steps)
    from conftest import check_explanations
    rows = check_explanations(run, f"saliency_{VARIANTS[variant][1]}", 14 if task != "nli" else 12,
                              has_rationale=task != "nli")
    if variant.startswith("huang"):  # shares over the content wordpieces: the word scores of a sentence sum to 1
        assert all(abs(sum(x for x in r["scores"]["saliency_huang"] if x is not None) - 1) < 1e-4 for r in rows
                   if task != "nli" and None not in r["scores"]["saliency_huang"])


@pytest.mark.slow
def test_warmup_and_same_seed_same_results(tiny_model, tiny_data, tmp_path):
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--task", "ic", "--shots", "1", "--variant", "huang", "--gate",
                     "--seeds", "3,4", "--warmup-epochs", "1")
    a = gb.main(gb.parse_args(argv))
    first = [(Path(r["run_dir"]) / "results.json").read_bytes() for r in a["runs"]]
    logs = [(Path(r["run_dir"]) / "log.jsonl").read_text() for r in a["runs"]]
    b = gb.main(gb.parse_args(argv))
    assert first == [(Path(r["run_dir"]) / "results.json").read_bytes() for r in b["runs"]]  # byte-identical
    assert logs == [(Path(r["run_dir"]) / "log.jsonl").read_text() for r in b["runs"]]  # every loss, every step
    assert a["test"]["n"] == 2
    assert (tmp_path / "uimer_gb" / "ic-1shot-huang-gate-warm1-seeds" / "summary.json").is_file()
    steps = [json.loads(line) for line in logs[0].splitlines() if '"L_task"' in line]
    assert not any(s["int_on"] for s in steps if s["epoch"] == 0) and all(s["int_on"] for s in steps if s["epoch"] == 1)
    base = gb.main(gb.parse_args(tiny_argv(tiny_model, tiny_data, tmp_path, "--task", "ic", "--shots", "1",
                                           "--alpha", "0", "--seed", "3")))
    assert Path(base["run_dir"]).name == "ic-1shot-base-3" and base["n_skipped_by_L_int"] is None
