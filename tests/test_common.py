"""common.py: readers, samplers, rationales, alignment, CRF, metrics, atomic results, offline model errors."""
import itertools
import json
import random
import statistics
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import common

FIXTURE_WORDS = str(Path(__file__).resolve().parent / "fixtures" / "rationale_data" / "jsonl_words")

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- samplers
@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("ABCDE"), min_size=1, max_size=60), st.integers(1, 4), st.integers(0, 10**6))
def test_intent_sampler_exactly_n_per_intent(intents, n, seed):
    picked = common.sample_intent_shots(intents, n, seed)
    assert len(set(picked)) == len(picked)
    for y in set(intents):
        have = intents.count(y)
        assert [intents[i] for i in picked].count(y) == min(n, have)
    assert picked == common.sample_intent_shots(intents, n, seed)  # its own RNG: same seed, same subset


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["O", "B-a", "I-a", "B-b", "I-b", "B-c"]), min_size=1, max_size=6),
                min_size=1, max_size=40), st.integers(1, 4), st.integers(0, 10**6))
def test_slot_sampler_covers_every_type(tags, n, seed):
    picked = common.sample_slot_shots(tags, n, seed)
    assert len(set(picked)) == len(picked)
    pool = {}
    for seq in tags:
        for t in seq:
            pool[common.slot_type(t)] = pool.get(common.slot_type(t), 0) + 1
    got = {}
    for i in picked:
        for t in tags[i]:
            got[common.slot_type(t)] = got.get(common.slot_type(t), 0) + 1
    for typ, available in pool.items():  # every type (O included) reaches n tokens unless the pool has fewer
        assert got.get(typ, 0) >= min(n, available)
    # every kept example contributed a token to a type that was still short when it was kept (the original rule)
    order = list(range(len(tags)))
    random.Random(seed).shuffle(order)
    assert picked == [i for i in order if i in set(picked)]


def test_samplers_replay_the_original_subset_sizes(real_data):
    """Sizes of the subsets the original UIMER code draws with these seeds (replayed from its sampling code)."""
    train = common.read_snips(real_data, "train")
    intents, tags = [e["intent"] for e in train], [e["tags"] for e in train]
    want_sf = {55: (24, 57, 176), 1988: (28, 59, 167), 12333: (24, 60, 178), 42: (27, 61, 179)}
    for seed, sizes in want_sf.items():
        assert tuple(len(common.sample_slot_shots(tags, n, seed)) for n in (1, 3, 10)) == sizes
        assert [len(common.sample_intent_shots(intents, n, seed)) for n in (1, 3, 10)] == [7, 21, 70]


def test_nli_first_n_skips_row_zero_and_the_pool_size_is_checked_once(tiny_data):
    """The samplers trust their n; load_uimer_task checks the pool once: an error naming what it holds, or with
    allow_smaller a run on what exists, recorded in `shortfall`."""
    assert common.sample_first_n(999, 100) == list(range(1, 101))
    tok = common.load_tokenizer(None)
    n_pairs = len(common.read_esnli(tiny_data, "train")) - 1
    with pytest.raises(common.UsageError, match=f"--train-size 50: only {n_pairs} highlighted"):
        common.load_uimer_task("nli", tiny_data, "50", 0, tok, 64)
    data = common.load_uimer_task("nli", tiny_data, "50", 0, tok, 64, allow_smaller=True)
    assert len(data["train"]) == n_pairs
    assert data["shortfall"] == {"train": {"asked": 50, "available": n_pairs}}
    with pytest.raises(common.UsageError, match="--dev-size 99: the dev set holds"):
        common.load_uimer_task("nli", tiny_data, "3", 0, tok, 64, dev_size=99)


def test_missing_classes_are_named_and_recorded_in_shortfall(tiny_data):
    """A class of the label list absent from the training pool is short by all n (its count is 0)."""
    d = tiny_data / "snips" / "train"
    keep = [i for i, y in enumerate((d / "label").read_text().splitlines()) if y != "RateBook"]
    import shutil
    world = tiny_data.parent / "no-ratebook"
    shutil.copytree(tiny_data, world, dirs_exist_ok=True)
    for f in ("seq.in", "seq.out", "label"):
        lines = (d / f).read_text().splitlines()
        (world / "snips" / "train" / f).write_text("".join(lines[i] + "\n" for i in keep))
    tok = common.load_tokenizer(None)
    with pytest.raises(common.UsageError, match="none of 'RateBook'"):
        common.load_uimer_task("ic", world, "1", 0, tok, 64)
    data = common.load_uimer_task("ic", world, "1", 0, tok, 64, allow_smaller=True)
    assert data["shortfall"]["train"]["per_class"] == {"RateBook": 0}
    assert len(data["train"]) == 6


