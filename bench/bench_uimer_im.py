"""Step time of UIMER-IM relative to plain fine-tuning (--alpha 0) on the same batch, measured in one run.

    python bench/bench_uimer_im.py [--data-dir DIR] [--model NAME_OR_PATH] [--repeats 5] [--device auto]

For each strategy: one optimisation step (forward, backward, AdamW) of L_task + alpha L_int versus one of L_task
alone, on the first training batch of the paper's 1-shot IC and 3-shot SF settings (seed 55). Prints the median
of `repeats` timings, the ratio, and the forward passes / rows scored per step (the IM term costs one extra
batched forward of n * 2k rows).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import uimer_im as im  # noqa: E402


def one_step(model, opt, batch, sets, args, with_int: bool) -> float:
    common.synchronize(args.device)
    t0 = time.perf_counter()
    scores = model(batch)
    L = model.task_loss(scores, batch)
    if with_int:
        L_int, _ = im.im_loss(model, batch, sets, args)
        L = L + args.alpha * L_int
    opt.zero_grad()
    L.backward()
    opt.step()
    common.synchronize(args.device)
    return time.perf_counter() - t0


def step_times(model, opt, batch, sets, args, repeats: int) -> tuple[float, float]:
    """Plain and IM steps interleaved (so load on the machine hits both alike); medians after one warm-up."""
    plain, method = [], []
    for r in range(repeats + 1):
        tp, tm = one_step(model, opt, batch, sets, args, False), one_step(model, opt, batch, sets, args, True)
        if r:
            plain.append(tp)
            method.append(tm)
    return statistics.median(plain), statistics.median(method)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default=common.DEFAULT_MODEL)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto", help=common.DEVICE_HELP)
    a = p.parse_args()
    device = str(common.resolve_device(a.device))
    data_dir = common.resolve_data_dir(a.data_dir)
    tok = common.load_tokenizer(a.model)
    print(f"torch threads: {torch.get_num_threads()}  model: {a.model}")
    print(f"{'setting':10s} {'strategy':8s} {'B':>3s} {'IM rows':>7s} {'plain s':>8s} {'IM s':>8s} {'ratio':>6s}  forwards/step")
    for task, shots in (("ic", "1"), ("sf", "3")):
        data = common.load_uimer_task(task, data_dir, shots, 55, tok, 50, max_eval_examples=1)
        batch = common.batches(data["train"], 24, tok.pad_token_id, device=device)[0]
        info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
        for strategy in ("mask", "uniform", "prior"):
            args = im.resolve(im.parse_args(["--task", task, "--shots", shots, "--strategy", strategy, "--device", device]))
            sets = im.build_replacement_sets(data["train"], args, torch.Generator().manual_seed(0), info)
            torch.manual_seed(0)
            model = common.TaskModel(common.load_encoder(a.model), task, len(data["labels"])).to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
            plain, method = step_times(model, opt, batch, sets, args, a.repeats)
            rows = sum(2 * args.num_samples for i in batch["index"].tolist() if i in sets)
            print(f"{task}-{shots}shot  {strategy:8s} {len(batch['index']):3d} {rows:7d} {plain:8.3f} {method:8.3f} "
                  f"{method / plain:6.2f}  plain 1 ({len(batch['index'])} rows); IM 2 ({len(batch['index'])} + {rows} rows)")


if __name__ == "__main__":
    main()
