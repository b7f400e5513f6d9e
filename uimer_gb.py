"""UIMER-GB: gradient-based saliency as the interpretation method that guides training.

Paper: Chen, Jiang, Tu, "Using Interpretation Methods for Model Enhancement", EMNLP 2023, arXiv 2404.02068
(Sec. 3.1, Eqs. 1-3; Table 2). Interpretation methods: Ghaeini et al. 2019 ("Saliency learning", NAACL) and
Huang et al. 2021 ("Exploring distantly-labeled rationales in neural network models", ACL).
Documentation: docs/uimer_gb.md (equations -> code, deviations, results); docs/uimer.md (what the UIMER files share).
common.py sections used: CLI and validation; runs and results; devices and models; batching; training utilities;
explanations; readers; rationale datasets; UIMER.

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
    Your own training loop (a Hugging Face classifier)  -> interpretation_loss() (docs/own_data.md)
"""
from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path

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
    """The row of PAPER_TABLE for this setting (a setting the table does not list takes the nearest smaller one);
    {} when the table has none (the flags' own check, or the missing-value check, then speaks)."""
    rows = common.paper_table(PAPER_TABLE)
    setting = common.listed_setting(rows, task, setting)
    for r in rows:
        if r[:2] == [task, setting]:
            return {"lr": float(r[2]), "batch_size": int(r[3]), "max_epochs": int(r[4]), "alpha": float(r[5]),
                    "patience": int(r[6])}
    return {}