# ---------------------------------------------------------------------------------------------- rationales
def test_ic_dictionary_hand_checked():
    words = "add step to me to the 50 clasicos playlist".split()
    rationale = common.ic_rationale(words, "AddToPlaylist")
    assert [w for w, r in zip(words, rationale, strict=True) if r] == ["add", "playlist"]
    words = "book a table at a restaurant".split()
    assert common.ic_rationale(words, "BookRestaurant") == [1, 0, 0, 0, 0, 1]
    assert common.ic_rationale(words, "RateBook") == [1, 0, 0, 0, 0, 0]  # the gold intent's list only


@pytest.mark.parametrize("sentence,marked", [
    ("rate the current essay 2 out of 6", {"rate", "essay", "out", "of"}),
    ("add this song to my jazz playlist", {"add", "song", "to", "my", "playlist"}),
    ("what is the weather in london", {"what", "is", "the", "weather", "in"}),
    ("find a restaurant here", {"restaurant", "here"}),  # regex 28 with a real word boundary
    ("book a table for two", {"book", "table", "for"}),
    ("hello there", set()),
])
def test_sf_regexes_hand_checked(sentence, marked):
    words = sentence.split()
    assert {w for w, r in zip(words, common.sf_rationale(words), strict=True) if r} == marked
    # every occurrence of a captured word is a rationale (as the original)
    for w, r in zip(words, common.sf_rationale(words), strict=True):
        assert r == (w in marked)


def test_sf_regexes_match_the_notes_file():
    notes = ROOT / "tests" / "fixtures" / "regexes_sf.json"
    shipped = json.loads(notes.read_text())
    assert len(shipped) == len(common.SF_REGEXES) == 28
    assert shipped[:27] == common.SF_REGEXES[:27]
    assert shipped[27].replace("\x08", "\\b") == common.SF_REGEXES[27]  # the one deliberate fix


