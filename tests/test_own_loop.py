"""The UIMER terms in your own training loop (docs/own_data.md, "Your own training loop"). Each file's
interpretation_loss on a Hugging Face classifier equals the run's own term on a TaskModel with the same weights (a
BertForSequenceClassification whose classifier sees the [CLS] state, as TaskModel's head) and, for a token
classifier, a re-computation of its equation one example at a time; fit_extractor trains the run's extractor. The
page's plain loops and Trainer subclasses run on a tiny model from a folder holding only the method file and
common.py (the code blocks are read from the page, so the page cannot drift)."""
import copy
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
from test_uimer_im import naive_lint

import common
import uimer_dm as dm
import uimer_gb as gb
import uimer_im as im

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "own_data.md"
METHODS = ["uimer_gb", "uimer_im", "uimer_dm"]


class FirstToken(torch.nn.Module):
    """In place of BERT's pooler: the [CLS] state itself, so that BertForSequenceClassification's classifier reads
    what TaskModel's head reads."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h[:, 0]


def hf_batch(batch: dict, labels: torch.Tensor | None = None) -> dict:
    """A repository batch under Hugging Face names: labels instead of label, no index or word fields."""
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "token_type_ids": batch["token_type_ids"], "rationale": batch["rationale"],
            "labels": batch["label"] if labels is None else labels}


@pytest.fixture(scope="module")
def twins(tiny_model, tmp_path_factory):
    """(tokenizer, a TaskModel 'ic' without dropout, a BertForSequenceClassification with its encoder and head, the
    first training batch of SNIPS IC 2-shot in both forms), both models in eval mode."""
    from conftest import write_tiny_snips
    from transformers import BertForSequenceClassification
    tok = common.load_tokenizer(tiny_model)
    data = common.load_uimer_task("ic", write_tiny_snips(tmp_path_factory.mktemp("snips")), "2", 0, tok, 50)
    torch.manual_seed(0)
    tm = common.TaskModel(common.load_encoder(tiny_model), "ic", len(data["labels"]), dropout=0.0).eval()
    cfg = tm.encoder.config.__class__.from_dict({**tm.encoder.config.to_dict(), "num_labels": len(data["labels"])})
    cfg._attn_implementation = "eager"
    hf = BertForSequenceClassification(cfg)
    hf.bert.load_state_dict(tm.encoder.state_dict())
    hf.bert.pooler = FirstToken()
    hf.classifier.load_state_dict(tm.head.state_dict())
    hf.eval()
    batch = common.batches(data["train"], 64, tok.pad_token_id)[0]
    return tok, tm, hf, batch, hf_batch(batch), data


@pytest.fixture(scope="module")
def tagger(twins):
    """A BertForTokenClassification (5 labels) on the same encoder and a batch whose every other content wordpiece
    is labelled (-100 elsewhere, at special tokens and padding)."""
    from transformers import BertForTokenClassification
    tok, tm, _, batch, _, _ = twins
    cfg = tm.encoder.config.__class__.from_dict({**tm.encoder.config.to_dict(), "num_labels": 5})
    cfg._attn_implementation = "eager"
    torch.manual_seed(1)
    model = BertForTokenClassification(cfg)
    model.bert.load_state_dict(tm.encoder.state_dict(), strict=False)
    model.eval()
    content = common.content_mask(batch, torch.tensor(tok.all_special_ids)).bool()
    labels = torch.where(content & (torch.arange(batch["input_ids"].size(1)) % 2 == 1), batch["input_ids"] % 5, -100)
    return model, hf_batch(batch, labels)


def test_the_adapter_gives_the_task_models_scores_and_hidden_states(twins):
    tok, tm, hf, batch, hb, _ = twins
    model = common.as_task_model(hf)
    assert common.as_task_model(tm) is tm and common.as_task_model(model) is model
    assert model.task == "cls" and model.encoder.config is hf.config and not model.training
    with torch.no_grad():
        want, out_t = tm(batch, output_hidden_states=True)
        got, out_h = model(hb, output_hidden_states=True)
        assert torch.allclose(got, want, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(out_t.hidden_states, out_h.hidden_states,
                                                                   strict=True))
        assert torch.allclose(model.gold_log_likelihood(got, hb), tm.gold_log_likelihood(want, batch), atol=1e-6)
        assert torch.equal(model.embed(hb["input_ids"]), tm.embed(batch["input_ids"]))


def test_the_adapter_of_a_token_classifier_sums_the_labelled_wordpieces(tagger):
    model, hb = tagger
    adapted = common.as_task_model(model)
    with torch.no_grad():
        scores = adapted(hb)
        got = adapted.gold_log_likelihood(scores, hb)
    log_p = torch.log_softmax(model(input_ids=hb["input_ids"], attention_mask=hb["attention_mask"],
                                    token_type_ids=hb["token_type_ids"]).logits.detach(), -1)
    labels = hb["labels"].tolist()
    want = [sum(log_p[b, i, y].item() for i, y in enumerate(row) if y != -100) for b, row in enumerate(labels)]
    assert adapted.task == "tag" and got.tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)


# ---------------------------------------------------------------------------------------------- UIMER-GB
@pytest.mark.parametrize("opts", [{"variant": "huang"}, {"variant": "huang", "gate": True, "order": True},
                                  {"variant": "ghaeini", "wrt": "embedding-output"}],
                         ids=["huang", "huang-gate-order", "ghaeini-embedding-output"])
def test_gb_term_on_a_hf_classifier_equals_the_runs_term(twins, opts):
    tok, tm, hf, batch, hb, _ = twins
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    full = {"variant": "ghaeini", "gate": False, "order": False, "guard": 1e-6, "wrt": "inputs-embeds", **opts}
    _, want, n = gb.gb_loss(tm, batch, special, torch.Generator().manual_seed(0), **full)
    hf.zero_grad()
    got = gb.interpretation_loss(hf, hb, special_ids=tok.all_special_ids, generator=torch.Generator().manual_seed(0),
                                 **opts)
    assert n > 0 and want.item() > 0
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    got.backward()  # the term trains the Hugging Face model (double backward through its encoder)
    assert hf.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0


def naive_huang(model, hb: dict, special: list[int], guard: float, tag: bool, order: bool) -> float:
    """Huang +Base or +Order one example at a time, unpadded, on the Hugging Face model itself: J = -log p(y|x) (a
    token classifier: summed over the labelled wordpieces), s = L1 norm of dJ/de normalised over the content
    wordpieces, sum_{i in R} (s_i - 1/|R|)^2 or sum_{i in R} min(s_i / max(max_{j in N} s_j, guard) - 1, 0)^2,
    averaged over the examples with R and N."""
    values = []
    for b in range(hb["input_ids"].size(0)):
        n = int(hb["attention_mask"][b].sum())
        ids = hb["input_ids"][b, :n].unsqueeze(0)
        e = model.get_input_embeddings()(ids).detach().requires_grad_(True)
        log_p = torch.log_softmax(model(inputs_embeds=e, attention_mask=torch.ones_like(ids)).logits, -1)[0]
        y = hb["labels"][b]
        J = -sum(log_p[i, t] for i, t in enumerate(y[:n].tolist()) if t != -100) if tag else -log_p[int(y)]
        (g,) = torch.autograd.grad(J, e)
        size = g[0].abs().sum(-1).tolist()
        content = [i for i in range(n) if int(ids[0, i]) not in special]
        s = {i: size[i] / sum(size[j] for j in content) for i in content}
        R = [i for i in content if hb["rationale"][b, i] > 0]
        N = [i for i in content if hb["rationale"][b, i] == 0]
        if R and N and order:
            top = max(max(s[j] for j in N), guard)
            values.append(sum(min(s[i] / top - 1, 0) ** 2 for i in R))
        elif R and N:
            values.append(sum((s[i] - 1 / len(R)) ** 2 for i in R))
    return sum(values) / len(values)


@pytest.mark.parametrize("order", [False, True], ids=["base", "order"])
def test_gb_huang_term_equals_its_equation_one_example_at_a_time(twins, tagger, order):
    tok, _, hf, _, hb, _ = twins
    for model, batch, tag in ((hf, hb, False), (*tagger, True)):
        got = gb.interpretation_loss(model, batch, special_ids=tok.all_special_ids, variant="huang", order=order)
        want = naive_huang(model, batch, tok.all_special_ids, 1e-6, tag, order)
        assert want > 0 and got.item() == pytest.approx(want, rel=1e-4), f"tag={tag}"


# ---------------------------------------------------------------------------------------------- UIMER-IM
@pytest.mark.parametrize("strategy", ["uniform", "prior", "mask"])
def test_im_term_on_a_hf_classifier_equals_the_runs_term(twins, strategy):
    """The same draws (the batch's examples in row order, one generator seed) give the run's L_int: the sets the
    own-loop term builds from the padded batch are those the run builds from its examples."""
    tok, tm, hf, batch, hb, data = twins
    info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
    opts = {"strategy": strategy, "num_samples": 1 if strategy == "mask" else 3, "max_rationale_fraction": 0.3,
            "replace_cap": "paper"}
    by_index = {e["index"]: e for e in data["train"]}
    examples = [by_index[i] for i in batch["index"].tolist()]
    sets = im.build_replacement_sets(examples, torch.Generator().manual_seed(7), info, **opts)
    with torch.no_grad():
        want, n = im.im_loss(tm, batch, sets, epsilon=2.0, lower_bound=1e-23)
        got = im.interpretation_loss(hf, hb, info, epsilon=2.0, lower_bound=1e-23,
                                     generator=torch.Generator().manual_seed(7), **opts)
    assert n > 0 and want.item() > 0
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_im_term_on_a_token_classifier_equals_eqs_4_5_one_sentence_at_a_time(twins, tagger):
    tok, _, _, _, _, data = twins
    model, hb = tagger
    info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
    rb = common.rationale_batch(hb)
    sets = im.build_replacement_sets(im.batch_examples(rb, torch.tensor(info["special_ids"])),
                                     torch.Generator().manual_seed(3), info, strategy="uniform", num_samples=4,
                                     max_rationale_fraction=0.3, replace_cap="paper")
    with torch.no_grad():
        got = im.interpretation_loss(model, hb, info, num_samples=4, epsilon=3.0, lower_bound=1e-25,
                                     generator=torch.Generator().manual_seed(3))
        p, q = [], []
        for b, (ids, qs) in sets.items():
            labels = hb["labels"][b, :ids.size(-1)].tolist()
            pe = [[0.0] * ids.size(1) for _ in range(2)]
            for s in range(2):
                for r in range(ids.size(1)):
                    x = ids[s, r].unsqueeze(0)
                    log_p = torch.log_softmax(model(input_ids=x, attention_mask=torch.ones_like(x)).logits[0], -1)
                    pe[s][r] = math.exp(sum(log_p[i, y].item() for i, y in enumerate(labels) if y != -100))
            p.append(pe)
            q.append(qs.tolist())
    want = sum(naive_lint(p, q, 3.0, 1e-25)) / len(p)
    assert len(p) > 0 and want > 0
    assert got.item() == pytest.approx(want, rel=1e-4)


# ---------------------------------------------------------------------------------------------- UIMER-DM
def opened_extractor(model, mask_id: int, bias: float = 2.0) -> dm.Extractor:
    """A new extractor whose gates are mostly open but not saturated (Eq. 7 active with a gradient)."""
    torch.manual_seed(5)
    ext = dm.new_extractor(common.as_task_model(model), mask_id)
    with torch.no_grad():
        for p in ext.probes:
            p.bias.fill_(bias)
    return ext


def test_dm_term_on_a_hf_classifier_equals_the_runs_term(twins):
    tok, tm, hf, batch, hb, _ = twins
    ext = opened_extractor(tm, tok.mask_token_id)
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    _, want, n = dm.dm_loss(tm, ext, batch, special, torch.Generator().manual_seed(0), guard=0.01)
    hf.zero_grad()
    got = dm.interpretation_loss(hf, ext, hb, special_ids=tok.all_special_ids,
                                 generator=torch.Generator().manual_seed(0))
    assert n > 0 and want.item() > 0
    assert got.item() == pytest.approx(want.item(), rel=1e-4)
    got.backward()
    assert hf.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ext.parameters())


def test_fit_extractor_trains_as_the_runs_extractor_phase_and_leaves_the_model_as_it_was(twins):
    tok, tm, hf, batch, hb, _ = twins
    special = torch.tensor(sorted(set(tok.all_special_ids)))
    opts = {"lr": 1e-2, "kl_margin": 0.1, "lambda_lr": 0.3, "lambda_max": 200.0, "l0": "prob"}
    torch.manual_seed(11)
    want = dm.new_extractor(tm, tok.mask_token_id)
    dm.extractor_epochs(tm, want, lambda epoch: [batch], special, torch.Generator().manual_seed(4), epochs=3, **opts)
    hf.train()
    hf.classifier.weight.requires_grad_(False)  # a frozen parameter of the user's stays frozen
    torch.manual_seed(11)
    got = dm.fit_extractor(hf, [hb], mask_token_id=tok.mask_token_id, special_ids=tok.all_special_ids, epochs=3,
                           generator=torch.Generator().manual_seed(4), **opts)
    assert hf.training and not hf.classifier.weight.requires_grad and hf.classifier.bias.requires_grad
    hf.eval()
    hf.classifier.weight.requires_grad_(True)
    assert not any(p.requires_grad for p in got.parameters())
    torch.manual_seed(11)
    fresh = dm.new_extractor(tm, tok.mask_token_id)
    moved = 0.0
    for (name, a), b, c in zip(want.state_dict().items(), got.state_dict().values(), fresh.state_dict().values(),
                               strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name
        moved += (a - c).abs().sum().item()
    assert moved > 0  # the extractor did train


def test_dm_kl_of_a_token_classifier_sums_the_labelled_wordpieces(twins, tagger):
    tok = twins[0]
    model, hb = tagger
    adapted = common.as_task_model(model)
    torch.manual_seed(0)
    p, q = torch.randn(*hb["input_ids"].shape, 5), torch.randn(*hb["input_ids"].shape, 5)
    got = dm.divergence(adapted, p, q, hb)
    P, Q = torch.softmax(p, -1), torch.softmax(q, -1)
    want = [sum((P[b, i] * (P[b, i] / Q[b, i]).log()).sum().item() for i, y in enumerate(row) if y != -100)
            for b, row in enumerate(hb["labels"].tolist())]
    assert got.tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)
    ext = opened_extractor(model, tok.mask_token_id)
    L = dm.interpretation_loss(model, ext, hb, special_ids=tok.all_special_ids)
    assert math.isfinite(L.item()) and L.item() > 0


# ---------------------------------------------------------------------------------------------- bad input
def test_own_loop_errors_say_what_is_missing(twins):
    from transformers import BertForSequenceClassification
    tok, tm, hf, batch, hb, data = twins
    with pytest.raises(TypeError, match="ForSequenceClassification"):
        common.as_task_model(tm.encoder)
    no_rationale = {k: v for k, v in hb.items() if k != "rationale"}
    with pytest.raises(ValueError, match="remove_unused_columns=False"):
        gb.interpretation_loss(hf, no_rationale, special_ids=tok.all_special_ids, variant="huang")
    with pytest.raises(ValueError, match="shape of input_ids"):
        dm.interpretation_loss(hf, None, {**hb, "rationale": hb["rationale"][:, :3]}, special_ids=tok.all_special_ids)
    with pytest.raises(ValueError, match="not a UIMER-GB setting"):
        gb.interpretation_loss(hf, hb, special_ids=tok.all_special_ids, gate=True)
    sdpa = BertForSequenceClassification._from_config(copy.deepcopy(hf.config), attn_implementation="sdpa")
    with pytest.raises(ValueError, match="attn_implementation='eager'"):
        gb.interpretation_loss(sdpa, hb, special_ids=tok.all_special_ids, variant="huang")
    info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
    left = {k: v.flip(1) for k, v in hb.items() if k != "labels"} | {"labels": hb["labels"]}
    with pytest.raises(ValueError, match="right-padded"):
        im.interpretation_loss(hf, left, info)
    with pytest.raises(ValueError, match="not a UIMER-IM setting"):
        im.interpretation_loss(hf, hb, info, strategy="mask", num_samples=4)
    with pytest.raises(ValueError, match="not an iterator"):
        dm.fit_extractor(hf, iter([hb]), mask_token_id=tok.mask_token_id, special_ids=tok.all_special_ids)
    with pytest.raises(ValueError, match="mask_token_id is None"):
        dm.fit_extractor(hf, [hb], mask_token_id=None, special_ids=tok.all_special_ids)


def test_a_batch_without_an_example_with_both_sets_gives_zero(twins):
    tok, _, hf, _, hb, data = twins
    none = {**hb, "rationale": torch.zeros_like(hb["rationale"])}
    info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
    assert gb.interpretation_loss(hf, none, special_ids=tok.all_special_ids, variant="huang").item() == 0
    assert im.interpretation_loss(hf, none, info).item() == 0
    ext = opened_extractor(hf, tok.mask_token_id)
    assert dm.interpretation_loss(hf, ext, none, special_ids=tok.all_special_ids).item() == 0


# ---------------------------------------------------------------------------------------------- the page's code
def test_the_page_shows_a_plain_loop_and_a_trainer_for_every_method():
    blocks = own_loop_blocks(PAGE)
    assert set(blocks) == {"data"} | {f"{m} {form}" for m in METHODS for form in ("plain", "trainer")}
    for name, code in blocks.items():
        compile(code, name, "exec")
        if name.endswith("trainer"):
            assert "def compute_loss(self, model, inputs, return_outputs=False" in code
            assert "return (loss, outputs) if return_outputs else loss" in code
            assert "remove_unused_columns=False" in code
        elif name.endswith("plain"):
            assert len(code.splitlines()) <= 35, f"{name}: about 20 lines"


TERM_ON_A_BATCH = {  # appended to each block: the term on the whole training set as one batch, after training
    "uimer_gb": "uimer_gb.interpretation_loss(model, batch, special_ids=tokenizer.all_special_ids, variant='huang', "
                "order=True)",
    "uimer_im": "uimer_im.interpretation_loss(model, batch, uimer_im.token_info(tokenizer, []), "
                "generator=torch.Generator().manual_seed(1))",
    "uimer_dm": "uimer_dm.interpretation_loss(model, extractor, batch, special_ids=tokenizer.all_special_ids)",
}
CHECK = """
import json as _json
batch = {{k: v.to(model.device) for k, v in collate(train).items()}}
model.eval()
_term = {term}
_losses = [h["loss"] for h in trainer.state.log_history if "loss" in h] if "trainer" in globals() else []
print("CHECK " + _json.dumps({{"term": _term.item(), "losses": _losses, "common": common.__file__,
                               "method": {method}.__file__}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("form", ["plain", "trainer"])
@pytest.mark.parametrize("method", METHODS)
def test_the_pages_loop_runs_from_a_folder_holding_only_the_method_file_and_common(method, form, tmp_path,
                                                                                   tiny_model):
    """The data block, then the method's block, run with `python -` in a folder that holds only the method file and
    common.py (the working directory, first on sys.path), on the tiny model: every loss is finite, and the term is
    > 0 on the training set as one batch (every example has a rationale and a non-rationale word)."""
    if form == "trainer":
        pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate (pip install accelerate)")
    blocks = own_loop_blocks(PAGE)
    data = blocks["data"]
    assert data.count('MODEL = "bert-base-uncased"') == 1
    data = data.replace('MODEL = "bert-base-uncased"', f"MODEL = {tiny_model!r}")
    folder = tmp_path / "yours"
    folder.mkdir()
    for name in (f"{method}.py", "common.py"):
        shutil.copy(ROOT / name, folder / name)
    script = "\n".join([data, blocks[f"{method} {form}"], "import common",
                        CHECK.format(term=TERM_ON_A_BATCH[method], method=method)])
    env = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
    p = subprocess.run([sys.executable, "-"], input=script, cwd=folder, capture_output=True, text=True, timeout=600,
                       env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    check = json.loads(next(line[6:] for line in p.stdout.splitlines() if line.startswith("CHECK ")))
    assert Path(check["common"]).parent == folder and Path(check["method"]).parent == folder
    assert math.isfinite(check["term"]) and check["term"] > 0
    if form == "plain":
        steps = [tuple(map(float, m)) for m in re.findall(r"loss (\S+)  L_int (\S+)", p.stdout)]
        assert len(steps) >= 6 and all(math.isfinite(x) for step in steps for x in step)
        assert any(L_int > 0 for _, L_int in steps)
    else:
        assert len(check["losses"]) >= 2 and all(math.isfinite(x) for x in check["losses"])
