"""UIMER-IM: the loss against a naive per-sample loop, the strategies, the schedule, end-to-end smoke runs."""
import json
import math
from pathlib import Path

import pytest
import torch

import common
import uimer_im as im

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- the math
def set_options(args) -> dict:
    """build_replacement_sets' options from the flags of the same names."""
    return dict(strategy=args.strategy, num_samples=args.num_samples, replace_cap=args.replace_cap,
                max_rationale_fraction=args.max_rationale_fraction)


def naive_lint(p, q, epsilon, lb):
    """Eqs. 4-5 written out with plain floats: m = sum q p, log2 odds with a lower bound, hinge."""
    out = []
    for pe, qe in zip(p, q, strict=True):
        lo = []
        for s in range(2):
            m = sum(qq * pp for qq, pp in zip(qe[s], pe[s], strict=True))
            lo.append(math.log2(m / (1 - m)) if m > lb else math.log2(lb))
        a_R_minus_a_N = lo[1] - lo[0]  # log2 odds p(y|x) cancels
        out.append(max(-a_R_minus_a_N + epsilon, 0.0))
    return out


@pytest.mark.parametrize("k", [1, 3, 4])
def test_im_margin_loss_equals_naive_loop(k):
    g = torch.Generator().manual_seed(k)
    n = 6
    p = torch.rand(n, 2, k, generator=g, dtype=torch.float64) * 0.98 + 0.01
    q = torch.rand(n, 2, k, generator=g, dtype=torch.float64)
    q = q / q.sum(-1, keepdim=True)
    got = im.im_margin_loss(p.log(), q, epsilon=0.5, lower_bound=1e-23)
    want = torch.tensor(naive_lint(p.tolist(), q.tolist(), 0.5, 1e-23), dtype=torch.float64)
    assert torch.allclose(got, want, atol=1e-6, rtol=0)
    assert (got > 0).any() and (got == 0).any() or k == 1  # both branches of the hinge are exercised


def test_lower_bound_branch_matches_naive():
    p = torch.tensor([[[1e-30, 1e-28], [0.3, 0.6]]], dtype=torch.float64)
    q = torch.full((1, 2, 2), 0.5, dtype=torch.float64)
    got = im.im_margin_loss(p.log(), q, epsilon=1.0, lower_bound=1e-23)
    want = naive_lint(p.tolist(), q.tolist(), 1.0, 1e-23)
    assert abs(got.item() - want[0]) < 1e-6


def test_log_odds_finite_at_p_0_and_1():
    log_p = torch.tensor([[[-float("inf"), 0.0]], [[0.0, 0.0]], [[-200.0, -1e-12]]], requires_grad=True)
    q = torch.full((3, 1, 2), 0.5)
    log_m, log_1m = im.marginal_log_prob(log_p, q)
    lo = im.log2_odds(log_m, log_1m, 1e-23)
    assert torch.isfinite(lo).all()
    lo.sum().backward()
    assert torch.isfinite(log_p.grad).all()


def test_gradient_flows_to_model_through_l_int(tiny_model, tiny_data):
    tok = common.load_tokenizer(tiny_model)
    data = common.load_uimer_task("ic", tiny_data, "2", 0, tok, 50)
    args = im.resolve(im.parse_args(["--task", "ic", "--shots", "2", "--strategy", "uniform", "--epsilon", "100"]))
    sets = im.build_replacement_sets(data["train"], torch.Generator().manual_seed(0),
                                     im.token_info(tok, [e["input_ids"] for e in data["train"]]), **set_options(args))
    model = common.TaskModel(common.load_encoder(tiny_model), "ic", len(data["labels"]))
    batch = common.batches(data["train"], 32, tok.pad_token_id)[0]
    L_int, n = im.im_loss(model, batch, sets, epsilon=args.epsilon, lower_bound=args.lower_bound)
    assert n == len(sets) > 0 and L_int.item() > 0
    L_int.backward()
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_batched_im_loss_equals_per_example_loop(tiny_model, tiny_data):
    """One batched forward over all replaced sentences == scoring each x' alone, then the naive Eq. 4-5 loop."""
    tok = common.load_tokenizer(tiny_model)
    data = common.load_uimer_task("sf", tiny_data, "1", 0, tok, 50)
    for strategy in ("uniform", "prior", "mask"):
        args = im.resolve(im.parse_args(["--task", "sf", "--shots", "1", "--strategy", strategy, "--epsilon", "3"]))
        info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
        sets = im.build_replacement_sets(data["train"], torch.Generator().manual_seed(1), info, **set_options(args))
        model = common.TaskModel(common.load_encoder(tiny_model), "sf", len(data["labels"])).eval()
        batch = common.batches(data["train"], 64, tok.pad_token_id)[0]
        with torch.no_grad():
            got, n = im.im_loss(model, batch, sets, epsilon=args.epsilon, lower_bound=args.lower_bound)
            p, q = [], []
            for e in data["train"]:
                if e["index"] not in sets:
                    continue
                ids, qs = sets[e["index"]]
                pe = [[0.0] * ids.size(1) for _ in range(2)]
                for s in range(2):
                    for r in range(ids.size(1)):
                        one = common.collate([{**e, "input_ids": ids[s, r].tolist()}], tok.pad_token_id)
                        pe[s][r] = model.gold_log_likelihood(model(one), one).exp().item()
                p.append(pe)
                q.append(qs.tolist())
        want = sum(naive_lint(p, q, args.epsilon, args.lower_bound)) / len(p)
        assert n == len(p) > 0
        assert abs(got.item() - want) < 1e-5, strategy


