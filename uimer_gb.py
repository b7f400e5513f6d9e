"""UIMER-GB: gradient-based saliency as the interpretation method that guides training.

Paper: Chen, Jiang, Tu, "Using Interpretation Methods for Model Enhancement", EMNLP 2023, arXiv 2404.02068
(Sec. 3.1, Eqs. 1-3; Table 2). Interpretation methods: Ghaeini et al. 2019 ("Saliency learning", NAACL) and
Huang et al. 2021 ("Exploring distantly-labeled rationales in neural network models", ACL).
Documentation: docs/uimer_gb.md (equations -> code, deviations, results); docs/uimer.md (what the UIMER files share).

    python uimer_gb.py --task ic --shots 1 --variant ghaeini                     # Ghaeini et al. 2019
    python uimer_gb.py --task sf --shots 3 --variant huang --gate --order        # Huang et al. 2021 +Gate+Order
    python uimer_gb.py --task nli --train-size 100 --variant huang               # Huang +Base
    python uimer_gb.py --task nli --train-size 500 --variant huang --device cuda # --device auto|cpu|cuda
    python uimer_gb.py --task ic --shots 1 --variant ghaeini --seeds 55,1988,12333,42   # mean +- std

Equation index
    Eq. 1  L = L_task + alpha * L_int          -> train_one_seed() (the line marked `# Eq. (1)`)
    Eq. 2  a = f(dJ/dx), per position of the embedding output e = inputs_embeds
                                               -> input_gradients() (dJ/de), attribution() (f)
           Ghaeini: J = gold score, f = sum over embedding dims;  Huang: J = task loss, f = L1 norm, normalised
    Eq. 3  L_int = D(a, g)                     -> ghaeini_loss(), huang_loss() (+Base, +Gate, +Order, +Gate+Order)
           Gate: G ~ Bernoulli(1 - sum_{i in R} s_i) -> gate_sample()
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import torch

import common

METHOD, SCRIPT = "UIMER-GB", "uimer_gb"
VARIANTS = ["ghaeini", "huang"]

# Tables 6-8 of the paper have no UIMER-GB rows. GB therefore takes the optimisation settings of the setting's
# UIMER-IM "+Uniform (warm.)" row, which are also those of the BaseModel runs (`uimer_im.py ... --alpha 0`), so
# GB differs from the BaseModel by L_int only. alpha = 1 is the original code's default (--grad_weight,
# --feng_weight). bz = batch size; patience = early stop (epochs). docs/uimer_gb.md, deviation 4.
PAPER_TABLE = """
task set  lr      bz  epochs alpha patience
ic   1    4e-4    24  70     1     7
ic   3    2e-4    24  70     1     7
ic   10   2e-4    24  70     1     7
ic   30   1e-4    24  50     1     7
ic   full 1e-5    24  30     1     5
sf   1    2e-4    24  70     1     7
sf   3    1e-4    24  70     1     7
sf   10   1e-3    24  70     1     7
sf   30   8e-5    24  50     1     10
sf   full 1e-5    24  20     1     5
nli  100  3e-4    32  50     1     8
nli  500  8e-5    8   50     1     30
"""


def paper_defaults(task: str, setting: str) -> dict:
    """The row of PAPER_TABLE for this setting (a setting the table does not list takes the nearest smaller one)."""
    rows = common.paper_table(PAPER_TABLE)
    setting = common.listed_setting(rows, task, setting)
    for r in rows:
        if r[:2] == [task, setting]:
            return {"lr": float(r[2]), "batch_size": int(r[3]), "max_epochs": int(r[4]), "alpha": float(r[5]),
                    "patience": int(r[6])}
    raise common.UsageError(f"no defaults for task={task} setting={setting}; give --lr, --alpha, ... explicitly")


@dataclass
class Args(common.UimerArgs):
    """The shared UIMER flags (task, data, optimisation, run: common.UimerArgs) and the method's."""
    # --- the method
    variant: str = common.field("ghaeini", help="saliency method: Ghaeini et al. 2019 or Huang et al. 2021",
                                choices=VARIANTS)
    gate: bool = common.field(False, help="huang: +Gate (skip L_int with probability sum_{i in R} s_i)")
    order: bool = common.field(False, help="huang: +Order (each rationale at least the most salient non-rationale)")
    guard: float = common.field(1e-6, help="huang +Order: max_{j in N} s_j is clamped to at least this",
                                domain=common.Float(0, lo_open=True))
    wrt: str = common.field("inputs-embeds", help="differentiate w.r.t. the word-embedding output (paper, original) "
                            "or the embedding-module output after position/type embeddings and LayerNorm (for BERT "
                            "the ghaeini sum over dims is identically 0 w.r.t. inputs-embeds: docs/uimer_gb.md, "
                            "deviation 3)", choices=["inputs-embeds", "embedding-output"])
    warmup_epochs: int = common.field(0, help="epochs of L_task alone before L_int (original GB: 0)", domain=common.COUNT)


