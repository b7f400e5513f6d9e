"""UIMER-DM: hard-concrete gates against their closed form, Eq. 7 by hand, the CRF KL against enumeration, the
extractor's KL constraint on a tiny separable task, the gradient path, end-to-end smoke runs, bad input."""
import csv
import itertools
import json
import math
from pathlib import Path

import pytest
import torch

import common
import uimer_dm as dm

ROOT = Path(__file__).resolve().parents[1]
NOTES = ROOT / "tests" / "fixtures" / "paper_tables" / "uimer_hparams.csv"
SETTINGS = {"ic": ["--task", "ic", "--shots", "1"], "sf": ["--task", "sf", "--shots", "1"],
            "nli": ["--task", "nli", "--train-size", "6"]}


# ---------------------------------------------------------------------------------------------- the gates
def test_hard_concrete_support_and_p_nonzero_closed_form():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([-3.0, -1.0, -0.3, 0.0, 0.5, 2.0])
    n = 100000
    z = dm.hard_concrete(logits.expand(n, -1), g)
    assert z.min() >= 0 and z.max() <= 1
    assert ((z > 0) & (z < 1)).any() and (z == 0).any()  # exact zeros (rectified) and values in between
    p_mc = (z != 0).double().mean(0)
    p = dm.log_prob_nonzero(logits).exp().double()
    assert torch.allclose(p, torch.sigmoid(logits.double() + 0.2 * math.log(5)))  # sigma(logit - T log(-l/r))
    assert (abs(p_mc - p) <= 4 * torch.sqrt(p * (1 - p) / n)).all(), (p_mc, p)


def test_hard_concrete_is_reparameterised():
    logits = torch.zeros(1000, requires_grad=True)
    dm.hard_concrete(logits, torch.Generator().manual_seed(0)).sum().backward()
    assert (logits.grad >= 0).all() and (logits.grad > 0).any()  # open a gate more by raising its logit


# ---------------------------------------------------------------------------------------------- Eq. 7
def test_eq7_equals_hand_computation_and_zero_when_ranked():
    R = torch.tensor([[0, 1, 1, 0, 0, 0.]])
    N = torch.tensor([[0, 0, 0, 1, 1, 0.]])
    a = torch.tensor([[1.0, 0.2, 0.9, 0.5, 0.4, 1.0]])  # [CLS]/[SEP] gates (1) are neither R nor N
    want = (min(0.2 / 0.5 - 1, 0)) ** 2 + (min(0.9 / 0.5 - 1, 0)) ** 2  # = 0.36
    assert abs(dm.eq7_loss(a, R, N, 0.01).item() - want) < 1e-7 and want > 0
    ranked = torch.tensor([[1.0, 0.6, 0.9, 0.5, 0.4, 1.0]])  # every rationale outranks every non-rationale
    assert dm.eq7_loss(ranked, R, N, 0.01).item() == 0.0
    zeros_N = torch.tensor([[1.0, 0.005, 0.0, 0.0, 0.0, 1.0]])  # max_N = 0 -> the guard (0.01) is the reference
    assert abs(dm.eq7_loss(zeros_N, R, N, 0.01).item() - ((0.005 / 0.01 - 1) ** 2 + 1.0)) < 1e-6
    assert torch.isfinite(dm.eq7_loss(zeros_N, R, N, 1e-12)).all()
    batch = torch.cat([a, ranked])  # per example, batched
    assert torch.allclose(dm.eq7_loss(batch, R.repeat(2, 1), N.repeat(2, 1), 0.01), torch.tensor([want, 0.0]))


# ---------------------------------------------------------------------------------------------- divergences
def test_crf_kl_equals_enumeration():
    torch.manual_seed(0)
    enc = torch.nn.Module()
    enc.config = type("C", (), {"hidden_size": 4})()
    model = common.TaskModel(enc, "sf", num_labels=3).double()
    with torch.no_grad():
        model.crf.transitions.normal_()
        model.crf.start_transitions.normal_()
    E_p, E_q = torch.randn(2, 4, 3, dtype=torch.float64), torch.randn(2, 4, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=torch.bool)
    got = dm.divergence(model, E_p, E_q, {"word_mask": mask})
    for b in range(2):
        n = int(mask[b].sum())
        kl = 0.0
        for seq in itertools.product(range(3), repeat=n):
            one = {"tags": torch.tensor([list(seq)]), "word_mask": torch.ones(1, n, dtype=torch.bool)}
            lp = model.gold_log_likelihood(E_p[b:b + 1, :n], one).item()
            lq = model.gold_log_likelihood(E_q[b:b + 1, :n], one).item()
            kl += math.exp(lp) * (lp - lq)
        assert abs(got[b].item() - kl) < 1e-9, (b, got[b].item(), kl)
    assert torch.allclose(dm.divergence(model, E_p, E_p, {"word_mask": mask}), torch.zeros(2, dtype=torch.float64),
                          atol=1e-12)
    enc_ic = torch.nn.Module()
    enc_ic.config = enc.config
    ic = common.TaskModel(enc_ic, "ic", num_labels=5)
    p, q = torch.randn(3, 5), torch.randn(3, 5)
    want = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p),
                                             torch.distributions.Categorical(logits=q))
    assert torch.allclose(dm.divergence(ic, p, q, {}), want, atol=1e-6)