# ---------------------------------------------------------------------------------------------- replacement sets
def test_replacement_sets_positions_and_weights(tiny_model, tiny_data):
    tok = common.load_tokenizer(tiny_model)
    data = common.load_uimer_task("ic", tiny_data, "2", 0, tok, 50)
    info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
    for strategy, k in (("uniform", 4), ("prior", 3), ("mask", 1)):
        args = im.resolve(im.parse_args(["--task", "ic", "--shots", "2", "--strategy", strategy] +
                                        ([] if strategy == "mask" else ["--num-samples", str(k)])))
        sets = im.build_replacement_sets(data["train"], torch.Generator().manual_seed(0), info, **set_options(args))
        for e in data["train"]:
            x = torch.tensor(e["input_ids"])
            R = [i for i, r in enumerate(e["rationale"]) if r]
            if not R or all(r for r, c in zip(e["rationale"], e["content"], strict=True) if c):
                assert e["index"] not in sets  # no rationale / only rationale: skipped, not an error
                continue
            ids, q = sets[e["index"]]
            assert ids.shape == (2, k, len(x)) and torch.allclose(q.sum(-1), torch.ones(2))
            changed_R = (ids[0] != x).any(0)
            changed_N = (ids[1] != x).any(0)
            assert not changed_R[[i for i in range(len(x)) if i not in R]].any()  # S^R touches rationale only
            assert not changed_N[R].any()  # S^N touches non-rationale only
            assert ids[1][:, 0].eq(tok.cls_token_id).all() and ids[1][:, -1].eq(tok.sep_token_id).all()
            cap = max(1, int(len(x) * 0.3))
            if strategy == "mask":  # every replaced rationale position is [MASK], at most the cap of them
                assert (ids[0][0] == tok.mask_token_id).sum() == min(len(R), cap) == changed_R.sum()
                assert (ids[1][0] == tok.mask_token_id).sum() == changed_N.sum() <= min(len(R), cap)
            else:
                special = torch.tensor(tok.all_special_ids)
                assert not torch.isin(ids[0][:, R], special).any()


def test_rationale_cap_limits_replaced_positions():
    g = torch.Generator().manual_seed(0)
    rationale = [0] + [1] * 8 + [0, 0] + [0]
    content = [0] + [1] * 10 + [0]
    R, N = im.choose_positions(rationale, content, 0.3, g)
    assert len(R) == int(12 * 0.3) == 3 and len(N) == 2  # only 2 non-rationale content tokens exist
    assert set(R) <= set(range(1, 9)) and set(N) == {9, 10}
    assert im.choose_positions([0, 0, 0, 0], [0, 1, 1, 0], 0.3, g) is None  # no rationale
    assert im.choose_positions([0, 1, 1, 0], [0, 1, 1, 0], 0.3, g) is None  # only rationale