def test_wordpiece_alignment_against_word_by_word_tokenisation():
    tok = common.load_tokenizer(None)
    words = "add step to me to the 50 clasicos playlist".split()
    mask = [1, 0, 0, 0, 0, 0, 0, 1, 1]
    enc = common.encode_words(tok, words, mask, 50)
    want, first = [0], []  # [CLS]
    for w, m in zip(words, mask, strict=True):
        pieces = tok.tokenize(w)
        first.append(len(want))
        want += [m] * len(pieces)
    want.append(0)  # [SEP]
    assert enc["rationale"] == want and enc["word_index"] == first
    assert len(tok.tokenize("clasicos")) > 1  # the case that matters: a rationale word of several pieces
    pair = common.encode_words(tok, ["a", "dog"], [0, 1], 50, ["it", "runs"], [1, 0])
    assert tok.convert_ids_to_tokens(pair["input_ids"]) == ["[CLS]", "a", "dog", "[SEP]", "it", "runs", "[SEP]"]
    assert pair["rationale"] == [0, 0, 1, 0, 1, 0, 0] and pair["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1]


# ---------------------------------------------------------------------------------------------- readers
def test_readers_on_real_data(real_data):
    dev = common.read_snips(real_data, "dev")
    assert len(dev) == 700 and all(len(e["words"]) == len(e["tags"]) for e in dev)
    tr = common.read_esnli(real_data, "train")
    assert len(tr) == 999
    e = tr[1]  # "A person *on* *a* *horse* *jumps* over a broken down airplane."
    assert [w for w, r in zip(e["premise"], e["premise_rationale"], strict=True) if r] == ["on", "a", "horse", "jumps"]
    assert len(common.read_esnli(real_data, "dev")) == 9842


def test_readers_on_real_slices_of_the_large_datasets():
    """IMDB, ERASER Movie Reviews and MLQE-PE stay outside the repository; tests/fixtures/real_slices holds a few
    dozen of their real rows in the published layout."""
    from conftest import REAL_SLICES
    imdb = common.read_imdb(REAL_SLICES, "test")
    assert len(imdb) == 24 and {e["label"] for e in imdb} == {0, 1} and "<br />" not in "".join(e["text"] for e in imdb)
    movies = common.read_eraser_movies(REAL_SLICES, "val")
    assert len(movies) == 6 and all(len(e["evidence"]) == len(e["words"]) for e in movies)
    assert all(0 < sum(e["evidence"]) < len(e["words"]) for e in movies)


def test_default_data_dir_is_the_shipped_data_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # any working directory
    assert common.resolve_data_dir(None) == ROOT / "data"
    assert common.resolve_data_dir("elsewhere") == Path("elsewhere")
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert common.resolve_data_dir(None) == tmp_path


def test_missing_large_dataset_names_the_fetch_command(tmp_path):
    with pytest.raises(common.UsageError, match=r"python data/fetch.py imdb --to"):
        common.read_imdb(tmp_path, "train")


def test_missing_dataset_message_names_layout(tmp_path):
    with pytest.raises(common.UsageError, match=r"snips/\{train,dev,test\}.*JointBERT"):
        common.read_snips(tmp_path, "train")


def test_esnli_unknown_label_names_file_and_line(tmp_path):
    from conftest import write_tiny_esnli
    write_tiny_esnli(tmp_path)
    p = tmp_path / "esnli" / "esnli_dev.jsonl"
    lines = p.read_text().splitlines()
    lines[3] = json.dumps({"premise": "a", "hypothesis": "b", "label": "maybe"})
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(common.DataError, match=r"esnli_dev.jsonl:4: unknown label"):
        common.read_esnli(tmp_path, "dev")
    p.write_text(p.read_text() + "{not json\n")
    with pytest.raises(common.DataError, match=r"esnli_dev.jsonl:13: malformed JSON"):
        common.read_esnli(tmp_path, "dev")


def test_empty_split_is_an_error(tmp_path):
    from conftest import write_tiny_snips
    write_tiny_snips(tmp_path)
    for f in ("seq.in", "seq.out", "label"):
        (tmp_path / "snips" / "dev" / f).write_text("")
    with pytest.raises(common.DataError, match="no examples"):
        common.read_snips(tmp_path, "dev")


# ---------------------------------------------------------------------------------------------- CRF and metrics
def test_crf_loss_equals_brute_force_enumeration():
    torch.manual_seed(0)
    enc = torch.nn.Module()
    enc.config = type("C", (), {"hidden_size": 4})()
    model = common.TaskModel(enc, "sf", num_labels=3)
    em = torch.randn(1, 4, 3)
    gold = torch.tensor([[2, 0, 1, 1]])
    batch = {"tags": gold, "word_mask": torch.ones(1, 4, dtype=torch.bool)}
    crf = model.crf

    def score(seq):
        s = crf.start_transitions[seq[0]] + em[0, 0, seq[0]]
        for t in range(1, 4):
            s = s + crf.transitions[seq[t - 1], seq[t]] + em[0, t, seq[t]]
        return s + crf.end_transitions[seq[-1]]

    log_Z = torch.logsumexp(torch.stack([score(s) for s in itertools.product(range(3), repeat=4)]), 0)
    want = -(score(gold[0].tolist()) - log_Z)
    assert torch.allclose(model.task_loss(em, batch), want, atol=1e-5)
    best = max(itertools.product(range(3), repeat=4), key=lambda s: score(list(s)).item())
    assert model.predict(em, batch) == [list(best)]


def conll_chunks(tags):
    """An independent conlleval-style chunker: a chunk starts at B-x, or at I-x after a different type / O."""
    chunks, start, typ = set(), None, None
    for i, t in enumerate(list(tags) + ["O"]):
        p, _, ty = t.partition("-")
        if typ is not None and (t == "O" or p == "B" or ty != typ):
            chunks.add((start, i, typ))
            typ = None
        if t != "O" and typ is None:
            start, typ = i, ty
    return chunks


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.lists(st.sampled_from(["O", "B-x", "I-x", "B-y", "I-y"]), min_size=1, max_size=8),
                          st.integers(0, 2**16)), min_size=1, max_size=5))