# ---------------------------------------------------------------------------------------------- the extractor
def fitted_tiny_ic(tiny_model, tiny_data):
    """The tiny BERT trained on tiny SNIPS IC (14 sentences, 7 intents, separable by keywords) until it fits."""
    tok = common.load_tokenizer(tiny_model)
    data = common.load_uimer_task("ic", tiny_data, "2", 0, tok, 50)
    torch.manual_seed(0)
    model = common.TaskModel(common.load_encoder(tiny_model), "ic", len(data["labels"]), dropout=0.0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = common.batches(data["train"], 64, tok.pad_token_id)[0]
    for _ in range(60):
        model.train()
        loss = model.task_loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert common.evaluate(model, [batch], data["labels"])["accuracy"] == 1.0
    return tok, data, model, batch


@pytest.mark.slow
def test_extractor_meets_kl_constraint_on_separable_task(tiny_model, tiny_data):
    tok, data, model, batch = fitted_tiny_ic(tiny_model, tiny_data)
    args = dm.resolve(dm.parse_args(["--task", "ic", "--shots", "2", "--extractor-epochs", "300", "--lr-extractor",
                                     "1e-2", "--batch-size", "16"]))
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    n_states = model.encoder.config.num_hidden_layers + 2
    ext = dm.Extractor(model.encoder.config.hidden_size, n_states, model.embed(torch.tensor([tok.mask_token_id]))[0])
    gen = torch.Generator().manual_seed(0)
    all_batches = common.batches(data["train"], args.eval_batch_size, tok.pad_token_id)
    before = dm.extractor_stats(model, ext, all_batches, special, gen, kl_margin=args.kl_margin, l0=args.l0)
    stats = dm.train_extractor(model, ext, data["train"], gen, tok.pad_token_id, special, 0, lambda **kw: None,
                               batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, device="cpu",
                               epochs=args.extractor_epochs, lr=args.lr_extractor, kl_margin=args.kl_margin,
                               lambda_lr=args.lambda_lr, lambda_max=args.lambda_max, l0=args.l0)
    assert stats["constraint_met"] and stats["KL"] <= args.kl_margin, stats
    assert stats["expected_L0"] < 0.75 * before["expected_L0"], (before, stats)  # it learnt to mask, within the KL
    assert not any(p.requires_grad for p in ext.parameters())  # frozen again for the model phase
    assert all(p.requires_grad for p in model.parameters())


def test_gradient_reaches_model_through_gates(tiny_model, tiny_data):
    """L_int depends on theta through the hidden states the frozen extractor reads (h_0 and h_k)."""
    tok = common.load_tokenizer(tiny_model)
    data = common.load_uimer_task("ic", tiny_data, "2", 0, tok, 50)
    torch.manual_seed(0)
    model = common.TaskModel(common.load_encoder(tiny_model), "ic", len(data["labels"])).eval()
    ext = dm.Extractor(32, 4, torch.zeros(32)).requires_grad_(False)
    with torch.no_grad():
        for p in ext.probes:
            p.bias.fill_(2.0)  # gates mostly open but not saturated, so that Eq. 7 is active with a gradient
    args = dm.resolve(dm.parse_args(["--task", "ic", "--shots", "2"]))
    batch = common.batches(data["train"], 64, tok.pad_token_id)[0]
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    _, L_int, n = dm.dm_loss(model, ext, batch, special, torch.Generator().manual_seed(0), guard=args.guard)
    assert n > 0 and L_int.item() > 0
    L_int.backward()
    assert model.encoder.encoder.layer[1].attention.self.query.weight.grad.abs().sum() > 0
    assert model.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ext.parameters())