def test_original_cap_replays_the_original_code():
    """--replace-cap original (docs/uimer_im.md, deviation 4): every rationale wordpiece is replaced, and S^N gets
    2 keep - |R| positions when |R| > keep: skipped at 0, every non-rationale wordpiece when negative."""
    g = torch.Generator().manual_seed(0)
    content = [0] + [1] * 10 + [0]  # 12 wordpieces: keep = int(12 * 0.3) = 3
    R, N = im.choose_positions([0] + [1] * 4 + [0] * 6 + [0], content, 0.3, g, "original")
    assert R == [1, 2, 3, 4] and len(N) == 2 * 3 - 4 and set(N) <= set(range(5, 11))
    assert im.choose_positions([0] + [1] * 6 + [0] * 4 + [0], content, 0.3, g, "original") is None  # 2 * 3 - 6 = 0
    R, N = im.choose_positions([0] + [1] * 8 + [0] * 2 + [0], content, 0.3, g, "original")
    assert len(R) == 8 and N == [9, 10]  # 2 * 3 - 8 < 0: every non-rationale wordpiece
    R, N = im.choose_positions([0] + [1] * 2 + [0] * 8 + [0], content, 0.3, g, "original")
    assert R == [1, 2] and len(N) == 2  # under the cap: as many as |R|, like the paper's rule
    R, N = im.choose_positions([0] + [1] * 4 + [0] * 6 + [0], content, 0.3, g, "original", strategy="mask")
    assert len(R) == 4 and len(N) == 4  # the original MASK strategy had no cap at all


def test_prior_weights_are_renormalised_frequencies():
    counts = torch.tensor([0, 10, 30, 60])
    ids, q = im.candidates_prior(5, 3, counts, torch.Generator().manual_seed(0))
    assert (ids > 0).all()
    c = counts[ids].float()
    assert torch.allclose(q, c / c.sum(-1, keepdim=True))


def test_bert_candidates_are_masked_lm_top_k(tiny_model):
    from transformers import BertConfig, BertForMaskedLM
    tok = common.load_tokenizer(tiny_model)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=32)).eval()
    x = tok("add this song to my playlist")["input_ids"]
    ids, q = im.candidates_bert([x], [[1, 4]], 3, mlm, tok.mask_token_id, tok.all_special_ids)
    for row, j in enumerate([1, 4]):
        xm = torch.tensor([x])
        xm[0, j] = tok.mask_token_id
        logits = mlm(input_ids=xm).logits[0, j]
        logits[tok.all_special_ids] = -1e10
        top = logits.topk(3)
        assert ids[row].tolist() == top.indices.tolist()
        assert torch.allclose(q[row], torch.softmax(top.values, -1), atol=1e-6)


# ---------------------------------------------------------------------------------------------- schedule
def test_use_int_loss_schedule():
    assert not im.use_int_loss(0, 0, 100, "epochs", 1, None, False)
    assert im.use_int_loss(1, 5, 100, "epochs", 1, None, False)
    assert im.use_int_loss(0, 0, 100, "none", None, None, False)
    assert not im.use_int_loss(5, 9, 100, "fraction", None, 0.1, False)
    assert im.use_int_loss(0, 10, 100, "fraction", None, 0.1, False)
    assert not im.use_int_loss(50, 500, 1000, "converge", None, None, False)
    assert im.use_int_loss(50, 500, 1000, "converge", None, None, True)
    # the original code switched L_int on once epoch + 1 >= k: its warm-up of k epochs lasted k - 1
    assert im.use_int_loss(0, 0, 100, "epochs", 1, None, False, "original")
    assert not im.use_int_loss(0, 0, 100, "epochs", 2, None, False, "original")
    assert im.use_int_loss(1, 5, 100, "epochs", 2, None, False, "original")


def test_paper_defaults_rows_and_warmup_kinds():
    def args(*a):
        return im.resolve(im.parse_args(["--task", "ic", "--shots", "1", "--strategy", "uniform", *a]))

    a = args()
    assert (a.lr, a.alpha, a.epsilon, a.patience, a.warmup, a.warmup_epochs) == (2e-4, 0.6, 1.0, 7, "none", None)
    a = args("--warmup", "paper")
    assert (a.lr, a.alpha, a.epsilon, a.warmup, a.warmup_epochs) == (4e-4, 4.0, 0.5, "epochs", 1)
    assert (args("--warmup-epochs", "3").warmup, args("--warmup-epochs", "3").alpha) == ("epochs", 4.0)  # (warm.) row
    assert args("--warmup-epochs", "0").warmup == "none" and args("--warmup-fraction", "0.2").warmup == "fraction"
    a = im.resolve(im.parse_args(["--task", "nli", "--train-size", "100", "--strategy", "prior", "--warmup", "paper"]))
    assert (a.warmup, a.warmup_fraction, a.batch_size) == ("fraction", 0.1, 32)
    a = im.resolve(im.parse_args(["--task", "ic", "--shots", "10", "--strategy", "uniform", "--warmup", "paper"]))
    assert a.warmup == "converge" and a.alpha == 10
    for bad, msg in ((["--warmup", "epochs"], "needs --warmup-epochs"),
                     (["--warmup", "converge", "--warmup-epochs", "2"], "does not go with"),
                     (["--warmup", "none", "--warmup-fraction", "0.5"], "does not go with")):
        with pytest.raises(common.UsageError, match=msg):
            args(*bad)


