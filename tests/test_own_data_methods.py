"""Your own data through every UIMER method: SNIPS IC written out in the rationale format (docs/own_data.md) with
the keyword rationales trains exactly as `--task ic`; the readers' formats run end to end."""
import json

import pytest

import common
import uimer_dm as dm
import uimer_gb as gb
import uimer_im as im

METHODS = {"im": (im, ["--strategy", "uniform"]), "gb": (gb, ["--variant", "huang", "--order"]),
           "dm": (dm, ["--warmup-epochs", "1", "--extractor-epochs", "1"])}


def snips_as_jsonl(data_dir, out):
    """SNIPS IC in the rationale format: text = the words joined by spaces, label = the intent, rationale = the
    Table 5 keyword dictionary's 0/1 per word; labels.txt in intent_label.txt's order; ids as the SNIPS reader's."""
    out.mkdir()
    d = data_dir / "snips"
    labels = [y for y in (d / "intent_label.txt").read_text().splitlines() if y and y != "UNK"]
    (out / "labels.txt").write_text("".join(y + "\n" for y in labels))
    for split in ("train", "dev", "test"):
        rows = common.read_snips(data_dir, split)
        (out / f"{split}.jsonl").write_text("".join(json.dumps({
            "id": r["id"], "text": " ".join(r["words"]), "label": r["intent"],
            "rationale": common.ic_rationale(r["words"], r["intent"])}) + "\n" for r in rows))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("method", list(METHODS))
def test_snips_ic_written_in_the_format_trains_exactly_as_task_ic(method, tiny_model, tiny_data, tmp_path):
    mod, extra = METHODS[method]
    folder = snips_as_jsonl(tiny_data, tmp_path / "snips-jsonl")
    common_argv = ["--shots", "1", "--max-len", "50", "--max-epochs", "2", "--model", tiny_model, *extra]
    a = mod.main(mod.parse_args(["--task", "ic", "--data-dir", str(tiny_data), "--out-dir", str(tmp_path / "a"),
                                 *common_argv]))
    b = mod.main(mod.parse_args(["--task", "custom", "--data", str(folder), "--out-dir", str(tmp_path / "b"),
                                 *common_argv]))
    assert b["test"] == a["test"] and b["dev"] == a["dev"] and b["best_epoch"] == a["best_epoch"]
    pa = [json.loads(x) for x in (tmp_path / "a").rglob("predictions.jsonl").__next__().read_text().splitlines()]
    pb = [json.loads(x) for x in (tmp_path / "b").rglob("predictions.jsonl").__next__().read_text().splitlines()]
    assert pa == pb  # the same predictions and probabilities, example by example
    assert b["alignment"]["train"]["n_examples"] == a["n_train"]
    assert b["rationale_stats"] == a["rationale_stats"]


FIXTURES = common.Path(__file__).resolve().parent / "fixtures" / "rationale_data"
FORMATS = {"jsonl_words": [], "jsonl_spans": [], "jsonl_pairs": [], "jsonl_tagging": [], "eraser_docs": [],
           "eraser_query": [], "hatexplain": [], "hf_disk": ["--data-format", "hf"]}
QUICK = {"im": ["--strategy", "uniform", "--max-epochs", "2"], "gb": ["--variant", "huang", "--order", "--max-epochs",
                                                                         "2"],
         "dm": ["--warmup-epochs", "1", "--extractor-epochs", "1", "--max-epochs", "1"]}


def run_custom(method, folder, model, out, *extra):
    mod = METHODS[method][0]
    r = mod.main(mod.parse_args(["--task", "custom", "--data", str(folder), "--model", model, "--out-dir", str(out),
                                 "--max-len", "64", "--explain-examples", "4", *QUICK[method], *extra]))
    run = common.Path(r["run_dir"])
    assert 0.0 <= r["test"] <= 1.0 and (run / "results.json").is_file() and (run / "explanations.jsonl").is_file()
    counts = r["alignment"]["train"]
    assert counts["n_examples"] == r["n_train"] > 0
    assert set(counts) >= {"n_without_rationale", "n_empty_rationale", "n_full_rationale", "n_rationale_cut"}
    return r


@pytest.mark.slow
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("method", list(METHODS))
def test_every_uimer_method_on_every_format(method, fmt, tiny_model, tmp_path):
    r = run_custom(method, FIXTURES / fmt, tiny_model, tmp_path, *FORMATS[fmt])
    assert r["metric"] == ("f1" if fmt == "jsonl_tagging" else "accuracy")
    if method != "dm":  # DM's expected L_int needs the extractor; the IM/GB terms see the rationales directly
        assert r["n_with_both_sets"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_uimer_method_on_three_architectures(method, arch, tmp_path_factory):
    from tiny_models import make_tiny_model
    model = str(make_tiny_model(arch, tmp_path_factory.mktemp(arch)))
    for fmt in ("jsonl_words", "jsonl_tagging"):
        run_custom(method, FIXTURES / fmt, model, tmp_path_factory.mktemp(f"{fmt}-out"))
