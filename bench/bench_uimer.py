"""Step time of every UIMER method relative to a plain fine-tuning step (--alpha 0) on the same batch, measured in
one run.

    python bench/bench_uimer.py [--only im,gbdm] [--data-dir DIR] [--model NAME_OR_PATH] [--repeats 5] [--device auto]

On the first training batch of the paper's 1-shot IC and 3-shot SF settings (seed 55), one optimisation step
(forward, backward, AdamW) of L_task alone against:
- im: L_task + alpha L_int for each IM strategy (one extra batched forward of the n * 2k replaced sentences);
- gbdm: every GB variant (a forward, a first-order input gradient kept in the graph, a double backward), the DM model
  phase (one forward with hidden states, the frozen extractor's probes, Eq. 7) and the DM extractor phase (a no-grad
  clean forward, the probes, a masked forward, backward to the gates only).
Steps are interleaved so that load on the machine hits all alike; medians of `repeats` timings after one warm-up.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import uimer_dm as dm  # noqa: E402
import uimer_gb as gb  # noqa: E402
import uimer_im as im  # noqa: E402

GB_VARIANTS = {"GB ghaeini": [], "GB ghaeini (embedding-output)": ["--wrt", "embedding-output"],
               "GB huang +Base": ["--variant", "huang"], "GB huang +Gate": ["--variant", "huang", "--gate"],
               "GB huang +Order": ["--variant", "huang", "--order"],
               "GB huang +Gate+Order": ["--variant", "huang", "--gate", "--order"]}


def interleaved_medians(steps: dict, repeats: int, device: str) -> dict[str, float]:
    """Median seconds per step function; the steps run in turn within each repeat (so load on the machine hits
    all alike), after one warm-up repeat that is not counted."""
    times = {name: [] for name in steps}
    for r in range(repeats + 1):
        for name, fn in steps.items():
            common.synchronize(device)
            t0 = time.perf_counter()
            fn()
            common.synchronize(device)
            if r:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def im_step(model, opt, batch, sets, args, with_int: bool) -> None:
    L = model.task_loss(model(batch), batch)
    if with_int:
        L_int, _ = im.im_loss(model, batch, sets, args)
        L = L + args.alpha * L_int
    opt.zero_grad()
    L.backward()
    opt.step()


def im_table(a, device: str, data_dir: Path, tok) -> None:
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
            t = interleaved_medians({"plain": lambda: im_step(model, opt, batch, sets, args, False),
                                     "IM": lambda: im_step(model, opt, batch, sets, args, True)}, a.repeats, device)
            plain, method = t["plain"], t["IM"]
            rows = sum(2 * args.num_samples for i in batch["index"].tolist() if i in sets)
            print(f"{task}-{shots}shot  {strategy:8s} {len(batch['index']):3d} {rows:7d} {plain:8.3f} {method:8.3f} "
                  f"{method / plain:6.2f}  plain 1 ({len(batch['index'])} rows); IM 2 ({len(batch['index'])} + {rows} rows)")


def gb_dm_table(a, device: str, data_dir: Path, tok) -> None:
    special = torch.tensor(sorted(set(tok.all_special_ids)), device=device)
    print(f"{'setting':9s} {'method':32s} {'B':>3s} {'step s':>8s} {'ratio':>6s}")
    for task, shots in (("ic", "1"), ("sf", "3")):
        data = common.load_uimer_task(task, data_dir, shots, 55, tok, 50, max_eval_examples=1)
        batch = common.batches(data["train"], 24, tok.pad_token_id, device=device)[0]
        torch.manual_seed(0)
        model = common.TaskModel(common.load_encoder(a.model), task, len(data["labels"])).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        gen = torch.Generator().manual_seed(0)
        dm_args = dm.resolve(dm.parse_args(["--task", task, "--shots", shots, "--device", device]))
        n_states = model.encoder.config.num_hidden_layers + 2
        ext = dm.Extractor(model.encoder.config.hidden_size, n_states,
                           model.embed(torch.tensor([tok.mask_token_id], device=device))[0]).to(device).requires_grad_(False)
        phi = [q for n, q in ext.named_parameters() if n != "lagrange"]
        opt_phi = torch.optim.AdamW(phi, lr=1e-4)
        opt_lambda = torch.optim.RMSprop([ext.lagrange], lr=0.3, maximize=True)
        content = common.content_mask(batch, special)

        def plain():
            L = model.task_loss(model(batch), batch)
            opt.zero_grad()
            L.backward()
            opt.step()

        def gb_step(args):
            def step():
                L_task, L_int, _ = gb.gb_loss(model, batch, args, special, gen)
                L = L_task + args.alpha * L_int
                opt.zero_grad()
                L.backward()
                opt.step()
            return step

        def dm_model_step():
            model.train()
            L_task, L_int, _ = dm.dm_loss(model, ext, batch, dm_args, special, gen)
            L = L_task + dm_args.alpha * L_int
            opt.zero_grad()
            L.backward()
            opt.step()

        def dm_extractor_step():
            model.eval()
            model.requires_grad_(False)
            ext.requires_grad_(True)
            loss, _, _ = dm.extractor_loss(model, ext, batch, content, n_states - 1, gen, dm_args)
            opt_phi.zero_grad()
            opt_lambda.zero_grad()
            loss.backward()
            opt_phi.step()
            opt_lambda.step()
            model.requires_grad_(True)
            ext.requires_grad_(False)
            model.train()

        steps = {"plain fine-tuning": plain}
        for name, extra in GB_VARIANTS.items():
            steps[name] = gb_step(gb.resolve(gb.parse_args(["--task", task, "--shots", shots, *extra, "--device", device])))
        steps["DM model step (Eq. 1, Eq. 7)"] = dm_model_step
        steps["DM extractor step (L_phi^DM)"] = dm_extractor_step
        times = interleaved_medians(steps, a.repeats, device)
        for name, t in times.items():
            print(f"{task}-{shots}shot {name:32s} {len(batch['index']):3d} {t:8.3f} {t / times['plain fine-tuning']:6.2f}")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--only", default="im,gbdm", help="comma-separated tables: im, gbdm")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--model", default=common.DEFAULT_MODEL)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="auto", help=common.DEVICE_HELP)
    a = p.parse_args()
    tables = {"im": im_table, "gbdm": gb_dm_table}
    names = [n.strip() for n in a.only.split(",")]
    if not set(names) <= set(tables):
        p.error(f"--only takes {', '.join(tables)}, got {a.only!r}")
    try:  # a missing dataset or model, or no CUDA: one line, exit 2
        device = str(common.resolve_device(a.device))
        data_dir = common.resolve_data_dir(a.data_dir)
        tok = common.load_tokenizer(a.model)
        print(f"torch threads: {torch.get_num_threads()}  model: {a.model}  repeats: {a.repeats}  device: {device}")
        for name in names:
            tables[name](a, device, data_dir, tok)
    except common.UsageError as e:
        p.error(str(e))


if __name__ == "__main__":
    main()
