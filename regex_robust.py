"""REGEX: robustness improvement + explanation-guided training for faithful explanations, and a faithfulness suite.

Paper: Li, Hu, Chen, He, "Towards Faithful Explanations for Text Classification with Robustness Improvement and
Explanation Guided Training", TrustNLP 2023, arXiv 2312.17591. Only the abstract could be read: each term follows
the standard definition of the technique the paper names; where the paper is silent the choice is a flag and a
numbered deviation in docs/regex.md. Equation numbers below are ours.
Documentation: docs/regex.md (equations -> code, deviations, results, the weight sweep).
common.py sections used: CLI and validation; runs and results; devices and models; batching; training utilities;
metrics; explanations; readers; rationale datasets.

    python regex_robust.py --task sst2                                   # the defaults: VAT (lambda_v 0.1) only
    python regex_robust.py --task sst2 --igr --egt                       # REGEX: IGR + VAT + EGT
    python regex_robust.py --task sst2 --no-igr --no-vat --no-egt        # plain fine-tuning, same script
    python regex_robust.py --task sst2 --evaluate-only --checkpoint runs/regex_robust/<run>   # faithfulness report
    python regex_robust.py --task sst2 --train-size 200 --seeds 1,2,3    # a subsample, several seeds, mean +- std
    python regex_robust.py --task custom --data path/to/mydata --igr --egt   # your data, any number of classes, pairs
    loss = outputs.loss + regex_robust.regex_loss(model, batch, tokenizer, igr=True, egt=True)   # in your own loop

Equation index
    Eq. 1  L = L_CE + lambda_g L_IGR + lambda_v L_VAT + lambda_e L_EGT       -> weighted_sum(), from train_step()
                                              and (without L_CE, for your own loop) regex_loss(); terms: regex_terms()
    Eq. 2  L_IGR = mean_b sum_{i non-pad} || d l_CE(x_b) / d e_{b,i} ||^2     -> igr_loss()  (Ross & Doshi-Velez)
    Eq. 3  d <- xi g / ||g||, g = grad_d KL(p(.|e) || p(.|e + d)) (K times) -> vat_direction()
    Eq. 4  r_adv = eps d / ||d||,  L_VAT = KL(p(.|e) || p(.|e + r_adv))    -> vat_loss()     (Miyato et al. 2017)
    Eq. 5  IG_i = (e_i - e'_i) . 1/m sum_k grad f(e' + (k - 1/2)/m (e - e'))  -> integrated_gradients()
    Eq. 6  x~ = x with the K% lowest-saliency content tokens -> [MASK]        -> mask_lowest()
           (--egt-saliency rationale: the human rationale is the saliency, examples without one skipped)
    Eq. 7  L_align = KL(s^ || alpha), alpha = last-layer [CLS] attention     -> align_loss()
    Eq. 8  L_mask = KL(p(.|x) || p(.|x~))                                    -> consistency_loss()
    Eq. 9  L_EGT = L_align + L_mask (--egt-mode both | align | mask)         -> egt_loss()
Faithfulness suite (evaluation only; any classifier behind the `Classifier` interface)
    comp = p(y^|x) - p(y^|x \\ r), suff = p(y^|x) - p(y^|r) (ERASER); normalised (Carton et al. 2020); AOPC
                                                                             -> faithfulness()
    randomisation tests (Zafar et al. 2021): Spearman and top-k Jaccard     -> agreement()
    select-then-predict (FRESH), plausibility (token AUC, average precision) -> select_then_predict(), plausibility()
    KernelSHAP, LIME (captum); leave-one-out Kendall tau (taucorr_loo)        -> perturbation_scores(), leave_one_out()
    --convention eraser | ferret: the definitions of either (docs/regex.md)  -> select_rationale(), faithfulness()
    --explain-memory-mb: every evaluation forward sized from one budget      -> rows_within()
    explanations.jsonl: the suite's attributions of the first N test examples -> explain()
Your data (--task custom --data, common.read_rationale_data): any number of classes, sentence pairs, plausibility
against the dataset's own rationales -> read_custom_data(), load_custom_split()
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import common

TEXT_TASKS = ("sst2", "imdb", "movies")  # movies = ERASER Movie Reviews (human evidence)
TASKS = (*TEXT_TASKS, "custom")  # custom = your rationale dataset (--data; docs/own_data.md)
METHODS = ["random", "attention", "scaled_attention", "input_x_gradient", "ig", "deeplift"]  # the default set
PERTURBATION_METHODS = ["kernel_shap", "lime"]  # captum's KernelShap and Lime over content tokens (on request)
ALL_METHODS = METHODS + PERTURBATION_METHODS
# --convention: the faithfulness definitions of ERASER / ood_faith (ours, the default) or of ferret (ferret-xai 0.4.2).
# Each entry fills a flag left unset; the rules that have no flag (which tokens, floor/ceil, empty bins, the AOPC
# divisor) follow the convention itself (docs/regex.md, "Conventions").
CONVENTIONS = {
    "eraser": {"attr_reduce": "ood_faith", "ig_baseline": "zero", "removal": "pad", "aopc_ratios": "0.02,0.1,0.2,0.5",
               "taucorr_loo": False},
    "ferret": {"attr_reduce": "sum", "ig_baseline": "pad", "removal": "retokenize",
               "aopc_ratios": "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0", "taucorr_loo": True},
}
RATIONALE_RATIO = {"sst2": 0.2, "imdb": 0.02, "movies": 0.1, "custom": 0.2}  # ood_faith's "desired rationale
# length"; custom: SST-2's
MAX_LEN = {"sst2": 128, "imdb": 256, "movies": 512, "custom": 128}
LABELS = ["negative", "positive"]  # label ids 0 and 1 of the paper tasks (id2label of a saved model); custom: its own


def _float_list(text: str) -> list[float] | None:
    try:
        return [float(t) for t in str(text).split(",")]
    except ValueError:
        return None


def FloatList(lo: float, hi: float, lo_open: bool = True) -> common.Domain:
    def ok(x):
        v = _float_list(x)
        return bool(v) and all(math.isfinite(f) and (f > lo if lo_open else f >= lo) and f <= hi for f in v) and \
            len(set(v)) == len(v)
    return common.Domain(f"comma-separated distinct numbers in {'(' if lo_open else '['}{lo:g}, {hi:g}]", ok)


def Names(choices: Sequence[str]) -> common.Domain:
    """Comma-separated distinct names from `choices` (at least one)."""
    def ok(x):
        v = [t.strip() for t in str(x).split(",")]
        return all(v) and all(t in choices for t in v) and len(set(v)) == len(v)
    return common.Domain(f"comma-separated distinct names from {{{','.join(choices)}}}", ok)


@dataclass
class Args:
    task: str = common.field("sst2", help="training / evaluation task; custom: your own data with human rationales "
                             "(--data; docs/own_data.md): any number of classes, single texts or sentence pairs",
                             choices=list(TASKS))
    ood_task: str | None = common.field(None, help="also evaluate on this task's test set (out of domain)",
                                        choices=list(TEXT_TASKS))
    # Defaults from the weight sweep (docs/regex.md, Results): of lambda_g {0, 0.01, 0.1} x lambda_v {0.1, 1} x EGT
    # on/off, only VAT at 0.1 alone kept test accuracy within 1 point of plain fine-tuning. --igr --egt add the terms.
    igr: bool = common.field(False, help="input-gradient regularisation L_IGR (Eq. 2)")
    vat: bool = common.field(True, help="virtual adversarial training L_VAT (Eqs. 3-4)")
    egt: bool = common.field(False, help="explanation-guided training L_EGT (Eqs. 6-9)")
    lambda_g: float = common.field(0.01, help="weight of L_IGR (paper value unknown)", domain=common.Float(0))
    lambda_v: float = common.field(0.1, help="weight of L_VAT (paper value unknown)", domain=common.Float(0))
    lambda_e: float = common.field(1.0, help="weight of L_EGT (paper value unknown)", domain=common.Float(0))
    vat_eps: float = common.field(1.0, help="VAT radius epsilon (L2 over the whole sequence of word embeddings)",
                                  domain=common.Float(0))
    vat_xi: float = common.field(0.1, help="VAT finite-difference step xi", domain=common.Float(0, lo_open=True))
    vat_iters: int = common.field(1, help="VAT power iterations K", domain=common.POSITIVE)
    egt_mode: str = common.field("both", help="align attention to saliency, mask-consistency, or both",
                                 choices=["align", "mask", "both"])
    egt_saliency: str = common.field("ig", help="what ranks the tokens in EGT: the model's own attribution (ig, "
                                     "input_x_gradient: the paper) or the human rationale of the data (rationale: "
                                     "movies, custom; examples without one are skipped by L_EGT)",
                                     choices=["ig", "input_x_gradient", "rationale"])
    mask_ratio: float = common.field(0.3, help="K: share of content tokens (lowest saliency) replaced by [MASK]",
                                     domain=common.Float(0, 1, lo_open=True, hi_open=True))
    egt_start: int | None = common.field(None, help="L_EGT switches on at this optimisation step (default: after "
                                         "the first epoch)", domain=common.COUNT)
    align_direction: str = common.field("saliency_attention", help="KL(s^ || alpha) (AT-BMC) or KL(alpha || s^)",
                                        choices=["saliency_attention", "attention_saliency"])
    detach_clean: bool = common.field(False, help="detach p(.|x) in L_mask (SGT does not)")
    ig_steps: int = common.field(10, help="IG interpolation steps m, training (EGT) and evaluation",
                                 domain=common.POSITIVE)
    convention: str = common.field("eraser", help="faithfulness definitions: eraser (ERASER / ood_faith: ceil, all "
                                   "content tokens, AOPC sum / (bins + 1)) or ferret (floor of the positively scored "
                                   "tokens, empty and repeated bins skipped, mean over kept bins); it also sets the "
                                   "defaults of --attr-reduce, --ig-baseline, --removal, --aopc-ratios, --taucorr-loo",
                                   choices=list(CONVENTIONS))
    ig_baseline: str | None = common.field(None, help="IG / DeepLift / SHAP / LIME baseline at content tokens: zero "
                                           "vector or the [PAD] / [MASK] embedding (default: eraser zero, ferret pad)",
                                           choices=["zero", "pad", "mask"])
    attr_reduce: str | None = common.field(None, help="token score from (token, hidden) attributions: ood_faith "
                                           "(L2 for input_x_gradient / ig, sum for deeplift), l2 or sum (signed) "
                                           "(default: eraser ood_faith, ferret sum)",
                                           choices=["ood_faith", "l2", "sum"])
    attributions: str = common.field(",".join(METHODS), help="attribution methods to evaluate (comma-separated; "
                                     "kernel_shap and lime on request)", domain=Names(ALL_METHODS))
    shap_samples: int = common.field(200, help="KernelSHAP: coalitions sampled per example (captum KernelShap)",
                                     domain=common.POSITIVE)
    lime_samples: int = common.field(200, help="LIME: perturbations sampled per example (captum Lime, linear "
                                     "surrogate)", domain=common.POSITIVE)
    rationale_ratio: float | None = common.field(None, help="rationale length for comp / suff (default: sst2 0.2, "
                                                 "imdb 0.02, movies 0.1, as ood_faith; custom 0.2)",
                                                 domain=common.Float(0, 1, lo_open=True))
    aopc_ratios: str | None = common.field(None, help="AOPC ratio bins (default: eraser 0.02,0.1,0.2,0.5; ferret "
                                           "0.1,0.2,...,1.0)", domain=FloatList(0, 1))
    removal: str | None = common.field(None, help="removal operator: [PAD] id with attention kept (ood_faith), "
                                       "[MASK] id, delete the tokens, or retokenize (decode what is kept and "
                                       "tokenise it again, as ferret) (default: eraser pad, ferret retokenize)",
                                       choices=["pad", "mask", "delete", "retokenize"])
    taucorr_loo: bool | None = common.field(None, help="also ferret's leave-one-out Kendall tau (one forward per "
                                            "token and example, shared by the methods) (default: eraser off, "
                                            "ferret on)")
    randomization: bool = common.field(True, help="randomisation tests (trained vs random init; seed vs seed)")
    select_then_predict: bool = common.field(False, help="train a classifier on extracted rationales (FRESH)")
    stp_methods: str = common.field("ig", help="attribution methods for select-then-predict (comma-separated)",
                                    domain=Names(ALL_METHODS))
    plausibility: bool = common.field(False, help="token ROC AUC and average precision against ERASER Movies human "
                                      "evidence (movies and custom are scored against their own rationales anyway)")
    plausibility_size: int = common.field(50, help="ERASER Movies test documents for --plausibility",
                                          domain=common.POSITIVE)
    lr: float = common.field(5e-5, help="AdamW learning rate", domain=common.Float(0, lo_open=True))
    batch_size: int = common.field(16, help="training batch size", domain=common.POSITIVE)
    max_epochs: int = common.field(3, help="training epochs", domain=common.POSITIVE)
    patience: int = common.field(2, help="early stopping on dev accuracy (epochs)", domain=common.COUNT)
    warmup_ratio: float = common.field(0.1, help="linear learning-rate warm-up over this share of the steps",
                                       domain=common.PROBABILITY)
    dropout: float = common.field(0.1, help="dropout before the classifier", domain=common.PROBABILITY)
    max_len: int | None = common.field(None, help="max wordpieces (default: sst2 128, imdb 256, movies 512, "
                                       "custom 128)",
                                       domain=common.MAX_LEN)
    train_size: int | None = common.field(None, help="train on a random subsample of this size (drawn with the seed)",
                                          domain=common.POSITIVE)
    subsample_seed: int | None = common.field(None, help="draw the --train-size subsample with this seed instead, so "
                                              "runs of --seeds differ only in initialisation, dropout and order",
                                              domain=common.SEED)
    allow_smaller: bool = common.field(False, help="if --train-size is larger than the training split, train on all of "
                                       "it instead of stopping with an error (recorded in results.json as `shortfall`)")
    dev_size: int | None = common.field(None, help="dev subsample (fixed RNG, the same for every seed)",
                                        domain=common.POSITIVE)
    test_size: int | None = common.field(None, help="test subsample (fixed RNG, the same for every seed)",
                                         domain=common.POSITIVE)
    evaluate_only: bool = common.field(False, help="no training: evaluate --checkpoint")
    checkpoint: str | None = common.field(None, help="a run directory of this script, its model/ folder, an --out-dir "
                                          "holding one run, any local Hugging Face sequence-classification model "
                                          "folder, or a legacy model.pt", domain=common.TEXT)
    compare_checkpoint: str | None = common.field(None, help="with --evaluate-only: a second model (other seed) "
                                                  "for the seed-agreement randomisation test", domain=common.TEXT)
    save_model: bool = common.field(True, help="write the trained model to <run>/model/ (a standard Hugging Face "
                                    "sequence-classification folder: transformers.pipeline loads it; model_card.md)",
                                    aliases=["--save-checkpoint"])
    model: str = common.field(common.DEFAULT_MODEL, help=common.MODEL_HELP,
                              domain=common.TEXT)
    data_dir: str | None = common.field(None, help="folder holding sst2/, imdb/, eraser_movies/ (else $DATA_DIR, "
                                        "else the data/ folder beside common.py, else ./data)",
                                        domain=common.EXISTING_DIR)
    # --- your own data (--task custom; docs/own_data.md). Token tagging is not a REGEX task (no --tags-column).
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
    out_dir: str = common.field("runs", help="run directories go to <out-dir>/regex_robust/<name>/",
                                domain=common.OUT_DIR)
    seed: int = common.field(1, help="seed of subsampling, initialisation, dropout, VAT noise and data order",
                             domain=common.SEED)
    seeds: str | None = common.field(None, help="comma-separated seeds: run each, report mean +- std",
                                     domain=common.SEEDS_DOMAIN)
    eval_batch_size: int = common.field(32, help="evaluation batch size (examples read, collated and explained "
                                        "together; forwards within it are split by --explain-memory-mb)",
                                        domain=common.POSITIVE)
    explain_memory_mb: int = common.field(2048, help="memory budget (MiB) of one evaluation forward (+ backward): "
                                          "IG, gradient and perturbation batches are sized from it and the padded "
                                          "length", domain=common.Int(16))
    ig_max_rows: int = common.field(256, help="at most this many rows (examples x steps) per IG forward, below the "
                                    "--explain-memory-mb budget", domain=common.POSITIVE)
    explain_examples: int = common.field(common.EXPLAIN_EXAMPLES, help=common.EXPLAIN_EXAMPLES_HELP,
                                         domain=common.COUNT)
    device: str = common.field("auto", help=common.DEVICE_HELP, domain=common.DEVICE)


def parse_args(argv=None) -> Args:
    return common.parse_dataclass(Args, argv, prog="regex_robust.py", description=__doc__.split("\n")[0])


def resolve(args: Args) -> Args:
    """Fill the task-dependent defaults; check every flag against its domain (and the model's position limit)."""
    args.max_len = MAX_LEN[args.task] if args.max_len is None else args.max_len
    args.rationale_ratio = RATIONALE_RATIO[args.task] if args.rationale_ratio is None else args.rationale_ratio
    for name, value in CONVENTIONS[args.convention].items():  # an explicit flag wins over its convention
        if getattr(args, name) is None:
            setattr(args, name, value)
    common.check_args(args)
    check_task_flags(args)
    args.device = str(common.resolve_device(args.device))
    if args.evaluate_only and not args.checkpoint:
        raise common.UsageError("--evaluate-only needs --checkpoint PATH (a run directory, model folder or model.pt)")
    if not args.evaluate_only:
        common.check_max_len(args.model, args.max_len)
    return args


def check_task_flags(args: Args) -> None:
    """The flags that depend on --task: --data for custom only; what custom data cannot take (a UsageError each)."""
    if args.data is not None and args.task != "custom":
        raise common.UsageError("--data is for --task custom (the paper tasks read --data-dir)")
    if args.task == "custom" and args.data is None:
        raise common.UsageError("--task custom needs --data FOLDER (your rationale dataset; docs/own_data.md)")
    if args.task == "custom" and args.ood_task:
        raise common.UsageError("--ood-task evaluates on a paper task's negative/positive test set, not with --task "
                                "custom; evaluate on other data with --evaluate-only --checkpoint RUN --data OTHER")
    if args.task == "custom" and args.plausibility:
        raise common.UsageError("--plausibility scores against ERASER Movies; --task custom is scored against its own "
                                "rationales already (drop --plausibility)")
    if args.egt_saliency == "rationale" and acts(args, "egt") and args.task in ("sst2", "imdb"):
        raise common.UsageError(f"--egt-saliency rationale needs human rationales in the training data, which "
                                f"{args.task} has none of: use --task movies or custom, or --egt-saliency ig")


def method_list(text: str) -> list[str]:
    return [m.strip() for m in text.split(",") if m.strip()]


# ------------------------------------------------------------------------------------------------------
# The model interface the losses and the evaluation suite use (any text classifier of this repo fits it)
# ------------------------------------------------------------------------------------------------------
@dataclass
class Classifier:
    """embed(input_ids (B, L)) -> word embeddings e (B, L, H);
    forward(e, batch, attentions: bool) -> (logits (B, C), last-layer attention (B, heads, L, L) or None), where
    `batch` holds attention_mask (and token_type_ids); module: the nn.Module (for train() / eval()); special_ids: the
    tokenizer's special ids (never content); unk_id: the one of them that stands for text ([UNK]: a candidate token of
    ferret's convention); type_sep_id: for a model that reads token type ids, the separator after which a rebuilt
    row (--removal delete / retokenize, leave-one-out) is the second text of a pair (type 1); tokenizer: for --removal
    retokenize only. To evaluate another model, build one of these from its embedding layer and a function to
    logits."""
    embed: Callable
    forward: Callable
    module: torch.nn.Module
    special_ids: list[int]
    pad_id: int
    mask_id: int | None
    tokenizer: Any = None
    unk_id: int | None = None
    type_sep_id: int | None = None


def as_classifier(model: torch.nn.Module, tokenizer) -> Classifier:
    """Our TaskModel ([CLS] -> dropout -> linear), or any Hugging Face *ForSequenceClassification model (any number of
    labels; token type ids passed only where its tokenizer makes them, as common.align_rationales gives them). The
    last-layer attention is None where the model returns none (SDPA attention: load it with
    attn_implementation="eager")."""
    typed = "token_type_ids" in tokenizer.model_input_names
    if isinstance(model, common.TaskModel):  # task "cls": [CLS] -> dropout -> linear
        def forward(e, batch, attentions=False):
            if not attentions:
                return model(batch, inputs_embeds=e), None
            logits, out = model(batch, inputs_embeds=e, output_attentions=True)
            return logits, out.attentions[-1] if out.attentions else None
        embed = model.embed
    else:
        def forward(e, batch, attentions=False):
            out = model(inputs_embeds=e, attention_mask=batch["attention_mask"], output_attentions=attentions,
                        **({"token_type_ids": batch["token_type_ids"]} if typed and "token_type_ids" in batch else {}))
            return out.logits, (out.attentions[-1] if attentions and out.attentions else None)
        embed = model.get_input_embeddings()
    return Classifier(embed, forward, model, sorted(set(tokenizer.all_special_ids)), tokenizer.pad_token_id,
                      tokenizer.mask_token_id, tokenizer, tokenizer.unk_token_id,
                      tokenizer.sep_token_id if typed else None)


def content_positions(clf: Classifier, batch: dict) -> torch.Tensor:
    """(B, L) bool: real wordpieces, i.e. neither [CLS]/[SEP]/other special tokens nor padding (common.content_mask
    as a bool mask, with the classifier's special ids)."""
    return common.content_mask(batch, torch.tensor(clf.special_ids, device=batch["input_ids"].device)).bool()


def added_ids(clf: Classifier) -> list[int]:
    """The ids of the tokens the tokenizer adds around the text ([CLS], [SEP], <s>, </s>, ...): every special id but
    [UNK], which stands for a piece of text."""
    return [i for i in clf.special_ids if i != clf.unk_id]


def interior_positions(clf: Classifier, batch: dict) -> torch.Tensor:
    """(B, L) bool: every real position but the tokens the tokenizer added, wherever they sit ([CLS] ... [SEP] of one
    text; [SEP] between the texts of a pair, RoBERTa's </s></s>): ferret's tokens, the text between [CLS] and [SEP]
    ([UNK] included)."""
    add = torch.tensor(added_ids(clf), dtype=batch["input_ids"].dtype, device=batch["input_ids"].device)
    return batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], add)