def test_span_f1_equals_independent_conlleval(pairs):
    gold = [g for g, _ in pairs]
    rng = random.Random(sum(s for _, s in pairs))
    pred = [[rng.choice(["O", "B-x", "I-x", "B-y", "I-y"]) if rng.random() < 0.4 else t for t in g] for g in gold]
    tp = sum(len(conll_chunks(g) & conll_chunks(p)) for g, p in zip(gold, pred, strict=True))
    ng, npred = sum(len(conll_chunks(g)) for g in gold), sum(len(conll_chunks(p)) for p in pred)
    want = 0.0 if tp == 0 else 2 * tp / (ng + npred)
    assert abs(common.span_f1(gold, pred) - want) < 1e-9


def test_span_f1_default_mode_is_conlleval():
    assert common.span_f1([["B-PER", "I-PER"]], [["I-PER", "I-PER"]]) == 1.0  # strict IOB2 would give 0.8


def test_aggregate_uses_sample_std():
    v = [65.0, 70.0, 80.0, 71.0]
    a = common.aggregate(v)
    assert abs(a["std"] - statistics.stdev(v)) < 1e-12 and abs(a["mean"] - statistics.mean(v)) < 1e-12
    assert a["median"] == statistics.median(v)


def test_roc_auc_equals_pair_counting():
    rng = random.Random(0)
    y = [rng.random() < 0.4 for _ in range(50)]
    s = [rng.choice([0.1, 0.2, 0.3, 0.5]) for _ in range(50)]
    pos, neg = [a for a, b in zip(s, y, strict=True) if b], [a for a, b in zip(s, y, strict=True) if not b]
    want = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert abs(common.roc_auc(y, s) - want) < 1e-12
    assert common.roc_auc([1, 1], [0.3, 0.2]) != common.roc_auc([1, 1], [0.3, 0.2])  # nan with one class


# ---------------------------------------------------------------------------------------------- runs
def test_write_json_atomic_never_leaves_half_a_file(tmp_path):
    p = tmp_path / "results.json"
    common.write_json_atomic(p, {"test": 0.5})
    with pytest.raises(TypeError):
        common.write_json_atomic(p, {"test": object()})  # fails half-way through serialising
    assert json.loads(p.read_text()) == {"test": 0.5}
    assert [f.name for f in tmp_path.iterdir()] == ["results.json"]


def test_model_loading_errors_are_usage_errors(tmp_path):
    with pytest.raises(common.UsageError, match="does not exist"):
        common.resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(common.UsageError, match="offline"):
        common.resolve_model_path("bert-base-uncased")
    assert Path(common.resolve_model_path(None), "config.json").is_file()


def test_default_encoder_is_eager_and_double_backward_works_in_eval(tiny_model):
    enc = common.load_encoder(tiny_model).eval()
    assert enc.config._attn_implementation == "eager"
    model = common.TaskModel(enc, "ic", 3).eval()
    batch = common.collate([{"input_ids": [101, 2000, 2001, 102], "token_type_ids": [0] * 4, "rationale": [0] * 4,
                             "index": 0, "label": 1}], 0)
    e = model.embed(batch["input_ids"])
    g, = torch.autograd.grad(model(batch, inputs_embeds=e)[0, 1], e, create_graph=True)
    g.sum().backward()  # raises under SDPA in eval() mode
    assert model.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("task", ["ic", "sf"])