@pytest.mark.parametrize("old", [["--warmup-epochs", "paper"], ["--warmup-epochs=converge"],
                                 ["--warmup-epochs", "frac0.1"]])
def test_the_old_warmup_spelling_is_a_one_line_error(old, capsys):
    """`--warmup-epochs WORD` (an earlier spelling of --warmup WORD) is gone: it is a usage error naming the flag."""
    with pytest.raises(SystemExit) as e:
        im.parse_args(["--task", "ic", *old])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "--warmup-epochs" in err


# ---------------------------------------------------------------------------------------------- end to end
def tiny_argv(tiny_model, tiny_data, out, *extra):
    return ["--model", tiny_model, "--data-dir", str(tiny_data), "--out-dir", str(out), "--max-epochs", "2",
            "--eval-batch-size", "64", *extra]


SETTINGS = {"ic": ["--task", "ic", "--shots", "1"], "sf": ["--task", "sf", "--shots", "1"],
            "nli": ["--task", "nli", "--train-size", "6"]}
WARMUPS = {"none": ["--warmup", "none"], "epochs": ["--warmup", "epochs", "--warmup-epochs", "1"],
           "converge": ["--warmup", "converge", "--patience", "1"], "fraction": ["--warmup-fraction", "0.5"]}


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ic", "sf", "nli"])
@pytest.mark.parametrize("strategy", ["mask", "uniform", "prior"])
@pytest.mark.parametrize("warm", list(WARMUPS))
def test_smoke_every_strategy_warmup_task(tiny_model, tiny_data, tmp_path, task, strategy, warm):
    r = im.main(im.parse_args(tiny_argv(tiny_model, tiny_data, tmp_path, *SETTINGS[task], "--strategy", strategy,
                                        *WARMUPS[warm])))
    assert 0.0 <= r["test"] <= 1.0 and r["metric"] == ("f1" if task == "sf" else "accuracy")
    assert r["n_with_both_sets"] > 0
    run = Path(r["run_dir"])
    assert json.loads((run / "results.json").read_text())["test"] == r["test"]
    assert json.loads((run / "config.json").read_text())["strategy"] == strategy
    assert (run / "train_ids.json").is_file()
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"L_task"' in line]
    assert steps and all(math.isfinite(s["L_task"]) and math.isfinite(s["L_int"]) for s in steps)
    if warm == "epochs":
        assert not any(s["int_on"] for s in steps if s["epoch"] == 0)
        assert all(s["int_on"] for s in steps if s["epoch"] == 1)
    from conftest import check_explanations
    check_explanations(run, f"marginal_{strategy}", 14 if task != "nli" else 12, has_rationale=task != "nli")


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ic", "sf", "nli"])
def test_smoke_bert_strategy_with_adapted_mlm(tiny_model, tiny_data, tmp_path, task):
    r = im.main(im.parse_args(tiny_argv(tiny_model, tiny_data, tmp_path, *SETTINGS[task], "--strategy", "bert",
                                        "--mlm-model", "adapt", "--mlm-adapt-steps", "2", "--warmup-epochs", "1")))
    assert 0.0 <= r["test"] <= 1.0 and r["n_with_both_sets"] > 0
    assert list((tmp_path / "mlm_cache").iterdir())  # the adapted MLM is cached under runs/