def candidate_positions(clf: Classifier, batch: dict, convention: str) -> torch.Tensor:
    """The tokens a rationale is drawn from and removal acts on: content wordpieces (eraser) or ferret's."""
    return content_positions(clf, batch) if convention == "eraser" else interior_positions(clf, batch)


# Memory: every evaluation forward is sized from --explain-memory-mb and the padded length L. The estimate counts
# what autograd keeps per row and layer (eager attention: scores, probabilities and their softmax output, h x L x L
# each; about 10 hidden-sized and 2 intermediate-sized activations per position); without gradients, about one
# layer's activations are alive at a time. bench/bench_faithfulness.py measures it against the resident memory.
def row_bytes(clf: Classifier, length: int, grad: bool) -> int:
    """Estimated bytes of one row (one input of `length` positions) in a forward (+ backward if `grad`)."""
    module = clf.module
    cfg = getattr(getattr(module, "encoder", module), "config", None)
    size = next(module.parameters()).element_size()
    if cfg is None:  # a toy model behind the Classifier interface
        return size * length * 64
    H, layers, heads = cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads
    inter = getattr(cfg, "intermediate_size", 4 * H)
    layer = 3 * heads * length * length + 10 * H * length + 2 * inter * length
    return size * (layers * layer + 4 * H * length if grad else 2 * layer)


