"""Shared fixtures: a tiny random BERT with the real (MiniLM = bert-base-uncased) vocabulary, tiny datasets
written to a temp dir, the real small datasets shipped in data/, and real slices of the large ones
(tests/fixtures/real_slices/). Nothing here reads outside the repository."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# Tests never touch the network: a Hugging Face hub name resolves from the local cache or fails (subprocesses
# inherit this).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import common  # noqa: E402

REAL_DATA = ROOT / "data"  # SNIPS, SST-2 (stsa.binary) and e-SNLI, shipped with the repository
FIXTURES = ROOT / "tests" / "fixtures"
REAL_SLICES = FIXTURES / "real_slices"  # a few dozen real rows of IMDB, ERASER Movie Reviews, MLQE-PE


def make_tiny_bert(path: Path, hidden: int = 32, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A randomly initialised BERT (2 layers, hidden 32) saved with the packaged MiniLM tokenizer."""
    import torch
    from transformers import BertConfig, BertModel
    tok = common.load_tokenizer(None)
    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                     num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=512)
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return str(make_tiny_bert(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def real_data() -> Path:
    assert (REAL_DATA / "snips").is_dir(), f"the shipped datasets are expected at {REAL_DATA}"
    return REAL_DATA


SNIPS_TINY = [  # words, tags, intent (real SNIPS sentences, shortened)
    ("add step to me to the 50 clasicos playlist",
     "O B-entity_name I-entity_name I-entity_name O O B-playlist I-playlist O", "AddToPlaylist"),
    ("add this song to my jazz playlist", "O O B-music_item O B-playlist_owner B-playlist O", "AddToPlaylist"),
    ("book a table for two at a pub", "O O O O B-party_size_number O O B-restaurant_type", "BookRestaurant"),
    ("book a reservation at a restaurant in paris", "O O O O O B-restaurant_type O B-city", "BookRestaurant"),
    ("what is the weather in london", "O O O O O B-city", "GetWeather"),
    ("will it be cold tomorrow in rome", "O O O B-condition_temperature B-timeRange O B-city", "GetWeather"),
    ("play some music by queen", "O O O O B-artist", "PlayMusic"),
    ("play the song yesterday on spotify", "O O B-music_item B-track O B-service", "PlayMusic"),
    ("rate this book five stars", "O B-object_select B-object_type B-rating_value B-rating_unit", "RateBook"),
    ("give the current essay 2 out of 6", "O O B-object_select B-object_type B-rating_value O O B-best_rating",
     "RateBook"),
    ("find the tv show called friends", "O O B-object_type I-object_type O B-object_name", "SearchCreativeWork"),
    ("show me the album called thriller", "O O O B-object_type O B-object_name", "SearchCreativeWork"),
    ("find movie schedules at the nearest cinema",
     "O B-movie_type I-movie_type O O B-spatial_relation B-object_location_type", "SearchScreeningEvent"),
    ("what films are showing tonight", "O B-movie_type O O B-timeRange", "SearchScreeningEvent"),
]


def write_tiny_snips(root: Path, copies: int = 1) -> Path:
    d = root / "snips"
    for split in ("train", "dev", "test"):
        (d / split).mkdir(parents=True, exist_ok=True)
        rows = SNIPS_TINY * copies
        (d / split / "seq.in").write_text("".join(w + "\n" for w, _, _ in rows))
        (d / split / "seq.out").write_text("".join(t + "\n" for _, t, _ in rows))
        (d / split / "label").write_text("".join(y + "\n" for _, _, y in rows))
    intents = sorted({y for _, _, y in SNIPS_TINY})
    (d / "intent_label.txt").write_text("\n".join(["UNK"] + intents) + "\n")
    tags = sorted({t for _, ts, _ in SNIPS_TINY for t in ts.split()})
    (d / "slot_label.txt").write_text("\n".join(["PAD", "UNK"] + tags) + "\n")
    return root


def write_tiny_esnli(root: Path, n: int = 12) -> Path:
    import json
    d = root / "esnli"
    (d / "train_sample_highlights").mkdir(parents=True, exist_ok=True)
    base = [("children smiling and waving at camera", "the kids are *frowning*", "contradiction",
             "children *smiling* and waving at camera"),
            ("a man plays a guitar on stage", "a man is *playing* *music*", "entailment",
             "a man *plays* a *guitar* on stage"),
            ("two dogs run in a field", "the dogs are *chasing* a *ball*", "neutral", "two dogs run in a field")]
    train, evalr = [], []
    for i in range(n):
        p, hm, y, pm = base[i % 3]
        h = hm.replace("*", "")
        train.append({"label": y, "premise": p, "hypothesis": h, "premise_marked": pm, "hypothesis_marked": hm})
        evalr.append({"premise": p + " .", "hypothesis": h + " .", "label": y})
    (d / "train_sample_highlights" / "esnli_train_first1000_highlights.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in train))
    for split in ("dev", "test"):
        (d / f"esnli_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evalr))
    return root


@pytest.fixture()
def tiny_data(tmp_path) -> Path:
    """SNIPS (14 sentences, 2 per intent, in every split) and e-SNLI (12 pairs) in a temp data dir."""
    write_tiny_snips(tmp_path)
    write_tiny_esnli(tmp_path)
    return tmp_path


EXPLANATION_FIELDS = {"id", "index", "words", "pair_start", "pieces", "gold", "pred", "p_pred", "correct", "rationale",
                      "skipped", "scores", "plausibility"}


def check_explanations(run: Path, own: str | None, n: int, has_rationale: bool) -> list[dict]:
    """explanations.jsonl of a finished run holds the documented fields (docs/report.md) for its first n test
    examples, one per-word score per explainer (`own`, when the method has one, and integrated gradients), and
    results.json the matching plausibility entry."""
    import json
    import math
    rows = [json.loads(line) for line in (run / "explanations.jsonl").read_text().splitlines()]
    assert len(rows) == n and [r["index"] for r in rows] == list(range(n))
    names = {"ig"} | ({own} if own else set())
    for r in rows:
        assert set(r) == EXPLANATION_FIELDS, set(r) ^ EXPLANATION_FIELDS
        assert set(r["scores"]) == names and 0.0 <= r["p_pred"] <= 1.0
        words = r["words"] if isinstance(r["words"], list) else None
        assert words and len(r["pieces"]) == len(words)
        for s in r["scores"].values():
            assert len(s) == len(words) and all(x is None or math.isfinite(x) for x in s)
        assert (r["rationale"] is not None) == has_rationale
    plaus = json.loads((run / "results.json").read_text())["plausibility"]
    assert plaus["own"] == (own or "ig") and set(plaus["explainers"]) == names and plaus["n_explained"] == n
    return rows