@dataclass
class Args:
    """Every flag of uimer_gb.py (`-h` shows each with its domain). Unset (None): filled from PAPER_TABLE for the
    setting, or from the task."""
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
    # --- optimisation (unset: PAPER_TABLE for the setting)
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
    warmup_epochs: int = common.field(0, help="epochs of L_task alone before L_int (original GB: 0)",
                                      domain=common.COUNT)
    # --- run
    model: str = common.field(common.DEFAULT_MODEL, help=common.MODEL_HELP,
                              domain=common.TEXT)
    seed: int = common.field(55, help="seed of sampling, initialisation, dropout and the method's random draws",
                             domain=common.SEED)
    seeds: str | None = common.field(None, help="comma-separated seeds: run each, report mean +- std",
                                     domain=common.SEEDS_DOMAIN)
    out_dir: str = common.field("runs", help="run directories go to <out-dir>/uimer_gb/<name>/",
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
    """Fill unset values from PAPER_TABLE and the task; check every flag once; resolve --device. `cache` (if given)
    receives the dataset of --task custom, read here (its shape chooses the table's row)."""
    if args.variant != "huang" and (args.gate or args.order):
        raise common.UsageError("--gate and --order are variants of --variant huang; add --variant huang")
    dataset = default_sizes(args)
    shape, setting = table_setting(args, dataset)
    for k, v in paper_defaults(shape, setting).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.max_len is None:
        args.max_len = 128 if args.task in ("nli", "custom") else 50
    if args.dropout is None:
        args.dropout = 0.0 if shape == "nli" else 0.1
    common.check_args(args)
    unset = [k for k in ("lr", "batch_size", "max_epochs", "alpha", "patience") if getattr(args, k) is None]
    if unset:
        raise common.UsageError(f"PAPER_TABLE has no row for --task {shape} at {setting}: give "
                                + ", ".join("--" + k.replace("_", "-") for k in unset))
    common.check_max_len(args.model, args.max_len)
    args.device = str(common.resolve_device(args.device))
    if cache is not None:
        cache["dataset"] = dataset
    return args


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: saliency (Eq. 2)
# ------------------------------------------------------------------------------------------------------
def gold_score(model: common.TaskModel, scores: torch.Tensor, batch: dict) -> torch.Tensor:
    """Ghaeini's f(x, y), per example (B,): the gold-class logit (ic, nli); for sf the probability of the gold tag
    sequence, exp(CRF log-likelihood), as the original code (a Hugging Face token classifier, task 'tag': the
    product of the labelled wordpieces' probabilities). The gold class is `label`, or Hugging Face's `labels`."""
    if model.task in ("sf", "tag"):
        return model.gold_log_likelihood(scores, batch).exp()
    gold = batch["label"] if "label" in batch else batch["labels"]
    return scores.gather(1, gold.unsqueeze(1)).squeeze(1)


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


def gb_loss(model: common.TaskModel, batch: dict, special_ids: torch.Tensor, gen: torch.Generator | None, *,
            variant: str, gate: bool, order: bool, guard: float, wrt: str,
            create_graph: bool = True) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(L_task, mean L_int over the batch's examples with a rationale and a non-rationale, their number), from one
    forward pass whose input gradient is kept in the graph. The options are the flags of the same names; `gen`
    draws the +Gate samples (None: torch's global generator)."""
    dJ_de, scores = input_gradients(model, batch, variant, create_graph, wrt)
    L_task = model.task_loss(scores, batch)
    content = common.content_mask(batch, special_ids)
    R, N = batch["rationale"] * content, (1 - batch["rationale"]) * content
    a = attribution(dJ_de, variant, content)  # Eq. (2)
    has = (R.sum(-1) > 0) & (N.sum(-1) > 0)  # examples without a rationale, or with nothing but, are skipped
    if variant == "ghaeini":
        L = ghaeini_loss(a, R)  # Eq. (3)
    else:
        G = gate_sample(a, R, gen) if gate else None
        L = huang_loss(a, R, N, gate, order, G, guard)  # Eq. (3)
    n = int(has.sum())
    return L_task, (L[has].mean() if n else torch.zeros((), device=L.device)), n


def saliency_explainer(model: common.TaskModel, variant: str, wrt: str, special_ids: torch.Tensor):
    """The method's own interpretation for explanations.jsonl: Eq. 2's a = f(dJ/de) per wordpiece, J taken at the
    model's prediction (the target of common.explain_examples)."""
    def explain(batch: dict, target: torch.Tensor) -> torch.Tensor:
        tb = common.target_batch(batch, target)
        dJ_de, _ = input_gradients(model, tb, variant, create_graph=False, wrt=wrt)
        return attribution(dJ_de, variant, common.content_mask(batch, special_ids)).detach()
    return explain


# ------------------------------------------------------------------------------------------------------
# Your own training loop: L_int on a Hugging Face classifier (docs/own_data.md, "Your own training loop")
# ------------------------------------------------------------------------------------------------------
def interpretation_loss(model, batch: dict, *, special_ids, variant: str = "ghaeini", gate: bool = False,
                        order: bool = False, guard: float = 1e-6, wrt: str = "inputs-embeds",
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """UIMER-GB's L_int for your own loop: `loss = outputs.loss + alpha * interpretation_loss(model, batch, ...)`.
    model: a Hugging Face ...ForSequenceClassification or ...ForTokenClassification loaded with
    attn_implementation="eager" (the loss differentiates an input gradient: double backward), or a TaskModel.
    batch: input_ids, attention_mask, optional token_type_ids, labels ((B,), or (B, L) with -100 where ignored) and
    rationale (B, L), 0/1 per wordpiece. special_ids: the tokenizer's `all_special_ids` (never rationale or
    non-rationale). The options are the flags of uimer_gb.py (same defaults; Ghaeini w.r.t. inputs-embeds is
    identically 0 for BERT-style encoders: docs/uimer_gb.md, deviation 3); generator: a CPU torch.Generator for the
    +Gate draws (None: torch's global one). Returns the mean L_int over the examples with both a rationale and a
    non-rationale wordpiece (0 if none), from one more forward pass than the caller's own (gb_loss, as the run)."""
    if variant not in VARIANTS or wrt not in ("inputs-embeds", "embedding-output") or (gate or order) and \
            variant != "huang":
        raise ValueError(f"variant {variant!r} (one of {VARIANTS}), wrt {wrt!r} (inputs-embeds or embedding-output), "
                         f"gate {gate} and order {order} (huang only): not a UIMER-GB setting")
    model = common.as_task_model(model)
    attention = getattr(model.encoder.config, "_attn_implementation", None)
    if attention not in (None, "eager"):
        raise ValueError(f"UIMER-GB needs eager attention (the double backward through {attention} attention fails "
                         "in eval mode); load the model with attn_implementation='eager'")
    batch = common.rationale_batch(batch)
    special = torch.as_tensor(special_ids).to(batch["input_ids"].device)
    return gb_loss(model, batch, special, generator, variant=variant, gate=gate, order=order, guard=guard, wrt=wrt)[1]


# ------------------------------------------------------------------------------------------------------
# Training: one seed end to end
# ------------------------------------------------------------------------------------------------------
def run_name(args: Args, seed: int) -> str:
    """<task>-<setting>-<variant>-<seed>, e.g. ic-1shot-huang-order-55; the variant is 'base' when alpha is 0."""
    variant = args.variant + ("" if args.variant == "ghaeini" else
                              "-" + ("-".join(n for n, on in (("gate", args.gate), ("order", args.order)) if on)
                                     or "base"))
    variant += ("-embout" if args.wrt == "embedding-output" else "") + \
        (f"-warm{args.warmup_epochs}" if args.warmup_epochs else "")
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
    special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), device=args.device)
    gen = torch.Generator().manual_seed(seed)  # the Gate's Bernoulli draws
    steps_per_epoch = math.ceil(len(data["train"]) / args.batch_size)
    opt, sched = common.make_optimizer(model, args.lr, steps_per_epoch * args.max_epochs)
    stopper, step = common.EarlyStopping(args.patience), 0
    for epoch in range(args.max_epochs):
        model.train()
        sums = {"L_task": 0.0, "L_int": 0.0}
        for batch in common.progress(common.batches(data["train"], args.batch_size, pad, device=args.device,
                                                    shuffle_seed=seed * 1000 + epoch), desc=f"epoch {epoch}"):
            int_on = args.alpha > 0 and epoch >= args.warmup_epochs
            if int_on:
                L_task, L_int, n_int = gb_loss(model, batch, special_ids, gen, variant=args.variant,
                                               gate=args.gate, order=args.order, guard=args.guard,
                                               wrt=args.wrt)
            else:
                L_task, L_int, n_int = model.task_loss(model(batch), batch), torch.zeros((), device=args.device), 0
            # Eq. (1): L = L_task + alpha * L_int
            L = L_task + args.alpha * L_int if int_on else L_task
            losses = {"L_task": L_task.item(), "L_int": float(L_int.detach()),
                      "L": common.optimizer_step(L, model, opt, sched, f"epoch {epoch}, step {step}")}
            sums["L_task"] += losses["L_task"]
            sums["L_int"] += losses["L_int"]
            log(epoch=epoch, step=step, **losses, int_on=int_on, n_int=n_int)
            step += 1
        # model selection: the dev metric after every epoch; the best model is kept (strict improvement)
        dev = common.evaluate(model, dev_batches, data["labels"])[metric]
        stopper.step(dev, epoch, model)
        log(epoch=epoch, int_on=int_on, dev=dev, best_dev=stopper.best)
        print(f"epoch {epoch:3d}  L_task {sums['L_task'] / steps_per_epoch:.4f}  L_int "
              f"{sums['L_int'] / steps_per_epoch:.4f}  dev {metric} {dev:.4f}  best {stopper.best:.4f}")
        if stopper.stop:
            break
    # test: the best-dev model scores the test set once; results.json has no paths (same seed, same bytes)
    stopper.restore(model)
    scored = common.evaluate(model, common.batches(data["test"], args.eval_batch_size, pad, sort_by_length=True,
                                                   device=args.device), data["labels"])
    test = scored[metric]
    common.write_predictions(run / "predictions.jsonl", data["test"], scored["predictions"])
    # explanations of the first test examples: integrated gradients and the method's saliency, against the rationale
    extra = {}
    if args.explain_examples:
        own = {f"saliency_{args.variant}": saliency_explainer(model, args.variant, args.wrt, special_ids)} \
            if args.explain_own else {}
        rows, extra["plausibility"] = common.explain_examples(
            model, data["test"], None, own, args.explain_examples, pad_id=pad, label_names=data["labels"],
            has_rationale=dataset is not None or args.task != "nli", device=args.device)
        common.write_explanations(run / "explanations.jsonl", rows)
    n_int_examples = common.n_with_both(data["train"])
    results = {"task": args.task, "setting": setting_of(args), "seed": seed, "metric": metric, "test": test,
               "dev": stopper.best, "best_epoch": stopper.best_epoch, "rationale_stats": data["rationale_stats"],
               "n_train": len(data["train"]), "n_with_both_sets": n_int_examples,
               "n_skipped_by_L_int": len(data["train"]) - n_int_examples if args.alpha > 0 else None,
               "shortfall": data["shortfall"], "epochs_run": epoch + 1, "steps": step,
               **({"alignment": data["alignment"]} if dataset is not None else {}), **extra}
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