def rows_within(clf: Classifier, length: int, grad: bool, budget_mb: int) -> int:
    """How many rows of this length one forward may take within the budget (at least 1)."""
    return max(1, budget_mb * 2 ** 20 // row_bytes(clf, length, grad))


def row_slices(n: int, per: int) -> list[slice]:
    return [slice(s, s + per) for s in range(0, n, per)]


def sub_batch(batch: dict, sl: slice) -> dict:
    return {k: v[sl] if torch.is_tensor(v) else v for k, v in batch.items()}


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) per row from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: robustness terms (Eqs. 2-4)
# ------------------------------------------------------------------------------------------------------
def igr_loss(ce: torch.Tensor, e: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
    """ce: per-example cross-entropy (B,) computed from word embeddings e (B, L, H). Double backward."""
    (g,) = torch.autograd.grad(ce.sum(), e, create_graph=True)  # row b = d l_CE(x_b) / d e_b (examples independent)
    # Eq. (2): squared L2 norm over non-pad tokens x hidden dims, mean over the batch
    return (g.pow(2) * pad_mask[..., None]).sum((1, 2)).mean()


def l2_normalise(d: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-example unit L2 norm over all (non-pad) tokens x dims."""
    d = d * mask[..., None]
    return d / d.flatten(1).norm(dim=1).clamp_min(1e-12)[:, None, None]


def vat_direction(clf: Classifier, e: torch.Tensor, batch: dict, log_p: torch.Tensor, mask: torch.Tensor,
                  xi: float, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit adversarial direction by K power iterations from a random direction (pads masked); the direction is drawn
    from `generator` (a CPU torch.Generator; None: torch's global RNG)."""
    # drawn on the CPU: the same direction on every device
    d = torch.randn(e.shape, dtype=e.dtype, generator=generator).to(e.device)
    for _ in range(iters):
        d = (xi * l2_normalise(d, mask)).requires_grad_()
        # Eq. (3): g = grad_d KL(p(.|e) || p(.|e + d)), parameters and e held fixed
        (g,) = torch.autograd.grad(kl(log_p, F.log_softmax(clf.forward(e.detach() + d, batch)[0], -1)).sum(), d)
        d = g.detach()
    return l2_normalise(d, mask)


def vat_loss(clf: Classifier, e: torch.Tensor, batch: dict, logits: torch.Tensor, mask: torch.Tensor,
             eps: float, xi: float, iters: int, generator: torch.Generator | None = None) -> torch.Tensor:
    log_p = F.log_softmax(logits.detach(), -1)  # the clean side is a constant (theta-hat)
    r_adv = eps * vat_direction(clf, e, batch, log_p, mask, xi, iters, generator)
    # Eq. (4): L_VAT = KL(p(.|e) || p(.|e + r_adv)), mean over the batch
    return kl(log_p, F.log_softmax(clf.forward(e + r_adv, batch)[0], -1)).mean()


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: attributions (training saliency and the evaluation suite); target = the predicted class
# ------------------------------------------------------------------------------------------------------
def baseline_embeddings(clf: Classifier, batch: dict, e: torch.Tensor, kind: str) -> torch.Tensor:
    """e' for IG / DeepLift: content tokens -> zero vector or the [PAD] / [MASK] embedding; [CLS], [SEP] and
    padding keep their own embedding (so their attributions are exactly 0)."""
    content = content_positions(clf, batch)
    if kind == "zero":
        return e * ~content[..., None]
    ids = torch.where(content, clf.pad_id if kind == "pad" else clf.mask_id, batch["input_ids"])
    return clf.embed(ids).detach()


def integrated_gradients(clf: Classifier, batch: dict, e: torch.Tensor, e0: torch.Tensor, target: torch.Tensor,
                         steps: int, max_rows: int = 256) -> torch.Tensor:
    """(B, L, H) IG attributions of the target logit. Rows (example x step) go through batched forwards of at most
    max_rows: the m points of max_rows // m examples at a time, or, when m > max_rows, one example's points over
    several forwards (gradients summed). Detached."""
    B, L, H = e.shape
    alphas = (torch.arange(steps, dtype=e.dtype, device=e.device) + 0.5) / steps  # midpoint Riemann sum

    def path_grad(sl: slice, a: torch.Tensor) -> torch.Tensor:
        """d target logit / d x at x = e' + a (e - e') for the examples of `sl`: (n, len(a), L, H)."""
        n, diff = e[sl].size(0), (e[sl] - e0[sl]).detach()
        x = (e0[sl].detach()[:, None] + a[None, :, None, None] * diff[:, None]).reshape(n * len(a), L, H)
        x.requires_grad_(True)
        sub = {k: batch[k][sl].repeat_interleave(len(a), 0) for k in ("attention_mask", "token_type_ids")
               if k in batch}
        with torch.enable_grad():
            logits = clf.forward(x, sub)[0]
            (g,) = torch.autograd.grad(logits.gather(1, target[sl].repeat_interleave(len(a))[:, None]).sum(), x)
        return g.view(n, len(a), L, H)

    out = []
    if max_rows >= steps:
        for sl in row_slices(B, max_rows // steps):
            # Eq. (5): (e - e') * mean gradient along the path
            out.append((e[sl] - e0[sl]).detach() * path_grad(sl, alphas).mean(1))
        return torch.cat(out)
    for i in range(B):
        sl = slice(i, i + 1)
        g = sum(path_grad(sl, alphas[part]).sum(1) for part in row_slices(steps, max_rows))
        out.append((e[sl] - e0[sl]).detach() * g / steps)  # Eq. (5), the mean over steps split into parts
    return torch.cat(out)


def reduce_tokens(a: torch.Tensor, method: str, how: str) -> torch.Tensor:
    """(B, L, H) -> (B, L) token scores."""
    if how == "l2" or (how == "ood_faith" and method != "deeplift"):
        return a.norm(dim=-1)
    return a.sum(-1)


def deeplift(clf: Classifier, batch: dict, e: torch.Tensor, e0: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """captum DeepLift on a module from word embeddings to logits (evaluation only; its output is detached)."""
    from captum.attr import DeepLift

    class EmbToLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = clf.module

        def forward(self, x, attention_mask, token_type_ids):
            return clf.forward(x, {"attention_mask": attention_mask, "token_type_ids": token_type_ids})[0]

    import warnings
    with warnings.catch_warnings(), torch.enable_grad():
        warnings.simplefilter("ignore")
        return DeepLift(EmbToLogits()).attribute(e.detach(), baselines=e0.detach(), target=target,
                                                 additional_forward_args=(batch["attention_mask"],
                                                                          batch["token_type_ids"])).detach()


def gradient_scores(method: str, clf: Classifier, batch: dict, e: torch.Tensor, target: torch.Tensor,
                    args: Args) -> torch.Tensor:
    """(B, L) scores of attention, scaled attention or input x gradient for one forward's rows."""
    if method in ("attention", "scaled_attention"):
        with torch.enable_grad():
            logits, A = clf.forward(e, batch, attentions=True)
            alpha = A[:, :, 0, :].mean(1)  # last layer, [CLS] query, mean over heads
            if method == "attention":
                return alpha.detach()
            (gA,) = torch.autograd.grad(logits.gather(1, target[:, None]).sum(), A)
        return (alpha * gA[:, :, 0, :].mean(1)).detach()  # alpha * d f / d alpha (ood_faith)
    with torch.enable_grad():
        x = e.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(clf.forward(x, batch)[0].gather(1, target[:, None]).sum(), x)
    return reduce_tokens(g * e, method, args.attr_reduce)


def perturbation_scores(method: str, clf: Classifier, batch: dict, e: torch.Tensor, e0: torch.Tensor,
                        target: torch.Tensor, args: Args, seed: int) -> torch.Tensor:
    """(B, L) KernelSHAP or LIME scores (captum's KernelShap, Lime with a linear-regression surrogate), one example
    at a time: each content token is one feature, switched off by its baseline embedding (--ig-baseline); [CLS],
    [SEP] keep theirs. Target: the predicted class's logit (eraser) or probability (ferret). Samples drawn from a
    torch RNG seeded per example (run seed, example index), so an example's scores do not depend on its batch."""
    from captum._utils.models.linear_model import SkLearnLinearRegression
    from captum.attr import KernelShap, Lime
    B, L, H = e.shape
    content, out = content_positions(clf, batch), torch.zeros(B, L, dtype=e.dtype, device=e.device)
    for i in range(B):
        n = int(batch["attention_mask"][i].sum())
        c, F_ = content[i, :n], int(content[i].sum())
        if F_ == 0:
            continue
        fmask = torch.full((n,), F_, dtype=torch.long, device=e.device)  # feature F_: the special tokens (a no-op)
        fmask[c] = torch.arange(F_, device=e.device)
        one = {k: batch[k][i:i + 1, :n] for k in ("attention_mask", "token_type_ids") if k in batch}

        def f(x, one=one):
            logits = clf.forward(x, {k: v.expand(x.size(0), -1) for k, v in one.items()})[0]
            return logits.softmax(-1) if args.convention == "ferret" else logits
        kw = dict(baselines=e0[i:i + 1, :n], target=int(target[i]), feature_mask=fmask[None, :, None].expand(1, n, H),
                  perturbations_per_eval=rows_within(clf, n, False, args.explain_memory_mb))
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(seed * 1000003 + int(batch["index"][i]))
            if method == "kernel_shap":
                a = KernelShap(f).attribute(e[i:i + 1, :n], n_samples=args.shap_samples, **kw)
            else:
                a = Lime(f, interpretable_model=SkLearnLinearRegression()).attribute(
                    e[i:i + 1, :n], n_samples=args.lime_samples, **kw)
        out[i, :n] = a[0, :, 0].to(e.dtype) * c
    return out


def token_scores(method: str, clf: Classifier, batch: dict, target: torch.Tensor | None, args: Args,
                 gen: torch.Generator | None, keep: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores (B, L), predicted class (B,)) of one attribution method: attributions of the predicted class's
    logit (not its probability); the model must be in eval() mode. `target` None = the predicted class (one extra
    forward). With `keep` (a dict), IG and DeepLift also leave there their (B, L, H) attributions `a` and the
    embeddings `e`, baseline `e0` (for completeness_gap()). Forwards take at most the rows that fit
    --explain-memory-mb at this padded length."""
    e = clf.embed(batch["input_ids"]).detach()
    B, L = e.shape[:2]
    budget = args.explain_memory_mb
    if target is None:
        with torch.no_grad():
            target = torch.cat([clf.forward(e[sl], sub_batch(batch, sl))[0].argmax(-1)
                                for sl in row_slices(B, rows_within(clf, L, False, budget))])
    if method == "random":
        return torch.rand(e.shape[:2], generator=gen).to(e.device), target
    if method in ("attention", "scaled_attention", "input_x_gradient"):
        return torch.cat([gradient_scores(method, clf, sub_batch(batch, sl), e[sl], target[sl], args)
                          for sl in row_slices(B, rows_within(clf, L, True, budget))]), target
    e0 = baseline_embeddings(clf, batch, e, args.ig_baseline)
    if method in PERTURBATION_METHODS:
        return perturbation_scores(method, clf, batch, e, e0, target, args, gen.initial_seed() if gen else 0), target
    if method == "ig":
        a = integrated_gradients(clf, batch, e, e0, target, args.ig_steps,
                                 min(args.ig_max_rows, rows_within(clf, L, True, budget)))
    elif method == "deeplift":  # captum runs inputs and baselines together: twice the rows
        a = torch.cat([deeplift(clf, sub_batch(batch, sl), e[sl], e0[sl], target[sl])
                       for sl in row_slices(B, max(1, rows_within(clf, L, True, budget) // 2))])
    else:
        raise common.UsageError(f"unknown attribution method {method!r} (choose from {', '.join(ALL_METHODS)})")
    if keep is not None:
        keep.update(a=a, e=e, e0=e0)
    return reduce_tokens(a, method, args.attr_reduce), target


@torch.no_grad()
def completeness_terms(clf: Classifier, batch: dict, target: torch.Tensor, keep: dict,
                       budget_mb: int | None = None) -> tuple[list, list]:
    """Per example: the sum of the attributions over tokens and dims, and f(x) - f(x') (target logit at the input and
    at the baseline). Completeness (IG's axiom; DeepLift's summation-to-delta) says they are equal: for IG that holds
    for the integral, the m-point midpoint rule leaves a gap."""
    B, L = batch["input_ids"].shape
    per = B if budget_mb is None else rows_within(clf, L, False, budget_mb)

    def f(x):
        return torch.cat([clf.forward(x[sl], sub_batch(batch, sl))[0].gather(1, target[sl, None])[:, 0]
                          for sl in row_slices(B, per)])
    return keep["a"].sum((1, 2)).tolist(), (f(keep["e"]) - f(keep["e0"])).tolist()


def completeness_gap(sums: list[float], deltas: list[float]) -> dict:
    """mean |sum a - (f(x) - f(x'))| and that divided by mean |f(x) - f(x')| (0 = complete)."""
    gap = np.abs(np.asarray(sums) - np.asarray(deltas))
    scale = float(np.mean(np.abs(deltas)))
    return {"mean_abs_gap": float(gap.mean()), "mean_abs_delta": scale,
            "relative_gap": float(gap.mean() / scale) if scale > 0 else None}


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: explanation-guided training (Eqs. 6-9)
# ------------------------------------------------------------------------------------------------------
def rank_positions(scores: torch.Tensor, allowed: torch.Tensor, descending: bool) -> torch.Tensor:
    """(B, L) rank of each allowed position by score (0 = first), ties by position; others rank after them."""
    fill = -math.inf if descending else math.inf
    s = scores.masked_fill(~allowed, fill)
    order = torch.argsort(-s if descending else s, dim=1, stable=True)
    return torch.empty_like(order).scatter_(1, order, torch.arange(s.size(1), device=s.device).expand_as(order))


def mask_lowest(scores: torch.Tensor, content: torch.Tensor, ratio: float) -> torch.Tensor:
    """(B, L) bool: the floor(ratio * n_content) lowest-scored content tokens; never [CLS]/[SEP]/pad."""
    k = torch.floor(ratio * content.sum(1)).long()
    # Eq. (6): M_K = the K% lowest-ranked content tokens
    return (rank_positions(scores, content, descending=False) < k[:, None]) & content


def align_loss(A: torch.Tensor, s: torch.Tensor, content: torch.Tensor, direction: str) -> torch.Tensor:
    """KL between the last-layer [CLS] attention (mean over heads, renormalised over content tokens) and the
    normalised saliency s (detached, non-negative), per example (B,)."""
    c = content.float()
    alpha = A[:, :, 0, :].mean(1) * c
    alpha = alpha / alpha.sum(1, keepdim=True).clamp_min(1e-12)
    s_hat = (s * c) / (s * c).sum(1, keepdim=True).clamp_min(1e-12)
    log_a, log_s = alpha.clamp_min(1e-12).log(), s_hat.clamp_min(1e-12).log()
    # Eq. (7): KL(s^ || alpha) by default (AT-BMC's direction)
    if direction == "saliency_attention":
        return (s_hat * (log_s - log_a) * c).sum(1)
    return (alpha * (log_a - log_s) * c).sum(1)


def consistency_loss(logits: torch.Tensor, logits_masked: torch.Tensor, detach_clean: bool) -> torch.Tensor:
    log_p = F.log_softmax(logits.detach() if detach_clean else logits, -1)
    # Eq. (8): KL(p(.|x) || p(.|x~)) per example (saliency-guided training, Ismail et al. 2021)
    return kl(log_p, F.log_softmax(logits_masked, -1))


def egt_loss(clf: Classifier, batch: dict, s: torch.Tensor, logits: torch.Tensor, A: torch.Tensor | None,
             args: Args, use: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """s: detached saliency (B, L) of the current batch. Returns L_EGT and its parts, each the mean over the batch, or
    with `use` ((B,) bool) over the examples it marks (0 when none)."""
    content = content_positions(clf, batch)
    if use is not None and not bool(use.any()):
        return torch.zeros((), device=logits.device), {"n_egt": 0}

    def mean(v: torch.Tensor) -> torch.Tensor:
        return v.mean() if use is None else v[use].mean()
    parts = {} if use is None else {"n_egt": int(use.sum())}
    if args.egt_mode in ("align", "both"):
        if A is None:
            raise ValueError("L_align needs the model's attention maps, which it did not return: load it with "
                             "attn_implementation='eager' (SDPA returns none), or use egt_mode='mask'")
        parts["L_align"] = mean(align_loss(A, s, content, args.align_direction))
    if args.egt_mode in ("mask", "both"):
        if clf.mask_id is None:
            raise ValueError("L_mask replaces tokens by [MASK], and the tokenizer has no mask token: use "
                             "egt_mode='align'")
        masked = mask_lowest(s, content, args.mask_ratio)
        ids = torch.where(masked, clf.mask_id, batch["input_ids"])  # x~: [MASK] at the K% lowest
        parts["L_mask"] = mean(consistency_loss(logits, clf.forward(clf.embed(ids), batch)[0], args.detach_clean))
        on = (slice(None),) if use is None else (use,)
        parts["masked_share"] = float(masked[on].sum() / content[on].sum())
    # Eq. (9): L_EGT = L_align + L_mask
    return sum(v for k, v in parts.items() if k.startswith("L_")), parts


def egt_saliency(clf: Classifier, batch: dict, target: torch.Tensor, args: Args) -> torch.Tensor:
    """Detached, non-negative saliency of the predicted class, computed in eval() mode (no dropout); the module's mode
    is restored."""
    was = clf.module.training
    clf.module.eval()
    s, _ = token_scores(args.egt_saliency, clf, batch, target, args, None)
    clf.module.train(was)
    return s.abs().detach()


def rationale_saliency(clf: Classifier, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """--egt-saliency rationale: the human rationale (B, L), 1 at the content wordpieces of rationale words, as the
    saliency of Eqs. 6-7, and the examples L_EGT uses (B,): those with both a rationale and a non-rationale content
    wordpiece (without a rationale there is nothing to align to; with nothing but, nothing to mask)."""
    if not torch.is_tensor(batch.get("rationale")) or batch["rationale"].shape != batch["input_ids"].shape:
        raise ValueError("egt_saliency='rationale' needs batch['rationale'], 0/1 per wordpiece, of the shape of "
                         "input_ids (keep the column and pad it with 0 in your collator)")
    content = content_positions(clf, batch)
    s = ((batch["rationale"] > 0) & content).float()
    return s, (s > 0).any(1) & (content & (s == 0)).any(1)


def use_egt(step: int, egt_start: int) -> bool:
    """Warm-up: L_EGT is off before step `egt_start` (the saliency of an untrained head is noise)."""
    return step >= egt_start


TERM_WEIGHTS = {"igr": "lambda_g", "vat": "lambda_v", "egt": "lambda_e"}


def acts(args: Args, term: str) -> bool:
    """A REGEX term acts when it is switched on and its weight is above 0 (an explicit 0 skips its computation)."""
    return getattr(args, term) and getattr(args, TERM_WEIGHTS[term]) > 0


def regex_terms(clf: Classifier, batch: dict, args: Args, egt_on: bool,
                generator: torch.Generator | None = None) -> tuple[dict, dict]:
    """One forward pass from the word embeddings e, then, in this order, L_CE (when the batch has `label`) and each
    term that acts: L_IGR (Eq. 2, needs `label`), L_VAT (Eqs. 3-4; its random start from `generator`), L_EGT (Eqs.
    6-9, when `egt_on`; its saliency the model's own IG / input x gradient, or with --egt-saliency rationale the
    batch's `rationale`). Returns (terms: name -> scalar tensor, parts: L_EGT's parts and counts). The script's
    train_step() and regex_loss() (your own loop) both compute their terms here."""
    ids = batch["input_ids"]
    pad_mask = batch["attention_mask"].float()
    want_att = egt_on and args.egt_mode in ("align", "both")
    e = clf.embed(ids)  # word embeddings: every input gradient below is taken w.r.t. this (B, L, H) tensor
    logits, A = clf.forward(e, batch, attentions=want_att)
    terms: dict[str, torch.Tensor] = {}
    if "label" in batch:
        ce = F.cross_entropy(logits, batch["label"], reduction="none")
        terms["L_CE"] = ce.mean()
    if acts(args, "igr"):
        if "label" not in batch:
            raise ValueError("L_IGR differentiates the cross-entropy of the gold class: the batch needs `labels`")
        terms["L_IGR"] = igr_loss(ce, e, pad_mask)
    if acts(args, "vat"):
        terms["L_VAT"] = vat_loss(clf, e, batch, logits, pad_mask, args.vat_eps, args.vat_xi, args.vat_iters,
                                  generator)
    parts = {}
    if egt_on:
        if args.egt_saliency == "rationale":
            s, use = rationale_saliency(clf, batch)
        else:
            s, use = egt_saliency(clf, batch, logits.detach().argmax(-1), args), None
        terms["L_EGT"], parts = egt_loss(clf, batch, s, logits, A, args, use)
    return terms, parts


def weighted_sum(terms: dict, lambda_g: float, lambda_v: float, lambda_e: float, ce: torch.Tensor | float = 0):
    """Eq. 1 over the terms regex_terms() computed (a term that did not act counts 0)."""
    # Eq. (1): L = L_CE + lambda_g L_IGR + lambda_v L_VAT + lambda_e L_EGT
    return ce + lambda_g * terms.get("L_IGR", 0) + lambda_v * terms.get("L_VAT", 0) + lambda_e * terms.get("L_EGT", 0)


def train_step(clf: Classifier, batch: dict, args: Args, egt_on: bool) -> tuple[torch.Tensor, dict]:
    terms, parts = regex_terms(clf, batch, args, egt_on)
    L = weighted_sum(terms, args.lambda_g, args.lambda_v, args.lambda_e, terms["L_CE"])
    return L, {**{k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in {**terms, **parts}.items()},
               "L": float(L.detach())}


OWN_LOOP_OPTIONS = ("igr", "vat", "egt", "lambda_g", "lambda_v", "lambda_e", "vat_eps", "vat_xi", "vat_iters",
                    "egt_mode", "egt_saliency", "mask_ratio", "align_direction", "detach_clean", "ig_steps",
                    "ig_baseline", "attr_reduce", "ig_max_rows", "explain_memory_mb")


def term_options(**options) -> Args:
    """The options of regex_loss() as an Args (every other field at its default; the IG baseline and token reduction
    of the eraser convention unless given), each checked against its flag's domain or choices: a ValueError naming
    the option otherwise."""
    unknown = sorted(set(options) - set(OWN_LOOP_OPTIONS))
    if unknown:
        raise TypeError(f"regex_loss() got unknown options {unknown}; it takes {', '.join(OWN_LOOP_OPTIONS)}")
    opts = dataclasses.replace(Args(), **{**CONVENTIONS["eraser"], **options})
    for f in dataclasses.fields(Args):
        if f.name not in options:
            continue
        value, meta = options[f.name], f.metadata
        if str(f.type).startswith("bool"):
            bad = None if isinstance(value, bool) else "must be True or False"
        elif meta.get("choices") is not None:
            bad = None if value in meta["choices"] else f"must be one of {', '.join(map(str, meta['choices']))}"
        else:
            kind = int if str(f.type).startswith("int") else float
            bad = f"must be a number, got {value!r}" if isinstance(value, bool) or not isinstance(
                value, (int, float) if kind is float else int) else meta["domain"].error(value)
        if bad:
            raise ValueError(f"regex_loss(): {f.name} {bad}")
    return opts


def regex_loss(model: torch.nn.Module, batch: dict, tokenizer, *, igr: bool = False, vat: bool = True,
               egt: bool = False, lambda_g: float = 0.01, lambda_v: float = 0.1, lambda_e: float = 1.0,
               generator: torch.Generator | None = None, **options) -> torch.Tensor:
    """REGEX's training term for your own training loop: lambda_g L_IGR + lambda_v L_VAT + lambda_e L_EGT, the
    terms of Eq. 1 beyond L_CE (add it to your loss: `loss = outputs.loss + regex_loss(model, batch, tokenizer)`),
    computed by regex_terms() exactly as the script's train_step() computes them.
    model: a Hugging Face `AutoModelForSequenceClassification` (any number of labels; load it with
    attn_implementation="eager": L_IGR's double backward and L_align's attention maps need it), or a common.TaskModel.
    batch: input_ids, attention_mask, token_type_ids (if the model takes them), labels (class ids (B,); L_IGR needs
    them), rationale ((B, L) 0/1 per wordpiece, 0 at padding; egt_saliency="rationale" needs it).
    tokenizer: the model's (its special, [PAD] and [MASK] ids).
    Options, with the script's defaults (VAT alone at lambda_v 0.1; REGEX as the paper names it: igr=True, egt=True):
    igr, vat, egt, lambda_g, lambda_v, lambda_e, and the flags of the same names: vat_eps (1.0), vat_xi (0.1),
    vat_iters (1), egt_mode ("both", "align", "mask"), egt_saliency ("ig", "input_x_gradient", "rationale"),
    mask_ratio (0.3), align_direction, detach_clean, ig_steps (10), ig_baseline ("zero"), attr_reduce ("ood_faith").
    generator: VAT's random start (a CPU torch.Generator; None: torch's global RNG). EGT's warm-up is yours: pass
    egt=False for the first steps (the script: the first epoch). Costs one forward pass of its own beside yours, plus
    each term's passes (docs/regex.md, Speed). 0 (a tensor) when no term acts."""
    opts = term_options(igr=igr, vat=vat, egt=egt, lambda_g=lambda_g, lambda_v=lambda_v, lambda_e=lambda_e, **options)
    clf = as_classifier(model, tokenizer)
    b = {**batch, **({"label": batch["labels"]} if "labels" in batch else {})}
    if torch.is_tensor(b.get("rationale")):
        b["rationale"] = b["rationale"].float()
    terms, _ = regex_terms(clf, b, opts, acts(opts, "egt"), generator)
    return weighted_sum(terms, opts.lambda_g, opts.lambda_v, opts.lambda_e,
                        torch.zeros((), device=batch["input_ids"].device))


# ------------------------------------------------------------------------------------------------------
# Evaluation suite: predictions, attributions, faithfulness, randomisation tests, FRESH, plausibility
# ------------------------------------------------------------------------------------------------------
def eval_batches(examples: list[dict], args: Args, pad_id: int):
    """Evaluation batches sorted by length (dynamic padding), collated one at a time as they are consumed: what is
    alive at once does not grow with the number of examples."""
    order = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    for sl in row_slices(len(order), args.eval_batch_size):
        yield common.to_device(common.collate([examples[i] for i in order[sl]], pad_id), args.device)


@torch.inference_mode()
def probs_of(clf: Classifier, ids: torch.Tensor, batch: dict, budget_mb: int | None = None) -> torch.Tensor:
    """Class probabilities (B, C); with a budget, in forwards of the rows that fit it."""
    B, L = ids.shape
    per = B if budget_mb is None else rows_within(clf, L, False, budget_mb)
    return torch.cat([F.softmax(clf.forward(clf.embed(ids[sl]), sub_batch(batch, sl))[0], -1)
                      for sl in row_slices(B, per)])


def predict(clf: Classifier, examples: list[dict], args: Args, rows: list | None = None) -> dict:
    """Accuracy and macro-F1; with `rows` (a list) also fills it with one {id, gold, pred, p_gold} per example,
    in example order (for predictions.jsonl)."""
    clf.module.eval()
    out = {}
    for b in eval_batches(examples, args, clf.pad_id):
        p = probs_of(clf, b["input_ids"], b, args.explain_memory_mb)
        for r, (i, y) in enumerate(zip(b["index"].tolist(), b["label"].tolist(), strict=True)):
            out[i] = {"gold": y, "pred": int(p[r].argmax()), "p_gold": float(p[r, y])}
    ordered = [out[i] for i in sorted(out)]
    if rows is not None:
        rows.extend(ordered)
    gold, pred = [r["gold"] for r in ordered], [r["pred"] for r in ordered]
    return {"accuracy": common.accuracy(gold, pred), "macro_f1": macro_f1(gold, pred)}


def attribute_all(clf: Classifier, examples: list[dict], methods: list[str], args: Args, seed: int,
                  gaps: dict | None = None) -> dict:
    """{method: {example index: scores over the example's wordpieces (L_e,) as a float tensor}}. With `gaps` (a
    dict), also the completeness gap of IG and DeepLift: {method: completeness_gap()} (+ ig_steps for IG)."""
    clf.module.eval()
    gen = torch.Generator().manual_seed(seed)
    out = {m: {} for m in methods}
    terms = {m: ([], []) for m in methods if m in ("ig", "deeplift")}
    for b in eval_batches(examples, args, clf.pad_id):
        target = None
        for m in methods:
            keep = {} if gaps is not None and m in terms else None
            s, target = token_scores(m, clf, b, target, args, gen, keep)
            if keep:
                for acc, part in zip(terms[m], completeness_terms(clf, b, target, keep, args.explain_memory_mb),
                                     strict=True):
                    acc += part
            for r, i in enumerate(b["index"].tolist()):
                out[m][i] = s[r, :int(b["attention_mask"][r].sum())].float().cpu()
    if gaps is not None:
        gaps.update({m: {**completeness_gap(*t), **({"ig_steps": args.ig_steps} if m == "ig" else {})}
                     for m, t in terms.items()})
    return out


def apply_removal(ids: torch.Tensor, att: torch.Tensor, remove: torch.Tensor, op: str, clf: Classifier):
    """Remove positions: [PAD] id with attention kept (ood_faith), [MASK] id, or delete (shift left, re-pad)."""
    if op in ("pad", "mask"):
        return torch.where(remove, clf.pad_id if op == "pad" else clf.mask_id, ids), att
    keep = att.bool() & ~remove
    order = torch.argsort((~keep).long(), dim=1, stable=True)  # kept tokens first, in sentence order
    new_att = (torch.arange(ids.size(1), device=ids.device)[None] < keep.sum(1, keepdim=True)).long()
    return torch.where(new_att.bool(), ids.gather(1, order), clf.pad_id), new_att


def removed_rows(ids: torch.Tensor, att: torch.Tensor, remove: torch.Tensor, op: str, clf: Classifier,
                 max_len: int) -> list[tuple[int, ...]]:
    """One unpadded id sequence per row with `remove` (B, L) removed: [PAD] / [MASK] id (attention kept), deleted,
    or (retokenize, ferret) the kept tokens of each text decoded and tokenised again (the texts: the runs of tokens
    between the ones the tokenizer added, wherever they sit; two runs are a sentence pair, tokenised as a pair)."""
    n = att.sum(1).tolist()
    if op in ("pad", "mask"):
        new = torch.where(remove, clf.pad_id if op == "pad" else clf.mask_id, ids).tolist()
        return [tuple(r[:k]) for r, k in zip(new, n, strict=True)]
    keep = (att.bool() & ~remove).tolist()
    rows = [[t for t, k in zip(r, kr, strict=True) if k] for r, kr in zip(ids.tolist(), keep, strict=True)]
    if op == "delete":
        return [tuple(r) for r in rows]
    tok = clf.tokenizer
    add = set(tok.all_special_ids) - {tok.unk_token_id}
    segments, count = [], []
    for r, kr, m in zip(ids.tolist(), keep, n, strict=True):
        before = len(segments)
        for p in range(m):
            if r[p] in add:
                continue
            if p == 0 or r[p - 1] in add or len(segments) == before:  # a text starts after an added token
                segments.append([])
            if kr[p]:
                segments[-1].append(r[p])
        count.append(max(1, len(segments) - before))
        if len(segments) == before:
            segments.append([])
    flat, texts, k = tok.batch_decode(segments), [], 0
    for c in count:
        texts.append(flat[k:k + c])
        k += c
    out: list[tuple[int, ...]] = [()] * len(texts)
    for two in (False, True):  # single texts, then pairs (a second text beyond two joins the second)
        idx = [i for i, t in enumerate(texts) if (len(t) > 1) == two]
        if idx:
            enc = tok([texts[i][0] for i in idx], [" ".join(texts[i][1:]) for i in idx] if two else None,
                      truncation=True, max_length=max_len)["input_ids"]
            for i, row in zip(idx, enc, strict=True):
                out[i] = tuple(row)
    return out


@contextlib.contextmanager
def fused_attention(clf: Classifier):
    """For forwards that need neither attention maps nor a double backward: PyTorch's fused attention (SDPA) in
    place of the eager one the encoder was loaded with (about 15 % faster on a CPU, equal to rounding)."""
    enc = getattr(clf.module, "encoder", clf.module)
    cfg = getattr(enc, "config", None)
    swap = getattr(cfg, "_attn_implementation", None) == "eager" and getattr(enc, "_supports_sdpa", False)
    if swap:
        cfg._attn_implementation = "sdpa"
    try:
        yield
    finally:
        if swap:
            cfg._attn_implementation = "eager"


def row_types(ids: torch.Tensor, att: torch.Tensor, clf: Classifier) -> torch.Tensor:
    """Token type ids of rebuilt rows: 1 after the first separator of a model that reads types (the second text of a
    pair, as the tokenizer types it), else 0; a single text is all 0."""
    if clf.type_sep_id is None:
        return torch.zeros_like(ids)
    sep = (ids == clf.type_sep_id).long()
    return ((sep.cumsum(1) - sep > 0) & att.bool()).long()


@torch.inference_mode()
def row_probs(clf: Classifier, rows: list[tuple[int, ...]], labels: list[int], budget_mb: int,
              device) -> list[float]:
    """p(label | row) for unpadded id rows: each distinct (row, label) once, sorted by length, in forwards as large
    as the budget allows at the chunk's padded length (the rows a removal curve shares are computed once), with
    fused attention."""
    uniq = sorted(set(zip(rows, labels, strict=True)), key=lambda r: len(r[0]))
    got, s = {}, 0
    while s < len(uniq):
        e_ = s + 1
        while e_ < len(uniq) and (e_ + 1 - s) <= rows_within(clf, len(uniq[e_][0]), False, budget_mb):
            e_ += 1
        chunk, L = uniq[s:e_], len(uniq[e_ - 1][0])
        ids = torch.full((len(chunk), L), clf.pad_id, dtype=torch.long)
        att = torch.zeros(len(chunk), L, dtype=torch.long)
        for r, (row, _) in enumerate(chunk):
            ids[r, :len(row)], att[r, :len(row)] = torch.tensor(row), 1
        ids, att = ids.to(device), att.to(device)
        with fused_attention(clf):
            logits = clf.forward(clf.embed(ids), {"attention_mask": att, "token_type_ids": row_types(ids, att, clf)})[0]
        p = F.softmax(logits, -1)
        y = torch.tensor([lab for _, lab in chunk], device=device)
        for key, v in zip(chunk, p.gather(1, y[:, None])[:, 0].tolist(), strict=True):
            got[key] = v
        s = e_
    return [got[k] for k in zip(rows, labels, strict=True)]


def select_rationale(S: torch.Tensor, cand: torch.Tensor, ratio: float, convention: str) -> torch.Tensor:
    """(B, L) bool rationale at `ratio`: eraser, the top ceil(ratio n) candidates by score (at least 1); ferret, the
    top floor(ratio n) of them that score above 0 (possibly none)."""
    rank = rank_positions(S, cand, descending=True)
    n = cand.sum(1)
    if convention == "eraser":
        k = torch.ceil(ratio * n).clamp_min(1)
        return (rank < k[:, None]) & cand
    k = torch.floor(ratio * n + 1e-9)  # ferret: int(ratio * n); + 1e-9 so that 0.3 * 10 is 3
    return (rank < k[:, None]) & cand & (S > 0)


def probs_removed(clf: Classifier, b: dict, remove: torch.Tensor, need: torch.Tensor | None, y_hat: torch.Tensor,
                  args: Args) -> torch.Tensor:
    """p(y^ | x with `remove` (B, L) removed by --removal) (B,). [PAD] / [MASK]: one forward of the batch as it is
    padded (split by the budget); delete / retokenize: the rows (only those `need`ed, the others NaN) in shared
    length-sorted forwards."""
    ids, att, op = b["input_ids"], b["attention_mask"], args.removal
    if op in ("pad", "mask"):
        rid, ratt = apply_removal(ids, att, remove, op, clf)
        return probs_of(clf, rid, {**b, "attention_mask": ratt}, args.explain_memory_mb).gather(1, y_hat)[:, 0]
    B = ids.size(0)
    idx = (torch.ones(B, dtype=torch.bool) if need is None else need.cpu()).nonzero()[:, 0].tolist()
    dtype = next(clf.module.parameters()).dtype
    q = torch.full((B,), math.nan, dtype=dtype, device=ids.device)
    if idx:
        rows = removed_rows(ids[idx], att[idx], remove[idx], op, clf, args.max_len)
        labels = y_hat[idx, 0].tolist()
        q[idx] = torch.tensor(row_probs(clf, rows, labels, args.explain_memory_mb, ids.device), dtype=dtype,
                              device=ids.device)
    return q


def probs_removed_all(clf: Classifier, b: dict, requests: list, y_hat: torch.Tensor, args: Args) -> list:
    """probs_removed() of each (remove, need) request; under delete / retokenize every request's rows go through one
    row_probs() call, so the removal curves of every method and ratio share their forwards (and identical inputs)."""
    if args.removal in ("pad", "mask"):
        return [probs_removed(clf, b, remove, need, y_hat, args) for remove, need in requests]
    ids, att = b["input_ids"], b["attention_mask"]
    B, dtype = ids.size(0), next(clf.module.parameters()).dtype
    where, rows, labels = [], [], []
    for remove, need in requests:
        idx = need.cpu().nonzero()[:, 0].tolist()
        where.append(idx)
        if idx:
            rows += removed_rows(ids[idx], att[idx], remove[idx], args.removal, clf, args.max_len)
            labels += y_hat[idx, 0].tolist()
    flat, out, k = row_probs(clf, rows, labels, args.explain_memory_mb, ids.device), [], 0
    for idx in where:
        q = torch.full((B,), math.nan, dtype=dtype, device=ids.device)
        if idx:
            q[idx] = torch.tensor(flat[k:k + len(idx)], dtype=dtype, device=ids.device)
        out.append(q)
        k += len(idx)
    return out


FALLBACK = {"comp": 0.0, "suff": 1.0, "norm_comp": 0.0, "norm_suff": 0.0}  # ferret's values when no bin is kept


def faithfulness(clf: Classifier, examples: list[dict], attrs: dict, args: Args) -> dict:
    """Per method: comprehensiveness and sufficiency at --rationale-ratio (raw ERASER and Carton-normalised), their
    AOPC over --aopc-ratios, means over examples, and the gain over random of each; with --taucorr-loo, ferret's
    leave-one-out Kendall tau. Under --convention eraser: AOPC = sum over bins / (bins + 1); under ferret: per
    example, the mean over the bins whose rationale is not empty and not the previous kept bin's (comp 0, suff 1
    when none is kept), then the mean over examples (docs/regex.md, Conventions)."""
    clf.module.eval()
    ferret, budget = args.convention == "ferret", args.explain_memory_mb
    aopc = [float(r) for r in args.aopc_ratios.split(",")]
    ratios = sorted(set(aopc) | {args.rationale_ratio})
    keys = ("comp", "suff", "norm_comp", "norm_suff")
    acc = {m: {r: {k: [] for k in keys} for r in ratios} for m in attrs}
    tau: dict[str, list] = {m: [] for m in attrs}
    for b in eval_batches(examples, args, clf.pad_id):
        ids, att = b["input_ids"], b["attention_mask"]
        B, L = ids.shape
        cand = candidate_positions(clf, b, args.convention)
        p_full = probs_of(clf, ids, b, budget)
        y_hat = p_full.argmax(-1, keepdim=True)
        p = p_full.gather(1, y_hat)[:, 0]
        p0 = probs_removed(clf, b, cand, None, y_hat, args)  # every candidate token removed
        suff0 = 1 - (p - p0).clamp_min(0) - 1e-4  # Suff(x, empty), with ood_faith's 1e-4 guard
        plan, requests = {}, []
        for m in attrs:
            S = torch.zeros(ids.shape, device=ids.device)
            for r, i in enumerate(b["index"].tolist()):
                S[r, :len(attrs[m][i])] = attrs[m][i]
            rats = {ratio: select_rationale(S, cand, ratio, args.convention) for ratio in ratios}
            use = {ratio: torch.ones(B, dtype=torch.bool, device=ids.device) for ratio in ratios}
            if ferret:  # skip empty bins, and a bin whose rationale is the previous kept bin's
                use = {ratio: rats[ratio].any(1) for ratio in ratios}
                last = torch.zeros_like(cand)
                for ratio in sorted(aopc):
                    new = use[ratio] & (rats[ratio] != last).any(1)
                    last = torch.where(new[:, None], rats[ratio], last)
                    use[ratio] = new | ((ratio == args.rationale_ratio) & use[ratio])
            plan[m] = use
            requests += [(r, use[ratio]) for ratio in ratios for r in (rats[ratio], cand & ~rats[ratio])]
        got = iter(probs_removed_all(clf, b, requests, y_hat, args))  # comp, suff per method and ratio, in order
        for m, use in plan.items():
            for ratio in ratios:
                comp, suff = p - next(got), p - next(got)
                norm_suff = ((1 - suff.clamp_min(0) - suff0) / (1 - suff0)).clamp(0, 1)
                norm_comp = (comp.clamp_min(0) / (1 - suff0)).clamp(0, 1)
                for key, v in (("comp", comp), ("suff", suff), ("norm_comp", norm_comp), ("norm_suff", norm_suff)):
                    acc[m][ratio][key] += torch.where(use[ratio], v, math.nan).tolist()
        if args.taucorr_loo:
            loo = leave_one_out(clf, ids, att, cand, y_hat[:, 0].tolist(), p, args)
            for m in attrs:
                for r, i in enumerate(b["index"].tolist()):
                    tau[m].append(kendall_tau(loo[r], attrs[m][i][cand[r, :len(attrs[m][i])].cpu()].tolist()))
    table = {}
    for m in attrs:
        row = {}
        for k in keys:
            at = np.asarray(acc[m][args.rationale_ratio][k], dtype=float)
            row[k] = float(np.mean(np.where(np.isnan(at), FALLBACK[k], at)))
        for k in keys:
            per = np.asarray([acc[m][r][k] for r in aopc], dtype=float)  # (bins, examples)
            if ferret:
                kept = ~np.isnan(per)
                mean = np.where(kept.any(0), np.nansum(per, 0) / np.maximum(kept.sum(0), 1), FALLBACK[k])
                row["aopc_" + k] = float(np.mean(mean))
            else:
                row["aopc_" + k] = float(sum(np.mean(v) for v in per) / (len(aopc) + 1))
        if args.taucorr_loo:
            ok = [t for t in tau[m] if t is not None]
            row["taucorr_loo"] = float(np.mean(ok)) if ok else None  # None: no example has 2 distinct-score tokens
            row["n_taucorr_loo"] = len(ok)
        table[m] = row
    if "random" in table:
        for m in table:
            table[m]["gain_over_random"] = {k: table[m][k] - table["random"][k] for k in list(table[m])
                                            if k not in ("gain_over_random", "n_taucorr_loo")
                                            and table[m][k] is not None and table["random"][k] is not None}
    return table


def leave_one_out(clf: Classifier, ids: torch.Tensor, att: torch.Tensor, cand: torch.Tensor, labels: list[int],
                  p: torch.Tensor, args: Args) -> list[list[float]]:
    """Per example, p(y^|x) - p(y^|x without token j) for each candidate token j in order (the removal of
    --removal): one row per token, all examples' rows in shared forwards, computed once for every method."""
    where = [cand[r].nonzero()[:, 0].tolist() for r in range(ids.size(0))]
    owner = [r for r, js in enumerate(where) for _ in js]
    if not owner:
        return [[] for _ in where]
    remove = torch.zeros(len(owner), ids.size(1), dtype=torch.bool, device=ids.device)
    remove[torch.arange(len(owner)), torch.tensor([j for js in where for j in js])] = True
    rows = removed_rows(ids[owner], att[owner], remove, args.removal, clf, args.max_len)
    q = row_probs(clf, rows, [labels[r] for r in owner], args.explain_memory_mb, ids.device)
    out, k = [], 0
    for r, js in enumerate(where):
        out.append([float(p[r]) - v for v in q[k:k + len(js)]])
        k += len(js)
    return out


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float | None:
    """scipy's Kendall tau-b of two score lists (ferret's taucorr_loo); None where it is undefined (fewer than 2
    tokens, or a constant list)."""
    from scipy.stats import kendalltau
    if len(x) < 2:
        return None
    t = kendalltau(x, y).statistic
    return None if t is None or not math.isfinite(t) else float(t)


def agreement(a: dict, b: dict, examples: list[dict], ratio: float) -> dict:
    """Mean over examples of the Spearman correlation and the top-k Jaccard (k = ceil(ratio * n)) of two score
    vectors over the content wordpieces."""
    from scipy.stats import spearmanr
    rho, jac = [], []
    for e in examples:
        c = np.asarray(e["content"], dtype=bool)
        x, y = a[e["index"]].numpy()[c], b[e["index"]].numpy()[c]
        if len(x) >= 2 and x.std() > 0 and y.std() > 0:
            rho.append(spearmanr(x, y).statistic)
        k = max(1, math.ceil(ratio * len(x)))
        tx, ty = set(np.argsort(-x, kind="stable")[:k].tolist()), set(np.argsort(-y, kind="stable")[:k].tolist())
        jac.append(len(tx & ty) / len(tx | ty))
    # spearman None: no example has two content tokens with distinct scores in both vectors (n_spearman counts them)
    return {"spearman": float(np.mean(rho)) if rho else None, "n_spearman": len(rho), "jaccard": float(np.mean(jac))}


def random_init_like(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """The same architecture with every parameter re-initialised (Adebayo et al.'s full randomisation)."""
    torch.manual_seed(seed)
    device = next(model.parameters()).device
    rnd = copy.deepcopy(model).cpu()  # re-initialised from the CPU RNG: the same weights on every device
    for mod in rnd.modules():
        if hasattr(mod, "reset_parameters"):
            mod.reset_parameters()
    return rnd.to(device).eval()


def rationale_words(e: dict, scores: torch.Tensor, ratio: float) -> list[str]:
    """FRESH extraction: word score = sum of its wordpiece scores; top ceil(ratio * n_words), in sentence order."""
    n = max(e["word_ids"]) + 1
    w = np.zeros(n)
    for pos, wid in enumerate(e["word_ids"]):
        if wid >= 0:
            w[wid] += float(scores[pos])
    top = sorted(np.argsort(-w, kind="stable")[:max(1, math.ceil(ratio * n))].tolist())
    return [e["words"][i] for i in top]


def plausibility(attrs: dict, examples: list[dict]) -> dict:
    """Token ROC AUC and average precision (sklearn's step-wise area under the precision-recall curve; ERASER's
    `auprc` is another number: the trapezoid-rule area under that curve) of the scores against the human evidence,
    over content wordpieces, mean over documents that have both evidence and non-evidence tokens."""
    from sklearn.metrics import average_precision_score
    out = {}
    for m, scores in attrs.items():
        auc, ap = [], []
        for e in examples:
            c = np.asarray(e["content"], dtype=bool)
            y, s = np.asarray(e["rationale"])[c], scores[e["index"]].numpy()[c]
            if 0 < y.sum() < len(y):
                auc.append(common.roc_auc(y, s))
                ap.append(float(average_precision_score(y, s)))
        out[m] = {"token_auc": float(np.mean(auc)) if auc else None,  # None: no document has both classes
                  "token_average_precision": float(np.mean(ap)) if ap else None, "n_docs": len(auc)}
    return out


# ------------------------------------------------------------------------------------------------------
# Explanations: explanations.jsonl and results.json's `plausibility` (docs/report.md), from the suite's attributions
# ------------------------------------------------------------------------------------------------------
EXPLAINER_NAMES = {"ig": "regex_ig"}  # "ig" is the common integrated gradients of every run (docs/report.md)


class ClassifierModel(torch.nn.Module):
    """A Classifier behind the interface of common.TaskModel that common.explain_examples calls (embed, forward from
    a batch or its embeddings, predict, gold_log_likelihood of the class in `label`): a TaskModel and a Hugging Face
    classifier alike. train() / eval() reach the classifier's module."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.clf, self.inner = clf, clf.module

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.clf.embed(input_ids)

    def forward(self, batch: dict, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        return self.clf.forward(self.clf.embed(batch["input_ids"]) if inputs_embeds is None else inputs_embeds,
                                batch)[0]

    def predict(self, scores: torch.Tensor, batch: dict) -> list[int]:
        return scores.argmax(-1).tolist()

    def gold_log_likelihood(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        return F.log_softmax(scores, -1).gather(1, batch["label"][:, None])[:, 0]


def precomputed(scores: dict) -> Callable:
    """An explainer for common.explain_examples that looks up the suite's wordpiece scores of each example (by its
    index): the attributions attribute_all() computed for the faithfulness table, not computed again."""
    def explain(batch: dict, target: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(batch["input_ids"].shape)
        for r, i in enumerate(batch["index"].tolist()):
            out[r, :len(scores[i])] = scores[i]
        return out
    return explain


def explain(clf: Classifier, examples: list[dict], attrs: dict, n: int, labels: Sequence[str], own_method: str,
            has_rationale: bool, device) -> tuple[list[dict], dict]:
    """(rows of explanations.jsonl, results.json's `plausibility`) of the first n test examples: common integrated
    gradients ("ig", the yardstick of every method) and each of the suite's attribution methods, under its own name
    ("regex_ig" for REGEX's IG). REGEX's own explainer: `own_method` (the EGT saliency) if the suite computed it,
    else regex_ig, else the first. The suite's scores are of the class it predicted, with --attr-reduce and
    --ig-baseline (docs/regex.md)."""
    explainers = {EXPLAINER_NAMES.get(m, m): precomputed(a) for m, a in attrs.items()}
    names = [EXPLAINER_NAMES.get(m, m) for m in (own_method, "ig")]
    own = next((m for m in names if m in explainers), None)
    return common.explain_examples(ClassifierModel(clf), examples, None, explainers, n, pad_id=clf.pad_id,
                                   label_names=list(labels), own=own, has_rationale=has_rationale, device=device)


# ------------------------------------------------------------------------------------------------------
# Data: the readers and encoding only REGEX uses (SST-2, the three text tasks, your data)
# ------------------------------------------------------------------------------------------------------


def read_sst2(data_dir: Path, split: str) -> list[dict]:
    """SST-2, stsa.binary splits: [{id, words, label}] in file order; label 1 = positive."""
    d = common.dataset_dir(data_dir, "sst2")
    if split not in ("train", "dev", "test"):
        raise common.UsageError(f"unknown SST-2 split {split!r}")
    path = d / f"stsa.binary.{split}"
    out = []
    for i, line in enumerate(common._read_lines(path)):
        label, _, text = line.strip().partition(" ")
        if label not in ("0", "1"):
            raise common.DataError(f"expected '<0|1> <sentence>', got {line[:40]!r}", path, i + 1)
        if not text.split():
            raise common.DataError("empty text", path, i + 1)
        out.append({"id": f"{split}-{i}", "words": text.split(), "label": int(label)})
    if not out:
        raise common.DataError("no examples", path)
    return out


def read_text_task(task: str, data_dir: Path) -> dict:
    """{train, dev, test}: [{id, words, label, evidence (0/1 per word, movies only)}] for a binary sentiment task.
    sst2: the stsa.binary splits. imdb: no dev split exists, so dev = 2,500 reviews of train picked by a fixed
    RNG (seed 0), train = the other 22,500. movies: ERASER train/val/test with the human evidence."""
    if task == "sst2":
        return {s: read_sst2(data_dir, s) for s in ("train", "dev", "test")}
    if task == "imdb":
        train, test = ([{"id": r["id"], "words": r["text"].split(), "label": r["label"]}
                        for r in common.read_imdb(data_dir, split)] for split in ("train", "test"))
        order = list(range(len(train)))
        random.Random(0).shuffle(order)
        dev_ids = set(order[:min(2500, len(train) // 10)])
        return {"train": [e for i, e in enumerate(train) if i not in dev_ids],
                "dev": [e for i, e in enumerate(train) if i in dev_ids], "test": test}
    if task == "movies":
        out = {}
        for s, f in (("train", "train"), ("dev", "val"), ("test", "test")):
            rows = common.read_eraser_movies(data_dir, f)
            for r in rows:
                if not r["words"]:
                    raise common.DataError(f"document {r['id']!r} is empty",
                                           common.dataset_dir(data_dir, "eraser_movies") / "docs")
            out[s] = rows
        return out
    raise common.UsageError(f"unknown task {task!r} (choose from {', '.join(TEXT_TASKS)})")


def encode_text(tokenizer, words: Sequence[str], max_len: int, label: int, index: int,
                evidence: Sequence[int] | None = None) -> dict:
    """One text-classification example: input_ids, token_type_ids, label, index, `rationale` (the human evidence
    carried to wordpieces, zeros if none), `content` (1 for real wordpieces, 0 for [CLS]/[SEP]) and `word_ids`
    (word of each wordpiece, -1 for [CLS]/[SEP]: the tokens the tokenizer added, wherever they sit), for word-level
    rationales."""
    if not words:
        raise common.DataError(f"example {index}: empty text")
    enc = common.encode_words(tokenizer, words, evidence if evidence is not None else [0] * len(words), max_len)
    first = enc["word_index"]  # first wordpiece per word; a wordpiece belongs to the last word starting at or before it
    word_ids, w = [], -1
    for pos in range(len(enc["input_ids"])):
        if enc["word_of_piece"][pos] < 0:  # added by the tokenizer: [CLS], [SEP], <s>, </s>, ...
            word_ids.append(-1)
            continue
        while w + 1 < len(first) and first[w + 1] <= pos:
            w += 1
        word_ids.append(w)
    return {**enc, "label": int(label), "index": index, "word_ids": word_ids,
            "content": [int(i >= 0) for i in word_ids]}


def read_custom_data(args: Args) -> dict:
    """--task custom: the dataset at --data (common.read_rationale_data; bad rows are file:line errors), checked for
    what REGEX takes: text classification (single texts or sentence pairs) with at least two classes."""
    data = common.read_rationale_data(
        args.data, args.data_format, text_column=args.text_column, pair_column=args.pair_column,
        label_column=args.label_column, rationale_column=args.rationale_column,
        rationale_pair_column=args.rationale_pair_column, eraser_query=args.eraser_query,
        hatexplain_rationale=args.hatexplain_rationale)
    if data["kind"] != "classification":
        raise common.UsageError(f"--data {args.data} is a token-tagging dataset (tokens, BIO tags); REGEX classifies "
                                "texts (tagging: the UIMER files, docs/own_data.md)")
    if len(data["labels"]) < 2:
        raise common.UsageError(f"--data {args.data}: {len(data['labels'])} class ({', '.join(data['labels'])}); "
                                "classification needs at least 2")
    if data["pair"] and args.select_then_predict:
        raise common.UsageError(f"--select-then-predict (FRESH) trains on rationale-only single texts; --data "
                                f"{args.data} holds sentence pairs (drop --select-then-predict)")
    if args.egt_saliency == "rationale" and acts(args, "egt") and not args.evaluate_only and \
            all(e["rationale"] is None or not any(e["rationale"] + (e["pair_rationale"] or []))
                for e in data["train"]):
        raise common.UsageError(f"--egt-saliency rationale: no training example of --data {args.data} has a "
                                "rationale word (use --egt-saliency ig)")
    return data


def load_custom_split(dataset: dict, split: str, args: Args, tokenizer, size: int | None,
                      seed: int) -> tuple[list[dict], dict]:
    """`size` examples of a split of your dataset drawn as load_split draws them, aligned to wordpieces through the
    tokenizer's offsets (common.encode_rationale_split: a pair as the model was pre-trained, "[CLS] a [SEP] b [SEP]",
    "<s> a </s></s> b </s>"), with REGEX's fields: word_ids (= word_of_piece; pair words numbered after the text's),
    content (a wordpiece of a word), words (for a pair: (text words, pair words)). Returns (examples, the alignment
    counts for results.json)."""
    rows = dataset[split]
    if size is not None and size > len(rows) and not args.allow_smaller:
        raise common.UsageError(f"asked for {size} {split} examples of --data but the split holds {len(rows)}; pass "
                                "--allow-smaller to use all of them (recorded in results.json)")
    picked = [rows[i] for i in sample_indices(len(rows), size, seed)]
    enc, counts = common.encode_rationale_split(tokenizer, picked, dataset["labels"], args.max_len)
    for x, e in zip(enc, picked, strict=True):
        x.update(word_ids=x["word_of_piece"], content=[int(w >= 0) for w in x["word_of_piece"]],
                 words=e["words"] if e["pair_words"] is None else (e["words"], e["pair_words"]))
    return enc, counts


def sample_indices(n: int, size: int | None, seed: int) -> list[int]:
    """`size` indices of range(n) drawn by an RNG seeded with `seed` (all, in order, if size is None or >= n)."""
    if size is None or size >= n:
        return list(range(n))
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[:size])


def macro_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Macro-averaged F1 over the gold and predicted classes (sklearn)."""
    from sklearn.metrics import f1_score
    return float(f1_score(list(gold), list(pred), average="macro")) if len(gold) else float("nan")


# ------------------------------------------------------------------------------------------------------
# Data, model construction, training
# ------------------------------------------------------------------------------------------------------
def load_split(task: str, split: str, args: Args, tokenizer, size: int | None, seed: int, raw=None) -> list[dict]:
    raw = raw or read_text_task(task, common.resolve_data_dir(args.data_dir))
    rows = raw[split]
    max_len = args.max_len if task == args.task else MAX_LEN[task]
    if size is not None and size > len(rows) and not args.allow_smaller:
        raise common.UsageError(f"asked for {size} {task} {split} examples but the split holds {len(rows)}; pass "
                                "--allow-smaller to use all of them (recorded in results.json)")
    return [encode_text(tokenizer, rows[i]["words"], max_len, rows[i]["label"], k, rows[i].get("evidence"))
            | {"words": rows[i]["words"], "id": rows[i]["id"]}
            for k, i in enumerate(sample_indices(len(rows), size, seed))]


def new_model(args: Args, model_name: str, num_labels: int = 2) -> common.TaskModel:
    return common.TaskModel(common.load_encoder(model_name), "cls", num_labels, args.dropout).to(args.device)


def fit(clf: Classifier, train: list[dict], dev: list[dict], args: Args, seed: int, regex: bool, log) -> dict:
    """Fine-tune with L (Eq. 1) if `regex`, else with L_CE alone; early stopping on dev accuracy."""
    a = args if regex else dataclasses.replace(args, igr=False, vat=False, egt=False)
    model, pad = clf.module, clf.pad_id
    steps_per_epoch = math.ceil(len(train) / a.batch_size)
    total = steps_per_epoch * a.max_epochs
    egt_start = steps_per_epoch if a.egt_start is None else a.egt_start
    opt, sched = common.make_optimizer(model, a.lr, total, warmup_steps=int(a.warmup_ratio * total))
    stopper, step = common.EarlyStopping(a.patience), 0
    for epoch in range(a.max_epochs):
        model.train()
        sums: dict[str, float] = {}
        for batch in common.progress(common.batches(train, a.batch_size, pad, shuffle_seed=seed * 1000 + epoch,
                                                    device=a.device), desc=f"epoch {epoch}"):
            egt_on = acts(a, "egt") and use_egt(step, egt_start)
            L, rec = train_step(clf, batch, a, egt_on)
            common.optimizer_step(L, model, opt, sched, f"epoch {epoch}, step {step}")
            log(epoch=epoch, step=step, egt_on=egt_on, **rec)
            for k, v in rec.items():
                sums[k] = sums.get(k, 0.0) + v
            step += 1
        dev_acc = predict(clf, dev, a)["accuracy"]
        stopper.step(dev_acc, epoch, model)
        log(epoch=epoch, dev_accuracy=dev_acc, best_dev=stopper.best)
        print(f"epoch {epoch}  " + "  ".join(f"{k} {v / steps_per_epoch:.4f}" for k, v in sums.items() if
                                             k.startswith("L")) + f"  dev acc {dev_acc:.4f}  best {stopper.best:.4f}")
        if stopper.stop:
            break
    stopper.restore(model)
    model.eval()
    return {"dev_accuracy": stopper.best, "best_epoch": stopper.best_epoch, "epochs_run": epoch + 1, "steps": step,
            "egt_start": egt_start}


def select_then_predict(clf: Classifier, data: dict, args: Args, seed: int, tokenizer) -> dict:
    """FRESH: per method, extract word-level rationales on train/dev/test with the trained model, train a new
    classifier (plain fine-tuning, same settings) on rationale-only text, report its test metrics."""
    out = {}
    for m in method_list(args.stp_methods):
        split_ex = {}
        for split in ("train", "dev", "test"):
            ex = data[split]
            scores = attribute_all(clf, ex, [m], args, seed)[m]
            split_ex[split] = [encode_text(tokenizer, w, args.max_len, e["label"], e["index"]) | {"words": w}
                               for e in ex for w in [rationale_words(e, scores[e["index"]], args.rationale_ratio)]]
        common.set_seed(seed)
        stp = as_classifier(new_model(args, args.model, clf.module.num_labels if isinstance(
            clf.module, common.TaskModel) else clf.module.config.num_labels), tokenizer)
        fit(stp, split_ex["train"], split_ex["dev"], args, seed, regex=False, log=lambda **r: None)
        out[m] = predict(stp, split_ex["test"], args)
    return out


def evaluate_suite(clf: Classifier, data: dict, args: Args, seed: int, tokenizer) -> dict:
    """Accuracy / macro-F1 and the faithfulness table on test (and OOD), randomisation test 2 (trained vs random
    init), FRESH and plausibility when asked (movies and custom: against the test set's own rationales, always).
    Attributions are returned under `_attributions` for the seed test and the explanations."""
    methods = method_list(args.attributions)
    rows: list[dict] = []
    res = {"test": predict(clf, data["test"], args, rows), "_predictions": rows}
    gaps: dict = {}
    attrs = attribute_all(clf, data["test"], methods, args, seed, gaps)
    res["completeness_gap"] = gaps
    res["faithfulness"] = faithfulness(clf, data["test"], attrs, args)
    res["faithfulness_settings"] = {
        "target": "the predicted class's logit (attributions) and probability (comprehensiveness, sufficiency)",
        "rationale_ratio": args.rationale_ratio, "aopc_ratios": sorted(float(r) for r in args.aopc_ratios.split(",")),
        "aopc_divisor": "number of ratios + 1 (ERASER paper, ood_faith); the ERASER scorer divides by the number"
        if args.convention == "eraser" else "per example, the number of kept bins (ferret: empty bins and a bin "
        "repeating the previous kept rationale are skipped; comp 0, suff 1 when none is kept)",
        "removal": args.removal, "attr_reduce": args.attr_reduce, "ig_steps": args.ig_steps,
        "ig_baseline": args.ig_baseline, "convention": args.convention,
        "rationale": "top ceil(ratio n) content wordpieces (at least 1)" if args.convention == "eraser" else
        "top floor(ratio n) wordpieces between [CLS] and [SEP], those scored above 0"}
    if args.randomization:
        rnd = as_classifier(random_init_like(clf.module, seed + 7919), tokenizer)
        rattrs = attribute_all(rnd, data["test"], methods, args, seed + 1)  # independent noise for `random`
        res["randomization_trained_vs_random"] = {
            m: agreement(attrs[m], rattrs[m], data["test"], args.rationale_ratio) for m in methods}
    if args.task in ("movies", "custom"):
        res["wordpiece_plausibility"] = plausibility(attrs, data["test"])
    elif args.plausibility:
        movies = load_split("movies", "test", args, tokenizer, args.plausibility_size, 0)
        res["wordpiece_plausibility"] = plausibility(attribute_all(clf, movies, methods, args, seed), movies)
    if "ood_test" in data:
        res["ood"] = {"task": args.ood_task, "test": predict(clf, data["ood_test"], args),
                      "faithfulness": faithfulness(clf, data["ood_test"], attribute_all(
                          clf, data["ood_test"], methods, args, seed), args)}
    if args.select_then_predict:
        res["select_then_predict"] = select_then_predict(clf, data, args, seed, tokenizer)
    res["_attributions"] = attrs
    return res


def load_data(args: Args, tokenizer, seed: int, dataset: dict | None = None) -> dict:
    """{train, dev, test, shortfall (, ood_test)}; --task custom: from `dataset` (read_custom_data), plus alignment."""
    train_seed = seed if args.subsample_seed is None else args.subsample_seed
    if args.task == "custom":
        data, alignment = {}, {}
        for split, size, s in (("train", args.train_size, train_seed), ("dev", args.dev_size, 0),
                               ("test", args.test_size, 0)):
            if split == "train" and args.evaluate_only and not args.select_then_predict:
                data[split] = []
                continue
            data[split], alignment[split] = load_custom_split(dataset, split, args, tokenizer, size, s)
        data["shortfall"] = {s: {"asked": n, "available": len(dataset[s])} for s, n in (
            ("train", args.train_size), ("dev", args.dev_size), ("test", args.test_size))
            if n is not None and n > len(dataset[s])}
        data["alignment"] = alignment
        return data
    raw = read_text_task(args.task, common.resolve_data_dir(args.data_dir))
    data = {"train": [] if args.evaluate_only and not args.select_then_predict else
            load_split(args.task, "train", args, tokenizer, args.train_size, train_seed, raw),
            "dev": load_split(args.task, "dev", args, tokenizer, args.dev_size, 0, raw),
            "test": load_split(args.task, "test", args, tokenizer, args.test_size, 0, raw),
            "shortfall": {s: {"asked": n, "available": len(raw[s])} for s, n in (("train", args.train_size),
                          ("dev", args.dev_size), ("test", args.test_size)) if n is not None and n > len(raw[s])}}
    if args.ood_task:
        data["ood_test"] = load_split(args.ood_task, "test", args, tokenizer, args.test_size, 0)
    return data


def variant_name(args: Args) -> str:
    """The terms that act (switched on, weight > 0): plain, one or two of igr/vat/egt, or regex for all three."""
    on = [n for n in TERM_WEIGHTS if acts(args, n)]
    if not on:
        return "plain"
    mode = "" if "egt" not in on or args.egt_mode == "both" else f"-{args.egt_mode}"
    return ("regex" if len(on) == 3 else "+".join(on)) + mode


def check_labels(where, n: int, names: Sequence[str] | None, labels: Sequence[str]) -> None:
    """A checkpoint fits the data: as many labels, and the same names in the same order where the checkpoint names
    them (not the default LABEL_i); a UsageError otherwise."""
    if n != len(labels):
        raise common.UsageError(f"checkpoint {where} has {n} labels; the data has {len(labels)} "
                                f"({', '.join(labels[:8])}{', ...' if len(labels) > 8 else ''})")
    named = names is not None and any(str(x) != f"LABEL_{i}" for i, x in enumerate(names))
    if named and [str(x) for x in names] != [str(x) for x in labels]:
        raise common.UsageError(f"checkpoint {where} has the labels {', '.join(map(str, names))}; the data has "
                                f"{', '.join(labels)} (label ids must mean the same)")


def load_checkpoint(path: str | None, args: Args, labels: Sequence[str] = LABELS) -> tuple[torch.nn.Module, str]:
    """(model in eval mode on args.device, the folder or name its tokenizer loads from). `path`: a run directory of
    this script (its model/ folder), an --out-dir that holds one run of this script (e.g. a sweep job), a folder
    written by common.save_task_model, a Hugging Face sequence-classification folder, or a legacy model.pt (read with
    weights_only=True: a file that holds code is refused, never run); with the labels of the data (check_labels)."""
    p = Path(path or "")
    runs = sorted((p / "regex_robust").glob("*/model/task.json"))
    if len(runs) == 1:  # an --out-dir holding one run
        p = runs[0].parent.parent
    p = p / "model" if (p / "model" / "task.json").is_file() or (p / "model" / "config.json").is_file() else p
    if (p / "task.json").is_file():  # written by common.save_task_model: rebuilt exactly as it was trained
        model, meta = common.load_task_model(p, args.dropout)
        check_labels(p, meta.get("num_labels"), meta.get("labels"), labels)
        return model.to(args.device), str(p / "encoder" if meta.get("format") == "encoder+head" else p)
    if (p / "config.json").is_file():
        return load_hf_classifier(p, args, labels), str(p)
    if p.is_dir() and (p / "model.pt").is_file():
        p = p / "model.pt"
    if not p.is_file():
        raise common.UsageError(f"checkpoint {path} not found: pass a run directory of this script, its model/ "
                                "folder, an --out-dir holding one run, a Hugging Face sequence-classification model "
                                "folder, or a model.pt")
    ckpt = common.load_weights(p)
    name = ckpt.get("model", args.model) if isinstance(ckpt, dict) else args.model
    model = new_model(args, name, len(labels))
    try:
        model.load_state_dict({k: v.to(args.device) for k, v in ckpt["state_dict"].items()})
    except (RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise common.UsageError(f"checkpoint {p} does not fit model {name}: "
                                f"{str(e).splitlines()[0][:150]}") from None
    return model.eval(), name


def load_hf_classifier(path: Path, args: Args, labels: Sequence[str] = LABELS) -> torch.nn.Module:
    """AutoModelForSequenceClassification from a local folder (eager attention, float32) with the data's labels."""
    from transformers import AutoModelForSequenceClassification
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, attn_implementation="eager",
                                                                   dtype=torch.float32)
    except Exception as e:
        raise common.UsageError(f"cannot load {path} as a sequence-classification model: {type(e).__name__}: "
                                f"{str(e).splitlines()[0][:150]}") from None
    check_labels(path, model.config.num_labels, [model.config.id2label[i] for i in range(model.config.num_labels)]
                 if model.config.id2label else None, labels)
    return model.to(args.device).eval()


def check_mask_needs(tokenizer, args: Args) -> None:
    """What replaces tokens by the mask token needs one: a one-line UsageError naming the flag that chooses another
    option (before any training)."""
    for needed, by, other in ((not args.evaluate_only and acts(args, "egt") and args.egt_mode in ("mask", "both"),
                               "L_mask of EGT (Eq. 6)", "choose --egt-mode align, or --no-egt"),
                              (args.removal == "mask", "--removal mask", "choose --removal pad, delete or retokenize"),
                              (args.ig_baseline == "mask", "--ig-baseline mask", "choose --ig-baseline zero or pad")):
        if needed:
            common.check_mask_token(tokenizer, args.model, by, other)


def run_one_seed(args: Args, seed: int, dataset: dict | None = None) -> dict:
    timer = common.Timer()
    common.set_seed(seed)
    labels = LABELS if dataset is None else list(dataset["labels"])
    if args.evaluate_only:
        model, model_name = load_checkpoint(args.checkpoint, args, labels)
        args = dataclasses.replace(args, model=model_name)
        ck = Path(args.checkpoint).resolve()
        name = f"{args.task}-eval-{(ck if ck.is_dir() else ck.parent).name}-{seed}"
    tokenizer = common.load_tokenizer(args.model)
    check_mask_needs(tokenizer, args)
    data = load_data(args, tokenizer, seed, dataset)  # data first: a bad file stops the run before a model is loaded
    if not args.evaluate_only:
        model = new_model(args, args.model, len(labels))
        name = f"{args.task}-{args.train_size or 'full'}-{variant_name(args)}-{seed}"
    clf = as_classifier(model, tokenizer)
    run = common.make_run_dir(args.out_dir, "regex_robust", name)
    common.write_json_atomic(run / "config.json", {**dataclasses.asdict(args), "seed": seed})
    log = common.JsonlLog(run / "log.jsonl")
    variant = "evaluate-only" if args.evaluate_only else variant_name(args)
    results = {"task": args.task, "seed": seed, "variant": variant, "shortfall": data["shortfall"],
               "n_train": len(data["train"]), "n_dev": len(data["dev"]), "n_test": len(data["test"])}
    if dataset is not None:
        results.update(labels=labels, pair=dataset["pair"], alignment=data["alignment"])
    if not args.evaluate_only:
        print(f"seed {seed}: {len(data['train'])} training examples, variant {variant_name(args)}")
        results["training"] = fit(clf, data["train"], data["dev"], args, seed, regex=True, log=log)
    common.set_seed(seed)
    results.update(evaluate_suite(clf, data, args, seed, tokenizer))
    if args.save_model and not args.evaluate_only:
        common.save_task_model(run / "model", model, tokenizer, {
            "method": f"REGEX ({variant_name(args)}), regex_robust.py", "data": f"{args.task}, {len(data['train'])} "
            "training examples", "seed": seed, "test accuracy": round(results["test"]["accuracy"], 4),
            "base model": args.model, "max length": args.max_len}, labels=labels)
    attrs = results.pop("_attributions")
    common.write_predictions(run / "predictions.jsonl", sorted(data["test"], key=lambda e: e["index"]),
                             results.pop("_predictions"))
    if args.compare_checkpoint:
        other, _ = load_checkpoint(args.compare_checkpoint, args, labels)
        oattrs = attribute_all(as_classifier(other, tokenizer), data["test"], list(attrs), args, seed + 1)
        results["randomization_seed_vs_seed"] = {m: agreement(attrs[m], oattrs[m], data["test"], args.rationale_ratio)
                                                 for m in attrs}
    if args.explain_examples:  # the first N test examples against the human rationale (docs/report.md)
        rows, results["plausibility"] = explain(clf, data["test"], attrs, args.explain_examples, labels,
                                                args.egt_saliency, args.task in ("movies", "custom"), args.device)
        common.write_explanations(run / "explanations.jsonl", rows)
    common.write_json_atomic(run / "results.json", results)  # same seed -> byte-identical file, wherever it is
    common.write_json_atomic(run / "timing.json", {"runtime_s": round(timer(), 1)})
    common.release_run_dir(run)
    results["run_dir"] = str(run)
    f = results["faithfulness"]
    print(f"seed {seed}: test accuracy {100 * results['test']['accuracy']:.2f}  macro-F1 "
          f"{100 * results['test']['macro_f1']:.2f}  comp/suff " +
          "  ".join(f"{m} {f[m]['comp']:.3f}/{f[m]['suff']:.3f}" for m in f) + f" -> {run}")
    results["_attributions"], results["_examples"] = attrs, data["test"]
    return results


def summarise(runs: list[dict], args: Args, seeds: list[int]) -> dict:
    """mean +- std over seeds of the metrics, and randomisation test 1 (agreement between every pair of seeds)."""
    def agg(*path):
        """mean +- std over the runs of the value at results[path[0]][path[1]]..."""
        def get(r):
            for key in path:
                r = r.get(key) if isinstance(r, dict) else None
            return r
        return common.aggregate([get(r) for r in runs])
    faith = runs[0]["faithfulness"]
    summary = {"seeds": seeds, "variant": runs[0]["variant"], "accuracy": agg("test", "accuracy"),
               "macro_f1": agg("test", "macro_f1"),
               "faithfulness": {m: {k: agg("faithfulness", m, k) for k in row if k != "gain_over_random"}
                                for m, row in faith.items()}}
    if "random" in faith:
        for m, row in summary["faithfulness"].items():
            row["gain_over_random"] = {k: agg("faithfulness", m, "gain_over_random", k)
                                       for k in faith[m]["gain_over_random"]}
    if args.randomization:
        summary["randomization_trained_vs_random"] = {
            m: {k: agg("randomization_trained_vs_random", m, k) for k in ("spearman", "jaccard")}
            for m in runs[0]["randomization_trained_vs_random"]}
        pairs = list(itertools.combinations(range(len(runs)), 2))
        summary["randomization_seed_vs_seed"] = {
            m: {k: common.aggregate([agreement(runs[i]["_attributions"][m], runs[j]["_attributions"][m],
                                               runs[0]["_examples"], args.rationale_ratio)[k] for i, j in pairs])
                for k in ("spearman", "jaccard")} for m in runs[0]["_attributions"]}
    summary["runs"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs]
    return summary


def main(args: Args) -> dict:
    args = resolve(args)
    dataset = read_custom_data(args) if args.task == "custom" else None  # read once, checked before any model loads
    seeds = common.parse_seeds(args.seeds, args.seed)
    runs = [run_one_seed(args, s, dataset) for s in seeds]
    if len(runs) == 1:
        return {k: v for k, v in runs[0].items() if not k.startswith("_")}
    summary = summarise(runs, args, seeds)
    name = f"{args.task}-{args.train_size or 'full'}-{runs[0]['variant']}-seeds"
    common.write_json_atomic(Path(args.out_dir) / "regex_robust" / name / "summary.json", common.relative_runs(summary))
    a = summary["accuracy"]
    print(f"test accuracy over seeds {seeds}: {100 * a['mean']:.2f} +- {100 * a['std']:.2f}")
    return summary


def cli(argv=None) -> int:
    return common.run_cli(main, parse_args, argv)


if __name__ == "__main__":
    sys.exit(cli())