def test_paper_defaults_match_the_notes_table():
    rows = [r for r in csv.DictReader(open(NOTES)) if r["method"].startswith("UIMER-DM")]
    assert len(rows) == 24
    for r in rows:
        if r["setting"] == "full" and r["task"] == "sf":
            continue  # OCR-damaged rows, flagged (*) in PAPER_TABLE
        sched = "one-pass" if "One-pass" in r["method"] else "multi-round"
        d = dm.paper_defaults(r["task"], r["setting"], sched)
        assert (d["lr"], d["lr_extractor"], d["batch_size"], d["max_epochs"], d["alpha"], d["patience"]) == \
               (float(r["lr"]), float(r["lr_extractor"]), int(r["batch_size"]), int(r["max_epochs"]),
                float(r["alpha"]), int(r["early_stop"])), r
        want = r["warmup_or_rounds"] or ("converge" if sched == "one-pass" else None)
        assert (d["warmup"] if sched == "one-pass" else str(d["rounds"])) == want, r
    a = dm.resolve(dm.parse_args(["--task", "sf", "--shots", "10", "--schedule", "multi-round", "--rounds", "10"]))
    assert (a.lr, a.lr_extractor, a.max_epochs, a.rounds, a.warmup, a.warmup_max_epochs) == \
           (1e-5, 1e-4, 10, 10, "converge", 70)
    a = dm.resolve(dm.parse_args(["--task", "sf", "--shots", "1"]))  # SF 1-shot one-pass: a 5-epoch warm-up
    assert (a.warmup, a.warmup_epochs) == ("epochs", 5)
    assert dm.resolve(dm.parse_args(["--task", "ic", "--warmup-epochs", "2"])).warmup == "epochs"
    with pytest.raises(common.UsageError, match="does not go with"):
        dm.resolve(dm.parse_args(["--task", "ic", "--warmup", "converge", "--warmup-epochs", "2"]))

    # the 'converge' warm-up trains the same task model for both schedules: the one-pass row's patience (7 at
    # SF 3-shot, where multi-round has 3), unless --patience or --warmup-patience is given
    a = dm.resolve(dm.parse_args(["--task", "sf", "--shots", "3", "--schedule", "multi-round"]))
    assert (a.patience, a.warmup_patience, a.warmup, a.warmup_max_epochs) == (3, 7, "converge", 70)
    a = dm.resolve(dm.parse_args(["--task", "sf", "--shots", "3", "--schedule", "multi-round", "--patience", "2"]))
    assert (a.patience, a.warmup_patience) == (2, 2)
    a = dm.resolve(dm.parse_args(["--task", "sf", "--shots", "3", "--schedule", "multi-round",
                                  "--warmup-patience", "1"]))
    assert (a.patience, a.warmup_patience) == (3, 1)


@pytest.mark.slow
@pytest.mark.parametrize("warmup_patience, warmup_epochs_run", [(0, 1), (10, 4)])
def test_converge_warmup_stops_by_its_own_patience(tiny_model, tiny_data, tmp_path, warmup_patience, warmup_epochs_run):
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--task", "ic", "--shots", "1", "--warmup", "converge",
                     "--warmup-max-epochs", "4", "--warmup-patience", str(warmup_patience), "--patience", "5")
    i = argv.index("--warmup-epochs")
    del argv[i:i + 2]  # tiny_argv's 1-epoch warm-up: a converge warm-up has no epoch count
    r = dm.main(dm.parse_args(argv))
    records = [json.loads(line) for line in (Path(r["run_dir"]) / "log.jsonl").read_text().splitlines()]
    evals = [x for x in records if "dev" in x and "L_task" not in x]
    assert sum(x["round"] == 0 for x in evals) == warmup_epochs_run
    assert sum(x["round"] == 1 for x in evals) == 2  # --max-epochs 2 with --patience 5: both model epochs run


