"""Any Hugging Face encoder (common.py, devices and models): the --model convention (offline by default, a hub name
downloaded to the cache unless HF_HUB_OFFLINE=1; never a network call here), the fast-tokenizer / mask-token / token
type checks, and on tiny random BERT, RoBERTa (byte-level BPE trained here), DistilBERT, ELECTRA and DeBERTa-v2
(Unigram trained here) models saved as local folders: word -> wordpiece alignment against the tokenizer's own call
and against decoding, truncation, and a forward pass of common.TaskModel (classification and CRF tagging)."""
import pytest
import torch
from test_rationale_data import FIX, check_alignment, norm
from tiny_models import ARCHITECTURES, make_slow_tokenizer_model, make_tiny_model

import common


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("tiny-archs")
    return {arch: str(make_tiny_model(arch, root / arch)) for arch in ARCHITECTURES}


@pytest.fixture(scope="module")
def data() -> dict:
    return {name: common.read_rationale_data(str(FIX / name))
            for name in ("jsonl_words", "jsonl_pairs", "jsonl_spans", "jsonl_tagging", "eraser_query")}


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_tiny_models_load_with_a_fast_tokenizer_and_a_mask_token(tiny, arch):
    tok = common.load_tokenizer(tiny[arch])
    enc = common.load_encoder(tiny[arch])
    assert tok.is_fast and tok.truncation_side == "right"
    assert common.check_mask_token(tok, tiny[arch], "masking", "choose another option") == tok.mask_token_id
    assert enc.config.model_type == arch
    assert common.takes_token_type_ids(enc) == (arch != "distilbert")
    assert common.check_max_len(tiny[arch], 64) == 64


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("name", ["jsonl_words", "jsonl_pairs", "jsonl_spans", "eraser_query"])
def test_alignment_on_every_architecture_marks_exactly_each_words_wordpieces(tiny, data, arch, name):
    tok = common.load_tokenizer(tiny[arch])
    ex = data[name]["train"]
    for max_len in (128, 12):
        enc, counts = common.align_rationales(tok, ex, max_len, batch_size=7)
        check_alignment(tok, ex, enc, max_len)
        pair = data[name]["pair"]
        for e, x in zip(ex, enc, strict=True):  # the tokenizer's own call on the same text
            ref = tok(" ".join(e["words"]), " ".join(e["pair_words"]) if pair else None, truncation=True,
                      max_length=max_len)
            assert x["input_ids"] == ref["input_ids"]
            assert x["token_type_ids"] == ref.get("token_type_ids", [0] * len(ref["input_ids"]))
            assert len(x["input_ids"]) <= max_len
        if max_len == 12:
            assert counts["n_truncated"] > 0
    if arch == "roberta":  # byte-level BPE: words after the first carry the "Ġ" prefix, and none is [UNK]
        toks = tok.convert_ids_to_tokens(enc[0]["input_ids"])
        assert any(t.startswith("Ġ") for t in toks) and tok.unk_token not in toks
        assert "token_type_ids" not in tok.model_input_names


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_rationale_word_marks_exactly_its_wordpieces_in_a_handmade_pair(tiny, arch):
    tok = common.load_tokenizer(tiny[arch])
    ex = [common._example("x", "the waiter was unbelievably friendly".split(), "y", "f:1",
                          "staff members smiled".split(), [0, 0, 0, 1, 0], [0, 1, 0])]
    (x,), _ = common.align_rationales(tok, ex, 64)
    toks = tok.convert_ids_to_tokens(x["input_ids"])
    marked = [t for t, r in zip(toks, x["rationale"], strict=True) if r]
    pair_start = x["word_of_piece"].index(5)
    assert norm(tok.convert_tokens_to_string([t for t, w in zip(toks, x["word_of_piece"], strict=True) if w == 3])) \
        == "unbelievably"
    assert norm(tok.convert_tokens_to_string(marked[:sum(x["rationale"][:pair_start])])) == "unbelievably"
    assert norm(tok.convert_tokens_to_string(marked[sum(x["rationale"][:pair_start]):])) == "members"
    assert all(r == 0 for r, s in zip(x["rationale"], x["special_tokens_mask"], strict=True) if s)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_task_model_forward_and_backward_on_every_architecture(tiny, data, arch):
    tok = common.load_tokenizer(tiny[arch])
    torch.manual_seed(0)
    for name, task in (("jsonl_pairs", "nli"), ("jsonl_tagging", "sf")):
        d = data[name]
        enc, _ = common.encode_rationale_split(tok, d["train"][:6], d["labels"], 32)
        model = common.TaskModel(common.load_encoder(tiny[arch]), task, len(d["labels"]))
        batch = common.collate(enc, tok.pad_token_id)
        if not common.takes_token_type_ids(model.encoder):
            batch.pop("token_type_ids")
        scores = model(batch)
        expect = (6, batch["tags"].shape[1], len(d["labels"])) if task == "sf" else (6, len(d["labels"]))
        assert scores.shape == expect and torch.isfinite(scores).all()
        loss = model.task_loss(scores, batch)
        loss.backward()
        assert torch.isfinite(loss) and model.encoder.get_input_embeddings().weight.grad.abs().sum() > 0
        if task == "sf":
            assert all(len(p) == int(m.sum()) for p, m in zip(model.predict(scores, batch), batch["word_mask"],
                                                               strict=True))