def parse_args(argv=None) -> Args:
    return common.parse_dataclass(Args, argv, prog=f"{SCRIPT}.py", description=__doc__.split("\n")[0])


def resolve(args: Args) -> Args:
    """Fill unset values from PAPER_TABLE; check every flag."""
    if args.variant != "huang" and (args.gate or args.order):
        raise common.UsageError("--gate and --order are variants of --variant huang; add --variant huang")
    row = paper_defaults(args.task, common.uimer_setting(args))
    for k in ("lr", "batch_size", "max_epochs", "alpha", "patience"):
        if getattr(args, k) is None:
            setattr(args, k, row[k])
    return common.resolve_uimer(args)


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: saliency (Eq. 2)
# ------------------------------------------------------------------------------------------------------
def gold_score(model: common.TaskModel, scores: torch.Tensor, batch: dict) -> torch.Tensor:
    """Ghaeini's f(x, y), per example (B,): the gold-class logit (ic, nli); for sf the probability of the gold tag
    sequence, exp(CRF log-likelihood), as the original code."""
    if model.task == "sf":
        return model.gold_log_likelihood(scores, batch).exp()
    return scores.gather(1, batch["label"].unsqueeze(1)).squeeze(1)


def input_gradients(model: common.TaskModel, batch: dict, variant: str, create_graph: bool,
                    wrt: str = "inputs-embeds"):
    """dJ/de for every position of every example, from ONE forward pass: e = the word-embedding output
    (`inputs_embeds`; or with wrt='embedding-output' the embedding module's output, hidden state 0), J = the gold
    score (ghaeini) or the task loss -log p(y|x) (huang). Examples do not interact, so the gradient of sum_b J_b
    w.r.t. e (B, L, H) holds each example's own gradient. create_graph=True keeps the graph so that a loss on the
    gradient trains the model (double backward). Returns (dJ/de, scores)."""
    if wrt == "inputs-embeds":
        e = model.embed(batch["input_ids"])
        scores = model(batch, inputs_embeds=e)
    else:
        scores, out = model(batch, output_hidden_states=True)
        e = out.hidden_states[0]
    J = gold_score(model, scores, batch) if variant == "ghaeini" else -model.gold_log_likelihood(scores, batch)
    (dJ_de,) = torch.autograd.grad(J.sum(), e, create_graph=create_graph)
    return dJ_de, scores


