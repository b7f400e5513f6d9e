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
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from timing import interleaved_medians, run_bench  # noqa: E402

import common  # noqa: E402
import uimer_dm as dm  # noqa: E402
import uimer_gb as gb  # noqa: E402
import uimer_im as im  # noqa: E402

GB_VARIANTS = {"GB ghaeini": [], "GB ghaeini (embedding-output)": ["--wrt", "embedding-output"],
               "GB huang +Base": ["--variant", "huang"], "GB huang +Gate": ["--variant", "huang", "--gate"],
               "GB huang +Order": ["--variant", "huang", "--order"],
               "GB huang +Gate+Order": ["--variant", "huang", "--gate", "--order"]}


def im_step(model, opt, batch, sets, args, with_int: bool) -> None:
    L = model.task_loss(model(batch), batch)
    if with_int:
        L_int, _ = im.im_loss(model, batch, sets, epsilon=args.epsilon, lower_bound=args.lower_bound)
        L = L + args.alpha * L_int
    opt.zero_grad()
    L.backward()
    opt.step()


def im_table(a, device: str, data_dir: Path, tok) -> None:
    print(f"{'setting':10s} {'strategy':8s} {'B':>3s} {'IM rows':>7s} {'plain s':>8s} {'IM s':>8s} {'ratio':>6s}  "
          "forwards/step")
    for task, shots in (("ic", "1"), ("sf", "3")):
        data = common.load_uimer_task(task, data_dir, shots, 55, tok, 50, max_eval_examples=1)
        batch = common.batches(data["train"], 24, tok.pad_token_id, device=device)[0]
        info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
        for strategy in ("mask", "uniform", "prior"):
            im_row(a, device, task, shots, strategy, data, batch, info)


def im_row(a, device: str, task: str, shots: str, strategy: str, data: dict, batch: dict, info: dict) -> None:
    args = im.resolve(im.parse_args(["--task", task, "--shots", shots, "--strategy", strategy, "--device", device]))
    sets = im.build_replacement_sets(data["train"], torch.Generator().manual_seed(0), info, strategy=args.strategy,
                                     num_samples=args.num_samples, replace_cap=args.replace_cap,
                                     max_rationale_fraction=args.max_rationale_fraction)
    torch.manual_seed(0)
    model = common.TaskModel(common.load_encoder(a.model), task, len(data["labels"])).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    t = interleaved_medians({"plain": lambda: im_step(model, opt, batch, sets, args, False),
                             "IM": lambda: im_step(model, opt, batch, sets, args, True)}, a.repeats, device)
    plain, method = t["plain"], t["IM"]
    rows = sum(2 * args.num_samples for i in batch["index"].tolist() if i in sets)
    B = len(batch["index"])
    print(f"{task}-{shots}shot  {strategy:8s} {B:3d} {rows:7d} {plain:8.3f} {method:8.3f} {method / plain:6.2f}  "
          f"plain 1 ({B} rows); IM 2 ({B} + {rows} rows)")


def gb_dm_table(a, device: str, data_dir: Path, tok) -> None:
    special = torch.tensor(sorted(set(tok.all_special_ids)), device=device)
    print(f"{'setting':9s} {'method':32s} {'B':>3s} {'step s':>8s} {'ratio':>6s}")
    for task, shots in (("ic", "1"), ("sf", "3")):
        data = common.load_uimer_task(task, data_dir, shots, 55, tok, 50, max_eval_examples=1)
        batch = common.batches(data["train"], 24, tok.pad_token_id, device=device)[0]
        times = interleaved_medians(gb_dm_steps(a, device, task, shots, data, batch, tok, special), a.repeats, device)
        for name, t in times.items():
            print(f"{task}-{shots}shot {name:32s} {len(batch['index']):3d} {t:8.3f} "
                  f"{t / times['plain fine-tuning']:6.2f}")


def gb_dm_steps(a, device: str, task: str, shots: str, data: dict, batch: dict, tok, special) -> dict:
    """The step functions of one setting: plain, every GB variant, the DM model and extractor steps."""
    torch.manual_seed(0)
    model = common.TaskModel(common.load_encoder(a.model), task, len(data["labels"])).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    gen = torch.Generator().manual_seed(0)
    dm_args = dm.resolve(dm.parse_args(["--task", task, "--shots", shots, "--device", device]))
    n_states = model.encoder.config.num_hidden_layers + 2
    placeholder = model.embed(torch.tensor([tok.mask_token_id], device=device))[0]
    ext = dm.Extractor(model.encoder.config.hidden_size, n_states, placeholder).to(device).requires_grad_(False)
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
            L_task, L_int, _ = gb.gb_loss(model, batch, special, gen, variant=args.variant, gate=args.gate,
                                          order=args.order, guard=args.guard, wrt=args.wrt)
            L = L_task + args.alpha * L_int
            opt.zero_grad()
            L.backward()
            opt.step()
        return step

    def dm_model_step():
        model.train()
        L_task, L_int, _ = dm.dm_loss(model, ext, batch, special, gen, guard=dm_args.guard)
        L = L_task + dm_args.alpha * L_int
        opt.zero_grad()
        L.backward()
        opt.step()

    def dm_extractor_step():
        model.eval()
        model.requires_grad_(False)
        ext.requires_grad_(True)
        loss, _, _ = dm.extractor_loss(model, ext, batch, content, n_states - 1, gen, kl_margin=dm_args.kl_margin,
                                       l0=dm_args.l0)
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
        steps[name] = gb_step(gb.resolve(gb.parse_args(["--task", task, "--shots", shots, *extra, "--device",
                                                        device])))
    steps["DM model step (Eq. 1, Eq. 7)"] = dm_model_step
    steps["DM extractor step (L_phi^DM)"] = dm_extractor_step
    return steps


TABLES = {"im": im_table, "gbdm": gb_dm_table}


def build_parser():
    p = tb.OneLineParser(prog="bench_uimer.py", description=tb.first_paragraph(__doc__))
    tb.add(p, "--only", default=list(TABLES), domain=tb.Names(list(TABLES)), help="the tables to print "
           "(default: im,gbdm)")
    tb.add(p, "--data-dir", domain=tb.EXISTING_DIR, help="folder holding snips/ (default: the data/ folder of the "
           "repository)")
    tb.add(p, "--model", default=common.DEFAULT_MODEL, domain=tb.TEXT, help=common.MODEL_HELP)
    tb.add(p, "--repeats", default=5, domain=tb.Int(1, 1000), help="timed repeats per step (medians)")
    tb.add(p, "--device", default="auto", domain=tb.DEVICE, help=common.DEVICE_HELP)
    return p


def parse_args(argv=None):
    """The flags, each checked against its domain, and the model and device resolved: nothing is loaded yet."""
    a = build_parser().parse_args(argv)
    common.resolve_model_path(a.model)
    a.device = str(common.resolve_device(a.device))
    a.data_dir = common.resolve_data_dir(str(a.data_dir) if a.data_dir else None)
    return a


def main(a) -> None:
    tok = common.load_tokenizer(a.model)
    print(f"torch threads: {torch.get_num_threads()}  model: {a.model}  repeats: {a.repeats}  device: {a.device}")
    for name in a.only:
        TABLES[name](a, a.device, a.data_dir, tok)


def cli(argv=None) -> int:
    return run_bench(main, parse_args, "bench_uimer.py", argv, errors=(common.UsageError,))


if __name__ == "__main__":
    sys.exit(cli())