# ---------------------------------------------------------------------------------------------- end to end
def tiny_argv(tiny_model, tiny_data, out, *extra):
    return ["--model", tiny_model, "--data-dir", str(tiny_data), "--out-dir", str(out), "--max-epochs", "2",
            "--warmup-epochs", "1", "--extractor-epochs", "2", "--eval-batch-size", "64", "--lr", "1e-3", *extra]


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ic", "sf", "nli"])
@pytest.mark.parametrize("schedule", ["one-pass", "multi-round"])
def test_smoke_every_schedule_and_task(tiny_model, tiny_data, tmp_path, task, schedule):
    extra = ["--rounds", "2"] if schedule == "multi-round" else []
    r = dm.main(dm.parse_args(tiny_argv(tiny_model, tiny_data, tmp_path, *SETTINGS[task], "--schedule", schedule,
                                        *extra)))
    assert 0.0 <= r["test"] <= 1.0 and r["metric"] == ("f1" if task == "sf" else "accuracy")
    assert r["n_with_both_sets"] > 0 and len(r["rounds"]) == (2 if schedule == "multi-round" else 1)
    assert all(math.isfinite(x["KL"]) and 0 <= x["expected_L0"] <= 1 for x in r["rounds"])
    run = Path(r["run_dir"])
    assert run.name == f"{task}-{'6ex' if task == 'nli' else '1shot'}-" \
                       f"{'onepass' if schedule == 'one-pass' else 'multiround2'}-55"
    assert json.loads((run / "results.json").read_text())["test"] == r["test"]
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    steps = [x for x in records if "L_task" in x]
    assert not any(x["int_on"] for x in steps if x["round"] == 0)  # warm-up: L_task alone
    assert all(x["int_on"] and math.isfinite(x["L_int"]) for x in steps if x["round"] > 0)
    assert r["epochs_run"] <= 1 + 2 * len(r["rounds"])  # 1 warm-up epoch, at most 2 per round
    assert any("loss_phi" in x for x in records)
    from conftest import check_explanations
    rows = check_explanations(run, "gate_expectation", 14 if task != "nli" else 12, has_rationale=task != "nli")
    assert all(x is None or 0 <= x for r in rows for x in r["scores"]["gate_expectation"])


@pytest.mark.slow
def test_analysis_table4_and_basemodel(tiny_model, tiny_data, tmp_path):
    r = dm.main(dm.parse_args(tiny_argv(tiny_model, tiny_data, tmp_path, "--task", "ic", "--shots", "2", "--alpha", "0",
                                        "--analysis")))
    t4 = r["table4"]
    assert 0 <= t4["share_aR_gt_aN"] <= 1 and t4["n_with_rationale"] > 0
    assert abs(t4["accuracy_all"] - r["test"]) < 1e-9
    assert Path(r["run_dir"]).name == "ic-2shot-base-55" and r["rounds"] == []
    rows = json.loads((Path(r["run_dir"]) / "attributions.json").read_text())
    assert len(rows) == t4["n_with_rationale"] and all(len(x["a"]) == len(x["tokens"]) for x in rows)
    assert all((x["a_R"] > x["a_N"]) in (True, False) and 0 <= x["a_R"] <= 1 for x in rows)


@pytest.mark.slow
def test_same_seed_same_results_and_seed_aggregation(tiny_model, tiny_data, tmp_path):
    argv = tiny_argv(tiny_model, tiny_data, tmp_path, "--task", "sf", "--shots", "1", "--schedule", "multi-round",
                     "--rounds", "2", "--seeds", "3,4")
    a = dm.main(dm.parse_args(argv))
    first = [(Path(r["run_dir"]) / "results.json").read_bytes() for r in a["runs"]]
    logs = [(Path(r["run_dir"]) / "log.jsonl").read_text() for r in a["runs"]]
    b = dm.main(dm.parse_args(argv))
    assert first == [(Path(r["run_dir"]) / "results.json").read_bytes() for r in b["runs"]]  # byte-identical
    assert logs == [(Path(r["run_dir"]) / "log.jsonl").read_text() for r in b["runs"]]
    assert a["test"]["n"] == 2 and (tmp_path / "uimer_dm" / "sf-1shot-multiround2-seeds" / "summary.json").is_file()


def test_expected_gate_equals_numerical_integration_and_sampling():
    """expected_gate (midpoint rule) against scipy's adaptive quadrature of E[z] per layer, and against the mean of
    many hard-concrete samples of the product over layers."""
    from scipy.integrate import quad
    logits = torch.tensor([[-3.0, 0.5], [0.0, 4.0], [2.0, -1.0]], dtype=torch.float64)  # (tokens, layers)

    def e_z(logit):
        def z(u):
            s = 1 / (1 + math.exp(-(logit + math.log(u) - math.log1p(-u)) / dm.TEMPERATURE))
            return min(max(s * (dm.STRETCH_R - dm.STRETCH_L) + dm.STRETCH_L, 0.0), 1.0)
        return quad(z, 0, 1, limit=200)[0]
    want = torch.tensor([math.prod(e_z(x) for x in row.tolist()) for row in logits], dtype=torch.float64)
    got = dm.expected_gate(logits, points=4096)
    assert torch.allclose(got, want, atol=2e-4)
    gen = torch.Generator().manual_seed(0)
    samples = torch.stack([dm.hard_concrete(logits, gen).prod(-1) for _ in range(20000)]).mean(0)
    assert torch.allclose(got, samples, atol=0.01)
