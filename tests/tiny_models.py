"""Tiny randomly initialised encoders of several architectures, saved as local Hugging Face folders that
common.load_encoder / common.load_tokenizer read (no network: the tokenizers are the packaged MiniLM's WordPiece or
trained here with the `tokenizers` library on text shipped in this repository).

    make_tiny_model("roberta", tmp_path / "roberta")  -> the folder

bert, distilbert, electra: the MiniLM (bert-base-uncased) WordPiece vocabulary. roberta: a byte-level BPE ("Ġ" marks
a leading space; <s>, </s>, <mask>; one token type). deberta-v2: a SentencePiece-style Unigram ("▁" marks a leading
space; [CLS], [SEP], [MASK]; no token type embeddings). `make_slow_tokenizer_model` saves a BERT whose only tokenizer
is a slow (Python) one, for the fast-tokenizer check."""
from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import common  # noqa: E402

ARCHITECTURES = ("bert", "roberta", "distilbert", "electra", "deberta-v2")


def corpus(n: int = 3000) -> list[str]:
    """Training text for the tiny tokenizers: the first n SNIPS training sentences and the texts of the rationale
    fixtures (all shipped in this repository)."""
    lines = (ROOT / "data" / "snips" / "train" / "seq.in").read_text().splitlines()[:n]
    for f in sorted((ROOT / "tests" / "fixtures" / "rationale_data").glob("jsonl_*/train.jsonl")):
        for row in map(json.loads, f.read_text().splitlines()):
            lines += [row.get("text") or " ".join(row.get("tokens", [])), row.get("text_pair") or ""]
    return [s for s in lines if s.strip()]


def _byte_level_bpe(vocab_size: int):
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus(), vocab_size=vocab_size, min_frequency=2, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    model = json.loads(bpe._tokenizer.to_str())["model"]
    return RobertaTokenizer(vocab=model["vocab"], merges=[tuple(m) for m in model["merges"]])


def _unigram(vocab_size: int):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import DebertaV2Tokenizer
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(corpus(), trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], unk_token="[UNK]",
        show_progress=False))
    vocab = [(piece, score) for piece, score in json.loads(tok.to_str())["model"]["vocab"]]
    return DebertaV2Tokenizer(vocab=vocab, do_lower_case=True)


def make_tiny_model(arch: str, path: Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0,
                    max_positions: int = 128) -> Path:
    """A randomly initialised `arch` encoder (hidden 32, 2 layers) and its tokenizer, saved in `path`."""
    import torch
    import transformers as tf
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    size = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden,
                max_position_embeddings=max_positions)
    if arch in ("bert", "distilbert", "electra"):
        base = common.resolve_model_path(None)
        tok = (tf.DistilBertTokenizer if arch == "distilbert" else tf.BertTokenizer).from_pretrained(base)
        if arch == "bert":
            model = tf.BertModel(tf.BertConfig(vocab_size=tok.vocab_size, **size))
        elif arch == "electra":
            model = tf.ElectraModel(tf.ElectraConfig(vocab_size=tok.vocab_size, embedding_size=hidden // 2, **size))
        else:
            model = tf.DistilBertModel(tf.DistilBertConfig(
                vocab_size=tok.vocab_size, dim=hidden, n_layers=layers, n_heads=heads, hidden_dim=2 * hidden,
                max_position_embeddings=max_positions))
    elif arch == "roberta":
        tok = _byte_level_bpe(800)
        model = tf.RobertaModel(tf.RobertaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, type_vocab_size=1,
                                                 **{**size, "max_position_embeddings": max_positions + 2}))
    elif arch == "deberta-v2":
        tok = _unigram(800)
        model = tf.DebertaV2Model(tf.DebertaV2Config(vocab_size=len(tok), pad_token_id=tok.pad_token_id, **size))
    else:
        raise ValueError(f"unknown architecture {arch!r}; one of {ARCHITECTURES}")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_slow_tokenizer_model(path: Path, hidden: int = 32) -> Path:
    """A tiny BERT whose tokenizer is the slow (Python) BertTokenizerLegacy: vocab.txt, no tokenizer.json."""
    from transformers import BertConfig, BertModel
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = BertTokenizerLegacy(vocab_file=str(Path(common.resolve_model_path(None)) / "vocab.txt"))
    tok.save_pretrained(path)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=2 * hidden)).save_pretrained(path)
    return path