def test_the_forward_pass_gives_the_same_scores_with_or_without_zero_token_types_where_a_model_has_one_type(tiny, data):
    """RoBERTa has a single token type (zeros, which align_rationales gives it); passing them changes nothing."""
    tok = common.load_tokenizer(tiny["roberta"])
    d = data["jsonl_pairs"]
    enc, _ = common.encode_rationale_split(tok, d["train"][:4], d["labels"], 32)
    model = common.TaskModel(common.load_encoder(tiny["roberta"]), "nli", 3).eval()
    batch = common.collate(enc, tok.pad_token_id)
    with torch.inference_mode():
        a = model(batch)
        b = model({k: v for k, v in batch.items() if k != "token_type_ids"})
    assert torch.equal(a, b)


def test_a_slow_tokenizer_stops_with_one_line_saying_a_fast_one_is_needed(tmp_path, data, capsys):
    path = str(make_slow_tokenizer_model(tmp_path / "slow"))
    rc = common.run_cli(lambda _: common.load_tokenizer(path), lambda argv: None, [])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "slow (Python) tokenizer" in err and "--model" in err
    slow = common.load_tokenizer(path, need_fast=False)
    assert not slow.is_fast
    with pytest.raises(common.UsageError, match="needs a fast one"):
        common.align_rationales(slow, data["jsonl_words"]["train"], 32)


def test_a_missing_mask_token_names_what_needs_it_and_the_other_option(tiny):
    tok = common.load_tokenizer(tiny["bert"])
    tok.mask_token = None
    assert tok.mask_token_id is None
    with pytest.raises(common.UsageError, match=r"has no mask token .*which UIMER-DM's masking needs; choose "
                                                r"--replacement zero"):
        common.check_mask_token(tok, tiny["bert"], "UIMER-DM's masking", "choose --replacement zero")


def test_model_names_follow_the_hugging_face_convention_without_touching_the_network(monkeypatch, tmp_path):
    import huggingface_hub

    def no_network(*a, **k):
        raise AssertionError("the network was asked")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    assert not common.hub_offline()
    assert common.resolve_model_path("someorg/some-encoder") == "someorg/some-encoder"  # from_pretrained downloads
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert common.hub_offline()
    with pytest.raises(common.UsageError, match=r"HF_HUB_OFFLINE=1 forbids downloading; unset HF_HUB_OFFLINE.*"
                                                r"`hf download someorg/some-encoder`"):
        common.resolve_model_path("someorg/some-encoder")
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda name, local_files_only: (
        str(tmp_path / "cached") if local_files_only else no_network()))
    assert common.resolve_model_path("someorg/some-encoder") == str(tmp_path / "cached")
    assert common.resolve_model_path(None) == common.resolve_model_path(common.DEFAULT_MODEL)  # packaged, offline
    with pytest.raises(common.UsageError, match="does not exist"):
        common.resolve_model_path("./no/such/model")


def test_max_len_of_a_roberta_model_leaves_room_for_its_position_offset(tmp_path):
    """RoBERTa numbers positions from pad_token_id + 1: --max-len max_position_embeddings would index past the
    table, so check_max_len refuses it and accepts the largest length a forward pass takes (tried here)."""
    import torch
    from transformers import AutoModel
    path = make_tiny_model("roberta", tmp_path / "roberta")
    cfg = AutoModel.from_pretrained(path).config
    usable = cfg.max_position_embeddings - cfg.pad_token_id - 1
    with pytest.raises(common.UsageError, match=f"position limit of {usable}"):
        common.check_max_len(str(path), usable + 1)
    assert common.check_max_len(str(path), usable) == usable
    enc = common.load_encoder(str(path))
    enc(input_ids=torch.full((1, usable), 5), attention_mask=torch.ones(1, usable, dtype=torch.long))