def attribution(dJ_de: torch.Tensor, variant: str, content: torch.Tensor) -> torch.Tensor:
    """Eq. 2, a = f(dJ/de), (B, L). ghaeini: signed sum over embedding dims; huang: L1 norm over embedding dims,
    normalised to shares s_i over the sentence's content wordpieces (0 at [CLS]/[SEP]/pad)."""
    if variant == "ghaeini":
        return dJ_de.sum(-1)
    g = dJ_de.abs().sum(-1) * content
    return g / g.sum(-1, keepdim=True).clamp_min(1e-30)


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: L_int (Eq. 3). R, N: (B, L) 0/1 masks of rationale / non-rationale content wordpieces.
# ------------------------------------------------------------------------------------------------------
def ghaeini_loss(a: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
    """Ghaeini et al. 2019: sum_{i in R} max(0, -a_i) per example (B,): rationale saliency must not be negative."""
    return (torch.relu(-a) * R).sum(-1)


def gate_sample(s: torch.Tensor, R: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """+Gate: G ~ Bernoulli(1 - p), p = sum_{i in R} s_i (the salience already on the rationale), per example (B,).
    A sample, not a function of the model: no gradient flows through it."""
    p = (s * R).sum(-1).detach()
    u = torch.rand(p.shape, generator=gen).to(p.device)  # drawn on the CPU: the same draws on every device
    return (u < 1 - p).to(s.dtype)


def huang_loss(s: torch.Tensor, R: torch.Tensor, N: torch.Tensor, gate: bool, order: bool,
               G: torch.Tensor | None, guard: float) -> torch.Tensor:
    """Huang et al. 2021, per example (B,), K = |R|:
        +Base        sum_{i in R} (s_i - 1/K)^2
        +Order       sum_{i in R} min(s_i / max_{j in N} s_j - 1, 0)^2     (max clamped to >= guard)
        +Gate        G * sum_{i in R} (s_i - 1)^2
        +Gate+Order  G * (the +Order term)"""
    if order:
        max_N = (s * N).amax(-1, keepdim=True).clamp_min(guard)  # s >= 0, so masked entries (0) never win
        per_token = torch.clamp(s / max_N - 1, max=0) ** 2
    elif gate:
        per_token = (s - 1) ** 2
    else:
        K = R.sum(-1, keepdim=True).clamp_min(1).to(s.dtype)
        per_token = (s - 1 / K) ** 2
    L = (per_token * R).sum(-1)
    return G * L if gate else L


def gb_loss(model: common.TaskModel, batch: dict, args: Args, special_ids: torch.Tensor, gen: torch.Generator,
            create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(L_task, mean L_int over the batch's examples with a rationale and a non-rationale, their number), from one
    forward pass whose input gradient is kept in the graph."""
    dJ_de, scores = input_gradients(model, batch, args.variant, create_graph, args.wrt)
    L_task = model.task_loss(scores, batch)
    content = common.content_mask(batch, special_ids)
    R, N = batch["rationale"] * content, (1 - batch["rationale"]) * content
    a = attribution(dJ_de, args.variant, content)  # Eq. (2)
    has = (R.sum(-1) > 0) & (N.sum(-1) > 0)  # examples without a rationale, or with nothing but, are skipped
    if args.variant == "ghaeini":
        L = ghaeini_loss(a, R)  # Eq. (3)
    else:
        G = gate_sample(a, R, gen) if args.gate else None
        L = huang_loss(a, R, N, args.gate, args.order, G, args.guard)  # Eq. (3)
    n = int(has.sum())
    return L_task, (L[has].mean() if n else torch.zeros((), device=L.device)), n


# ------------------------------------------------------------------------------------------------------
# Training: one seed end to end
# ------------------------------------------------------------------------------------------------------
def run_name(args: Args, seed: int) -> str:
    variant = args.variant + ("" if args.variant == "ghaeini" else
                              "-" + ("-".join(n for n, on in (("gate", args.gate), ("order", args.order)) if on)
                                     or "base"))
    variant += ("-embout" if args.wrt == "embedding-output" else "") + \
        (f"-warm{args.warmup_epochs}" if args.warmup_epochs else "")
    return common.uimer_run_name(args, variant, seed)


def train_one_seed(args: Args, seed: int, tokenizer) -> dict:
    ctx = common.uimer_start(args, seed, SCRIPT, run_name(args, seed), tokenizer)
    data, model, log = ctx["data"], ctx["model"], ctx["log"]
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=args.device)
    gen = torch.Generator().manual_seed(seed)  # the Gate's Bernoulli draws
    steps_per_epoch = math.ceil(len(data["train"]) / args.batch_size)
    opt, sched = common.make_optimizer(model, args.lr, steps_per_epoch * args.max_epochs)
    stopper, step = common.EarlyStopping(args.patience), 0
    for epoch in range(args.max_epochs):
        model.train()
        sums = {"L_task": 0.0, "L_int": 0.0}
        for batch in common.progress(common.batches(data["train"], args.batch_size, ctx["pad"], device=args.device,
                                                    shuffle_seed=seed * 1000 + epoch), desc=f"epoch {epoch}"):
            int_on = args.alpha > 0 and epoch >= args.warmup_epochs
            if int_on:
                L_task, L_int, n_int = gb_loss(model, batch, args, special_ids, gen)
            else:
                L_task, L_int, n_int = model.task_loss(model(batch), batch), torch.zeros((), device=args.device), 0
            # Eq. (1): L = L_task + alpha * L_int
            L = L_task + args.alpha * L_int if int_on else L_task
            losses = common.uimer_step(L, L_task, L_int, model, opt, sched, sums, f"epoch {epoch}, step {step}")
            log(epoch=epoch, step=step, **losses, int_on=int_on, n_int=n_int)
            step += 1
        common.uimer_epoch_end(ctx, stopper, epoch, sums, steps_per_epoch, int_on=int_on)
        if stopper.stop:
            break
    return common.uimer_finish(ctx, args, stopper, seed, METHOD, tokenizer, common.n_with_both(data["train"]),
                               epochs_run=epoch + 1, steps=step)


def main(args: Args) -> dict:
    args = resolve(args)
    tokenizer = common.load_tokenizer(args.model)
    return common.uimer_seeds(args, SCRIPT, run_name(args, 0).rsplit("-", 1)[0],
                              lambda seed: train_one_seed(args, seed, tokenizer))


def cli(argv=None) -> int:
    return common.run_cli(main, parse_args, argv)


if __name__ == "__main__":
    sys.exit(cli())
