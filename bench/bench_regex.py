"""Step time of REGEX relative to plain fine-tuning on the same batch, measured in one run, per IG step count.

    python bench/bench_regex.py [--data-dir DIR] [--model NAME_OR_PATH] [--repeats 5] [--ig-steps 1,5,10,20]
                                [--device auto]

One optimisation step (forward, backward, AdamW) of L (Eq. 1) versus one of L_CE alone, on one SST-2 training batch
(batch size 16, seed 1, the script's defaults otherwise). Plain and method steps are interleaved so machine load hits
both alike; medians of `repeats` after one warm-up. Rows: each term alone (IGR: double backward; VAT: K power
iterations; EGT: an IG saliency in eval mode over B * m rows plus one masked forward), then full REGEX per IG step
count m. The EGT cost grows with m (one batched forward + backward of B * m interpolation points).
"""
import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import regex_robust as rx  # noqa: E402


def one_step(clf, opt, batch, args, egt_on: bool) -> float:
    common.synchronize(args.device)
    t0 = time.perf_counter()
    L, _ = rx.train_step(clf, batch, args, egt_on)
    opt.zero_grad()
    L.backward()
    opt.step()
    common.synchronize(args.device)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default=common.DEFAULT_MODEL)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ig-steps", default="1,5,10,20")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help=common.DEVICE_HELP)
    a = p.parse_args()
    args = rx.resolve(rx.parse_args(["--model", a.model, "--device", a.device] +
                                    (["--data-dir", a.data_dir] if a.data_dir else [])))
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
    for m in [int(s) for s in a.ig_steps.split(",")]:
        rows.append((f"EGT only, m={m}", dataclasses.replace(plain, egt=True, ig_steps=m), True))
        rows.append((f"REGEX, m={m}", dataclasses.replace(full, ig_steps=m), True))
    B, L = batch["input_ids"].shape
    print(f"torch threads: {torch.get_num_threads()}  model: {a.model}  batch: {B} x {L} wordpieces  "
          f"repeats: {a.repeats} (medians)")
    print(f"{'variant':22s} {'plain s':>8s} {'method s':>9s} {'ratio':>6s}")
    for name, margs, egt_on in rows:
        tp, tm = [], []
        for r in range(a.repeats + 1):
            x, y = one_step(clf, opt, batch, plain, False), one_step(clf, opt, batch, margs, egt_on)
            if r:
                tp.append(x)
                tm.append(y)
        p_, m_ = statistics.median(tp), statistics.median(tm)
        print(f"{name:22s} {p_:8.3f} {m_:9.3f} {m_ / p_:6.2f}", flush=True)


if __name__ == "__main__":
    main()
