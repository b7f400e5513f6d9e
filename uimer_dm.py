"""UIMER-DM: a DiffMask extractor as the interpretation method that guides training.

Paper: Chen, Jiang, Tu, "Using Interpretation Methods for Model Enhancement", EMNLP 2023, arXiv 2404.02068
(Sec. 3.3, Eqs. 1, 6, 7; Sec. 3.3.3 schedule, Sec. 5.2; Tables 2-4, 6-8). Interpretation method: De Cao et al.
2020, "How do decisions emerge across layers in neural models? Interpretation with differentiable masking".
Documentation: docs/uimer_dm.md (equations -> code, deviations, results); docs/uimer.md (what the UIMER files share).
common.py sections used: CLI and validation; runs and results; devices and models; batching; training utilities;
explanations; readers; rationale datasets; UIMER.

    python uimer_dm.py --task ic --shots 3 --schedule one-pass                      # paper defaults (Table 6)
    python uimer_dm.py --task sf --shots 10 --schedule multi-round --rounds 10
    python uimer_dm.py --task nli --train-size 100 --schedule one-pass
    python uimer_dm.py --task nli --train-size 500 --schedule one-pass --device cuda    # --device auto|cpu|cuda
    python uimer_dm.py --task ic --shots 1 --schedule one-pass --alpha 0 --analysis  # "BaseModel +DM" (Table 4)
    python uimer_dm.py --task ic --shots 1 --schedule multi-round --seeds 55,1988,12333,42   # mean +- std

Equation index
    Eq. 1  L = L_task + alpha * L_int          -> model_epochs() (the line marked `# Eq. (1)`)
    Eq. 6  a = Ext_phi(Enc(x)): hard-concrete gates from probes on [h_0; h_k]
                                               -> Extractor.gate_logits(), hard_concrete(), gates()
           L_phi^DM = lambda (KL - m) + expected L0, lambda by gradient ascent
                                               -> extractor_loss(), train_extractor(); KL: divergence()
    Eq. 7  L_int = sum_{i:g_i=1} min(a_i / max_{j:g_j=0} a_j - 1, 0)^2   -> eq7_loss()
    Sec. 3.3.3 one-pass / multi-round schedule -> train_one_seed()
    Table 4 (accuracy split by a_R > a_N), Table 3 (per-example attributions) -> table4()
    Your own training loop (a Hugging Face classifier)  -> fit_extractor(), interpretation_loss() (docs/own_data.md)
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

import common

METHOD, SCRIPT = "UIMER-DM", "uimer_dm"
SCHEDULES = ["one-pass", "multi-round"]
TEMPERATURE, STRETCH_L, STRETCH_R = 0.2, -0.2, 1.0  # DiffMask's hard-concrete gates

# Tables 6-8 of the paper (App. 8.3), UIMER-DM rows. warm_or_rounds: for one-pass the warm-up ("-" in the paper =
# `converge`: the task trained to early stopping first, Sec. 3.3.3), for multi-round the number of rounds (after a
# `converge` warm-up). epochs: model epochs of the one-pass phase, or per round. lr_ext = the extractor's lr.
# (*) OCR-damaged in our copy (two rows merged): sf-full read as alpha 20, warm-up 5, 50 rounds (or 30), patience 5.
PAPER_TABLE = """
task set  schedule    lr     lr_ext  bz  epochs alpha   warm_or_rounds patience
ic   1    one-pass    2e-4   5e-4    24  70     0.8     converge  7
ic   1    multi-round 2e-4   1e-3    24  1      0.8     50        7
ic   3    one-pass    4e-4   1e-3    24  70     0.5     converge  7
ic   3    multi-round 2e-4   5e-4    24  50     0.8     50        7
ic   10   one-pass    4e-4   1e-3    24  70     0.5     converge  7
ic   10   multi-round 4e-4   1e-3    24  1      0.5     50        7
ic   30   one-pass    2e-4   1e-5    24  25     0.1     converge  7
ic   30   multi-round 2e-4   1e-5    24  25     0.1     15        7
ic   full one-pass    1e-5   1e-3    24  30     0.1     converge  5
ic   full multi-round 1e-5   1e-3    24  30     0.1     30        5
sf   1    one-pass    2e-4   1e-3    24  70     0.5     5         7
sf   1    multi-round 2e-4   1e-3    24  70     0.5     10        7
sf   3    one-pass    1e-4   3e-3    24  70     0.1     converge  7
sf   3    multi-round 1e-4   3e-3    24  70     2       3         3
sf   10   one-pass    1e-4   1e-4    24  70     1       1         7
sf   10   multi-round 1e-5   1e-4    24  10     1       10        7
sf   30   one-pass    1e-4   1e-4    24  20     0.08    converge  10
sf   30   multi-round 1e-4   1e-4    24  10     0.08    20        10
sf   full one-pass    1e-5   1e-3    24  20     20(*)   5(*)      5(*)
sf   full multi-round 1e-5   1e-3    24  20     20(*)   50(*)     5(*)
nli  100  one-pass    3e-4   1e-3    24  30     0.01    converge  8
nli  100  multi-round 3e-4   1e-3    24  30     0.01    10        8
nli  500  one-pass    8e-5   1e-3    16  30     0.01    converge  8
nli  500  multi-round 8e-5   1e-3    16  30     0.01    3         8
"""


def paper_defaults(task: str, setting: str, schedule: str) -> dict:
    """The row of PAPER_TABLE for this setting (a setting the tables do not list takes the nearest smaller one),
    plus `warmup_max_epochs` and `warmup_patience` = the one-pass row's epochs and patience (the budget and
    stopping rule of a `converge` warm-up: the task model "trained*" is the same for both schedules). {} when the
    tables have no row (the flags' own check, or the missing-value check, then speaks)."""
    rows = common.paper_table(PAPER_TABLE)
    setting = common.listed_setting(rows, task, setting)
    by = {r[2]: r for r in rows if r[:2] == [task, setting]}
    if schedule not in by:
        return {}
    r = by[schedule]
    out = {"lr": float(r[3]), "lr_extractor": float(r[4]), "batch_size": int(r[5]), "max_epochs": int(r[6]),
           "alpha": float(r[7]), "patience": int(r[9]), "warmup_max_epochs": int(by["one-pass"][6]),
           "warmup_patience": int(by["one-pass"][9])}
    out.update({"warmup": r[8], "rounds": 1} if schedule == "one-pass" else {"warmup": "converge", "rounds": int(r[8])})
    return out


@dataclass
class Args:
    """Every flag of uimer_dm.py (`-h` shows each with its domain). Unset (None): filled from PAPER_TABLE for the
    setting and schedule, or from the task."""
    # --- task and data
    task: str = common.field("ic", help="ic (SNIPS intents), sf (SNIPS slots, CRF), nli (e-SNLI), or custom (your "
                             "own data with human rationales: --data; docs/own_data.md)",
                             choices=["ic", "sf", "nli", "custom"])
    shots: str | None = common.field(None, help="ic/sf/custom: the n-shot training subset (n per intent, slot type or "
                                     "class), or 'full' (default: 1; custom: full)", domain=common.SHOTS)
    train_size: int | None = common.field(None, help="nli: number of training pairs (paper: 100 or 500; default "
                                          "100); custom: N examples drawn with the seed instead of --shots",
                                          domain=common.POSITIVE)
    nli_sample: str = common.field("first", help="nli training pairs: the first N rows (original) or N drawn with "
                                   "the seed", choices=["first", "random"])
    allow_smaller: bool = common.field(False, help="if a pool holds fewer examples than asked (--shots 5 where an "
                                       "intent has 2, --train-size, --dev-size, --max-eval-examples), run on what "
                                       "exists instead of stopping with an error (recorded in results.json as "
                                       "`shortfall`)")
    max_len: int | None = common.field(None, help="max wordpieces (default: 50 SNIPS, 128 e-SNLI)",
                                       domain=common.MAX_LEN)
    dev_size: int | None = common.field(None, help="select the model on N dev examples only (paper tasks: the "
                                        "first N; your data: N drawn with a fixed seed, as files are often sorted by "
                                        "label; the same for every run; the test set stays whole); default: all",
                                        domain=common.POSITIVE)
    max_eval_examples: int | None = common.field(None, help="evaluate on N dev and test examples only (the "
                                                 "first N; your data: N drawn with a fixed seed; quick checks; the "
                                                 "paper uses all)", domain=common.POSITIVE)
    data_dir: str | None = common.field(None, help="folder holding snips/ and esnli/ (else $DATA_DIR, else the "
                                        "data/ folder beside common.py)", domain=common.EXISTING_DIR)
    # --- your own data (--task custom; docs/own_data.md)
    data: str | None = common.field(None, help="--task custom: your rationale dataset, a folder (docs/own_data.md) or, "
                                    "with --data-format hf, a Hugging Face dataset name", domain=common.DATASET)
    data_format: str = common.field("auto", help="format of --data: auto (recognised from the folder's files), jsonl, "
                                    "eraser, hatexplain or hf (datasets.save_to_disk folder or hub name)",
                                    choices=list(common.DATA_FORMATS))
    text_column: str = common.field("text", help="hf: column of the text (a string, or a list of words)",
                                    domain=common.TEXT)
    pair_column: str | None = common.field(None, help="hf: column of the second text of a sentence pair",
                                           domain=common.TEXT)
    label_column: str = common.field("label", help="hf: column of the class label (string, integer or ClassLabel)",
                                     domain=common.TEXT)
    tags_column: str | None = common.field(None, help="hf token tagging: column of the BIO tags, one per word of the "
                                           "text column (then no label column is read)", domain=common.TEXT)
    rationale_column: str | None = common.field(None, help="hf: column of the text's rationale, 0/1 per word or "
                                                "[start, end] character spans (default: 'rationale' or "
                                                "'rationale_spans' if present)", domain=common.TEXT)
    rationale_pair_column: str | None = common.field(None, help="hf: column of the second text's rationale (default: "
                                                     "'rationale_pair' or 'rationale_pair_spans' if present)",
                                                     domain=common.TEXT)
    eraser_query: str = common.field("auto", help="eraser: the query as the second text (pair), never (drop), or "
                                     "auto: the second text unless every training annotation asks the same query "
                                     "(Movies) or the annotation has two documents (e-SNLI: premise, hypothesis)",
                                     choices=["auto", "pair", "drop"])
    hatexplain_rationale: str = common.field("majority", help="hatexplain: a word is rationale if most of the "
                                             "annotators who gave a rationale marked it (majority) or any did (union, "
                                             "as HateXplain's own plausibility evaluation)",
                                             choices=["majority", "union"])
    # --- optimisation (unset: PAPER_TABLE for the setting and schedule)
    alpha: float | None = common.field(None, help="weight of L_int in Eq. 1 (0 = BaseModel)",
                                       domain=common.Float(0))
    lr: float | None = common.field(None, help="AdamW learning rate", domain=common.Float(0, lo_open=True))
    batch_size: int | None = common.field(None, help="training batch size", domain=common.POSITIVE)
    max_epochs: int | None = common.field(None, help="maximum epochs", domain=common.POSITIVE)
    patience: int | None = common.field(None, help="early stopping: stop after this many epochs without a better "
                                        "dev score (0: after the first such epoch)", domain=common.COUNT)
    dropout: float | None = common.field(None, help="dropout before the classifier (default 0.1; nli 0.0)",
                                         domain=common.PROBABILITY)
    # --- the method
    schedule: str = common.field("one-pass", help="warm-up, extractor, model (one-pass); or warm-up, then --rounds "
                                 "of extractor / model, each frozen while the other trains (Sec. 3.3.3)",
                                 choices=SCHEDULES)
    rounds: int | None = common.field(None, help="multi-round: number of rounds (unset: the paper's table)",
                                      domain=common.POSITIVE)
    warmup: str | None = common.field(None, help="L_task alone first: for --warmup-epochs epochs, or to early "
                                      "stopping (converge); unset: the paper's table", choices=["epochs", "converge"])
    warmup_epochs: int | None = common.field(None, help="with --warmup epochs (implied when given alone)",
                                             domain=common.COUNT)
    warmup_max_epochs: int | None = common.field(None, help="at most this many epochs of a 'converge' warm-up; "
                                                 "default: the one-pass row's epochs", domain=common.POSITIVE)
    warmup_patience: int | None = common.field(None, help="early-stopping patience of a 'converge' warm-up; "
                                               "default: --patience if given, else the one-pass row's patience",
                                               domain=common.COUNT)
    extractor_epochs: int = common.field(10, help="extractor epochs per round (original default and Sec. 5.2: 10)",
                                         domain=common.COUNT)
    lr_extractor: float | None = common.field(None, help="extractor (probes, placeholder) AdamW lr (unset: the "
                                              "paper's table)", domain=common.Float(0, lo_open=True))
    kl_margin: float = common.field(0.1, help="DiffMask constraint KL(p(y|x) || p(y|x_masked)) <= m, per example",
                                    domain=common.Float(0))
    lambda_lr: float = common.field(0.3, help="RMSprop lr of the Lagrange multipliers (gradient ascent; DiffMask)",
                                    domain=common.Float(0, lo_open=True))
    lambda_max: float = common.field(200.0, help="Lagrange multipliers are clamped to [0, this] (DiffMask)",
                                     domain=common.Float(0))
    l0: str = common.field("prob", help="expected-L0 term: the probability P(z != 0) (DiffMask paper) or its log "
                           "(DiffMask/UIMER code)", choices=["prob", "log"])
    guard: float = common.field(0.01, help="Eq. 7: max_{j:g_j=0} a_j is clamped to at least this",
                                domain=common.Float(0, lo_open=True))
    analysis: bool = common.field(False, help="Table 4 on test (accuracy split by a_R > a_N) and per-example "
                                  "attributions (Table 3), with the extractor retrained on the selected model")
    # --- run
    model: str = common.field(common.DEFAULT_MODEL, help=common.MODEL_HELP,
                              domain=common.TEXT)
    seed: int = common.field(55, help="seed of sampling, initialisation, dropout and the method's random draws",
                             domain=common.SEED)
    seeds: str | None = common.field(None, help="comma-separated seeds: run each, report mean +- std",
                                     domain=common.SEEDS_DOMAIN)
    out_dir: str = common.field("runs", help="run directories go to <out-dir>/uimer_dm/<name>/",
                                domain=common.OUT_DIR)
    device: str = common.field("auto", help=common.DEVICE_HELP, domain=common.DEVICE)
    eval_batch_size: int = common.field(128, help="evaluation batch size", domain=common.POSITIVE)
    explain_examples: int = common.field(common.EXPLAIN_EXAMPLES, help=common.EXPLAIN_EXAMPLES_HELP,
                                         domain=common.COUNT)
    explain_own: bool = common.field(True, help="explain with the method's own interpretation too, beside integrated "
                                     "gradients (off: IG alone, the same yardstick for every method; IM's marginal "
                                     "effect costs k forward passes per wordpiece on long texts)")
    save_model: bool = common.field(False, help="write the selected model to <run>/model/ (Hugging Face format, "
                                    "head.safetensors, model_card.md)")


def parse_args(argv=None) -> Args:
    return common.parse_dataclass(Args, argv, prog=f"{SCRIPT}.py", description=__doc__.split("\n")[0])


def setting_of(args: Args) -> str:
    """The Table 2 column: --shots for ic/sf, --train-size for nli (as a string); custom: --shots, or 'nN' for
    --train-size N."""
    if args.task == "nli":
        return str(args.train_size)
    return f"n{args.train_size}" if args.task == "custom" and args.train_size is not None else args.shots


def read_custom_data(args: Args) -> dict:
    """--task custom: the dataset at --data (common.read_rationale_data; bad rows are file:line errors)."""
    if args.data is None:
        raise common.UsageError("--task custom needs --data FOLDER (your rationale dataset; docs/own_data.md)")
    return common.read_rationale_data(
        args.data, args.data_format, text_column=args.text_column, pair_column=args.pair_column,
        label_column=args.label_column, tags_column=args.tags_column, rationale_column=args.rationale_column,
        rationale_pair_column=args.rationale_pair_column, eraser_query=args.eraser_query,
        hatexplain_rationale=args.hatexplain_rationale)


def table_setting(args: Args, dataset: dict | None) -> tuple[str, str]:
    """(task, setting) of the PAPER_TABLE row that fills the unset values; custom: the task of the same shape
    (common.custom_paper_row, docs/own_data.md)."""
    if dataset is None:
        return args.task, setting_of(args)
    return common.custom_paper_row(dataset, args.shots, args.train_size)


def default_sizes(args: Args) -> dict | None:
    """The task's training-set defaults (ic/sf: 1 shot, nli: 100 pairs, custom: all of train); reads --data for
    custom and returns it (None for the paper tasks)."""
    if args.data is not None and args.task != "custom":
        raise common.UsageError("--data is for --task custom (the paper tasks read --data-dir)")
    if args.task != "custom":
        args.shots = "1" if args.shots is None else args.shots
        args.train_size = 100 if args.train_size is None else args.train_size
        return None
    if args.shots is not None and args.train_size is not None:
        raise common.UsageError("--task custom: give --shots or --train-size, not both")
    if args.shots is None and args.train_size is None:
        args.shots = "full"
    return read_custom_data(args)


def resolve(args: Args, cache: dict | None = None) -> Args:
    """Fill unset values from the paper's tables and the task; check every flag once; resolve --device. `cache` (if
    given) receives the dataset of --task custom, read here (its shape chooses the table's row)."""
    if args.schedule == "one-pass" and args.rounds not in (None, 1):
        raise common.UsageError("--rounds is for --schedule multi-round (one-pass is one round)")
    dataset = default_sizes(args)
    shape, setting = table_setting(args, dataset)
    row = paper_defaults(shape, setting, args.schedule)
    if args.warmup_patience is None and args.patience is not None:
        args.warmup_patience = args.patience  # an explicit --patience applies to the warm-up too
    kind = args.warmup or ("epochs" if args.warmup_epochs is not None else None)
    if kind is None and row:  # the table's: converge, or k epochs
        kind = "converge" if row["warmup"] == "converge" else "epochs"
        args.warmup_epochs = None if kind == "converge" else int(row["warmup"])
    if kind == "epochs" and args.warmup_epochs is None:
        raise common.UsageError("--warmup epochs needs --warmup-epochs")
    if kind == "converge" and args.warmup_epochs is not None:
        raise common.UsageError("--warmup-epochs does not go with --warmup converge")
    args.warmup = kind
    for k in ("lr", "lr_extractor", "batch_size", "max_epochs", "alpha", "patience", "rounds", "warmup_max_epochs",
              "warmup_patience"):
        if getattr(args, k) is None:
            setattr(args, k, row.get(k))
    if args.max_len is None:
        args.max_len = 128 if args.task in ("nli", "custom") else 50
    if args.dropout is None:
        args.dropout = 0.0 if shape == "nli" else 0.1
    common.check_args(args)
    unset = [k for k in ("warmup", "lr", "lr_extractor", "batch_size", "max_epochs", "alpha", "patience", "rounds",
                         "warmup_max_epochs", "warmup_patience") if getattr(args, k) is None]
    if unset:
        raise common.UsageError(f"PAPER_TABLE has no row for --task {shape} at {setting}: give "
                                + ", ".join("--" + k.replace("_", "-") for k in unset))
    common.check_max_len(args.model, args.max_len)
    args.device = str(common.resolve_device(args.device))
    if cache is not None:
        cache["dataset"] = dataset
    return args


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: the DiffMask extractor (Eq. 6)
# ------------------------------------------------------------------------------------------------------
def hard_concrete(logits: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Stretched, rectified Binary Concrete sample (Louizos et al. 2018; DiffMask: T = 0.2, l = -0.2, r = 1.0):
    z = clamp(sigmoid((logit + log u - log(1 - u)) / T) * (r - l) + l, 0, 1), u ~ U(0, 1). Reparameterised."""
    u = torch.rand(logits.shape, generator=gen, dtype=logits.dtype).to(logits.device).clamp(1e-6, 1 - 1e-6)
    s = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u)) / TEMPERATURE)
    return (s * (STRETCH_R - STRETCH_L) + STRETCH_L).clamp(0, 1)


def log_prob_nonzero(logits: torch.Tensor) -> torch.Tensor:
    """log P(z != 0) = log sigmoid(logit - T log(-l / r)), the closed form of the expected L0."""
    return F.logsigmoid(logits - TEMPERATURE * math.log(-STRETCH_L / STRETCH_R))


class Probe(nn.Module):
    """DiffMask's gate network g_k: weight-normed Linear(in, H/4) -> tanh -> Linear(H/4, 1) -> tanh, * 10 + a
    learned bias initialised to 5 (gates start open)."""

    def __init__(self, d_in: int, d_hidden: int):
        super().__init__()
        wn = nn.utils.parametrizations.weight_norm
        self.f = nn.Sequential(wn(nn.Linear(d_in, d_hidden)), nn.Tanh(), wn(nn.Linear(d_hidden, 1)), nn.Tanh())
        self.bias = nn.Parameter(torch.tensor(5.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x).squeeze(-1) * 10 + self.bias


class Extractor(nn.Module):
    """Ext_phi, DiffMask's input variant: one probe per hidden state k = 0..L+1 on [h_0; h_k] (h_0 = word-embedding
    output, h_1..h_{L+1} = the encoder's hidden states), a learned placeholder b (init: the [MASK] embedding) and
    one Lagrange multiplier per layer (init 1). The gate of a token for layer l is prod_{k <= l} z_k."""

    def __init__(self, hidden: int, n_states: int, mask_embedding: torch.Tensor):
        super().__init__()
        self.probes = nn.ModuleList(Probe(2 * hidden, hidden // 4) for _ in range(n_states))
        self.placeholder = nn.Parameter(mask_embedding.detach().clone())
        self.lagrange = nn.Parameter(torch.ones(n_states))

    def gate_logits(self, states: list[torch.Tensor], layer: int) -> torch.Tensor:
        """(B, L, layer + 1): the logits of probes 0..layer."""
        return torch.stack([self.probes[k](torch.cat([states[0], states[k]], -1)) for k in range(layer + 1)], -1)


def new_extractor(model, mask_token_id: int) -> Extractor:
    """Ext_phi for `model`, frozen, on the model's device: a probe for each of the word-embedding output and the
    encoder's L + 1 hidden states, the placeholder initialised to the mask token's embedding (DiffMask)."""
    n_states = model.encoder.config.num_hidden_layers + 2
    device = next(model.parameters()).device
    mask_row = model.embed(torch.tensor([mask_token_id], device=device))[0]
    return Extractor(model.encoder.config.hidden_size, n_states, mask_row).to(device).requires_grad_(False)


def gates(ext: Extractor, states: list[torch.Tensor], content: torch.Tensor, layer: int, gen: torch.Generator):
    """Eq. 6: a = the sampled gate of every token (B, L), 1 at [CLS]/[SEP]/pad (never masked); and the logits."""
    logits = ext.gate_logits(states, layer)
    z = hard_concrete(logits, gen).prod(-1)
    return torch.where(content.bool(), z, torch.ones_like(z)), logits


def expected_gate(logits: torch.Tensor, points: int = 256) -> torch.Tensor:
    """E[prod_k z_k] of the hard-concrete gates given their logits (..., K): the layers' gates are independent, so
    the product of E[z_k] = int_0^1 clamp(sigmoid((logit + log u - log(1 - u)) / T) (r - l) + l, 0, 1) du, by the
    midpoint rule over `points` values of u (no random draw)."""
    u = (torch.arange(points, dtype=logits.dtype, device=logits.device) + 0.5) / points
    s = torch.sigmoid((logits.unsqueeze(-1) + torch.log(u) - torch.log1p(-u)) / TEMPERATURE)
    return (s * (STRETCH_R - STRETCH_L) + STRETCH_L).clamp(0, 1).mean(-1).prod(-1)


def gate_explainer(model: common.TaskModel, ext: Extractor, special: torch.Tensor):
    """The method's own interpretation for explanations.jsonl: the expected gate of every wordpiece at the
    attribution layer (all probes; Eq. 6 without sampling), 0 at [CLS]/[SEP]/pad."""
    @torch.no_grad()
    def explain(batch: dict, target: torch.Tensor) -> torch.Tensor:
        content = common.content_mask(batch, special)
        return expected_gate(ext.gate_logits(encode(model, batch)[1], len(ext.probes) - 1)) * content
    return explain


def encode(model: common.TaskModel, batch: dict, inputs_embeds: torch.Tensor | None = None):
    """One forward pass: (scores, states) with states = [h_0 = word-embedding output, hidden states 0..L]."""
    e = model.embed(batch["input_ids"]) if inputs_embeds is None else inputs_embeds
    scores, out = model(batch, inputs_embeds=e, output_hidden_states=True)
    return scores, [e, *out.hidden_states]


def crf_log_partition(crf, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log Z of a linear-chain CRF per example (B,), by the forward algorithm over word positions."""
    alpha = crf.start_transitions + emissions[:, 0]  # (B, C)
    for t in range(1, emissions.size(1)):
        nxt = torch.logsumexp(alpha.unsqueeze(2) + crf.transitions + emissions[:, t].unsqueeze(1), dim=1)
        alpha = torch.where(mask[:, t:t + 1], nxt, alpha)
    return torch.logsumexp(alpha + crf.end_transitions, -1)


def divergence(model: common.TaskModel, scores_p: torch.Tensor, scores_q: torch.Tensor, batch: dict) -> torch.Tensor:
    """KL(p(y|x) || p(y|x_masked)) per example (B,). ic/nli: categorical. sf: exact KL between the two CRF
    distributions over tag sequences (same transitions): sum_t,c mu_p(t,c) (E_p - E_q)[t,c] - log Z_p + log Z_q,
    with mu_p the marginals of p = d log Z_p / d E_p."""
    if model.task != "sf":
        KL = (F.softmax(scores_p, -1) * (F.log_softmax(scores_p, -1) - F.log_softmax(scores_q, -1))).sum(-1)
        # a Hugging Face token classifier (task 'tag', no CRF): independent wordpieces, so the KL between the two
        # distributions over label sequences is the sum over the labelled wordpieces of theirs
        return (KL * (batch["labels"] != -100)).sum(-1) if model.task == "tag" else KL
    mask = batch["word_mask"]
    with torch.enable_grad():
        E_p = scores_p.detach().requires_grad_(True)
        log_Z_p = crf_log_partition(model.crf, E_p, mask)
        (mu_p,) = torch.autograd.grad(log_Z_p.sum(), E_p)
    diff = ((E_p.detach() - scores_q) * mu_p * mask.unsqueeze(-1)).sum((1, 2))
    return diff - log_Z_p.detach() + crf_log_partition(model.crf, scores_q, mask)


def extractor_loss(model, ext: Extractor, batch: dict, content: torch.Tensor, layer: int, gen: torch.Generator | None,
                   *, kl_margin: float, l0: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_phi^DM = mean_b [ lambda_layer (KL_b - m) + expected L0_b ] over the frozen model, m = kl_margin; the
    masked input is h_0' = z h_0 + (1 - z) b, fed as inputs_embeds. l0: 'prob' or 'log' (--l0). Returns (loss,
    KL (B,), expected L0 (B,))."""
    with torch.no_grad():
        scores, states = encode(model, batch)
    z, logits = gates(ext, states, content, layer, gen)
    h0_masked = z.unsqueeze(-1) * states[0] + (1 - z.unsqueeze(-1)) * ext.placeholder
    KL = divergence(model, scores, model(batch, inputs_embeds=h0_masked), batch)
    log_p0 = log_prob_nonzero(logits).sum(-1)  # log P(prod_k z_k != 0) = sum_k log P(z_k != 0)
    per_token = log_p0 if l0 == "log" else log_p0.exp()
    L0 = (per_token * content).sum(-1) / content.sum(-1).clamp_min(1)
    return (ext.lagrange[layer] * (KL - kl_margin) + L0).mean(), KL.detach(), L0.detach()


def extractor_epochs(model, ext: Extractor, epoch_batches: Callable[[int], Iterable[dict]], special: torch.Tensor,
                     gen: torch.Generator | None, *, epochs: int, lr: float, kl_margin: float, lambda_lr: float,
                     lambda_max: float, l0: str, log: Callable | None = None) -> None:
    """Train phi (probes, placeholder: AdamW, minimised) and lambda (RMSprop, gradient ascent, clamped to
    [0, lambda_max]) for `epochs` passes over epoch_batches(epoch), with the model frozen in eval mode (its mode and
    requires_grad flags are restored after, the extractor frozen again); the layer l is drawn uniformly per batch
    (DiffMask). The options are the flags --extractor-epochs, --lr-extractor, --kl-margin, --lambda-lr, --lambda-max,
    --l0."""
    was_training, trainable = model.training, [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    ext.requires_grad_(True)
    phi = [p for n, p in ext.named_parameters() if n != "lagrange"]
    opt_phi = torch.optim.AdamW(phi, lr=lr, weight_decay=0.0)
    opt_lambda = torch.optim.RMSprop([ext.lagrange], lr=lambda_lr, maximize=True)
    n_states = len(ext.probes)
    for epoch in range(epochs):
        for batch in epoch_batches(epoch):
            layer = int(torch.randint(n_states, (1,), generator=gen))
            loss, KL, L0 = extractor_loss(model, ext, batch, common.content_mask(batch, special), layer, gen,
                                          kl_margin=kl_margin, l0=l0)
            common.check_finite(loss.item(), f"extractor epoch {epoch}")
            opt_phi.zero_grad()
            opt_lambda.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(phi, 1.0)
            opt_phi.step()
            opt_lambda.step()
            with torch.no_grad():
                ext.lagrange.clamp_(0, lambda_max)
            if log is not None:
                log(extractor_epoch=epoch, layer=layer, loss_phi=loss.item(), KL=KL.mean().item(),
                    L0=L0.mean().item(), lagrange=ext.lagrange[layer].item())
    model.train(was_training)
    for p, flag in zip(model.parameters(), trainable, strict=True):
        p.requires_grad_(flag)
    ext.requires_grad_(False)


def train_extractor(model, ext: Extractor, train: list[dict], gen: torch.Generator, pad: int, special: torch.Tensor,
                    shuffle_seed: int, log, *, batch_size: int, eval_batch_size: int, device: str, epochs: int,
                    lr: float, kl_margin: float, lambda_lr: float, lambda_max: float, l0: str) -> dict:
    """The run's extractor phase: extractor_epochs() over the training examples (batches of batch_size, shuffled
    with shuffle_seed + epoch), then extractor_stats() over all of them."""
    extractor_epochs(model, ext, lambda epoch: common.batches(train, batch_size, pad, shuffle_seed=shuffle_seed + epoch,
                                                              device=device),
                     special, gen, epochs=epochs, lr=lr, kl_margin=kl_margin, lambda_lr=lambda_lr,
                     lambda_max=lambda_max, l0=l0, log=log)
    return extractor_stats(model, ext, common.batches(train, eval_batch_size, pad, sort_by_length=True, device=device),
                           special, gen, kl_margin=kl_margin, l0=l0)


@torch.no_grad()
def extractor_stats(model, ext: Extractor, batches: Iterable[dict], special: torch.Tensor, gen, *, kl_margin: float,
                    l0: str) -> dict:
    """Mean KL and expected L0 over the examples of `batches` at the attribution layer (all probes), gates sampled;
    whether the mean KL meets kl_margin."""
    model.eval()
    KLs, L0s = [], []
    for batch in batches:
        content = common.content_mask(batch, special)
        _, KL, L0 = extractor_loss(model, ext, batch, content, len(ext.probes) - 1, gen, kl_margin=kl_margin, l0=l0)
        KLs += KL.tolist()
        L0s += L0.tolist()
    return {"KL": sum(KLs) / len(KLs), "expected_L0": sum(L0s) / len(L0s),
            "lagrange_last": ext.lagrange[-1].item(), "constraint_met": sum(KLs) / len(KLs) <= kl_margin}


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: L_int (Eq. 7)
# ------------------------------------------------------------------------------------------------------
def eq7_loss(a: torch.Tensor, R: torch.Tensor, N: torch.Tensor, guard: float) -> torch.Tensor:
    """Eq. 7 per example (B,): sum_{i in R} min(a_i / max_{j in N} a_j - 1, 0)^2, with max_{j in N} a_j clamped
    to >= guard (gates are often exactly 0). a in [0, 1], so masked entries (0) never win the max."""
    max_N = (a * N).amax(-1, keepdim=True).clamp_min(guard)
    return ((torch.clamp(a / max_N - 1, max=0) ** 2) * R).sum(-1)


def dm_loss(model, ext: Extractor, batch: dict, special: torch.Tensor, gen: torch.Generator | None, *, guard: float):
    """(L_task, mean L_int over the batch's examples with a rationale and a non-rationale, their number), from one
    forward pass: the task scores and the hidden states the frozen extractor reads (gradients reach theta
    through h_0 and h_k). guard: --guard."""
    scores, states = encode(model, batch)
    L_task = model.task_loss(scores, batch)
    content = common.content_mask(batch, special)
    R, N = batch["rationale"] * content, (1 - batch["rationale"]) * content
    a, _ = gates(ext, states, content, len(ext.probes) - 1, gen)  # Eq. (6)
    has = (R.sum(-1) > 0) & (N.sum(-1) > 0)  # examples without a rationale, or with nothing but, are skipped
    L = eq7_loss(a, R, N, guard)  # Eq. (7)
    n = int(has.sum())
    return L_task, (L[has].mean() if n else torch.zeros((), device=L.device)), n


# ------------------------------------------------------------------------------------------------------
# Analysis: Table 4 (accuracy split by a_R > a_N on test) and per-example attributions (Table 3)
# ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def table4(model, ext: Extractor, test: list[dict], args: Args, seed: int, pad: int, special, tokenizer, run: Path):
    """a_R / a_N = mean gate over the rationale / non-rationale content wordpieces (Sec. 5.4)."""
    model.eval()
    batches = common.batches(test, args.eval_batch_size, pad, sort_by_length=True, device=args.device)
    correct = common.per_example_correct(model, batches)
    gen, a_R_gt_a_N, rows = torch.Generator().manual_seed(seed + 1), {}, []
    for batch in batches:
        content = common.content_mask(batch, special)
        R, N = batch["rationale"] * content, (1 - batch["rationale"]) * content
        a, _ = gates(ext, encode(model, batch)[1], content, len(ext.probes) - 1, gen)
        for b, i in enumerate(batch["index"].tolist()):
            if R[b].sum() == 0 or N[b].sum() == 0:
                continue
            a_R, a_N = (a[b] * R[b]).sum().item() / R[b].sum().item(), (a[b] * N[b]).sum().item() / N[b].sum().item()
            a_R_gt_a_N[i] = a_R > a_N
            n = int(batch["attention_mask"][b].sum())
            rows.append({"index": i, "tokens": tokenizer.convert_ids_to_tokens(batch["input_ids"][b, :n].tolist()),
                         "a": [round(x, 4) for x in a[b, :n].tolist()], "rationale": R[b, :n].int().tolist(),
                         "a_R": a_R, "a_N": a_N, "correct": correct[i]})
    if not a_R_gt_a_N:
        return {"note": "no test example has a rationale (e-SNLI test has no highlights in this copy)"}
    common.write_json_atomic(run / "attributions.json", sorted(rows, key=lambda r: r["index"]))
    return common.table4_summary(correct, a_R_gt_a_N)


# ------------------------------------------------------------------------------------------------------
# Your own training loop: L_int on a Hugging Face classifier (docs/own_data.md, "Your own training loop")
# ------------------------------------------------------------------------------------------------------
def fit_extractor(model, batches: Iterable[dict], *, mask_token_id: int, special_ids, epochs: int = 10,
                  lr: float = 1e-3, kl_margin: float = 0.1, lambda_lr: float = 0.3, lambda_max: float = 200.0,
                  l0: str = "prob", generator: torch.Generator | None = None) -> Extractor:
    """A new DiffMask extractor Ext_phi (Eq. 6) fitted to your model, returned frozen for interpretation_loss().
    model: a Hugging Face ...ForSequenceClassification or ...ForTokenClassification, or a TaskModel; it is frozen
    (eval mode, no gradients) while the extractor trains, then left as it was. batches: re-iterable (a list, a
    DataLoader), each with input_ids, attention_mask, optional token_type_ids (and, for a token classifier, labels:
    the KL is over the labelled wordpieces); no rationale is needed. mask_token_id: the tokenizer's (the placeholder
    starts as its embedding); special_ids: the tokenizer's `all_special_ids` (never gated). The options are the flags
    --extractor-epochs, --lr-extractor (1e-3: most rows of Tables 6-8), --kl-margin, --lambda-lr, --lambda-max,
    --l0 of uimer_dm.py, with their defaults; generator: a CPU torch.Generator for the layer and gate draws (None:
    torch's global one). One implementation with the run's train_extractor (extractor_epochs)."""
    if iter(batches) is batches:
        raise ValueError("fit_extractor reads `batches` once per epoch: pass a list or a DataLoader, not an iterator")
    if l0 not in ("prob", "log"):
        raise ValueError(f"l0 {l0!r}: 'prob' (the DiffMask paper) or 'log' (the DiffMask and UIMER code)")
    if mask_token_id is None:
        raise ValueError("mask_token_id is None (a tokenizer without a mask token): the placeholder starts as the "
                         "embedding of the token you pass, e.g. tokenizer.unk_token_id")
    model = common.as_task_model(model)
    device = next(model.parameters()).device
    special = torch.as_tensor(special_ids).to(device)
    ext = new_extractor(model, mask_token_id)
    extractor_epochs(model, ext, lambda epoch: (common.to_device(dict(b), device) for b in batches), special,
                     generator, epochs=epochs, lr=lr, kl_margin=kl_margin, lambda_lr=lambda_lr, lambda_max=lambda_max,
                     l0=l0)
    return ext


def interpretation_loss(model, extractor: Extractor, batch: dict, *, special_ids, guard: float = 0.01,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """UIMER-DM's L_int (Eq. 7) for your own loop: `loss = outputs.loss + alpha * interpretation_loss(...)`, with
    `extractor` from fit_extractor() (frozen: only the model learns). model: the Hugging Face classifier (or
    TaskModel) the extractor was fitted to. batch: input_ids, attention_mask, optional token_type_ids, labels ((B,),
    or (B, L) with -100 where ignored) and rationale (B, L), 0/1 per wordpiece. guard: --guard (max_{j in N} a_j
    clamped to at least this); generator: a CPU torch.Generator for the gate noise (None: torch's global one).
    Returns the mean L_int over the examples with both a rationale and a non-rationale wordpiece (0 if none), from
    one more forward pass than the caller's own (dm_loss, as the run). The paper's schedules (Sec. 3.3.3): the task
    alone first, then fit the extractor on the frozen model and train the model with it (one-pass), or repeat those
    two (multi-round)."""
    model, batch = common.as_task_model(model), common.rationale_batch(batch)
    special = torch.as_tensor(special_ids).to(batch["input_ids"].device)
    return dm_loss(model, extractor, batch, special, generator, guard=guard)[1]


# ------------------------------------------------------------------------------------------------------
# Training: model epochs (warm-up or one round), then one seed end to end
# ------------------------------------------------------------------------------------------------------
def model_epochs(model: common.TaskModel, ext: Extractor | None, data: dict, dev_batches: list, log, args: Args,
                 n_epochs: int, stopper: common.EarlyStopping, state: dict, special, gen, seed: int, pad: int) -> None:
    """Up to n_epochs of the model with the extractor frozen (L_task alone if ext is None), a fresh AdamW + linear
    schedule, dev after every epoch, stop after `patience` epochs without a new best dev (the best is global).
    `state` counts epochs, steps and the round across calls."""
    metric = "f1" if model.task == "sf" else "accuracy"
    steps_per_epoch = math.ceil(len(data["train"]) / args.batch_size)
    opt, sched = common.make_optimizer(model, args.lr, steps_per_epoch * n_epochs)
    stopper.bad = 0
    for _ in range(n_epochs):
        epoch = state["epoch"]
        model.train()
        sums = {"L_task": 0.0, "L_int": 0.0}
        for batch in common.progress(common.batches(data["train"], args.batch_size, pad, device=args.device,
                                                    shuffle_seed=seed * 1000 + epoch), desc=f"epoch {epoch}"):
            int_on = ext is not None and args.alpha > 0
            if int_on:
                L_task, L_int, n_int = dm_loss(model, ext, batch, special, gen, guard=args.guard)
            else:
                L_task, L_int, n_int = model.task_loss(model(batch), batch), torch.zeros((), device=args.device), 0
            # Eq. (1): L = L_task + alpha * L_int
            L = L_task + args.alpha * L_int if int_on else L_task
            losses = {"L_task": L_task.item(), "L_int": float(L_int.detach()),
                      "L": common.optimizer_step(L, model, opt, sched, f"epoch {epoch}, step {state['step']}")}
            sums["L_task"] += losses["L_task"]
            sums["L_int"] += losses["L_int"]
            log(epoch=epoch, round=state["round"], step=state["step"], **losses, int_on=int_on, n_int=n_int)
            state["step"] += 1
        # model selection: the dev metric after every epoch; the best model is kept (strict improvement)
        dev = common.evaluate(model, dev_batches, data["labels"])[metric]
        stopper.step(dev, epoch, model)
        log(epoch=epoch, round=state["round"], int_on=int_on, dev=dev, best_dev=stopper.best)
        print(f"epoch {epoch:3d}  round {state['round']:2d}  L_task {sums['L_task'] / steps_per_epoch:.4f}  L_int "
              f"{sums['L_int'] / steps_per_epoch:.4f}  dev {metric} {dev:.4f}  best {stopper.best:.4f}")
        state["epoch"] += 1
        if stopper.stop:
            break


def run_name(args: Args, seed: int) -> str:
    """<task>-<setting>-<variant>-<seed>, e.g. ic-3shot-onepass-55; the variant is 'base' when alpha is 0."""
    variant = "onepass" if args.schedule == "one-pass" else f"multiround{args.rounds}"
    setting = f"{args.train_size}ex" if args.task == "nli" or args.shots is None else f"{args.shots}shot"
    return f"{args.task}-{setting}-{'base' if args.alpha == 0 else variant}-{seed}"


def train_one_seed(args: Args, seed: int, tokenizer, dataset: dict | None = None) -> dict:
    timer = common.Timer()
    common.set_seed(seed)
    # data: the splits, the n-shot training set (its own RNG seeded by `seed`), rationales aligned to wordpieces
    if dataset is None:  # the paper's tasks, with the Table 5 rationales
        data = common.load_uimer_task(args.task, common.resolve_data_dir(args.data_dir), setting_of(args), seed,
                                      tokenizer, args.max_len, args.nli_sample, args.max_eval_examples,
                                      args.allow_smaller, args.dev_size)
    else:  # --task custom: your data and its human rationales
        data = common.load_custom_task(dataset, args.shots, args.train_size, seed, tokenizer, args.max_len,
                                       args.max_eval_examples, args.allow_smaller, args.dev_size)
    shape = table_setting(args, dataset)[0]  # ic / sf / nli: classification, BIO tagging (CRF), sentence pairs
    st = data["rationale_stats"]
    print(f"seed {seed}: {st['n_examples']} training examples, {100 * st['share_with_rationale']:.0f}% with a "
          f"rationale, mean rationale fraction {st['mean_rationale_fraction']:.3f}")
    # the run directory, claimed for this run: config.json, train_ids.json, log.jsonl
    run = common.make_run_dir(args.out_dir, SCRIPT, run_name(args, seed))
    common.write_json_atomic(run / "config.json", {**dataclasses.asdict(args), "seed": seed})
    common.write_json_atomic(run / "train_ids.json", data["train_ids"])
    log = common.JsonlLog(run / "log.jsonl")
    # the task model on the device; the dev set batched once (length-sorted, dynamic padding)
    model = common.TaskModel(common.load_encoder(args.model), shape, len(data["labels"]), args.dropout)
    model = model.to(args.device)
    pad, metric = tokenizer.pad_token_id, "f1" if shape == "sf" else "accuracy"
    dev_batches = common.batches(data["dev"], args.eval_batch_size, pad, sort_by_length=True, device=args.device)
    special = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=args.device)
    gen = torch.Generator().manual_seed(seed)  # gate noise and the extractor's layer draws
    stopper = common.EarlyStopping(args.patience)
    state = {"epoch": 0, "step": 0, "round": 0}
    # warm-up (Sec. 3.3.3): L_task alone, to early stopping ('converge') or for k epochs; the best-dev model goes on
    converge = args.warmup == "converge"
    stopper.patience = args.warmup_patience if converge else args.patience
    model_epochs(model, None, data, dev_batches, log, args,
                 args.warmup_max_epochs if converge or args.alpha == 0 else args.warmup_epochs,
                 stopper, state, special, gen, seed, pad)
    stopper.patience = args.patience
    stopper.restore(model)
    ext, rounds = None, []
    if args.alpha > 0 or args.analysis:
        ext = new_extractor(model, tokenizer.mask_token_id)
    # one round (one-pass) or --rounds: the extractor trained on the frozen model, then the model on the frozen
    # extractor
    extractor_options = dict(batch_size=args.batch_size, eval_batch_size=args.eval_batch_size, device=args.device,
                             epochs=args.extractor_epochs, lr=args.lr_extractor, kl_margin=args.kl_margin,
                             lambda_lr=args.lambda_lr, lambda_max=args.lambda_max, l0=args.l0)
    for r in range(args.rounds if args.alpha > 0 else 0):
        state["round"] = r + 1
        stats = train_extractor(model, ext, data["train"], gen, pad, special, seed * 7919 + 100 * r, log,
                                **extractor_options)
        print(f"round {r + 1}: extractor KL {stats['KL']:.4f} (constraint {args.kl_margin}), expected L0 "
              f"{stats['expected_L0']:.3f}, lambda {stats['lagrange_last']:.3f}")
        model_epochs(model, ext, data, dev_batches, log, args, args.max_epochs, stopper, state, special, gen, seed,
                     pad)
        rounds.append({**stats, "best_dev": stopper.best})
    # test: the best-dev model scores the test set once; results.json has no paths (same seed, same bytes)
    stopper.restore(model)
    extra = {}
    if args.analysis:  # the extractor is (re)trained on the selected model before it is read
        extra["extractor_for_analysis"] = train_extractor(model, ext, data["train"], gen, pad, special,
                                                          seed * 7919 - 1, log, **extractor_options)
        extra["table4"] = table4(model, ext, data["test"], args, seed, pad, special, tokenizer, run)
    scored = common.evaluate(model, common.batches(data["test"], args.eval_batch_size, pad, sort_by_length=True,
                                                   device=args.device), data["labels"])
    test = scored[metric]
    common.write_predictions(run / "predictions.jsonl", data["test"], scored["predictions"])
    # explanations of the first test examples: integrated gradients and, with an extractor, its expected gates
    if args.explain_examples:
        own = {"gate_expectation": gate_explainer(model, ext, special)} if ext is not None and args.explain_own else {}
        rows, extra["plausibility"] = common.explain_examples(
            model, data["test"], None, own, args.explain_examples, pad_id=pad, label_names=data["labels"],
            has_rationale=dataset is not None or args.task != "nli", device=args.device)
        common.write_explanations(run / "explanations.jsonl", rows)
    n_int_examples = common.n_with_both(data["train"])
    results = {"task": args.task, "setting": setting_of(args), "seed": seed, "metric": metric, "test": test,
               "dev": stopper.best, "best_epoch": stopper.best_epoch, "rationale_stats": data["rationale_stats"],
               "n_train": len(data["train"]), "n_with_both_sets": n_int_examples,
               "n_skipped_by_L_int": len(data["train"]) - n_int_examples if args.alpha > 0 else None,
               "shortfall": data["shortfall"], "epochs_run": state["epoch"], "steps": state["step"],
               "rounds": rounds, **({"alignment": data["alignment"]} if dataset is not None else {}), **extra}
    if args.save_model:
        common.save_task_model(run / "model", model, tokenizer, {
            "method": f"{METHOD} ({run.name.rsplit('-', 1)[0]})", "data": f"{args.task} {setting_of(args)}, "
            f"{len(data['train'])} training examples", "seed": seed, f"test {metric}": round(test, 4),
            "base model": args.model}, labels=data["labels"])
    common.write_json_atomic(run / "results.json", results)
    results["runtime_s"], results["run_dir"] = round(timer(), 1), str(run)
    common.write_json_atomic(run / "timing.json", {"runtime_s": results["runtime_s"]})
    common.release_run_dir(run)
    print(f"seed {seed}: test {metric} {100 * test:.2f} (dev {100 * stopper.best:.2f} at epoch "
          f"{stopper.best_epoch}) -> {run}")
    return results


def main(args: Args) -> dict:
    cache = {}
    args = resolve(args, cache)
    tokenizer = common.load_tokenizer(args.model)
    if args.alpha > 0 or args.analysis:
        common.check_mask_token(tokenizer, args.model, "UIMER-DM's extractor (its placeholder starts as the mask "
                                "token's embedding, DiffMask)", "an encoder with a mask token, or --alpha 0")
    seeds = common.parse_seeds(args.seeds, args.seed)
    runs = [train_one_seed(args, seed, tokenizer, cache["dataset"]) for seed in seeds]
    if len(runs) == 1:
        return runs[0]
    summary = {"metric": runs[0]["metric"], "test": common.aggregate([r["test"] for r in runs]),
               "dev": common.aggregate([r["dev"] for r in runs]), "seeds": seeds, "runs": runs}
    common.write_json_atomic(Path(args.out_dir) / SCRIPT / f"{run_name(args, 0).rsplit('-', 1)[0]}-seeds" /
                             "summary.json", common.relative_runs(summary))
    print(f"test {summary['metric']} over seeds {seeds}: {100 * summary['test']['mean']:.2f} +- "
          f"{100 * summary['test']['std']:.2f}")
    return summary


def cli(argv=None) -> int:
    return common.run_cli(main, parse_args, argv)


if __name__ == "__main__":
    sys.exit(cli())