@pytest.mark.slow
def test_analysis_and_resample(tiny_model, tiny_data, tmp_path):
    r = im.main(im.parse_args(tiny_argv(tiny_model, tiny_data, tmp_path, "--task", "ic", "--shots", "2",
                                        "--strategy", "uniform", "--analysis", "--resample-every-epoch",
                                        "--warmup-epochs", "1")))
    t4 = r["table4"]
    assert 0 <= t4["share_aR_gt_aN"] <= 1 and t4["n_with_rationale"] > 0
    assert abs(t4["accuracy_all"] - r["test"]) < 1e-9
    curve = json.loads((Path(r["run_dir"]) / "lint_curve.json").read_text())
    assert set(curve) == {"0", "1"}  # L_int tracked during warm-up (epoch 0) too


@pytest.mark.slow
def test_same_seed_same_results_and_seed_aggregation(tiny_model, tiny_data, tmp_path):
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--task", "ic", "--shots", "1", "--strategy", "uniform",
                     "--seeds", "3,4")
    a = im.main(im.parse_args(argv))
    first = [(Path(r["run_dir"]) / "results.json").read_bytes() for r in a["runs"]]
    b = im.main(im.parse_args(argv))
    assert first == [(Path(r["run_dir"]) / "results.json").read_bytes() for r in b["runs"]]  # byte-identical
    assert [r["test"] for r in a["runs"]] == [r["test"] for r in b["runs"]]
    assert a["test"]["n"] == 2 and abs(a["test"]["mean"] - sum(r["test"] for r in a["runs"]) / 2) < 1e-12
    assert (tmp_path / "uimer_im" / "ic-1shot-uniform-seeds" / "summary.json").is_file()
    # BaseModel (--alpha 0): same sampled training set as the IM run of the same seed
    base = im.main(im.parse_args(tiny_argv(tiny_model, tiny_data, tmp_path, "--task", "ic", "--shots", "1",
                                           "--strategy", "uniform", "--alpha", "0", "--seed", "3")))

    def ids(r):
        return json.loads((Path(r["run_dir"]) / "train_ids.json").read_text())

    assert ids(base) == ids(a["runs"][0]) and base["n_skipped_by_L_int"] is None


def test_marginal_effect_explainer_equals_a_per_position_loop(tiny_model, tiny_data):
    """Eq. 4 per wordpiece, batched over positions and candidates, against a loop that replaces one position of one
    example at a time with each candidate and computes m and the log2 odds by hand (the same candidates: the same
    seeded generator, drawn in the same order)."""
    tok = common.load_tokenizer(tiny_model)
    data = common.load_uimer_task("ic", tiny_data, "2", 0, tok, 50)
    torch.manual_seed(0)
    model = common.TaskModel(common.load_encoder(tiny_model), "ic", len(data["labels"])).eval().double()
    info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
    batch = common.batches(data["test"][:3], 8, tok.pad_token_id)[0]
    target = torch.tensor([0, 2, 5])
    got = im.marginal_effect_explainer(model, "uniform", 3, info, 1e-23, torch.Generator().manual_seed(7),
                                       max_rows=5)(batch, target)
    gen = torch.Generator().manual_seed(7)
    content = common.content_mask(batch, torch.tensor(info["special_ids"])).bool()
    pos = content.nonzero().tolist()
    n = batch["attention_mask"].sum(1).tolist()
    cand, q = im.candidates("uniform", [(batch["input_ids"][b, :n[b]].tolist(), i) for b, i in pos], 3, info, gen)

    def log2_odds(m, one_minus_m):
        return math.log2(m / one_minus_m) if m > 1e-23 else math.log2(1e-23)
    with torch.no_grad():
        p0 = torch.softmax(model(batch), -1)[torch.arange(3), target].tolist()
        for r, (b, i) in enumerate(pos):
            m = one_minus_m = 0.0  # 1 - m as sum_x' q(x') (1 - p(y|x')): the float32 q sum to 1 only up to rounding
            for c in range(3):
                one = {k: v[b:b + 1].clone() for k, v in batch.items() if torch.is_tensor(v)}
                one["input_ids"][0, i] = cand[r, c]
                p = torch.softmax(model(one), -1)[0, target[b]].item()
                m, one_minus_m = m + float(q[r, c]) * p, one_minus_m + float(q[r, c]) * (1 - p)
            want = log2_odds(p0[b], 1 - p0[b]) - log2_odds(m, one_minus_m)
            assert got[b, i].item() == pytest.approx(want, rel=1e-6, abs=1e-12)
    assert (got[~content] == 0).all()
