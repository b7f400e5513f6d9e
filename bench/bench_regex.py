"""Step time of REGEX relative to plain fine-tuning on the same batch, measured in one run, per IG step count.

    python bench/bench_regex.py [--data-dir DIR] [--model NAME_OR_PATH] [--repeats 5] [--ig-steps 1,5,10,20]
                                [--device auto]

One optimisation step (forward, backward, AdamW) of L (Eq. 1) versus one of L_CE alone, on one SST-2 training batch
(batch size 16, seed 1, the script's defaults otherwise). Plain and method steps are interleaved so machine load hits
both alike; medians of `repeats` after one warm-up. Rows: each term alone (IGR: double backward; VAT: K power
iterations; EGT: an IG saliency in eval mode over B * m rows plus one masked forward), then full REGEX per IG step
count m. The EGT cost grows with m (one batched forward + backward of B * m interpolation points).
"""
import dataclasses
import sys
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from timing import interleaved_medians, run_bench  # noqa: E402

import common  # noqa: E402
import regex_robust as rx  # noqa: E402


def train_step(clf, opt, batch, args, egt_on: bool) -> None:
    L, _ = rx.train_step(clf, batch, args, egt_on)
    opt.zero_grad()
    L.backward()
    opt.step()


def build_parser():
    p = tb.OneLineParser(prog="bench_regex.py", description=tb.first_paragraph(__doc__))
    tb.add(p, "--data-dir", domain=tb.EXISTING_DIR, help="folder holding sst2/ (default: the data/ folder of the "
           "repository)")
    tb.add(p, "--model", default=common.DEFAULT_MODEL, domain=tb.TEXT, help=common.MODEL_HELP)
    tb.add(p, "--repeats", default=5, domain=tb.Int(1, 1000), help="timed repeats per row (medians)")
    tb.add(p, "--ig-steps", default=[1, 5, 10, 20], domain=tb.IntList(1, 1000), help="IG step counts m, one "
           "EGT row and one REGEX row each (default: 1,5,10,20)")
    tb.add(p, "--batch-size", default=16, domain=tb.Int(1, 4096), help="training batch size")
    tb.add(p, "--device", default="auto", domain=tb.DEVICE, help=common.DEVICE_HELP)
    return p


def parse_args(argv=None):
    """The flags checked, and REGEX's own arguments resolved (and checked by regex_robust.py): nothing loaded."""
    a = build_parser().parse_args(argv)
    common.resolve_model_path(a.model)
    a.args = rx.resolve(rx.parse_args(["--model", a.model, "--device", a.device] +
                                      (["--data-dir", str(a.data_dir)] if a.data_dir else [])))
    return a


def main(a) -> None:
    args = a.args
    tok = common.load_tokenizer(a.model)
    common.set_seed(1)
    train = rx.load_split("sst2", "train", args, tok, 2000, 1)
    batch = common.batches(train, a.batch_size, tok.pad_token_id, shuffle_seed=1, device=args.device)[0]
    model = rx.new_model(args, a.model).train()
    clf = rx.as_classifier(model, tok)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-7)
    plain = dataclasses.replace(args, igr=False, vat=False, egt=False)
    full = dataclasses.replace(args, igr=True, vat=True, egt=True)  # every term, whatever the defaults
    rows = [("IGR only", dataclasses.replace(plain, igr=True), False),
            ("VAT only", dataclasses.replace(plain, vat=True), False)]
    for m in a.ig_steps:
        rows.append((f"EGT only, m={m}", dataclasses.replace(plain, egt=True, ig_steps=m), True))
        rows.append((f"REGEX, m={m}", dataclasses.replace(full, ig_steps=m), True))
    B, L = batch["input_ids"].shape
    print(f"torch threads: {torch.get_num_threads()}  model: {a.model}  batch: {B} x {L} wordpieces  "
          f"repeats: {a.repeats} (medians)")
    print(f"{'variant':22s} {'plain s':>8s} {'method s':>9s} {'ratio':>6s}")
    for name, margs, egt_on in rows:
        t = interleaved_medians({"plain": partial(train_step, clf, opt, batch, plain, False),
                                 "method": partial(train_step, clf, opt, batch, margs, egt_on)}, a.repeats, args.device)
        print(f"{name:22s} {t['plain']:8.3f} {t['method']:9.3f} {t['method'] / t['plain']:6.2f}", flush=True)


def cli(argv=None) -> int:
    return run_bench(main, parse_args, "bench_regex.py", argv, errors=(common.UsageError,))


if __name__ == "__main__":
    sys.exit(cli())