def test_saved_task_model_loads_with_transformers_alone_and_gives_the_same_logits(tiny_model, tmp_path, task):
    """save_task_model -> a standard AutoModelFor{Sequence,Token}Classification folder (no code of this repository)
    -> the same scores, bitwise; load_task_model -> the same scores; an encoder saved in float16 loads as float32."""
    from transformers import AutoModelForSequenceClassification, AutoModelForTokenClassification
    tok = common.load_tokenizer(tiny_model)
    torch.manual_seed(0)
    model = common.TaskModel(common.load_encoder(tiny_model), task, 5).eval()
    ex = [common.encode_words(tok, w.split(), [0] * len(w.split()), 20)
          | {"index": i, "label": 1, "tags": [1] * len(w.split())}
          for i, w in enumerate(["play some music", "book a table for two"])]
    if task == "ic":
        for e in ex:
            e.pop("tags")
    batch = common.collate(ex, tok.pad_token_id)
    with torch.no_grad():
        want = model(batch)
    names = ["a", "b", "c", "d", "e"]
    out = common.save_task_model(tmp_path / "model", model, tok, {"method": "test", "seed": 0}, labels=names)
    assert {"config.json", "model.safetensors", "model_card.md", "task.json"} <= {p.name for p in out.iterdir()}
    auto = AutoModelForTokenClassification if task == "sf" else AutoModelForSequenceClassification
    std = auto.from_pretrained(out, attn_implementation="eager").eval()
    assert std.config.id2label == dict(enumerate(names)) and std.config.label2id == {n: i for i, n in enumerate(names)}
    with torch.no_grad():
        got = std(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  token_type_ids=batch["token_type_ids"]).logits
    if task == "sf":
        got = torch.gather(got, 1, batch["word_index"].unsqueeze(-1).expand(-1, -1, got.size(-1)))
        assert (out / "crf.safetensors").is_file()
    torch.testing.assert_close(got, want, rtol=0, atol=0)  # the head is held exactly (2^-20 I, x 2^20)
    again, meta = common.load_task_model(out)
    with torch.no_grad():
        torch.testing.assert_close(again(batch), want, rtol=0, atol=0)
    assert meta["task"] == task and "seed" in (out / "model_card.md").read_text()
    model.encoder.half().save_pretrained(tmp_path / "fp16")
    assert next(common.load_encoder(str(tmp_path / "fp16")).parameters()).dtype == torch.float32


def test_dev_size_selects_on_the_first_dev_examples_and_keeps_the_test_set_whole(tiny_data):
    tok = common.load_tokenizer(None)
    full = common.load_uimer_task("nli", tiny_data, "6", 0, tok, 64)
    sub = common.load_uimer_task("nli", tiny_data, "6", 0, tok, 64, dev_size=5)
    assert [e["id"] for e in sub["dev"]] == [e["id"] for e in full["dev"]][:5]
    assert len(sub["test"]) == len(full["test"]) == 12


def test_foreach_adamw_equals_the_per_tensor_loop_bitwise():
    """make_optimizer uses AdamW's multi-tensor update for speed; it must give the same parameters, bit for bit, as
    the per-tensor loop (the default on the CPU), with a linear schedule, zero gradients and weight decay."""
    torch.manual_seed(0)
    shapes = [(50, 16), (16, 16), (16,), (3, 16)]
    start = [torch.randn(s) for s in shapes]
    finals = []
    for foreach in (False, True):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        model = torch.nn.Module()
        for i, p in enumerate(params):
            model.register_parameter(f"p{i}", p)
        opt, sched = common.make_optimizer(model, 4e-4, 6, warmup_steps=2, weight_decay=0.01)
        for group in opt.param_groups:
            group["foreach"] = foreach
        g = torch.Generator().manual_seed(1)
        for step in range(6):
            for p in params:
                p.grad = torch.randn(p.shape, generator=g) * (step % 3 != 1)
            opt.step()
            sched.step()
        finals.append([p.detach().clone() for p in params])
    assert all(torch.equal(a, b) for a, b in zip(*finals, strict=True))


def test_your_data_dev_size_draws_a_fixed_subsample_not_the_first_rows():
    """--dev-size / --max-eval-examples on your data: a fixed draw (seed 0) in file order, the same for every seed,
    so a dev file sorted by label does not give a one-class dev set (ERASER Movies: the first 50 are negative)."""
    rows = [{"id": i, "label": "neg" if i < 50 else "pos"} for i in range(100)]
    sub = common.fixed_subsample(rows, 50)
    assert sub == common.fixed_subsample(rows, 50) and len(sub) == 50
    assert [r["id"] for r in sub] == sorted(r["id"] for r in sub)  # file order kept
    assert 15 <= sum(r["label"] == "neg" for r in sub) <= 35  # both classes, not the first 50
    assert common.fixed_subsample(rows, None) == rows == common.fixed_subsample(rows, 100)
    tok = common.load_tokenizer(None)
    data = common.read_rationale_data(FIXTURE_WORDS)
    seeds = [common.load_custom_task(data, None, 6, s, tok, 64, dev_size=5, max_eval_examples=6) for s in (0, 1)]
    want = [e["id"] for e in common.fixed_subsample(data["dev"], 5)]
    assert [e["id"] for e in seeds[0]["dev"]] == [e["id"] for e in seeds[1]["dev"]] == want
    assert [e["id"] for e in seeds[0]["test"]] == [e["id"] for e in common.fixed_subsample(data["test"], 6)]
