"""UIMER-IM: input marginalization as the interpretation method that guides training.

Paper: Chen, Jiang, Tu, "Using Interpretation Methods for Model Enhancement", EMNLP 2023, arXiv 2404.02068
(Sec. 3.2, Eqs. 1, 4, 5 and footnotes 1-4; Tables 2, 4, 6-8). Interpretation method: Kim et al. 2020.
Documentation: docs/uimer_im.md (equations -> code, deviations, results); docs/uimer.md (what the UIMER files share).
common.py sections used: CLI and validation; runs and results; devices and models; batching; training utilities;
explanations; readers; rationale datasets; UIMER.

    python uimer_im.py --task ic --shots 1 --strategy uniform                     # paper defaults (Table 6)
    python uimer_im.py --task ic --shots 1 --strategy uniform --alpha 0           # BaseModel, same everything
    python uimer_im.py --task ic --shots 1 --strategy uniform --warmup paper      # the "(warm.)" row
    python uimer_im.py --task sf --shots 3 --strategy mask --warmup epochs --warmup-epochs 2
    python uimer_im.py --task nli --train-size 100 --strategy prior
    python uimer_im.py --task nli --train-size 500 --strategy uniform --device cuda   # --device auto|cpu|cuda
    python uimer_im.py --task ic --shots 1 --strategy uniform --seeds 55,1988,12333,42   # mean +- std

Equation index
    Eq. 1  L = L_task + alpha * L_int          -> train_one_seed() (the line marked `# Eq. (1)`)
    Eq. 4  a_i = log2 odds p(y|x) - log2 odds m,  m = sum_{x' in S} q(x') p(y|x')
                                               -> marginal_log_prob() (m), log2_odds() (log2 odds)
    Eq. 5  L_int = max(a_N - a_R + epsilon, 0) -> im_margin_loss()
    fn. 1-4: strategies mask / uniform / prior / bert, q(x'_R) = mean of per-position q
                                               -> candidates_*(), build_replacement_sets()
    warm-up (Sec. 3, Fig. 3)                   -> use_int_loss()
    Your own training loop (a Hugging Face classifier)  -> interpretation_loss() (docs/own_data.md)
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

import common

METHOD, SCRIPT = "UIMER-IM", "uimer_im"
STRATEGIES = ["mask", "uniform", "prior", "bert"]
WARMUPS = ["none", "epochs", "converge", "fraction", "paper"]

# Tables 6-8 of the paper (App. 8.3), UIMER-IM rows. warm: "no" = the plain row, "yes" = the "(warm.)" row,
# whose warm-up is in epochs, `converge` ("task trained*": train the task to early stopping first) or
# `frac0.1` ("0.1*": the first 10% of the mini-batches). bz = batch size; patience = early stop (epochs).
# (*) cells lost in our copy of the paper (OCR): ic-full prior lr -> 1e-5 as every other ic-full row;
# sf-3 mask alpha/epsilon -> those of its (warm.) row, epochs/patience -> the neighbouring rows';
# sf-full uniform (warm.) epsilon -> 1 as its neighbours. Listed in docs/uimer_im.md, Deviations, item 9.
PAPER_TABLE = """
task set  strategy warm lr      bz  epochs alpha  eps   warmup    patience
ic   1    mask     no   2e-4    24  70     4      1     0         7
ic   1    bert     no   4e-4    24  70     4      0.5   0         7
ic   1    prior    no   4e-4    24  70     1      0.5   0         7
ic   1    uniform  no   2e-4    24  70     0.6    1     0         7
ic   1    mask     yes  4e-4    24  70     1      0.5   3         7
ic   1    bert     yes  2e-4    24  70     4      0.05  2         7
ic   1    prior    yes  4e-4    24  70     4      0.5   2         7
ic   1    uniform  yes  4e-4    24  70     4      0.5   1         7
ic   3    mask     no   4e-4    24  70     0.6    0.5   0         7
ic   3    bert     no   4e-4    24  70     0.6    0.5   0         7
ic   3    prior    no   2e-4    24  70     1      0.01  0         7
ic   3    uniform  no   4e-4    24  70     4      0.5   0         7
ic   3    mask     yes  2e-4    24  70     4      0.01  5         7
ic   3    bert     yes  4e-4    24  70     1      0.05  5         7
ic   3    prior    yes  2e-4    24  70     1      1     5         7
ic   3    uniform  yes  2e-4    24  70     1      0.5   5         7
ic   10   mask     no   2e-4    24  70     0.1    0.5   0         7
ic   10   bert     no   1e-4    24  70     0.1    0.1   0         7
ic   10   prior    no   2e-4    24  70     0.5    0.1   0         7
ic   10   uniform  no   1e-4    24  70     4      0.5   0         7
ic   10   mask     yes  2e-4    24  70     0.1    0.1   5         7
ic   10   bert     yes  2e-4    24  70     4      0.01  5         7
ic   10   prior    yes  2e-4    24  70     4      0.01  10        7
ic   10   uniform  yes  2e-4    24  70     10     0.01  converge  7
ic   30   mask     no   1e-4    24  50     1      0.01  0         7
ic   30   bert     no   1e-4    24  50     0.6    0.01  0         7
ic   30   prior    no   1e-4    24  50     0.08   0.05  0         7
ic   30   uniform  no   1e-4    24  50     0.6    0.01  0         7
ic   30   mask     yes  1e-4    24  50     0.6    0.5   2         7
ic   30   bert     yes  1e-4    24  50     0.08   0.05  1         7
ic   30   prior    yes  1e-4    24  50     1      0.01  4         7
ic   30   uniform  yes  1e-4    24  50     0.08   0.05  2         7
ic   full mask     no   1e-5    24  30     0.1    0.5   0         5
ic   full bert     no   1e-5    24  30     0.01   0.05  0         5
ic   full prior    no   1e-5(*) 24  30     0.1    0.5   0         5
ic   full uniform  no   1e-5    24  30     0.001  0.05  0         5
ic   full mask     yes  1e-5    24  30     0.001  0.5   1         5
ic   full bert     yes  1e-5    24  30     0.1    0.5   5         5
ic   full prior    yes  1e-5    24  30     0.001  0.5   1         5
ic   full uniform  yes  1e-5    24  30     0.0001 0.05  5         5
sf   1    mask     no   2e-4    24  70     0.2    0.5   0         7
sf   1    bert     no   2e-4    24  70     1      1     0         7
sf   1    prior    no   2e-4    24  70     0.6    1     0         7
sf   1    uniform  no   2e-4    24  70     0.6    0.5   0         7
sf   1    mask     yes  2e-4    24  70     0.08   0.5   5         7
sf   1    bert     yes  2e-4    24  70     0.6    0.01  5         7
sf   1    prior    yes  2e-4    24  70     1      0.5   5         7
sf   1    uniform  yes  2e-4    24  70     1      0.05  5         7
sf   3    mask     no   1e-4    24  70(*)  0.005(*) 2(*) 0       7(*)
sf   3    bert     no   1e-4    24  70     0.08   0.1   0         7
sf   3    prior    no   1e-4    24  70     0.1    2     0         7
sf   3    uniform  no   1e-4    24  70     1      4     0         7
sf   3    mask     yes  1e-4    24  70     0.005  2     3         7
sf   3    bert     yes  1e-4    24  70     1      2     converge  7
sf   3    prior    yes  1e-4    24  70     0.08   4     1         7
sf   3    uniform  yes  1e-4    24  70     1      4     1         7
sf   10   mask     no   1e-3    24  70     4      4     0         7
sf   10   bert     no   1e-3    24  70     0.01   2     0         7
sf   10   prior    no   1e-3    24  70     0.6    4     0         7
sf   10   uniform  no   1e-3    24  70     4      4     0         7
sf   10   mask     yes  1e-3    24  70     4      4     2         7
sf   10   bert     yes  1e-3    24  70     0.01   4     1         7
sf   10   prior    yes  1e-3    24  70     4      2     2         7
sf   10   uniform  yes  1e-3    24  70     6      2     1         7
sf   30   mask     no   1e-4    24  70     0.5    0.01  0         10
sf   30   bert     no   1e-4    24  50     1      0.5   0         10
sf   30   prior    no   1e-4    24  50     0.6    0.01  0         10
sf   30   uniform  no   1e-4    24  50     1      0.5   0         10
sf   30   mask     yes  1e-4    24  50     10     0.05  1         10
sf   30   bert     yes  8e-5    24  50     0.001  0.05  4         10
sf   30   prior    yes  8e-5    24  50     0.001  0.05  2         10
sf   30   uniform  yes  8e-5    24  50     1      0.05  1         10
sf   full mask     no   1e-5    24  20     0.1    1     0         5
sf   full bert     no   1e-5    24  20     0.01   1     0         5
sf   full prior    no   1e-5    24  20     0.1    1     0         5
sf   full uniform  no   1e-5    24  20     0.0001 1     0         5
sf   full mask     yes  1e-5    24  20     0.1    1     3         5
sf   full bert     yes  1e-5    24  20     0.0001 1     1         5
sf   full prior    yes  1e-5    24  20     0.0001 1     1         5
sf   full uniform  yes  1e-5    24  20     0.0001 1(*)  3         5
nli  100  mask     no   3e-4    32  50     1      1     0         8
nli  100  bert     no   3e-4    32  50     0.1    0.01  0         8
nli  100  prior    no   3e-4    32  50     0.001  0.01  0         8
nli  100  uniform  no   3e-4    32  50     0.1    0.1   0         8
nli  100  mask     yes  3e-4    32  50     1      0.01  frac0.1   8
nli  100  bert     yes  3e-4    32  50     0.01   0.1   frac0.1   8
nli  100  prior    yes  3e-4    32  50     0.1    0.01  frac0.1   8
nli  100  uniform  yes  3e-4    32  50     0.001  0.01  frac0.1   8
nli  500  mask     no   1e-3    16  50     10     0.01  0         5
nli  500  bert     no   8e-5    16  50     1      0.01  0         5
nli  500  prior    no   1e-4    8   50     0.01   0.1   0         5
nli  500  uniform  no   1e-4    16  50     1      1     0         5
nli  500  mask     yes  8e-5    8   50     10     0.01  1         30
nli  500  bert     yes  1e-4    16  50     0.1    1     1         30
nli  500  prior    yes  8e-5    8   50     1      0.01  1         30
nli  500  uniform  yes  8e-5    8   50     1      1     1         30
"""


def paper_defaults(task: str, setting: str, strategy: str, warm: bool) -> dict:
    """The row of PAPER_TABLE for this setting (a setting the tables do not list takes the nearest smaller one);
    {} when the tables have none (the flags' own check, or the missing-value check, then speaks)."""
    rows = common.paper_table(PAPER_TABLE)
    setting = common.listed_setting(rows, task, setting)
    for r in rows:
        if r[:4] == [task, setting, strategy, "yes" if warm else "no"]:
            return {"lr": float(r[4]), "batch_size": int(r[5]), "max_epochs": int(r[6]), "alpha": float(r[7]),
                    "epsilon": float(r[8]), "warmup": r[9], "patience": int(r[10])}
    return {}


@dataclass
class Args:
    """Every flag of uimer_im.py (`-h` shows each with its domain). Unset (None): filled from PAPER_TABLE for the
    setting, strategy and warm-up, or from the task."""
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
    # --- optimisation (unset: PAPER_TABLE for the setting, strategy and warm-up)
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
    strategy: str = common.field("uniform", help="replacement strategy q(x') (Sec. 3.2.1)", choices=STRATEGIES)
    warmup: str | None = common.field(None, help="L_task alone before L_int: none (the paper's plain row), epochs "
                                      "(--warmup-epochs), converge (the task trained to early stopping first), "
                                      "fraction (--warmup-fraction of all mini-batches) or paper (the '(warm.)' row's "
                                      "own); every warm-up takes the '(warm.)' row's lr, alpha, epsilon",
                                      choices=WARMUPS)
    warmup_epochs: int | None = common.field(None, help="with --warmup epochs (implied when given alone; 0 = none)",
                                             domain=common.COUNT)
    warmup_fraction: float | None = common.field(None, help="with --warmup fraction (implied when given alone)",
                                                 domain=common.PROBABILITY)
    warmup_count: str = common.field("paper", help="paper: L_task alone for exactly the warm-up epochs; original: "
                                     "one fewer, as the original code (its 'warm-up 1' had none)",
                                     choices=["paper", "original"])
    epsilon: float | None = common.field(None, help="margin of Eq. 5 (unset: the paper's table)",
                                         domain=common.Float(0))
    num_samples: int | None = common.field(None, help="|S_R| = |S_N| replaced sentences per set (default 4; "
                                           "1 for mask)", domain=common.POSITIVE)
    max_rationale_fraction: float = common.field(0.3, help="replace at most this share of the sentence's "
                                                 "wordpieces (incl. [CLS]/[SEP]) as rationale",
                                                 domain=common.Float(0, 1, lo_open=True))
    replace_cap: str = common.field("paper", help="paper: the stated 30%% rule (at most that share replaced as "
                                    "rationale, as many non-rationale); original: the original code's behaviour "
                                    "(docs/uimer_im.md, deviation 4)", choices=["paper", "original"])
    lower_bound: float | None = common.field(None, help="m below this gets log2(lower_bound) (default: ic 1e-23, "
                                             "sf 1e-25, nli 1e-20, as the original)",
                                             domain=common.Float(0, 1, lo_open=True, hi_open=True))
    resample_every_epoch: bool = common.field(False, help="draw new replacement sets every epoch (original: once)")
    prior_corpus: str = common.field("sampled", help="Prior counts wordpieces of the sampled training set "
                                     "(original) or the full training split", choices=["sampled", "full"])
    mlm_model: str = common.field("bert-base-uncased", help="masked LM for --strategy bert: name or path, or "
                                  "'adapt' (train an MLM head of --model on the task's training sentences)",
                                  domain=common.TEXT)
    mlm_adapt_steps: int = common.field(300, help="steps of MLM training for --mlm-model adapt", domain=common.POSITIVE)
    analysis: bool = common.field(False, help="Table 4 on test (accuracy split by a_R > a_N) and the L_int "
                                  "curve of Fig. 3 (L_int also computed, not trained, during warm-up)")
    # --- run
    model: str = common.field(common.DEFAULT_MODEL, help=common.MODEL_HELP,
                              domain=common.TEXT)
    seed: int = common.field(55, help="seed of sampling, initialisation, dropout and the method's random draws",
                             domain=common.SEED)
    seeds: str | None = common.field(None, help="comma-separated seeds: run each, report mean +- std",
                                     domain=common.SEEDS_DOMAIN)
    out_dir: str = common.field("runs", help="run directories go to <out-dir>/uimer_im/<name>/",
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
    dataset = default_sizes(args)
    shape, setting = table_setting(args, dataset)
    kind = args.warmup or ("epochs" if args.warmup_epochs else "fraction" if args.warmup_fraction is not None
                           else "none")
    given = [f for f in ("warmup_epochs", "warmup_fraction") if getattr(args, f) not in (None, 0)]
    wrong = [f for f in given if f != {"epochs": "warmup_epochs", "fraction": "warmup_fraction"}.get(kind)]
    if wrong:
        raise common.UsageError(f"--{wrong[0].replace('_', '-')} does not go with --warmup {kind}")
    if kind == "epochs" and args.warmup_epochs == 0:
        kind = "none"
    row = paper_defaults(shape, setting, args.strategy, warm=kind != "none")
    if kind == "paper" and row:  # the '(warm.)' row's own warm-up: k epochs, 'converge' or 'frac0.1' (Table 8's '0.1*')
        w = row["warmup"]
        kind = "converge" if w == "converge" else "fraction" if w.startswith("frac") else "epochs"
        args.warmup_epochs = int(w) if kind == "epochs" else None
        args.warmup_fraction = float(w[4:]) if kind == "fraction" else None
    need = {"epochs": "warmup_epochs", "fraction": "warmup_fraction"}.get(kind)
    if need and getattr(args, need) is None:
        raise common.UsageError(f"--warmup {kind} needs --{need.replace('_', '-')}")
    args.warmup = kind
    for k in ("lr", "batch_size", "max_epochs", "alpha", "epsilon", "patience"):
        if getattr(args, k) is None:
            setattr(args, k, row.get(k))
    if args.num_samples is None:
        args.num_samples = 1 if args.strategy == "mask" else 4
    if args.strategy == "mask" and args.num_samples != 1:
        raise common.UsageError("--strategy mask has one replaced sentence per set; drop --num-samples")
    if args.lower_bound is None:
        args.lower_bound = {"ic": 1e-23, "sf": 1e-25, "nli": 1e-20}.get(shape)
    if args.max_len is None:
        args.max_len = 128 if args.task in ("nli", "custom") else 50
    if args.dropout is None:
        args.dropout = 0.0 if shape == "nli" else 0.1
    common.check_args(args)
    if args.warmup == "paper":
        raise common.UsageError(f"--warmup paper: PAPER_TABLE has no '(warm.)' row for --task {shape} at "
                                f"{setting}; choose --warmup epochs, converge or fraction")
    unset = [k for k in ("lr", "batch_size", "max_epochs", "alpha", "epsilon", "patience") if getattr(args, k) is None]
    if unset:
        raise common.UsageError(f"PAPER_TABLE has no row for --task {shape} at {setting}: give "
                                + ", ".join("--" + k.replace("_", "-") for k in unset))
    common.check_max_len(args.model, args.max_len)
    args.device = str(common.resolve_device(args.device))
    if cache is not None:
        cache["dataset"] = dataset
    return args


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: replacement candidates and their likelihoods q (Sec. 3.2.1, footnotes 1-2)
# Each candidates_* returns, for P positions, token ids (P, k) and per-position likelihoods q (P, k).
# ------------------------------------------------------------------------------------------------------
def candidates_mask(P: int, mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """fn. 1: x_i -> [MASK], q = 1 (one sample)."""
    return torch.full((P, 1), mask_id, dtype=torch.long), torch.ones(P, 1)


def candidates_uniform(P: int, k: int, allowed_ids: torch.Tensor, gen: torch.Generator):
    """q(x'_u) = 1/|V|: k distinct random vocabulary tokens per position; over the k samples q = 1/k."""
    pick = torch.stack([torch.randperm(len(allowed_ids), generator=gen)[:k] for _ in range(P)]) if P else \
        torch.zeros(0, k, dtype=torch.long)
    return allowed_ids[pick], torch.full((P, k), 1.0 / k)


def candidates_prior(P: int, k: int, counts: torch.Tensor, gen: torch.Generator):
    """q(x'_u) = count(u) / N: k tokens drawn with replacement by corpus frequency; q renormalised over the k."""
    ids = torch.multinomial(counts.float().expand(P, -1), k, replacement=True, generator=gen) if P else \
        torch.zeros(0, k, dtype=torch.long)
    c = counts[ids].float()
    return ids, c / c.sum(-1, keepdim=True)


@torch.no_grad()
def candidates_bert(input_ids: list[list[int]], positions: list[list[int]], k: int, mlm, mask_id: int,
                    special_ids: list[int], batch_size: int = 256):
    """fn. 2: mask x_i in the original sentence, take the masked LM's top-k tokens (the original token is not
    excluded, as Kim et al. and the original code); q = softmax over those k logits. One batched pass."""
    rows = [(s, j) for s, pos in enumerate(positions) for j in pos]
    ids_out, q_out = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        L = max(len(input_ids[s]) for s, _ in chunk)
        x = torch.zeros(len(chunk), L, dtype=torch.long)
        att = torch.zeros(len(chunk), L, dtype=torch.long)
        for b, (s, j) in enumerate(chunk):
            x[b, :len(input_ids[s])] = torch.tensor(input_ids[s])
            att[b, :len(input_ids[s])] = 1
            x[b, j] = mask_id
        dev = next(mlm.parameters()).device
        logits = mlm(input_ids=x.to(dev), attention_mask=att.to(dev)).logits.cpu()  # (b, L, V)
        at = logits[torch.arange(len(chunk)), torch.tensor([j for _, j in chunk])]  # (b, V)
        at[:, special_ids] = -1e10  # never propose [CLS]/[SEP]/[PAD]/[MASK]
        top = at.topk(k, -1)
        ids_out.append(top.indices)
        q_out.append(torch.softmax(top.values, -1))
    if not rows:
        return [], []
    return torch.cat(ids_out), torch.cat(q_out)


def choose_positions(rationale: list[int], content: list[int], max_fraction: float, gen: torch.Generator,
                     cap: str = "paper", strategy: str = "uniform"):
    """R: the rationale wordpieces (at most max_fraction of the sentence, a random subset kept beyond that, the
    rest left for fluency); N: as many random non-rationale content wordpieces (fn. 3). None if the example
    has no rationale or nothing but rationale. cap='original' replays the original code instead: R is never
    capped, and N gets 2 keep - |R| positions when |R| > keep (none: the example is skipped; fewer than none:
    every non-rationale wordpiece); its MASK strategy had no cap at all."""
    R = [i for i, (r, c) in enumerate(zip(rationale, content, strict=True)) if r and c]
    N_pool = [i for i, (r, c) in enumerate(zip(rationale, content, strict=True)) if not r and c]
    if not R or not N_pool:
        return None
    if cap == "original":
        keep = int(len(rationale) * max_fraction)
        m = len(R) if len(R) <= keep or strategy == "mask" else 2 * keep - len(R)
        if m == 0:
            return None
        N = sorted(N_pool[i] for i in torch.randperm(len(N_pool), generator=gen)[:m if m > 0 else len(N_pool)].tolist())
        return R, N
    keep = max(1, int(len(rationale) * max_fraction))
    if len(R) > keep:
        R = sorted(R[i] for i in torch.randperm(len(R), generator=gen)[:keep].tolist())
    N = sorted(N_pool[i] for i in torch.randperm(len(N_pool), generator=gen)[:len(R)].tolist())
    return R, N


def build_replacement_sets(train: list[dict], gen: torch.Generator | None, tok_info: dict, *, strategy: str,
                           num_samples: int, max_rationale_fraction: float, replace_cap: str, mlm=None) -> dict:
    """For every example of `train` (index, input_ids, rationale, content): S^R and S^N as k = num_samples replaced
    sentences each (sample r puts the r-th candidate at every replaced position) with q(x') = mean of the
    per-position likelihoods (fn. 4). Examples without both sets get no entry. The options are the flags of the
    same names. Returns {example index: (ids (2, k, L), q (2, k))}."""
    k = num_samples
    plan = {}
    for e in train:
        pos = choose_positions(e["rationale"], e["content"], max_rationale_fraction, gen, replace_cap, strategy)
        if pos is not None:
            plan[e["index"]] = pos
    flat = [(i, s, j) for i, (R, N) in plan.items() for s, P in enumerate((R, N)) for j in P]
    by_index = {e["index"]: e for e in train}
    cand, q = candidates(strategy, [(by_index[i]["input_ids"], j) for i, _, j in flat], k, tok_info, gen, mlm)
    sets, row = {}, 0
    for i, (R, N) in plan.items():
        x = torch.tensor(by_index[i]["input_ids"])
        ids = x.repeat(2, k, 1)  # (2, k, L): [0] = S^R, [1] = S^N
        qs = torch.zeros(2, k)
        for s, Pset in enumerate((R, N)):
            c, qq = cand[row:row + len(Pset)], q[row:row + len(Pset)]  # (|P|, k)
            ids[s][:, Pset] = c.T
            qs[s] = qq.mean(0)  # fn. 4: q(x'_r) = mean over replaced positions of their likelihoods
            row += len(Pset)
        sets[i] = (ids, qs)
    return sets


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: attribution and loss (Eqs. 4-5)
# ------------------------------------------------------------------------------------------------------
def marginal_log_prob(log_p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """m = sum_{x' in S} q(x') p(y|x') over the last dim, returned as (log m, log(1 - m)) computed in log space
    (1 - m = sum q (1 - p) since sum q = 1), so odds stay finite at p = 0 and p = 1."""
    log_q = q.clamp_min(1e-45).log()
    log_1mp = torch.log(-torch.expm1(log_p.clamp(max=-1e-30)))  # log(1 - p)
    return torch.logsumexp(log_q + log_p, -1), torch.logsumexp(log_q + log_1mp, -1)


def log2_odds(log_m: torch.Tensor, log_1m: torch.Tensor, lower_bound: float) -> torch.Tensor:
    """log2(odds(m)) = log2(m / (1 - m)); log2(lower_bound) where m <= lower_bound (as the original)."""
    lo = (log_m - log_1m) / math.log(2)
    return torch.where(log_m > math.log(lower_bound), lo, torch.full_like(lo, math.log2(lower_bound)))


def im_margin_loss(log_p: torch.Tensor, q: torch.Tensor, epsilon: float, lower_bound: float) -> torch.Tensor:
    """log_p: (n, 2, k) log p(y|x') of the replaced sentences ([:, 0] = S^R, [:, 1] = S^N); q: (n, 2, k).
    Returns L_int per example (n,)."""
    log_m, log_1m = marginal_log_prob(log_p, q)  # (n, 2): m_R, m_N
    lo = log2_odds(log_m, log_1m, lower_bound)
    # Eq. (4): a_R - a_N = log2 odds(m_N) - log2 odds(m_R)   (log2 odds p(y|x) cancels)
    a_R_minus_a_N = lo[:, 1] - lo[:, 0]
    # Eq. (5): L_int = max(a_N - a_R + epsilon, 0)
    return torch.clamp(-a_R_minus_a_N + epsilon, min=0)


def replaced_batch(batch: dict, sets: dict) -> tuple[dict | None, torch.Tensor | None]:
    """All 2k replaced sentences of the batch's examples that have both sets, stacked for ONE forward pass:
    a batch of n*2*k rows sharing the original rows' masks, word indices and gold labels."""
    index = batch["index"].tolist()
    rows = [b for b, i in enumerate(index) if i in sets]
    if not rows:
        return None, None
    B, L = batch["input_ids"].shape
    k = sets[index[rows[0]]][1].size(1)
    device = batch["input_ids"].device
    src = torch.tensor(rows, device=device).repeat_interleave(2 * k)  # row of the batch for each replaced sentence
    rep = {key: v[src] for key, v in batch.items() if torch.is_tensor(v) and v.dim() >= 1 and v.size(0) == B}
    for r, b in enumerate(rows):  # copy each example's (2, k, L_e) replaced ids into the padded batch
        ids = sets[index[b]][0]
        rep["input_ids"][r * 2 * k:(r + 1) * 2 * k, :ids.size(-1)] = ids.reshape(2 * k, -1)
    q = torch.stack([sets[index[b]][1] for b in rows]).to(device)  # (n, 2, k)
    return rep, q


def im_loss(model: common.TaskModel, batch: dict, sets: dict, *, epsilon: float,
            lower_bound: float) -> tuple[torch.Tensor, int]:
    """Mean L_int over the batch's examples that have both sets, from one batched forward pass."""
    rep, q = replaced_batch(batch, sets)
    if rep is None:
        return torch.zeros((), device=batch["input_ids"].device), 0
    log_p = model.gold_log_likelihood(model(rep), rep).view(q.shape)  # (n, 2, k): log p(y|x')
    return im_margin_loss(log_p, q, epsilon, lower_bound).mean(), q.size(0)


def use_int_loss(epoch: int, step: int, total_steps: int, warmup: str, warmup_epochs: int | None,
                 warmup_fraction: float | None, task_converged: bool, count: str = "paper") -> bool:
    """Warm-up schedule (Sec. 3): L_int is off for the first `warmup_epochs` epochs (warmup 'epochs'), or the first
    `warmup_fraction` of all mini-batches ('fraction'), or until the task alone has early-stopped ('converge').
    count='original': off only while epoch + 1 < warmup_epochs (the original code; one epoch fewer)."""
    if warmup == "fraction":
        return step >= warmup_fraction * total_steps
    if warmup == "converge":
        return task_converged
    if warmup == "epochs":
        return epoch + (1 if count == "original" else 0) >= warmup_epochs
    return True


def candidates(strategy: str, positions: list[tuple[list[int], int]], k: int, tok_info: dict, gen: torch.Generator,
               mlm=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The strategy's replacement tokens and their likelihoods q for each (sentence ids, position): (P, k'), (P, k')
    with k' = 1 for mask."""
    P = len(positions)
    if strategy == "mask":
        return candidates_mask(P, tok_info["mask_id"])
    if strategy == "uniform":
        return candidates_uniform(P, k, tok_info["allowed_ids"], gen)
    if strategy == "prior":
        return candidates_prior(P, k, tok_info["counts"], gen)
    return candidates_bert([ids for ids, _ in positions], [[j] for _, j in positions], k, mlm, tok_info["mask_id"],
                           tok_info["special_ids"])


def marginal_effect_explainer(model: common.TaskModel, strategy: str, k: int, tok_info: dict, lower_bound: float,
                              gen: torch.Generator, mlm=None, max_rows: int = 512):
    """The method's own interpretation for explanations.jsonl: Eq. 4 for every content wordpiece i alone,
    a_i = log2 odds p(y|x) - log2 odds m_i, m_i = sum_{x'} q(x') p(y|x') over x with wordpiece i replaced by the
    strategy's candidates (Kim et al. 2020's input marginalization), y = the model's prediction. All replaced
    sentences of a batch go through the model in chunks of `max_rows`."""
    special = torch.tensor(tok_info["special_ids"])

    @torch.no_grad()
    def explain(batch: dict, target: torch.Tensor) -> torch.Tensor:
        tb = common.target_batch(batch, target)
        B, L = tb["input_ids"].shape
        content = common.content_mask(tb, special.to(tb["input_ids"].device)).bool()
        pos = content.nonzero().tolist()  # [(b, i)] in row order
        device = tb["input_ids"].device
        if not pos:
            return torch.zeros(B, L, device=device)
        n = tb["attention_mask"].sum(1).tolist()
        cand, q = candidates(strategy, [(tb["input_ids"][b, :n[b]].tolist(), i) for b, i in pos], k, tok_info, gen,
                             mlm)
        kk = cand.size(1)
        src = torch.tensor([b for b, _ in pos], device=device).repeat_interleave(kk)
        col = torch.tensor([i for _, i in pos], device=device).repeat_interleave(kk)
        log_p = []
        for s in range(0, len(src), max_rows):
            rows = src[s:s + max_rows]
            rep = {key: v[rows] for key, v in tb.items() if torch.is_tensor(v) and v.dim() >= 1 and v.size(0) == B}
            rep["input_ids"][torch.arange(len(rows)), col[s:s + max_rows]] = cand.reshape(-1)[s:s + max_rows].to(device)
            log_p.append(model.gold_log_likelihood(model(rep), rep))
        log_p = torch.cat(log_p).view(len(pos), kk)
        log_m, log_1m = marginal_log_prob(log_p, q.to(device, log_p.dtype))
        log_p0 = model.gold_log_likelihood(model(tb), tb)  # (B,) log p(y|x)
        lo0 = log2_odds(*marginal_log_prob(log_p0.unsqueeze(-1), torch.ones_like(log_p0).unsqueeze(-1)), lower_bound)
        b_idx = torch.tensor([b for b, _ in pos], device=device)
        out = torch.zeros(B, L, dtype=log_p.dtype, device=device)
        # Eq. (4): a_i = log2 odds p(y|x) - log2 odds m_i
        out[b_idx, torch.tensor([i for _, i in pos], device=device)] = lo0[b_idx] - log2_odds(log_m, log_1m,
                                                                                              lower_bound)
        return out
    return explain


# ------------------------------------------------------------------------------------------------------
# Vocabulary information the strategies need, and the masked LM for +BERT
# ------------------------------------------------------------------------------------------------------
def token_info(tokenizer, corpus: list[list[int]]) -> dict:
    """mask id, special ids, the ids Uniform may draw (the vocabulary minus special and [unused*] tokens) and
    the wordpiece counts Prior draws from (`corpus`: lists of input ids)."""
    special = sorted(set(tokenizer.all_special_ids))
    V = len(tokenizer)
    vocab = tokenizer.convert_ids_to_tokens(list(range(V)))
    allowed = torch.tensor([i for i, t in enumerate(vocab) if i not in special and not t.startswith("[unused")])
    counts = torch.zeros(V, dtype=torch.long)
    for ids in corpus:
        for t in ids:
            if t not in special:
                counts[t] += 1
    return {"mask_id": tokenizer.mask_token_id, "special_ids": special, "allowed_ids": allowed, "counts": counts}


def load_mlm(args: Args, tokenizer, sentences: list[list[int]]):
    """The masked LM of --strategy bert, in eval mode; it must share the task model's vocabulary."""
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    if args.mlm_model == "adapt":
        return adapt_mlm(args, tokenizer, sentences)
    try:
        path = common.resolve_model_path(args.mlm_model)
        mlm, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    except Exception as e:  # not cached offline, no network, not a masked LM folder: one line
        why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise common.UsageError(f"--strategy bert needs a masked LM: {why}; pass --mlm-model PATH (a local masked "
                                "LM with the encoder's vocabulary), or --mlm-model adapt (docs/uimer_im.md, "
                                "deviation 2)") from None
    if any("predictions" in k or "lm_head" in k for k in info["missing_keys"]):
        raise common.UsageError(f"--mlm-model {args.mlm_model}: the checkpoint has no masked-LM head; "
                                f"use a masked LM or --mlm-model adapt")
    if AutoTokenizer.from_pretrained(path).get_vocab() != tokenizer.get_vocab():
        raise common.UsageError(f"--mlm-model {args.mlm_model} has a different vocabulary from --model "
                                f"{args.model}; the replaced tokens must be the task model's")
    return mlm.to(args.device).eval()


def adapt_mlm(args: Args, tokenizer, sentences: list[list[int]]):
    """--mlm-model adapt: train an MLM head (and the encoder) of --model on the task's training sentences
    (15% of wordpieces; 80% [MASK], 10% random, 10% kept), cached under <out-dir>/mlm_cache/."""
    from transformers import AutoModelForMaskedLM
    path = common.resolve_model_path(args.model)
    key = f"{path}|{args.task}|{args.data}|{args.mlm_adapt_steps}|{len(sentences)}"
    key = hashlib.sha1(key.encode()).hexdigest()[:12]
    cache = Path(args.out_dir) / "mlm_cache" / f"{args.task}-{key}"
    if (cache / "config.json").is_file():
        return AutoModelForMaskedLM.from_pretrained(cache).to(args.device).eval()
    print(f"adapting a masked LM of {args.model} on {len(sentences)} {args.task} training sentences "
          f"({args.mlm_adapt_steps} steps) -> {cache}")
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    mlm = AutoModelForMaskedLM.from_pretrained(path).to(args.device).train()
    info = token_info(tokenizer, [])
    opt = torch.optim.AdamW(mlm.parameters(), lr=1e-4)
    for _ in common.progress(range(args.mlm_adapt_steps), desc="mlm adapt"):
        pick = torch.randint(len(sentences), (32,), generator=gen).tolist()
        ex = [{"input_ids": sentences[i], "token_type_ids": [0] * len(sentences[i]),
               "rationale": [0] * len(sentences[i]),
               "index": 0, "label": 0} for i in pick]
        b = common.collate(ex, tokenizer.pad_token_id)
        x, labels = b["input_ids"].clone(), b["input_ids"].clone()
        special = torch.isin(x, torch.tensor(info["special_ids"]))
        chosen = (torch.rand(x.shape, generator=gen) < 0.15) & ~special
        labels[~chosen] = -100
        r = torch.rand(x.shape, generator=gen)
        x[chosen & (r < 0.8)] = info["mask_id"]
        rnd = chosen & (r >= 0.8) & (r < 0.9)
        x[rnd] = info["allowed_ids"][torch.randint(len(info["allowed_ids"]), (int(rnd.sum()),), generator=gen)]
        loss = mlm(input_ids=x.to(args.device), attention_mask=b["attention_mask"].to(args.device),
                   labels=labels.to(args.device)).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    mlm.save_pretrained(cache)
    tokenizer.save_pretrained(cache)
    return mlm.eval()


def training_sentences(args: Args, data_dir: Path, tokenizer, dataset: dict | None = None) -> list[list[int]]:
    """Input ids of every sentence of the task's training split (text only: --mlm-model adapt, --prior-corpus full);
    for --task custom, of the dataset's training split."""
    if dataset is not None:
        return [x["input_ids"] for x in common.align_rationales(tokenizer, dataset["train"], args.max_len)[0]]
    if args.task == "nli":
        rows = common.read_esnli(data_dir, "train")
        return [tokenizer(r["premise"], r["hypothesis"], is_split_into_words=True, truncation=True,
                          max_length=args.max_len)["input_ids"] for r in rows]
    return [tokenizer(r["words"], is_split_into_words=True, truncation=True, max_length=args.max_len)["input_ids"]
            for r in common.read_snips(data_dir, "train")]


# ------------------------------------------------------------------------------------------------------
# Analysis: Table 4 (accuracy split by a_R > a_N on test) and the L_int curve of Fig. 3
# ------------------------------------------------------------------------------------------------------
@torch.no_grad()
def table4(model, test: list[dict], args: Args, seed: int, tok_info: dict, mlm, pad_id: int) -> dict:
    sets = build_replacement_sets(test, torch.Generator().manual_seed(seed + 1), tok_info, strategy=args.strategy,
                                  num_samples=args.num_samples, max_rationale_fraction=args.max_rationale_fraction,
                                  replace_cap=args.replace_cap, mlm=mlm)
    if not sets:
        return {"note": "no test example has a rationale (e-SNLI test has no highlights in this copy)"}
    model.eval()
    correct = common.per_example_correct(model, common.batches(test, args.eval_batch_size, pad_id, sort_by_length=True,
                                                               device=args.device))
    a_R_gt_a_N = {}
    for batch in common.batches([e for e in test if e["index"] in sets], args.eval_batch_size, pad_id,
                                sort_by_length=True, device=args.device):
        rep, q = replaced_batch(batch, sets)
        log_p = model.gold_log_likelihood(model(rep), rep).view(q.shape)
        log_m, log_1m = marginal_log_prob(log_p, q)
        lo = log2_odds(log_m, log_1m, args.lower_bound)
        for i, d in zip(batch["index"].tolist(), (lo[:, 1] - lo[:, 0]).tolist(), strict=True):
            a_R_gt_a_N[i] = d > 0
    return common.table4_summary(correct, a_R_gt_a_N)


def write_lint_curve(run: Path, log_path: Path) -> None:
    import json
    per_epoch: dict[int, list] = {}
    for line in open(log_path):
        r = json.loads(line)
        if "L_int" in r and r.get("n_int", 0) > 0:
            per_epoch.setdefault(r["epoch"], []).append(r["L_int"])
    curve = {e: sum(v) / len(v) for e, v in sorted(per_epoch.items())}
    common.write_json_atomic(run / "lint_curve.json", curve)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot(list(curve), list(curve.values()))
    ax.set_xlabel("epoch")
    ax.set_ylabel("L_int (mean over steps)")
    fig.tight_layout()
    fig.savefig(run / "lint_curve.png", dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------
# Your own training loop: L_int on a Hugging Face classifier (docs/own_data.md, "Your own training loop")
# ------------------------------------------------------------------------------------------------------
def batch_examples(batch: dict, special_ids: torch.Tensor) -> list[dict]:
    """The rows of a right-padded batch as the examples build_replacement_sets reads: index (the row), input_ids,
    rationale and content (0/1: not a special token) over the row's wordpieces, padding dropped."""
    att = batch["attention_mask"].bool()
    n = att.sum(1)
    if not torch.equal(att, torch.arange(att.size(1), device=att.device) < n.unsqueeze(1)):
        raise ValueError("UIMER-IM's own-loop term needs right-padded batches (tokenizer.padding_side = 'right'): "
                         "the replaced sentences are written over each row's first wordpieces")
    ids, r, c = batch["input_ids"].tolist(), batch["rationale"].tolist(), common.content_mask(batch, special_ids)
    return [{"index": b, "input_ids": ids[b][:m], "rationale": [int(x > 0) for x in r[b][:m]],
             "content": [int(x) for x in c[b][:m].tolist()]} for b, m in enumerate(n.tolist())]


def interpretation_loss(model, batch: dict, tok_info: dict, *, strategy: str = "uniform",
                        num_samples: int | None = None, epsilon: float = 1.0, lower_bound: float = 1e-23,
                        max_rationale_fraction: float = 0.3, replace_cap: str = "paper",
                        generator: torch.Generator | None = None, mlm=None) -> torch.Tensor:
    """UIMER-IM's L_int (Eqs. 4-5) for your own loop: `loss = outputs.loss + alpha * interpretation_loss(...)`.
    model: a Hugging Face ...ForSequenceClassification or ...ForTokenClassification, or a TaskModel.
    batch: right-padded input_ids, attention_mask, optional token_type_ids, labels ((B,), or (B, L) with -100 where
    ignored) and rationale (B, L), 0/1 per wordpiece. tok_info: token_info(tokenizer, corpus) (the corpus, lists of
    input ids, only counts for strategy 'prior'). The options are the flags of uimer_im.py: num_samples k (default
    4, 1 for mask); epsilon 1 and lower_bound 1e-23 are the IC 1-shot +Uniform row's and IC's (Tables 6-8 range from
    0.01 to 4; sf 1e-25, nli 1e-20: PAPER_TABLE); mlm: the masked LM of strategy 'bert'.
    The replacement sets S^R, S^N are drawn anew at every call, with `generator` (a CPU torch.Generator; None:
    torch's global one). The paper draws them once per training set, and uimer_im.py does (unless
    --resample-every-epoch); drawing per call is the own-loop form, whose batches need not be the same every epoch.
    Returns the mean L_int over the examples with both sets (a rationale and a non-rationale wordpiece; 0 if none),
    from one batched forward pass over their 2k replaced sentences each (im_loss, as the run)."""
    k = num_samples if num_samples is not None else 1 if strategy == "mask" else 4
    if strategy not in STRATEGIES or replace_cap not in ("paper", "original") or strategy == "mask" and k != 1 or \
            strategy == "bert" and mlm is None or strategy in ("mask", "bert") and tok_info["mask_id"] is None:
        raise ValueError(f"strategy {strategy!r} (one of {STRATEGIES}; mask: num_samples 1, a mask token; bert: mlm, "
                         f"a mask token), replace_cap {replace_cap!r} (paper or original): not a UIMER-IM setting")
    model, batch = common.as_task_model(model), common.rationale_batch(batch)
    special = torch.as_tensor(tok_info["special_ids"]).to(batch["input_ids"].device)
    sets = build_replacement_sets(batch_examples(batch, special), generator, tok_info, strategy=strategy,
                                  num_samples=k, max_rationale_fraction=max_rationale_fraction,
                                  replace_cap=replace_cap, mlm=mlm)
    rows = torch.arange(batch["input_ids"].size(0), device=batch["input_ids"].device)
    return im_loss(model, {**batch, "index": rows}, sets, epsilon=epsilon, lower_bound=lower_bound)[0]


# ------------------------------------------------------------------------------------------------------
# Training: one seed end to end
# ------------------------------------------------------------------------------------------------------
def run_name(args: Args, seed: int) -> str:
    """<task>-<setting>-<variant>-<seed>, e.g. ic-1shot-uniform-warm1-55; the variant is 'base' when alpha is 0."""
    warm = (f"-warmfrac{args.warmup_fraction:g}" if args.warmup == "fraction" else "-warmconv" if args.warmup ==
            "converge" else f"-warm{args.warmup_epochs}" if args.warmup == "epochs" else "")
    variant = args.strategy + warm + ("-warmorig" if args.warmup_count == "original" else "") + \
        ("-caporig" if args.replace_cap == "original" else "")
    setting = f"{args.train_size}ex" if args.task == "nli" or args.shots is None else f"{args.shots}shot"
    return f"{args.task}-{setting}-{'base' if args.alpha == 0 else variant}-{seed}"


def train_one_seed(args: Args, seed: int, tokenizer, mlm, dataset: dict | None = None) -> dict:
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
    # the replacement sets S^R, S^N of every training example, drawn once (or every epoch)
    corpus = ([e["input_ids"] for e in data["train"]] if args.prior_corpus == "sampled"
              else training_sentences(args, common.resolve_data_dir(args.data_dir), tokenizer, dataset))
    tok_info = token_info(tokenizer, corpus)
    need_sets = args.alpha > 0 or args.analysis
    sets = build_replacement_sets(data["train"], torch.Generator().manual_seed(seed), tok_info, strategy=args.strategy,
                                  num_samples=args.num_samples, max_rationale_fraction=args.max_rationale_fraction,
                                  replace_cap=args.replace_cap, mlm=mlm) if need_sets else {}
    steps_per_epoch = math.ceil(len(data["train"]) / args.batch_size)
    total_steps = steps_per_epoch * args.max_epochs
    opt, sched = common.make_optimizer(model, args.lr, total_steps)
    stopper, step = common.EarlyStopping(args.patience), 0
    task_converged = False
    for epoch in range(args.max_epochs):
        if args.resample_every_epoch and epoch > 0 and need_sets:
            sets = build_replacement_sets(data["train"], torch.Generator().manual_seed(seed * 1000 + epoch), tok_info,
                                          strategy=args.strategy, num_samples=args.num_samples,
                                          max_rationale_fraction=args.max_rationale_fraction,
                                          replace_cap=args.replace_cap, mlm=mlm)
        model.train()
        sums = {"L_task": 0.0, "L_int": 0.0}
        for batch in common.progress(common.batches(data["train"], args.batch_size, pad, device=args.device,
                                                    shuffle_seed=seed * 1000 + epoch), desc=f"epoch {epoch}"):
            int_on = args.alpha > 0 and use_int_loss(epoch, step, total_steps, args.warmup, args.warmup_epochs,
                                                     args.warmup_fraction, task_converged, args.warmup_count)
            scores = model(batch)
            L_task = model.task_loss(scores, batch)
            if int_on:
                L_int, n_int = im_loss(model, batch, sets, epsilon=args.epsilon, lower_bound=args.lower_bound)
            elif args.analysis and sets:  # Fig. 3: L_int is tracked, not trained, during warm-up
                with torch.no_grad():
                    L_int, n_int = im_loss(model, batch, sets, epsilon=args.epsilon, lower_bound=args.lower_bound)
            else:
                L_int, n_int = torch.zeros((), device=args.device), 0
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
            if args.warmup == "converge" and not task_converged and args.alpha > 0:
                task_converged, stopper.bad = True, 0  # the task has converged: switch L_int on, reset patience
                continue
            break
    # test: the best-dev model scores the test set once; results.json has no paths (same seed, same bytes)
    stopper.restore(model)
    extra = {}
    if args.analysis:  # Table 4 and Fig. 3, on the selected (best-dev) model
        extra["table4"] = table4(model, data["test"], args, seed, tok_info, mlm, pad)
        write_lint_curve(run, run / "log.jsonl")
    scored = common.evaluate(model, common.batches(data["test"], args.eval_batch_size, pad, sort_by_length=True,
                                                   device=args.device), data["labels"])
    test = scored[metric]
    common.write_predictions(run / "predictions.jsonl", data["test"], scored["predictions"])
    # explanations of the first test examples: integrated gradients and the method's marginal effect (Eq. 4)
    if args.explain_examples:
        own = {} if not args.explain_own or args.strategy == "bert" and mlm is None else {  # +BERT BaseModel: no MLM
            f"marginal_{args.strategy}": marginal_effect_explainer(
                model, args.strategy, args.num_samples, tok_info, args.lower_bound,
                torch.Generator().manual_seed(seed + 2), mlm)}
        rows, extra["plausibility"] = common.explain_examples(
            model, data["test"], None, own, args.explain_examples, pad_id=pad, label_names=data["labels"],
            has_rationale=dataset is not None or args.task != "nli", device=args.device)
        common.write_explanations(run / "explanations.jsonl", rows)
    results = {"task": args.task, "setting": setting_of(args), "seed": seed, "metric": metric, "test": test,
               "dev": stopper.best, "best_epoch": stopper.best_epoch, "rationale_stats": data["rationale_stats"],
               "n_train": len(data["train"]), "n_with_both_sets": len(sets),
               "n_skipped_by_L_int": len(data["train"]) - len(sets) if args.alpha > 0 else None,
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
    if args.strategy in ("mask", "bert"):
        common.check_mask_token(tokenizer, args.model, f"--strategy {args.strategy}", "--strategy uniform or prior")
    mlm = None
    if args.strategy == "bert" and (args.alpha > 0 or args.analysis):
        sentences = training_sentences(args, common.resolve_data_dir(args.data_dir), tokenizer, cache["dataset"]) \
            if args.mlm_model == "adapt" else []
        mlm = load_mlm(args, tokenizer, sentences)
    seeds = common.parse_seeds(args.seeds, args.seed)
    runs = [train_one_seed(args, seed, tokenizer, mlm, cache["dataset"]) for seed in seeds]
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
