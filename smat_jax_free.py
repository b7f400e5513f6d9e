"""SMaT: learning to scaffold, i.e. an attention explainer meta-learned so that a student simulates its teacher.

Paper: Fernandes, Treviso, Pruthi, Martins, Neubig, "Learning to Scaffold: Optimizing Model Explanations for
Teaching", NeurIPS 2022, arXiv 2204.10810 (Eqs. 1-11, Tables 1-3, 5, 7, Appendix A). Original code (JAX/Flax):
github.com/coderpat/learning-scaffold; this port reproduces its outputs (tests/test_smat.py, parity fixture).
Documentation: docs/smat.md (equations -> code, deviations, results); docs/smat_plausibility.md (Table 2 below chance).
common.py sections used: CLI and validation; runs and results; devices and models; batching; training utilities;
metrics; explanations; readers; rationale datasets.

    python smat_jax_free.py --setup teacher --task imdb                                  # train + save the teacher
    python smat_jax_free.py --setup student --task imdb --explainer none --num-examples 500 --seed 0
    python smat_jax_free.py --setup student --task imdb --explainer attention_all --num-examples 500
    python smat_jax_free.py --setup smat --task imdb --num-examples 500 --seeds paper  # median [IQR] over 5 seeds
    python smat_jax_free.py --setup plausibility --task imdb --explainer all           # ERASER Movies AUC (Table 2)
    python smat_jax_free.py --setup teacher --task custom --data path/to/mydata        # your data (docs/own_data.md)
    python smat_jax_free.py --setup smat --task custom --data path/to/mydata           # ... and its rationales

Equation index
    Eq. 1   SIM = E[1{S(x) = T(x)}] (Pearson r for MLQE)     -> simulability()
    Eq. 3   L_student = L_sim + beta * L_expl                -> student_objective() (`# Eq. (3)`)
            L_sim: CE vs argmax teacher / MSE vs teacher      -> simulation_loss()
            L_expl = KL(teacher expl || student expl)         -> explanation_loss(); in your own training loop on a
                                                                 Hugging Face classifier: explanation_term()
    Eqs. 6-7  real student step (SGD, clip, weight decay)     -> student_step(), sgd_update()
    Eq. 8   pilot step from theta_{t+1}, inside the graph     -> meta_gradient()
    Eq. 9   phi_T <- phi_T - eta_out grad L_sim(pilot, valid) -> meta_gradient(), OptaxAdam (outer optimiser)
    Eq. 10-11  s^h = mean over non-pad rows of q.k/sqrt(d); E = softmax(sum_h lambda_h s^h)
                                                              -> head_scores(), attention_explanation()
    Sec. 4  lambda = NORMALIZE(phi) (sparsemax, Table 7: softmax, 1.5-entmax, none)
                                                              -> normalize_heads(), sparsemax(), entmax15()
    App. A  gradient L2, gradient x input, integrated gradients (softmax over tokens)
                                                              -> gradient_explanation_logits(), ig_path()
    Table 2 plausibility AUC on ERASER Movie Reviews (or your data's rationales)
                                                              -> plausibility()
"""
from __future__ import annotations

import csv
import ctypes
import ctypes.util
import dataclasses
import itertools
import json
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

import common

SCRIPT = "smat_jax_free"
EXPLAINERS = ["none", "gradient_l2", "gradient_x_input", "integrated_gradients", "attention_all", "attention_last"]
GRADIENT_EXPLAINERS = ("gradient_l2", "gradient_x_input", "integrated_gradients")
EXISTING_FILE = common.Domain("an existing file (no leading ~)",
                              lambda x: common.flag_path(x) is not None and common.flag_path(x).is_file())
PAPER_SEEDS = "0,9,11,30,69"
CIFAR_HUB, VIT_MODEL = "uoft-cs/cifar100", "google/vit-base-patch16-224-in21k"
NEG = -1e10  # finite mask value of the original (never -inf: these paths are differentiated twice)
# Per-task settings of the paper's runs (original tapes/*.tconf and main.tape).
TASKS = {
    "imdb": dict(teacher_lr=5e-5, teacher_warmup=500, teacher_clip=1.0, student_batch=32, student_patience=10,
                 meta_lr=5e-4, num_examples=500, outputs=2),
    "mlqe": dict(teacher_lr=1e-5, teacher_warmup=4000, teacher_clip=1.0, student_batch=16, student_patience=5,
                 meta_lr=2e-4, num_examples=2100, outputs=1),
    "cifar100": dict(teacher_lr=5e-5, teacher_warmup=0, teacher_clip=5.0, student_batch=16, student_patience=5,
                     meta_lr=5e-4, num_examples=2250, outputs=100),
    # your text classification data (--data, docs/own_data.md): IMDB's settings (the paper's text classification
    # task), with the teacher's warm-up scaled to the data (None: a third of an epoch, as IMDB's 500 of 1,563 steps),
    # the student pool all of train (None), one output per label of the data (None)
    "custom": dict(teacher_lr=5e-5, teacher_warmup=None, teacher_clip=1.0, student_batch=32, student_patience=10,
                   meta_lr=5e-4, num_examples=None, outputs=None),
}
IMDB_WARMUP_SHARE = 500 / 1563  # the paper's IMDB teacher warms up over 500 of its 1,563 steps per epoch
STUDENT_LR, STUDENT_CLIP, WEIGHT_DECAY, TEACHER_BATCH, TEACHER_PATIENCE, META_CLIP = 5e-3, 5.0, 0.01, 16, 5, 5.0


@dataclass
class Args:
    setup: str = common.field("student", help="teacher: train and save the teacher; student: train a student with "
                              "a static teacher explainer; smat: learn the teacher explainer (SMaT); plausibility: "
                              "ERASER Movies AUC of the teacher's explainers", choices=["teacher", "student", "smat",
                                                                                         "plausibility"])
    task: str = common.field("imdb", help="imdb (Table 1), mlqe (MLQE-PE regression, Table 5), cifar100 (ViT, "
                             "Table 3), or custom (your text classification data with human rationales: --data; "
                             "docs/own_data.md)", choices=list(TASKS))
    explainer: str | None = common.field(None, help="teacher explainer (student default: none; smat: attention_all "
                                         "or attention_last; plausibility: all)", choices=EXPLAINERS + ["all"])
    num_examples: int | None = common.field(None, help="student training examples: the first N of the pool "
                                            "(default: imdb 500, mlqe 2100, cifar100 2250, custom all of train; "
                                            "more than the pool holds "
                                            "is an error unless --allow-smaller)", domain=common.POSITIVE)
    head_normalizer: str = common.field("sparsemax", help="NORMALIZE of the head coefficients (Table 7)",
                                        choices=["sparsemax", "softmax", "entmax15", "none"])
    ig_variant: str = common.field("standard", help="integrated gradients: standard (trapezoid rule on the straight "
                                   "path) or original (the original code's formula, docs/smat.md, Deviations)",
                                   choices=["standard", "original"])
    ig_steps: int | None = common.field(None, help="IG steps (default 10 in training, 50 for plausibility, App. A)",
                                        domain=common.Int(2))
    beta: float | None = common.field(None, help="weight of L_expl (default: 5 attention, 0.2 gradient, 0 none)",
                                      domain=common.Float(0))
    lr: float | None = common.field(None, help="learning rate (default: teacher per task, student 5e-3)",
                                    domain=common.Float(0, lo_open=True))
    batch_size: int | None = common.field(None, help="batch size (default: teacher 16, student imdb 32 / else 16)",
                                          domain=common.POSITIVE)
    patience: int | None = common.field(None, help="early stopping: stop after patience+1 epochs without a better "
                                        "valid score (default: teacher 5, student imdb 10 / else 5)",
                                        domain=common.COUNT)
    max_epochs: int | None = common.field(None, help="epoch cap (default: none, train until early stopping)",
                                          domain=common.POSITIVE)
    warmup_steps: int | None = common.field(None, help="teacher LR warm-up from 1e-6 (default: imdb 500, mlqe 4000, "
                                            "cifar100 0, custom a third of the first epoch's steps)",
                                            domain=common.COUNT)
    meta_lr: float | None = common.field(None, help="SMaT outer Adam lr (default: imdb/cifar100 5e-4, mlqe 2e-4)",
                                         domain=common.Float(0, lo_open=True))
    max_len: int = common.field(256, help="max wordpieces per text (paper: 256)", domain=common.MAX_LEN)
    teacher_train_size: int | None = common.field(None, help="train the teacher on the first N of its shuffled "
                                                  "training split (default: all; a sizing knob; more than the split "
                                                  "holds is an error unless --allow-smaller)", domain=common.POSITIVE)
    allow_smaller: bool = common.field(False, help="if --num-examples (student pool) or --teacher-train-size (teacher "
                                       "training split) asks for more examples than there are, train on all of "
                                       "them instead of stopping with an error (recorded in results.json as "
                                       "`shortfall`)")
    max_valid_examples: int | None = common.field(None, help="evaluate on at most the first N of the valid split "
                                                  "(teacher-valid / student-valid; default: all)",
                                                  domain=common.POSITIVE)
    max_test_examples: int | None = common.field(None, help="evaluate on at most the first N of the student-test "
                                                 "split (default: all)", domain=common.POSITIVE)
    imdb_split_sizes: str = common.field("12500,1250,2500", help="IMDB teacher-valid, student-valid, student-test "
                                         "sizes carved from the shuffled test reviews (the original's; change "
                                         "only for tiny test data)", domain=common.IntList(1, length=3, distinct=False))
    teacher_dir: str | None = common.field(None, help="teacher checkpoint folder (default: "
                                           "<out-dir>/smat_jax_free/<task>-teacher)", domain=common.TEXT)
    head_coeffs: str | None = common.field(None, help="plausibility: head_coeffs.csv of a SMaT run (adds "
                                           "attention_smat)", domain=EXISTING_FILE)
    eraser_split: str = common.field("all", help="imdb plausibility: the ERASER Movies documents (original: "
                                     "train+val+test); custom scores the test split of --data",
                                     choices=["all", "train", "val", "test"])
    max_docs: int | None = common.field(None, help="plausibility on at most the first N documents (custom: test "
                                        "examples)", domain=common.POSITIVE)
    model: str | None = common.field(None, help=f"{common.MODEL_HELP}; default: {common.DEFAULT_MODEL}, "
                                     f"cifar100: {VIT_MODEL}; students use the teacher's",
                                     domain=common.TEXT)
    data_dir: str | None = common.field(None, help="folder holding imdb/, mlqe_pe/, eraser_movies/, cifar100/ "
                                        "(else $DATA_DIR, else the data/ folder beside common.py, else ./data)",
                                        domain=common.EXISTING_DIR)
    # --- your own data (--task custom; docs/own_data.md): the flags of RationaleDataArgs in common.py but --tags-column
    # (SMaT trains classifiers; a token tagging dataset is refused)
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
    out_dir: str = common.field("runs", help="run directories go to <out-dir>/smat_jax_free/<name>/",
                                domain=common.OUT_DIR)
    seed: int = common.field(0, help="seed of data order, dropout (the splits and head init do not depend on it)",
                             domain=common.SEED)
    seeds: str | None = common.field(None, help=f"comma-separated seeds or 'paper' (= {PAPER_SEEDS}): run each, "
                                     "report the median [q1:q3] (quartiles) in summary.json",
                                     domain=common.IntList(0, 2**32 - 1, extra=["paper"]))
    eval_batch_size: int = common.field(64, help="evaluation batch size", domain=common.POSITIVE)
    device: str = common.field("auto", help=common.DEVICE_HELP, domain=common.DEVICE)
    explain_examples: int = common.field(common.EXPLAIN_EXAMPLES, help=common.EXPLAIN_EXAMPLES_HELP,
                                         domain=common.COUNT)
    explain_own: bool = common.field(True, help="explain with SMaT's attention explainers too, beside integrated "
                                     "gradients: the run's model with its own explainer (`attention`) and, for "
                                     "students, the teacher's explanation it was taught with (`teacher`); off: "
                                     "integrated gradients alone (for an encoder without query/key projections)")
    keep_freed_memory: bool = common.field(True, help="glibc malloc keeps freed memory for reuse (the meta step's "
                                           "large graph is then not page-faulted in afresh every step; RSS stays "
                                           "at its peak; results unchanged)")


def parse_args(argv=None) -> Args:
    return common.parse_dataclass(Args, argv, prog="smat_jax_free.py", description=__doc__.split("\n")[0])


def resolve(args: Args, cache: dict | None = None) -> Args:
    """Fill the setup- and task-dependent defaults; check the rest. --task custom reads --data here (bad data is a
    file:line error before any model loads) and puts the dataset in `cache["dataset"]` (if a cache is given)."""
    t = TASKS[args.task]
    default_explainer = {"student": "none", "smat": "attention_all", "plausibility": "all", "teacher": "none"}
    if args.explainer is None:
        args.explainer = default_explainer[args.setup]
    if args.explainer == "all" and args.setup != "plausibility":
        raise common.UsageError("--explainer all is only for --setup plausibility")
    if args.setup == "smat" and args.explainer not in ("attention_all", "attention_last"):
        raise common.UsageError("SMaT learns an attention explainer: use --explainer attention_all (the paper's) "
                                "or attention_last")
    if args.setup == "plausibility" and args.task not in ("imdb", "custom"):
        raise common.UsageError("--setup plausibility scores a teacher's explanations against human rationales: "
                                "use --task imdb (ERASER Movie Reviews) or --task custom (the test split of --data)")
    if args.data is not None and args.task != "custom":
        raise common.UsageError("--data is for --task custom (the paper tasks read --data-dir)")
    if args.task == "custom" and args.eraser_split != "all":
        raise common.UsageError("--eraser-split chooses the ERASER Movies documents of --task imdb; --task custom "
                                "scores the test split of --data")
    teacher = args.setup in ("teacher", "plausibility")
    if args.num_examples is None:
        args.num_examples = t["num_examples"]
    if args.ig_steps is None:
        args.ig_steps = 50 if args.setup == "plausibility" else 10
    if args.beta is None:
        args.beta = 0.0 if args.explainer == "none" else (0.2 if args.explainer in GRADIENT_EXPLAINERS else 5.0)
    args.lr = args.lr if args.lr is not None else (t["teacher_lr"] if teacher else STUDENT_LR)
    if args.batch_size is None:
        args.batch_size = TEACHER_BATCH if teacher else t["student_batch"]
    if args.patience is None:
        args.patience = TEACHER_PATIENCE if teacher else t["student_patience"]
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else t["teacher_warmup"]
    args.meta_lr = args.meta_lr if args.meta_lr is not None else t["meta_lr"]
    common.check_args(args)
    dataset = read_custom_data(args) if args.task == "custom" else None
    if dataset is not None:  # the defaults that depend on the data
        n_train = len(dataset["train"])
        if args.num_examples is None:
            args.num_examples = n_train
        if args.warmup_steps is None:  # a third of an epoch of the teacher's training set, as IMDB's
            n_teacher = min(n_train, args.teacher_train_size or n_train)
            args.warmup_steps = math.ceil(IMDB_WARMUP_SHARE * math.ceil(n_teacher / TEACHER_BATCH))
    args.device = str(common.resolve_device(args.device))
    if args.setup == "smat" and args.beta == 0:
        raise common.UsageError("SMaT learns the explainer through the explanation loss: --beta must be > 0")
    if args.setup == "teacher" and args.task != "cifar100":
        common.check_max_len(args.model, args.max_len)
    if args.seeds == "paper":
        args.seeds = PAPER_SEEDS
    if cache is not None:
        cache["dataset"] = dataset
    return args


def read_custom_data(args: Args) -> dict:
    """--task custom: the dataset at --data (common.read_rationale_data; bad rows are file:line errors), a text
    classification dataset (single texts or sentence pairs, any number of classes); token tagging is refused."""
    if args.data is None:
        raise common.UsageError("--task custom needs --data FOLDER (your rationale dataset; docs/own_data.md)")
    dataset = common.read_rationale_data(
        args.data, args.data_format, text_column=args.text_column, pair_column=args.pair_column,
        label_column=args.label_column, rationale_column=args.rationale_column,
        rationale_pair_column=args.rationale_pair_column, eraser_query=args.eraser_query,
        hatexplain_rationale=args.hatexplain_rationale)
    if dataset["kind"] != "classification":
        raise common.UsageError(f"--data {args.data} is a token tagging dataset; SMaT trains text classifiers (single "
                                "texts or sentence pairs): give a dataset with a `label` per example")
    if len(dataset["labels"]) < 2:
        raise common.UsageError(f"--data {args.data}: its training split has one label only "
                                f"({dataset['labels'][0]!r}); a classifier needs at least two")
    return dataset


# ------------------------------------------------------------------------------------------------------
# Model: pretrained encoder + the paper's head (scalar mix over mean-pooled hidden states -> dense-GELU-dense),
# with forward hooks that record hidden_states[0], every layer output and every layer's query/key projections.
# ------------------------------------------------------------------------------------------------------
QUERY_KEY_NAMES = (("query", "q_proj", "q_lin"), ("key", "k_proj", "k_lin"))  # BERT, RoBERTa, ViT, ...; DistilBERT


def encoder_parts(encoder: nn.Module):
    """(module whose output is hidden_states[0], list of layers, [(query, key) Linear per layer] or None) of any HF
    encoder with eager attention (BERT/MiniLM, ELECTRA: after embeddings_project, RoBERTa/XLM-R, DistilBERT, ViT).
    The query/key pairs are None when some layer has no projections of those names (DeBERTa's attention adds
    relative-position terms to q.k, so its q.k/sqrt(d) is not its attention logit): only the attention explainer
    needs them (check_attention_explainer)."""
    n = encoder.config.num_hidden_layers
    layers = next((m for m in encoder.modules() if isinstance(m, nn.ModuleList) and len(m) == n), None)
    if layers is None:
        raise common.UsageError(f"cannot find the {n} layers of {type(encoder).__name__}; SMaT mixes every layer's "
                                "hidden states (BERT, ELECTRA, RoBERTa/XLM-R, DistilBERT, ViT)")
    qk = []
    for layer in layers:
        names = dict(layer.named_modules())
        q, k = (next((m for name, m in names.items() if name.split(".")[-1] in want), None) for want in QUERY_KEY_NAMES)
        qk.append((q, k))
    emb = getattr(encoder, "embeddings_project", None) or encoder.embeddings
    return emb, list(layers), (None if any(q is None or k is None for q, k in qk) else qk)


def lecun_normal_(w: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flax's default Dense init (variance scaling 1/fan_in, truncated normal), drawn from a fixed generator."""
    std = math.sqrt(1.0 / w.shape[1]) / 0.87962566103423978
    return nn.init.trunc_normal_(w, std=std, a=-2 * std, b=2 * std, generator=gen)


class Model(nn.Module):
    """Teacher/student: encoder -> hidden states h_0..h_L, each mean-pooled over non-pad tokens ->
    z = gamma * sum_l softmax(c)_l m_l (scalar mix) -> text: dropout-dense-GELU-dropout-dense (ELECTRA's head);
    images: one dense layer (ViT's). The head is initialised from a fixed seed (0), as the original (HF's PRNG 0),
    so every run seed starts from the same head."""

    def __init__(self, encoder: nn.Module, num_outputs: int, image: bool):
        super().__init__()
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused
        self.encoder, self.image = encoder, image
        cfg = encoder.config
        self.num_layers, self.num_heads = cfg.num_hidden_layers, cfg.num_attention_heads
        self.mix_coeffs = nn.Parameter(torch.zeros(self.num_layers + 1))
        self.gamma = nn.Parameter(torch.ones(()))
        H = cfg.hidden_size
        self.type_ids = common.takes_token_type_ids(encoder)  # DistilBERT takes none
        gen = torch.Generator().manual_seed(0)
        if image:
            self.classifier = nn.Linear(H, num_outputs)
            with torch.no_grad():
                self.classifier.weight.copy_(torch.randn(self.classifier.weight.shape, generator=gen) * 0.02)
                self.classifier.bias.zero_()
        else:
            self.dropout = nn.Dropout(getattr(cfg, "hidden_dropout_prob", getattr(cfg, "dropout", 0.1)))
            self.dense, self.out_proj = nn.Linear(H, H), nn.Linear(H, num_outputs)
            for lin in (self.dense, self.out_proj):
                lecun_normal_(lin.weight, gen)
                nn.init.zeros_(lin.bias)
        emb, layers, qk = encoder_parts(encoder)
        self.has_query_key = qk is not None  # the attention explainer's inputs (check_attention_explainer)
        self._rec: dict = {}  # filled by the hooks during Model.forward only (calling .encoder alone records nothing)
        emb.register_forward_hook(self._embedding_hook)
        for layer in layers:
            layer.register_forward_hook(lambda m, i, o: self._record("states", o[0] if isinstance(o, tuple) else o))
        for q, k in qk or []:
            q.register_forward_hook(lambda m, i, o: self._record("q", o))
            k.register_forward_hook(lambda m, i, o: self._record("k", o))

    def _record(self, key: str, value: torch.Tensor) -> None:
        if self._rec:
            self._rec[key].append(value)

    def _embedding_hook(self, module, inputs, output):
        """Records hidden_states[0]; replaces it with `embeddings` when given (gradient explainers, IG points)."""
        if not self._rec:
            return None
        e = output if self._rec["override"] is None else self._rec["override"]
        self._rec["states"].append(e)
        return e

    def forward(self, inputs: dict, embeddings: torch.Tensor | None = None) -> dict:
        """inputs: {input_ids, attention_mask, token_type_ids} or {pixel_values}. Returns {logits (B, C),
        states [h_0..h_L], q, k (per layer, (B, T, heads * d)), mask (B, T) float}."""
        self._rec = {"override": embeddings, "states": [], "q": [], "k": []}
        self.encoder(**{k: v for k, v in inputs.items() if k != "token_type_ids" or self.type_ids})
        rec, self._rec = self._rec, {}
        states = rec["states"]
        if "attention_mask" in inputs:
            mask = inputs["attention_mask"].to(states[0].dtype)
        else:  # ViT: no padding, pool over all patches + CLS
            mask = torch.ones(states[0].shape[:2], dtype=states[0].dtype, device=states[0].device)
        m = mask.unsqueeze(-1)
        pooled = torch.stack([(h * m).sum(1) / m.sum(1) for h in states])  # (L+1, B, H): mean over non-pad tokens
        z = self.gamma * (torch.softmax(self.mix_coeffs, 0)[:, None, None] * pooled).sum(0)  # scalar mix
        if self.image:
            logits = self.classifier(z)
        else:
            logits = self.out_proj(self.dropout(F.gelu(self.dense(self.dropout(z)))))
        return {"logits": logits, "states": states, "q": rec["q"], "k": rec["k"], "mask": mask}


def build_model(model_name: str, task: str, device: str = "cpu", outputs: int | None = None) -> Model:
    """Built on the CPU (the head's fixed-seed init is the same everywhere), then moved to `device`. `outputs`:
    the number of classes of --task custom (the paper tasks' are in TASKS)."""
    return Model(common.load_encoder(model_name), outputs or TASKS[task]["outputs"],
                 image=task == "cifar100").to(device)


def check_attention_explainer(model: Model, model_name: str, needed_by: str, alternative: str) -> None:
    """A one-line UsageError, before training, when the encoder has no query/key projections whose product is its
    attention logit (encoder_parts), which `needed_by` needs; `alternative` names the flag that chooses another
    option."""
    if not model.has_query_key:
        raise common.UsageError(
            f"{needed_by} needs the query and key projections of every attention layer (modules named "
            f"{'/'.join(QUERY_KEY_NAMES[0])} and {'/'.join(QUERY_KEY_NAMES[1])}, whose q.k/sqrt(d) is the attention "
            f"logit), which {type(model.encoder).__name__} ({model_name}) does not have; {alternative}")


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: head-coefficient normalisers (Sec. 4, Table 7), written in torch, twice differentiable by autograd
# ------------------------------------------------------------------------------------------------------
def _sorted_desc(z: torch.Tensor, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z sorted in descending order along dim, and k = 1..n shaped to broadcast against it along dim."""
    shape = [1] * z.dim()
    shape[dim] = -1
    k = torch.arange(1, z.size(dim) + 1, dtype=z.dtype, device=z.device).view(shape)
    return torch.sort(z, dim=dim, descending=True)[0], k


def sparsemax(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """argmin_{p in simplex} ||p - z||^2 (Martins & Astudillo 2016): p = [z - tau]_+ with
    tau = (sum_{j<=k(z)} z_(j) - 1) / k(z), k(z) = max{k : 1 + k z_(k) > sum_{j<=k} z_(j)}. The sort finds the
    support S = {i : z_i > tau} without gradient; tau = (sum_{i in S} z_i - 1) / |S| is then recomputed from z_S,
    so autograd gives the Jacobian diag(s) - s s^T / |S| and its own derivative, also at a boundary z_i = tau
    (i counts as outside S: zero row and column, as in the `entmax` package). Shift-invariant: z - max(z) first,
    floored at -4 (z_i <= max - 1 is outside the support, tau >= max - 1: the floor changes no output or derivative,
    but z - max stays finite for extreme inputs such as 1e308 beside -1e308). A slice holding inf or NaN gives NaN
    (the run's finiteness checks then stop it), never an indexing error."""
    finite = torch.isfinite(z).all(dim, keepdim=True)
    z = (z - z.amax(dim, keepdim=True).detach()).clamp(min=-4)
    with torch.no_grad():
        zs, k = _sorted_desc(z, dim)
        cs = zs.cumsum(dim)
        k_z = (1 + k * zs > cs).sum(dim, keepdim=True).clamp(min=1)  # >= 1 for finite z (k = 1 always holds)
        s = z > (cs.gather(dim, k_z - 1) - 1) / k_z  # support: z_i > tau strictly
    tau = (torch.where(s, z, 0).sum(dim, keepdim=True) - 1) / s.sum(dim, keepdim=True)  # the same tau, from z_S
    return torch.where(finite, torch.where(s, z - tau, 0).clamp(min=0), torch.nan)  # clamp: a rounding-level < 0


def entmax15(z: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """1.5-entmax (Peters et al. 2019): p = [z/2 - tau]_+^2 with tau such that sum_i p_i = 1. The exact sort
    algorithm finds the support S = {i : z_i/2 > tau} without gradient; tau is then recomputed from z_S as the
    smaller root of sum_{i in S} (z_i/2 - tau)^2 = 1: tau = m - sqrt((1 - ss) / |S|), m and ss the mean and sum of
    squared deviations of z_S/2. Autograd then gives J = diag(g) - g g^T / sum(g), g = sqrt(p), and its own
    derivative, finite also at ties and at p_i = 0 ((1 - ss) / |S| = (m - tau)^2 >= 1/|S|^2 as 0 < p_i <= 1 on S).
    Shift-invariant: z - max(z) first, floored at -4 (z_i/2 <= max/2 - 1 is outside the support); extreme finite
    inputs and inf/NaN as sparsemax()."""
    finite = torch.isfinite(z).all(dim, keepdim=True)
    y = (z - z.amax(dim, keepdim=True).detach()).clamp(min=-4) / 2
    with torch.no_grad():
        ys, k = _sorted_desc(y, dim)
        mean = ys.cumsum(dim) / k
        ss = (ys ** 2).cumsum(dim) - k * mean ** 2
        tau = mean - torch.sqrt(torch.clamp((1 - ss) / k, min=0))
        size = (tau <= ys).sum(dim, keepdim=True).clamp(min=1)  # >= 1 for finite z (tau_1 = ys_1 - 1)
        s = y > tau.gather(dim, size - 1)  # support: z_i/2 > tau strictly
    n = s.sum(dim, keepdim=True)
    mean = torch.where(s, y, 0).sum(dim, keepdim=True) / n
    ss = torch.where(s, y - mean, 0).pow(2).sum(dim, keepdim=True)
    tau = mean - torch.sqrt((1 - ss) / n)  # the same tau, from z_S
    return torch.where(finite, torch.where(s, y - tau, 0) ** 2, torch.nan)


def normalize_heads(phi: torch.Tensor, kind: str) -> torch.Tensor:
    """lambda = NORMALIZE(phi) (Sec. 4): sparsemax in the paper; softmax, 1.5-entmax or none for Table 7."""
    return {"sparsemax": sparsemax, "softmax": lambda x: torch.softmax(x, -1), "entmax15": entmax15,
            "none": lambda x: x}[kind](phi)


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: explainers. Each returns logits z (B, T); the explanation is softmax(z + b), b = -1e10 on pads.
# ------------------------------------------------------------------------------------------------------
def pad_bias(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask > 0, torch.zeros_like(mask), torch.full_like(mask, NEG))


def saliency(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Explanation = softmax over tokens of z + b (pad tokens get probability 0)."""
    return torch.softmax(z + pad_bias(mask), -1)


def head_scores(out: dict, num_heads: int, last_layer_only: bool = False) -> torch.Tensor:
    """Eq. (11): s^h_t = (1/L) sum_i (q^h_i)^T k^h_t, the pre-softmax attention logits q.k/sqrt(d) (with the
    -1e10 pad-key bias) averaged over the non-pad query rows i, for every head of every layer (layer-major), or of
    the last layer. The mean over rows is linear, so it is taken on the queries first: O(T d) instead of O(T^2)
    per head (equal to averaging the full logit matrix: tests/test_smat.py). Returns (B, layers * heads, T)."""
    mask = out["mask"]
    w = mask / mask.sum(-1, keepdim=True)  # weights of the query rows: 1 / #non-pad, 0 on pads
    pairs = list(zip(out["q"], out["k"], strict=True))  # one (query, key) pair per layer
    pairs = pairs[-1:] if last_layer_only else pairs
    s = []
    for q, k in pairs:
        B, T, _ = q.shape
        qh, kh = q.view(B, T, num_heads, -1), k.view(B, T, num_heads, -1)
        q_bar = torch.einsum("bt,bthd->bhd", w, qh)
        # Eq. (11): s^h = (1/L) sum_i (q_i^h)^T K^h / sqrt(d)
        s.append(torch.einsum("bhd,bthd->bht", q_bar, kh) * qh.size(-1) ** -0.5)
    return torch.cat(s, 1) + pad_bias(mask)[:, None, :]


def full_attention_logits(out: dict, num_heads: int) -> torch.Tensor:
    """The full pre-softmax attention logits (B, layers, heads, T, T) = (q / sqrt(d)) . k + b_k (as the original's
    unnormalised attention; for checks, the training path uses head_scores())."""
    b = pad_bias(out["mask"])[:, None, None, :]
    A = []
    for q, k in zip(out["q"], out["k"], strict=True):
        B, T, _ = q.shape
        qh, kh = q.view(B, T, num_heads, -1).transpose(1, 2), k.view(B, T, num_heads, -1).transpose(1, 2)
        A.append((qh / qh.size(-1) ** 0.5) @ kh.transpose(-1, -2) + b)
    return torch.stack(A, 1)


def attention_explanation(s: torch.Tensor, phi: torch.Tensor, normalizer: str, mask: torch.Tensor):
    """Eq. (11): E_phi = softmax(sum_h lambda_h s^h + b), lambda = NORMALIZE(phi). Returns (explanation, z)."""
    # Eq. (11): E_phi(T, x) = softmax(sum_h lambda_h s^h), lambda = NORMALIZE(phi)
    z = torch.einsum("h,bht->bt", normalize_heads(phi, normalizer), s)
    return saliency(z, mask), z


def ig_path(n: int, variant: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrated-gradients path from the zero baseline: scales alpha_i of the embeddings and weights w_i.
    standard: alpha_i = i/(n-1), trapezoid weights (1/(n-1), halved at both ends; sum 1).
    original: the original code's weights d_i = 1/(n (2 - min(i mod (n-1), 1))) (sum 0.9) and points
    e * (i/(n-1)) * d_i (an extra factor d_i: every point lies within 9% of the baseline)."""
    i = torch.arange(n, dtype=torch.float64)
    if variant == "original":
        d = 1.0 / (n * (2 - torch.clamp(i % (n - 1), max=1)))
        return (i / (n - 1) * d).float(), d.float()
    w = torch.full((n,), 1.0 / (n - 1), dtype=torch.float64)
    w[0] = w[-1] = 0.5 / (n - 1)
    return (i / (n - 1)).float(), w.float()


def gradient_explanation_logits(model: Model, inputs: dict, kind: str, ig_variant: str = "standard",
                                ig_steps: int = 10, max_rows: int = 64) -> torch.Tensor:
    """App. A, on the teacher in eval mode. g = d/de sum_b f(e)_{b, y_b}: gradient of the predicted-class logit
    (the output for regression) w.r.t. e = hidden_states[0] (for ELECTRA after embeddings_project).
    gradient_l2: z_t = ||g_t||_2; gradient_x_input: z_t = g_t . e_t / 0.1; integrated_gradients:
    z_t = (sum_i w_i g(alpha_i e)) . e_t / 0.5, the n path points scored in batches of <= max_rows rows."""
    model.eval()
    with torch.enable_grad():
        out = model(inputs)
        e = out["states"][0]
        y = out["logits"].argmax(-1) if out["logits"].size(-1) > 1 else torch.zeros(len(e), dtype=torch.long,
                                                                                      device=e.device)

        def target(logits: torch.Tensor) -> torch.Tensor:  # sum of the y_b logits (rows: path points x batch)
            return logits.gather(1, y.repeat(len(logits) // len(y)).unsqueeze(1)).sum()

        if kind in ("gradient_l2", "gradient_x_input"):
            g = torch.autograd.grad(target(out["logits"]), e)[0]
            e = e.detach()
            return g.norm(dim=-1) if kind == "gradient_l2" else (g * e).sum(-1) / 0.1
        e = e.detach()
        alphas, weights = (t.to(e.device) for t in ig_path(ig_steps, ig_variant))
        G = torch.zeros_like(e)
        per = max(1, max_rows // len(e))  # path points per forward pass
        for s in range(0, ig_steps, per):
            a, w = alphas[s:s + per], weights[s:s + per]
            points = (a[:, None, None, None] * e).reshape(-1, *e.shape[1:]).requires_grad_(True)
            rep = {k: v.repeat(len(a), *[1] * (v.dim() - 1)) for k, v in inputs.items()}
            g = torch.autograd.grad(target(model(rep, embeddings=points)["logits"]), points)[0]
            G = G + (w[:, None, None, None] * g.view(len(a), *e.shape)).sum(0)
        return (G * e).sum(-1) / 0.5


# ------------------------------------------------------------------------------------------------------
# ALGO LOGIC: losses, the student step (Eqs. 3, 6-7), the pilot step and meta-gradient (Eqs. 8-9)
# ------------------------------------------------------------------------------------------------------
def simulation_loss(logits: torch.Tensor, teacher_out: torch.Tensor) -> torch.Tensor:
    """L_sim: cross-entropy against the teacher's argmax (classification), or squared error against the
    teacher's output (regression: mean_b sum (out - t)^2, the original's mse_loss)."""
    if teacher_out.dim() == 1:
        return F.cross_entropy(logits, teacher_out)
    return ((logits - teacher_out) ** 2).sum(-1).mean()


def explanation_loss(t: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_expl = KL(teacher || student) over tokens: sum over non-pad tokens of t (log t - log s), both clipped
    to [1e-7, 1 - 1e-7], terms with t = 0 dropped; averaged over the batch (the original's softmax_loss)."""
    lt, ls = t.clamp(1e-7, 1 - 1e-7).log(), s.clamp(1e-7, 1 - 1e-7).log()
    kl = torch.where(t > 0, t * (lt - ls), torch.zeros_like(t)) * mask
    return kl.sum(-1).mean()


def student_objective(model: Model, params: dict, phi_S: torch.Tensor, batch: dict, y_T: torch.Tensor,
                      e_T: torch.Tensor | None, beta: float, last_layer_only: bool, normalizer: str):
    """Eq. (3) on one batch with the student's parameters `params` (functional_call, so the same code runs the
    real step and the differentiated pilot step). Returns (L_student, L_sim, L_expl)."""
    out = functional_call(model, params, (batch["inputs"],))
    L_sim = simulation_loss(out["logits"], y_T)
    if beta == 0 or e_T is None:
        return L_sim, L_sim, torch.zeros((), device=L_sim.device)
    s_S = head_scores(out, model.num_heads, last_layer_only)
    e_S, _ = attention_explanation(s_S, phi_S, normalizer, out["mask"])  # the S-explainer (Sec. 5)
    L_expl = explanation_loss(e_T, e_S, out["mask"])
    # Eq. (3): L_student = L_sim(S(x), T(x)) + beta * L_expl(E_S(S, x), E_T(T, x))
    return L_sim + beta * L_expl, L_sim, L_expl


def clip_by_global_norm(grads: list, max_norm: float) -> list:
    """optax.clip_by_global_norm: g * max_norm / ||g|| if ||g|| >= max_norm (norm over all tensors jointly)."""
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
    scale = torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm)
    return [g * scale for g in grads]


def sgd_update(params: list, grads: list, lr: float = STUDENT_LR, wd: float = WEIGHT_DECAY,
               max_norm: float = STUDENT_CLIP) -> list:
    """The student optimiser (Eqs. 6-8): p - lr * (clip(g) + wd * p), the clip over (theta, phi_S) jointly.
    Pure: used under no_grad for the real step and inside the graph for the pilot step."""
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads, strict=True)]
    return [p - lr * (g + wd * p) for p, g in zip(params, clip_by_global_norm(grads, max_norm), strict=True)]


def student_step(model: Model, phi_S: nn.Parameter, batch: dict, y_T, e_T, args: Args, last_layer_only: bool):
    """Eqs. (6)-(7): one real SGD step of (theta, phi_S) on L_student. Returns the three losses (floats)."""
    params = dict(model.named_parameters())
    L, L_sim, L_expl = student_objective(model, params, phi_S, batch, y_T, e_T, args.beta, last_layer_only,
                                         args.head_normalizer)
    tensors = list(params.values()) + [phi_S]
    grads = torch.autograd.grad(L, tensors, allow_unused=True)
    with torch.no_grad():
        # Eqs. (6)-(7): (theta, phi_S) <- (theta, phi_S) - eta_in grad L_student (clipped, + weight decay)
        for p, new in zip(tensors, sgd_update(tensors, grads, lr=args.lr), strict=True):
            p.copy_(new)
    return L.item(), L_sim.item(), L_expl.item()


def meta_gradient(model: Model, phi_S: torch.Tensor, phi_T: torch.Tensor, batch: dict, y_T, s_T: torch.Tensor,
                  valid_batch: dict, valid_y_T, args: Args, last_layer_only: bool = False):
    """Eqs. (8)-(9): from the already-updated student theta_{t+1}, a pilot SGD step on the same batch with
    L_student(phi_T) (dropout on; clip and weight decay inside the graph), then the outer loss
    L_sim(pilot student, valid batch) (no dropout, no explanation term) and its gradient w.r.t. phi_T, through
    the pilot step (second order: functional_call + autograd.grad(create_graph=True)). Returns (grad, outer)."""
    params = dict(model.named_parameters())
    e_T, _ = attention_explanation(s_T, phi_T, args.head_normalizer, batch["inputs_mask"])
    L, _, _ = student_objective(model, params, phi_S, batch, y_T, e_T, args.beta, last_layer_only,
                                args.head_normalizer)
    tensors = list(params.values()) + [phi_S]
    grads = torch.autograd.grad(L, tensors, create_graph=True, allow_unused=True)
    # Eq. (8): theta(phi_T) = theta_{t+1} - eta_in grad_theta L_student(theta_{t+1}, phi_S^{t+1}, phi_T)
    pilot = dict(zip(params, sgd_update(tensors, grads, lr=args.lr)[:-1], strict=True))  # [:-1]: phi_S
    was_training = model.training
    model.eval()
    outer = simulation_loss(functional_call(model, pilot, (valid_batch["inputs"],))["logits"], valid_y_T)
    model.train(was_training)
    # Eq. (9): the gradient of L_sim(S_theta(phi_T)(x_valid), T(x_valid)) w.r.t. phi_T
    return torch.autograd.grad(outer, phi_T)[0], outer.item()


class OptaxAdam:
    """The original's Adam (optax chain): clip_by_global_norm(max_norm) -> scale_by_adam(b1, b2, eps,
    eps_root=1e-8: m_hat / (sqrt(v_hat + eps_root) + eps)) -> + wd * p -> * -lr_t, with lr_t linear from 1e-6 to
    lr over `warmup` steps, then constant. Teacher: wd 0.01; SMaT outer optimiser: wd 0, clip 5."""

    def __init__(self, params: list, lr: float, wd: float = 0.0, max_norm: float = 5.0, warmup: int = 0,
                 b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 1e-8):
        self.params, self.lr, self.wd, self.max_norm, self.warmup = list(params), lr, wd, max_norm, warmup
        self.b1, self.b2, self.eps, self.eps_root, self.count = b1, b2, eps, eps_root, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def lr_at(self, step: int) -> float:
        return self.lr if step >= self.warmup else 1e-6 + (self.lr - 1e-6) * step / self.warmup

    @torch.no_grad()
    def step(self, grads: list) -> None:
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads, strict=True)]
        grads = clip_by_global_norm(grads, self.max_norm)
        lr = self.lr_at(self.count)
        self.count += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v, strict=True):
            m.mul_(self.b1).add_((1 - self.b1) * g)
            v.mul_(self.b2).add_((1 - self.b2) * g * g)
            m_hat, v_hat = m / (1 - self.b1 ** self.count), v / (1 - self.b2 ** self.count)
            p.sub_(lr * (m_hat / (torch.sqrt(v_hat + self.eps_root) + self.eps) + self.wd * p))


# ------------------------------------------------------------------------------------------------------
# Data: the readers only SMaT uses (MLQE-PE, CIFAR-100 images), the original splits, encoding, batching
# ------------------------------------------------------------------------------------------------------
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing every large block back to the OS
    (the same as starting Python with MALLOC_MMAP_MAX_=0 and trimming off). Large autograd graphs, such as a
    second-order meta step, otherwise page-fault all their activations in afresh on every step. Process-wide,
    numerically neutral; the resident memory stays at its peak. Returns False (and does nothing) without glibc."""
    try:  # find_library may return None: CDLL(None) is then the process's own symbols, libc's among them
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
    except (OSError, AttributeError):
        return False
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # <malloc.h>; a trim threshold of -1 disables trimming
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))


MLQE_PAIRS = ("en-de", "en-zh", "et-en", "ne-en", "ro-en", "ru-en")  # si-en is left out, as in the SMaT paper


def read_mlqe_pe(data_dir: Path, split: str, pairs: Sequence[str] = MLQE_PAIRS) -> list[dict]:
    """MLQE-PE sentence-level direct assessments, read from the published tar.gz archives in place (nothing
    is extracted). split: train | dev | test (= test20). Returns [{id, pair, original, translation, z_mean}]
    in archive order, pairs in the given order. TSV columns: index, original, translation, scores, mean,
    z_scores, z_mean, model_scores (read without quoting, as the original's pandas `quoting=3`: a row is a line,
    fields are split on tabs; lines split on \\n only, common.decode_lines). A bad byte or row is
    `archive:member:line`."""
    import tarfile
    if split not in ("train", "dev", "test"):
        raise common.UsageError(f"unknown MLQE-PE split {split!r} (train, dev or test)")
    d = common.dataset_dir(data_dir, "mlqe_pe") / "data" / "direct-assessments" / split
    out = []
    for pair in pairs:
        path = d / f"{pair}-{split}.tar.gz"
        if not path.is_file():
            raise common.DataError(f"archive missing (expected {common.DATA_LAYOUTS['mlqe_pe'][0]})", path)
        try:
            with tarfile.open(path, "r:gz") as tar:
                members = [m for m in tar.getmembers() if m.name.endswith(".df.short.tsv")]
                if len(members) != 1:
                    raise common.DataError(f"expected one *.df.short.tsv in the archive, found {len(members)}", path)
                f = tar.extractfile(members[0])
                if f is None:
                    raise common.DataError(f"{members[0].name} in the archive is not a file", path)
                raw = f.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise common.DataError(f"cannot read the archive ({type(e).__name__})", path) from None
        where = f"{path}:{members[0].name}"
        rows = [line.split("\t") for line in common.decode_lines(raw, where)]
        if not rows or not {"original", "translation", "z_mean"} <= set(rows[0]):
            raise common.DataError("the TSV needs a header with original, translation and z_mean", where, 1)
        col = {name: i for i, name in enumerate(rows[0])}
        for line, r in enumerate(rows[1:], 2):
            if len(r) != len(rows[0]):
                raise common.DataError(f"{len(r)} columns, header has {len(rows[0])}", where, line)
            try:
                z = float(r[col["z_mean"]])
            except ValueError:
                z = math.nan
            if not math.isfinite(z):
                raise common.DataError(f"z_mean is not a finite number: {r[col['z_mean']]!r}", where, line)
            out.append({"id": f"{pair}-{split}-{line - 2}", "pair": pair, "original": r[col["original"]],
                        "translation": r[col["translation"]], "z_mean": z})
    if not out:
        raise common.DataError("no examples", d)
    return out


def load_image_dataset(data_dir: Path, name: str, hub_name: str):
    """An image DatasetDict: a local copy at <data_dir>/<name>/ (written by `DatasetDict.save_to_disk`) if there
    is one, else the Hugging Face hub dataset `hub_name` from the local `datasets` cache (never downloaded). Fails
    with one line saying how to get the data."""
    import datasets
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    local = Path(data_dir) / name
    if local.is_dir():
        try:
            return datasets.load_from_disk(str(local))
        except Exception as e:
            raise common.DataError(f"not a `datasets` save_to_disk folder ({type(e).__name__})", local) from None
    offline = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True  # this repository never downloads: the local datasets cache only
    try:
        return datasets.load_dataset(hub_name)
    except Exception as e:
        raise common.UsageError(f"cannot load {name}: no local copy at {local} and the hub dataset '{hub_name}' is not "
                         f"reachable offline ({type(e).__name__}); on a connected machine run python -c \"import "
                         f"datasets; datasets.load_dataset('{hub_name}').save_to_disk('{local}')\" and copy the "
                         f"folder here") from None
    finally:
        datasets.config.HF_HUB_OFFLINE = offline


def image_to_tensor(image, size: int, mean: float = 0.5, std: float = 0.5) -> torch.Tensor:
    """PIL image (or HxWxC uint8 array) -> (3, size, size) float tensor: RGB, bilinear resize, /255, then
    (x - mean) / std (ViTFeatureExtractor's preprocessing for google/vit-*-in21k: mean = std = 0.5)."""
    from PIL import Image
    if not isinstance(image, Image.Image):
        image = Image.fromarray(np.asarray(image, dtype=np.uint8))
    image = image.convert("RGB").resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - mean) / std



# ------------------------------------------------------------------------------------------------------
def imdb_splits(train: list, test: list, setup: str, seed: int = 0, teacher_valid_size: int = 12500,
                student_valid_size: int = 1250, student_test_size: int = 2500) -> dict:
    """The original's IMDB split (smat/data/imdb.py): each split list is shuffled by a fresh
    numpy RandomState(0) (independent of --seed). Teacher: train = all train reviews, valid = the first 12,500
    of the shuffled test reviews. Student: pool = test[12500:-3750] (8,750), valid = test[-3750:-2500] (1,250),
    test = test[-2500:] (2,500)."""
    def shuffled(rows):
        rows = list(rows)
        np.random.RandomState(seed).shuffle(rows)
        return rows
    te = shuffled(test)
    if setup == "teacher":
        return {"train": shuffled(train), "valid": te[:teacher_valid_size]}
    dev = student_valid_size + student_test_size
    return {"train": te[teacher_valid_size:-dev], "valid": te[-dev:-student_test_size], "test": te[-student_test_size:]}


def load_splits(args: Args, data_dir: Path, setup: str, dataset: dict | None = None) -> dict:
    """Raw examples per split ({text, label} / {image, label}; custom: `dataset`'s examples, read_custom_data) for
    the teacher (train, valid, plus the student test split to report the teacher's accuracy) or the student (train =
    the first N of the pool, valid, test). Custom, as MLQE-PE and CIFAR-100: teacher and student share the splits
    (pool = train shuffled with RandomState(0), valid = dev, test = test, both in file order). Asking for more
    training examples than there are (--teacher-train-size, --num-examples) is an error unless --allow-smaller:
    then the run trains on all of them and records it (shortfall())."""
    if args.task == "custom":
        train = list(dataset["train"])
        np.random.RandomState(0).shuffle(train)  # the first N of the pool, the same for every seed
        sp = {"train": train, "valid": list(dataset["dev"]), "test": list(dataset["test"])}
    elif args.task == "imdb":
        train, test = common.read_imdb(data_dir, "train"), common.read_imdb(data_dir, "test")
        sizes = dict(zip(("teacher_valid_size", "student_valid_size", "student_test_size"),
                         (int(x) for x in args.imdb_split_sizes.split(",")), strict=True))
        if sum(sizes.values()) >= len(test):
            raise common.DataError(f"{len(test)} test reviews cannot hold the split sizes {args.imdb_split_sizes} "
                                   "and a student pool (see --imdb-split-sizes)", data_dir / "imdb")
        sp = imdb_splits(train, test, "teacher" if setup == "teacher" else "student", **sizes)
        if setup == "teacher":
            sp["test"] = imdb_splits(train, test, "student", **sizes)["test"]
    elif args.task == "mlqe":
        def shuffled(rows):  # the original shuffles each split with RandomState(0)
            np.random.RandomState(0).shuffle(rows)
            return [{"id": r["id"], "source": r["original"], "mt": r["translation"], "label": r["z_mean"]}
                    for r in rows]
        sp = {s: shuffled(read_mlqe_pe(data_dir, f)) for s, f in (("train", "train"), ("valid", "dev"),
                                                                         ("test", "test"))}
    else:
        ds = load_image_dataset(data_dir, "cifar100", CIFAR_HUB)
        order = np.arange(len(ds["train"]))
        np.random.RandomState(0).shuffle(order)
        n_valid = len(order) // 10  # 45,000 / 5,000 as the original

        def rows(d, idx) -> list[dict]:
            return [{"image": d[int(i)]["img"], "label": int(d[int(i)]["fine_label"])} for i in idx]

        sp = {"train": rows(ds["train"], order[:-n_valid]), "valid": rows(ds["train"], order[-n_valid:]),
              "test": rows(ds["test"], range(len(ds["test"])))}
        if not sp["valid"]:
            raise common.DataError("cifar100 needs at least 10 training images (the last 10% are validation)")
    flag, asked, pool = (("--teacher-train-size", args.teacher_train_size, "the teacher's training split")
                         if setup == "teacher" else ("--num-examples", args.num_examples, "the student pool"))
    if asked is not None and asked > len(sp["train"]) and not args.allow_smaller:
        raise common.UsageError(f"{flag} {asked} is larger than {pool} of {len(sp['train'])} examples; pass "
                                "--allow-smaller to train on all of them (recorded in results.json as shortfall)")
    sp["train"] = sp["train"][:asked]  # None: all; the student's first N are the same for every seed, as the original
    if args.max_valid_examples is not None:
        sp["valid"] = sp["valid"][:args.max_valid_examples]
    if args.max_test_examples is not None and "test" in sp:
        sp["test"] = sp["test"][:args.max_test_examples]
    return sp


def shortfall(asked: int | None, used: int) -> dict:
    """results.json's `shortfall`: {"train": {asked, available}} when --allow-smaller let a run train on fewer
    examples than asked, else {}."""
    return {"train": {"asked": asked, "available": used}} if asked is not None and asked > used else {}


def encode(rows: list, tokenizer, max_len: int) -> list[dict]:
    """Texts -> input ids (truncated to max_len; MLQE: "source <sep> translation", the tokenizer's separator)."""
    if tokenizer is None:
        return [{"index": i, "id": str(r.get("id", i)), "image": r["image"], "label": r["label"]}
                for i, r in enumerate(rows)]
    texts = [r["text"] if "text" in r else f"{r['source']} {tokenizer.sep_token} {r['mt']}" for r in rows]
    enc = tokenizer(texts, truncation=True, max_length=max_len)
    return [{"index": i, "id": str(r.get("id", i)), "input_ids": ids, "label": r["label"],
             "token_type_ids": enc["token_type_ids"][i] if "token_type_ids" in enc else [0] * len(ids)}
            for i, (ids, r) in enumerate(zip(enc["input_ids"], rows, strict=True))]


def encode_custom(rows: list, tokenizer, max_len: int, labels: Sequence[str]) -> tuple[list[dict], dict]:
    """Your data's examples (read_custom_data) -> wordpieces as the model was pre-trained ("[CLS] text [SEP]", a pair
    "[CLS] text [SEP] pair [SEP]"), through the fast tokenizer's offsets (common.encode_rationale_split: the rationale
    per wordpiece, `word_of_piece`, label ids in the order of `labels`), plus `words` (the whitespace words; a pair:
    both texts' words) for the explanations. Returns (the examples, in encode()'s layout plus those keys; the
    alignment counts for results.json)."""
    enc, counts = common.encode_rationale_split(tokenizer, rows, labels, max_len)
    for x, r in zip(enc, rows, strict=True):
        x["words"] = (r["words"], r["pair_words"]) if r["pair_words"] is not None else r["words"]
    return enc, counts


def encode_splits(sp: dict, tokenizer, max_len: int, labels: Sequence[str] | None) -> tuple[dict, dict | None]:
    """Every split of load_splits() encoded: encode() for the paper tasks (alignment None), encode_custom() for your
    data (`labels`: its label names; alignment: the counts per split)."""
    if labels is None:
        return {s: encode(rows, tokenizer, max_len) for s, rows in sp.items()}, None
    enc = {s: encode_custom(rows, tokenizer, max_len, labels) for s, rows in sp.items()}
    return {s: e for s, (e, _) in enc.items()}, {s: c for s, (_, c) in enc.items()}


def with_words(examples: list[dict], rows: list[dict], tokenizer, max_len: int) -> list[dict]:
    """Copies of encode()'s examples of one text each (IMDB) with what the explanations need: `words` (the text's
    whitespace words) and `word_of_piece` (per wordpiece, the word its character offset starts in; -1 at special
    tokens), from the same tokenisation of the same text, so the explained input ids are those the model was
    evaluated on."""
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_len, return_offsets_mapping=True)
    out = []
    for i, (x, r) in enumerate(zip(examples, rows, strict=True)):
        if enc["input_ids"][i] != x["input_ids"]:
            raise AssertionError(f"example {x['id']}: the tokenisation with offsets differs from encode()'s")
        words, (_, ends) = r["text"].split(), common.word_bounds(r["text"])
        word_of_piece = []
        for (start, _), seq in zip(enc["offset_mapping"][i], enc.sequence_ids(i), strict=True):
            w = int(np.searchsorted(ends, start, side="right"))  # the first word ending after the offset
            word_of_piece.append(w if seq is not None and w < len(words) else -1)
        out.append({**x, "words": words, "word_of_piece": word_of_piece})
    return out


def model_batch(batch: dict) -> dict:
    """A common.collate batch as the SMaT model takes it: {inputs: the encoder's kwargs, inputs_mask (B, T) float,
    index (B,), label (B,)}."""
    return {"inputs": {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")},
            "inputs_mask": batch["attention_mask"].float(), "index": batch["index"], "label": batch["label"]}


def collate_model_batch(examples: list[dict], pad_id: int, image_size: int | None = None) -> dict:
    """One batch in model_batch's layout, of text or images: text through common.collate (padding to the longest)
    and model_batch, images resized and normalised here (inputs_mask None: no padding)."""
    if "image" not in examples[0]:
        return model_batch(common.collate(examples, pad_id))
    px = torch.stack([image_to_tensor(e["image"], image_size) for e in examples])
    return {"inputs": {"pixel_values": px}, "inputs_mask": None, "index": torch.tensor([e["index"] for e in examples]),
            "label": torch.tensor([e["label"] for e in examples])}


def iterate_batches(examples: list, batch_size: int, pad_id: int, image_size: int | None = None,
                    shuffle_seed: int | None = None, device: str | None = None):
    """Training: in the original's order (numpy RandomState(shuffle_seed)); evaluation (shuffle_seed None): sorted
    by length (dynamic padding). Text goes through common.batches, the batching path of every method."""
    order = list(range(len(examples)))
    if shuffle_seed is not None:
        np.random.RandomState(shuffle_seed).shuffle(order)
    if "image" not in examples[0]:
        yield from (model_batch(b) for b in common.batches(examples, batch_size, pad_id, order=order, device=device,
                                                           sort_by_length=shuffle_seed is None))
        return
    for s in range(0, len(order), batch_size):
        chunk = [examples[i] for i in order[s:s + batch_size]]
        yield common.to_device(collate_model_batch(chunk, pad_id, image_size), device)


# ------------------------------------------------------------------------------------------------------
# Evaluation: teacher outputs, simulability (Eq. 1)
# ------------------------------------------------------------------------------------------------------
def predict_logits(model: Model, examples: list, bs: int, pad_id: int, image_size) -> torch.Tensor:
    """The model's outputs (n, C) in example order, without gradients."""
    model.eval()
    res = {}
    device = next(model.parameters()).device
    with torch.inference_mode():
        for batch in iterate_batches(examples, bs, pad_id, image_size, device=device):
            for i, v in zip(batch["index"].tolist(), model(batch["inputs"])["logits"], strict=True):
                res[i] = v
        out = torch.stack([res[i] for i in range(len(examples))])
    return out.clone()  # a normal tensor (usable as a target in autograd)


def predict(model: Model, examples: list, bs: int, pad_id: int, image_size) -> torch.Tensor:
    """Outputs per example (in example order): argmax class (n,) or the regression output (n, 1)."""
    logits = predict_logits(model, examples, bs, pad_id, image_size)
    return logits.argmax(-1) if logits.size(-1) > 1 else logits


def prediction_rows(logits: torch.Tensor, target: torch.Tensor) -> list[dict]:
    """predictions.jsonl rows (without ids): gold = the target (the teacher's output for a student, the label for
    the teacher), pred = the model's output, p_gold = the model's probability of the target class (None for
    regression)."""
    if logits.size(-1) == 1:
        return [{"gold": float(t), "pred": float(o), "p_gold": None}
                for t, o in zip(target.flatten(), logits[:, 0], strict=True)]
    p = torch.softmax(logits.double(), -1)
    return [{"gold": int(t), "pred": int(p[i].argmax()), "p_gold": float(p[i, int(t)])} for i, t in enumerate(target)]


def simulability(student_out: torch.Tensor, teacher_out: torch.Tensor) -> float:
    """Eq. (1): share of student predictions equal to the teacher's; Pearson r of the outputs for regression."""
    if teacher_out.dim() == 1:
        # Eq. (1): SIM(S, T) = E_{x in D_test} 1{S(x) = T(x)}
        return float((student_out == teacher_out).float().mean())
    a, b = student_out.flatten().double(), teacher_out.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def task_metric(out: torch.Tensor, gold: list) -> float:
    """The teacher against the gold labels: accuracy, or Pearson r with z_mean (MLQE)."""
    g = torch.tensor(gold, device=out.device)
    return simulability(out, g.view(-1, 1).float() if out.dim() == 2 else g)


# ------------------------------------------------------------------------------------------------------
# Explanations of the trained model: explanations.jsonl and results.json's plausibility (common.explain_examples)
# ------------------------------------------------------------------------------------------------------
EXPLAIN_SKIPPED = {  # tasks without explanations.jsonl, and why (results.json: plausibility null, this note)
    "mlqe": "MLQE-PE is a regression task (the explanations explain log p(predicted class)) without human rationales",
    "cifar100": "CIFAR-100 has images, not words (the explanations are per word)",
}


class ExplainedModel(nn.Module):
    """SMaT's Model behind the interface common.explain_examples uses (common.TaskModel's): embed(input_ids) -> the
    word embeddings, forward(batch, inputs_embeds=None) -> class logits (B, C), predict(), gold_log_likelihood() (the
    log-softmax of the batch's `label`), task. Batches are common.collate's (input_ids, attention_mask,
    token_type_ids, label). Its train/eval mode is the wrapped model's."""
    task = "cls"

    def __init__(self, model: Model):
        super().__init__()
        self.model = model
        self.train(model.training)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model.encoder.get_input_embeddings()(input_ids)

    def forward(self, batch: dict, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = {"input_ids": batch["input_ids"]} if inputs_embeds is None else {"inputs_embeds": inputs_embeds}
        return self.model({**x, "attention_mask": batch["attention_mask"],
                           "token_type_ids": batch["token_type_ids"]})["logits"]

    def predict(self, scores: torch.Tensor, batch: dict) -> list:
        return scores.argmax(-1).tolist()

    def gold_log_likelihood(self, scores: torch.Tensor, batch: dict) -> torch.Tensor:
        return torch.log_softmax(scores, -1).gather(1, batch["label"].unsqueeze(1)).squeeze(1)


def text_inputs(batch: dict) -> dict:
    """The encoder's inputs of a common.collate batch."""
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}


def attention_explainer(model: Model, phi: torch.Tensor, normalizer: str, last_layer_only: bool):
    """`model`'s attention explainer (Eq. 11) for explanations.jsonl: per wordpiece the probability
    softmax(sum_h lambda_h s^h), lambda = NORMALIZE(phi), 0 at padding; a word's score is the sum of its wordpieces'
    (App. A, common.word_scores)."""
    def explain(batch: dict, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = model(text_inputs(batch))
            s = head_scores(out, model.num_heads, last_layer_only)
            return attention_explanation(s, phi.to(s.device), normalizer, out["mask"])[0]
    return explain


def teacher_explainer(teacher: Model, kind: str, phi_T: torch.Tensor, args: Args):
    """The teacher's explanation a student was taught with (`--explainer kind`; attention: with the run's phi_T,
    SMaT's learned one for --setup smat), computed as teacher_signals() computes it, for explanations.jsonl."""
    def explain(batch: dict, target: torch.Tensor) -> torch.Tensor:
        mask = batch["attention_mask"].float()
        if kind in GRADIENT_EXPLAINERS:
            z = gradient_explanation_logits(teacher, text_inputs(batch), kind, args.ig_variant, args.ig_steps,
                                            args.eval_batch_size)
            return saliency(z.detach(), mask)
        with torch.no_grad():
            s = head_scores(teacher(text_inputs(batch)), teacher.num_heads, kind == "attention_last")
            return attention_explanation(s, phi_T.to(s.device), args.head_normalizer, mask)[0]
    return explain


def explains(args: Args) -> bool:
    """Whether the run writes explanations.jsonl (not with --explain-examples 0, nor for MLQE-PE and CIFAR-100)."""
    return bool(args.explain_examples) and args.task not in EXPLAIN_SKIPPED


def explained_examples(args: Args, examples: list, rows: list, tokenizer) -> list | None:
    """The first --explain-examples test examples with `words` and `word_of_piece` (custom: encode_custom gave
    them; IMDB: with_words), or None when the run explains nothing (explains())."""
    if not explains(args):
        return None
    n = args.explain_examples
    return examples[:n] if args.task == "custom" else with_words(examples[:n], rows[:n], tokenizer, args.max_len)


def check_explainers(model: Model, model_name: str, args: Args) -> None:
    """Before training: what the run's explainers need of the encoder, each a one-line error naming the flag that
    chooses another option. A student with an explanation loss learns an attention explainer (Sec. 5), whatever the
    teacher's; the explanations' own explainers are attention explainers; so is plausibility's attention_*."""
    if args.setup in ("student", "smat") and args.beta > 0:
        check_attention_explainer(model, model_name, "the student's explainer (an attention explainer, Sec. 5)",
                                  "train a student without explanations instead (--setup student --explainer none)")
    if args.setup == "plausibility" and (args.explainer == "all" or args.explainer.startswith("attention")):
        check_attention_explainer(model, model_name, f"--explainer {args.explainer}", "choose --explainer "
                                  "gradient_l2, gradient_x_input or integrated_gradients")
    if args.setup != "plausibility" and args.explain_own and explains(args):
        check_attention_explainer(model, model_name, "the explanations' attention explainer", "pass "
                                  "--no-explain-own (integrated gradients alone) or --explain-examples 0")


def explain_run(run: Path, model: Model, examples: list | None, explainers: dict, args: Args, pad: int,
                label_names: Sequence[str] | None) -> dict:
    """explanations.jsonl of the run's first --explain-examples test examples (integrated gradients and
    `explainers`, the first the own one; common.explain_examples) and what results.json gains: `plausibility`
    (null, with `explanations_skipped`, for MLQE-PE and CIFAR-100; no key with --explain-examples 0)."""
    if not args.explain_examples:
        return {}
    if examples is None:
        return {"plausibility": None, "explanations_skipped": EXPLAIN_SKIPPED[args.task]}
    rows, plausibility = common.explain_examples(
        ExplainedModel(model), examples, None, explainers if args.explain_own else {}, args.explain_examples,
        pad_id=pad, label_names=label_names, has_rationale=args.task == "custom", device=args.device)
    common.write_explanations(run / "explanations.jsonl", rows)
    return {"plausibility": plausibility}


# ------------------------------------------------------------------------------------------------------
# Teacher: training and loading
# ------------------------------------------------------------------------------------------------------
def teacher_dir(args: Args) -> Path:
    return Path(args.teacher_dir) if args.teacher_dir else Path(args.out_dir) / SCRIPT / f"{args.task}-teacher"


def load_processor(args: Args, model_name: str):
    """(tokenizer or None, pad id, image size). A text model's tokenizer must be a fast one (word alignment) with a
    padding token (batches, and the [PAD] baseline of the explanations' integrated gradients): else one line."""
    if args.task == "cifar100":
        from transformers import AutoConfig
        return None, 0, AutoConfig.from_pretrained(common.resolve_model_path(model_name)).image_size
    tok = common.load_tokenizer(model_name)
    if tok.pad_token_id is None:
        raise common.UsageError(f"the tokenizer of {model_name} has no padding token, which batching needs: set one "
                                "(tokenizer.pad_token = ...) and save it into the model folder, or choose another "
                                "--model")
    return tok, tok.pad_token_id, None


def train_teacher(args: Args, data_dir: Path, dataset: dict | None = None) -> dict:
    """AdamW (optax: eps_root, wd 0.01 on all parameters), lr warm-up from 1e-6 then constant, clip, batch 16,
    early stopping on the valid metric; the best epoch is saved to teacher.pt + teacher.json. `dataset`: --task
    custom's (read_custom_data)."""
    timer = common.Timer()
    common.set_seed(args.seed)
    model_name = args.model or (VIT_MODEL if args.task == "cifar100" else common.DEFAULT_MODEL)
    sp = load_splits(args, data_dir, "teacher", dataset)
    tok, pad, img = load_processor(args, model_name)
    labels = dataset["labels"] if dataset is not None else None
    data, alignment = encode_splits(sp, tok, args.max_len, labels)
    explained = explained_examples(args, data["test"], sp["test"], tok)
    model = build_model(model_name, args.task, args.device, len(labels) if labels else None)
    check_explainers(model, model_name, args)
    about = {"model": model_name, "task": args.task, "max_len": args.max_len,
             **({"labels": labels, "data": str(args.data)} if labels else {})}
    out = common.claim_dir(teacher_dir(args))
    common.write_json_atomic(out / "config.json", dataclasses.asdict(args))
    log = common.JsonlLog(out / "log.jsonl")
    params = [p for p in model.parameters()]
    opt = OptaxAdam(params, args.lr, wd=WEIGHT_DECAY, max_norm=TASKS[args.task]["teacher_clip"],
                    warmup=args.warmup_steps)
    stopper = common.EarlyStopping(args.patience + 1)  # the original stops after patience+1 bad epochs

    def gold(split: str) -> list:
        return [e["label"] for e in data[split]]

    step, epochs_run = 0, 0
    print(f"teacher: {len(data['train'])} train / {len(data['valid'])} valid examples, {model_name}")
    for epoch in itertools.count():
        if args.max_epochs is not None and epoch >= args.max_epochs:
            break
        model.train()
        for batch in common.progress(iterate_batches(data["train"], args.batch_size, pad, img, args.seed * 1000 + epoch,
                                                     args.device), desc=f"epoch {epoch}"):
            logits = model(batch["inputs"])["logits"]
            target = batch["label"] if logits.size(-1) > 1 else batch["label"].float().view(-1, 1)
            loss = simulation_loss(logits, target)
            common.check_finite(loss.item(), f"teacher epoch {epoch}, step {step}")
            opt.step(torch.autograd.grad(loss, params, allow_unused=True))
            log(epoch=epoch, step=step, loss=loss.item(), lr=opt.lr_at(step))
            step += 1
        valid = task_metric(predict(model, data["valid"], args.eval_batch_size, pad, img), gold("valid"))
        if stopper.step(valid, epoch, model):
            save_teacher(out, model, {**about, "epoch": epoch, "valid": valid})
        epochs_run += 1
        log(epoch=epoch, valid=valid, best=stopper.best)
        print(f"epoch {epoch:3d}  valid {valid:.4f}  best {stopper.best:.4f}")
        if stopper.stop:
            break
    if not (out / "teacher.json").is_file():
        raise common.UsageError(f"the teacher never reached a finite validation score; nothing saved in {out}")
    stopper.restore(model)
    logits = predict_logits(model, data["test"], args.eval_batch_size, pad, img)
    test = task_metric(logits.argmax(-1) if logits.size(-1) > 1 else logits, gold("test"))
    common.write_predictions(out / "predictions.jsonl", data["test"],
                             prediction_rows(logits, torch.tensor(gold("test"), device=logits.device)))
    results = {"task": args.task, "valid": stopper.best, "best_epoch": stopper.best_epoch, "epochs_run": epochs_run,
               "steps": step, "student_test_metric": test, "n_train": len(data["train"]),
               "shortfall": shortfall(args.teacher_train_size, len(data["train"])),
               **({"alignment": alignment} if alignment is not None else {})}
    # explanations of the first test examples: integrated gradients and the teacher's static attention explainer
    # (uniform head coefficients over every layer: the attention_all of Tables 1-2), against the human rationale
    n_heads = model.num_layers * model.num_heads
    results.update(explain_run(out, model, explained, {"attention": attention_explainer(
        model, torch.full((n_heads,), 1.0 / n_heads), args.head_normalizer, False)}, args, pad, labels))
    meta = json.loads((out / "teacher.json").read_text())
    common.write_json_atomic(out / "teacher.json", {**meta, "student_test_metric": test})
    common.write_json_atomic(out / "results.json", results)
    common.write_json_atomic(out / "timing.json", {"runtime_s": round(timer(), 1)})
    common.release_run_dir(out)
    results["dir"] = str(out)
    print(f"teacher: valid {100 * stopper.best:.2f} (epoch {stopper.best_epoch}), on the student-test split "
          f"{100 * test:.2f} -> {out}")
    return results


def save_teacher(out: Path, model: Model, meta: dict) -> None:
    tmp = out / "teacher.pt.tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, out / "teacher.pt")
    common.write_json_atomic(out / "teacher.json", meta)


def read_teacher_meta(args: Args, labels: Sequence[str] | None = None) -> tuple[Path, dict]:
    """The teacher's folder and its teacher.json, checked (nothing is loaded): a one-line error if either is bad, or
    if the teacher was trained for another task or (custom) predicts other `labels` than the data's."""
    d = teacher_dir(args)
    if not (d / "teacher.pt").is_file() or not (d / "teacher.json").is_file():
        data = f" --data {args.data}" if args.task == "custom" else ""
        raise common.UsageError(f"no trained teacher at {d}: train one first with `python smat_jax_free.py --setup "
                                f"teacher --task {args.task}{data}` (same --out-dir), or pass --teacher-dir")
    try:
        meta = json.loads((d / "teacher.json").read_text())
        if not isinstance(meta["model"], str) or not isinstance(meta.get("labels", []), list):
            raise TypeError
    except (ValueError, KeyError, TypeError) as e:
        raise common.DataError(f"not a teacher.json this script wrote ({type(e).__name__})",
                               d / "teacher.json") from None
    if meta.get("task", args.task) != args.task:
        raise common.UsageError(f"the teacher at {d} was trained for --task {meta['task']}, not {args.task}")
    if labels is not None and meta.get("labels") != list(labels):
        raise common.UsageError(f"the teacher at {d} predicts the labels {meta.get('labels')}, but --data "
                                f"{args.data} has {list(labels)}: train a teacher on this data first")
    if args.task != "cifar100":
        common.check_max_len(meta["model"], args.max_len)
    if args.model and common.resolve_model_path(args.model) != common.resolve_model_path(meta["model"]):
        raise common.UsageError(f"the student uses the teacher's encoder; the teacher at {d} was trained with "
                                f"--model {meta['model']} (drop --model)")
    return d, meta


def load_teacher(args: Args, labels: Sequence[str] | None = None) -> tuple[Model, dict]:
    """The trained teacher (eval mode) and its teacher.json (read_teacher_meta's checks)."""
    d, meta = read_teacher_meta(args, labels)
    teacher = build_model(meta["model"], args.task, args.device, len(labels) if labels else None)
    try:
        teacher.load_state_dict(common.load_weights(d / "teacher.pt"))
    except (RuntimeError, TypeError, AttributeError) as e:
        raise common.UsageError(f"{d / 'teacher.pt'} does not fit the teacher model {meta['model']}: "
                                f"{str(e).splitlines()[0][:150]}") from None
    return teacher.eval(), meta


# ------------------------------------------------------------------------------------------------------
# Teacher signals for the student pool, computed once (the teacher is fixed; its attention scores s^h too)
# ------------------------------------------------------------------------------------------------------
def teacher_signals(teacher: Model, examples: list, args: Args, pad: int, img, last_layer_only: bool) -> list:
    """Per example: the static explanation (T,) of a gradient explainer, or the teacher's head scores s^h
    (heads, T) for attention explainers (the explanation depends on phi_T and is formed per batch)."""
    kind, res = args.explainer, {}
    bs = max(1, args.eval_batch_size // (args.ig_steps if kind == "integrated_gradients" else 1)) \
        if kind in GRADIENT_EXPLAINERS else args.eval_batch_size
    for batch in iterate_batches(examples, bs, pad, img, device=args.device):
        if kind in GRADIENT_EXPLAINERS:
            z = gradient_explanation_logits(teacher, batch["inputs"], kind, args.ig_variant, args.ig_steps,
                                            args.eval_batch_size)
            with torch.no_grad():
                mask = batch["inputs_mask"] if batch["inputs_mask"] is not None else torch.ones_like(z)
                sig = saliency(z, mask)
        else:
            with torch.inference_mode():
                out = teacher(batch["inputs"])
                sig = head_scores(out, teacher.num_heads, last_layer_only)
        for b, i in enumerate(batch["index"].tolist()):
            n = int(batch["inputs_mask"][b].sum()) if batch["inputs_mask"] is not None else sig.shape[-1]
            res[i] = sig[b, ..., :n].clone()
    return [res[i] for i in range(len(examples))]


def batch_signal(signals: list, index: torch.Tensor, T: int, fill: float) -> torch.Tensor:
    """Stack per-example teacher signals padded to the batch length T."""
    out = torch.full((len(index), *signals[0].shape[:-1], T), fill, device=signals[0].device)
    for b, i in enumerate(index.tolist()):
        out[b, ..., :signals[i].shape[-1]] = signals[i]
    return out


# ------------------------------------------------------------------------------------------------------
# Student / SMaT: one seed end to end
# ------------------------------------------------------------------------------------------------------
def run_name(args: Args, seed) -> str:
    suffix = ("" if args.head_normalizer == "sparsemax" else f"-{args.head_normalizer}") + \
        ("-igorig" if args.explainer == "integrated_gradients" and args.ig_variant == "original" else "")
    return f"{args.task}-{args.setup}-{args.explainer}{suffix}-n{args.num_examples}-{seed}"


def write_head_coeffs(run: Path, phi: torch.Tensor, args: Args, num_layers: int, num_heads: int) -> None:
    """head_coeffs.csv (layer, head, phi, lambda) and head_coeffs.png, a layer x head heatmap of lambda (Fig. 5)."""
    lam = normalize_heads(phi.detach(), args.head_normalizer)
    layers = [num_layers - 1] if args.explainer == "attention_last" else list(range(num_layers))
    rows = [(layer, h, float(phi.detach()[j * num_heads + h]), float(lam[j * num_heads + h]))
            for j, layer in enumerate(layers) for h in range(num_heads)]
    with open(run / "head_coeffs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["layer", "head", "phi", "lambda"])
        w.writerows(rows)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(1 + 0.5 * num_heads, 1 + 0.4 * len(layers)))
    im = ax.imshow(lam.view(len(layers), num_heads).cpu().numpy(), cmap="viridis", aspect="auto")
    ax.set_xlabel("Head")
    ax.set_ylabel("Layer")
    ax.set_yticks(range(len(layers)), layers)
    ax.set_title("Head coefficients")
    fig.colorbar(im)
    fig.tight_layout()
    fig.savefig(run / "head_coeffs.png", dpi=100)
    plt.close(fig)


def read_head_coeffs(path: str, expected: int) -> torch.Tensor:
    """phi of a head_coeffs.csv a SMaT run wrote: `expected` finite numbers within float32's range (phi is a float32
    tensor: a larger value would become inf), else a one-line error naming the row (`file:line`; lines split on \\n
    only, common.decode_lines)."""
    try:
        rows = list(csv.reader(common.decode_lines(Path(path).read_bytes(), path)))
        col = rows[0].index("phi")
    except (OSError, IndexError, ValueError, csv.Error) as e:
        raise common.UsageError(f"cannot read head coefficients from {path} ({type(e).__name__}); pass the "
                                "head_coeffs.csv a SMaT run wrote (columns layer, head, phi, lambda)") from None
    limit, phi = float(torch.finfo(torch.float32).max), []
    for line, r in enumerate(rows[1:], 2):
        try:
            x = float(r[col])
        except (IndexError, ValueError):
            raise common.DataError(f"expected a number in column phi, got {r[col] if col < len(r) else None!r}",
                                   path, line) from None
        if not math.isfinite(x):
            raise common.DataError(f"phi is not a finite number: {x}", path, line)
        if abs(x) > limit:
            raise common.DataError(f"phi {x:g} is beyond float32's range (+-{limit:.4g})", path, line)
        phi.append(x)
    if len(phi) != expected:
        raise common.DataError(f"{len(phi)} head coefficients, but the teacher's explainer has {expected} heads", path)
    return torch.tensor(phi)


def student_data(args: Args, sp: dict, teacher: Model, meta: dict, labels: Sequence[str] | None = None) -> dict:
    """What every seed shares: the encoded splits `sp` (load_splits; `labels`: --task custom's), the teacher's
    outputs on them and its explanation signals on the training examples (the teacher and the first-N pool do not
    depend on the seed), the test examples to explain, and the teacher itself (for the explanations)."""
    tok, pad, img = load_processor(args, meta["model"])
    data, alignment = encode_splits(sp, tok, args.max_len, labels)
    y_T = {s: predict(teacher, data[s], args.eval_batch_size, pad, img) for s in data}  # the teacher's outputs
    last = args.explainer == "attention_last"
    signals = teacher_signals(teacher, data["train"], args, pad, img, last) if args.beta > 0 else None
    return {"data": data, "y_T": y_T, "signals": signals, "pad": pad, "img": img, "meta": meta,
            "alignment": alignment, "labels": labels, "teacher": teacher,
            "explained": explained_examples(args, data["test"], sp["test"], tok)}


def train_student(args: Args, seed: int, shared: dict) -> dict:
    timer = common.Timer()
    common.set_seed(seed)
    data, y_T, signals, pad, img, meta = (shared[k] for k in ("data", "y_T", "signals", "pad", "img", "meta"))
    run = common.make_run_dir(args.out_dir, SCRIPT, run_name(args, seed))
    common.write_json_atomic(run / "config.json", {**dataclasses.asdict(args), "seed": seed, "teacher": meta})
    log = common.JsonlLog(run / "log.jsonl")
    smat, last = args.setup == "smat", args.explainer == "attention_last"
    labels = shared["labels"]
    student = build_model(meta["model"], args.task, args.device,  # same pretrained encoder, fresh head
                          len(labels) if labels else None).train()
    n_heads = student.num_heads * (1 if last else student.num_layers)
    phi_S = nn.Parameter(torch.full((n_heads,), 1.0 / n_heads, device=args.device))  # S-explainer, uniform init
    phi_T = nn.Parameter(torch.full((n_heads,), 1.0 / n_heads, device=args.device))  # T-explainer: static or learned
    holder = nn.Module()
    holder.student, holder.phi_S, holder.phi_T = student, phi_S, phi_T
    meta_opt = OptaxAdam([phi_T], args.meta_lr, wd=0.0, max_norm=META_CLIP) if smat else None
    stopper = common.EarlyStopping(args.patience + 1)  # the original stops after patience+1 bad epochs
    print(f"seed {seed}: {args.setup} {args.explainer} beta {args.beta}, {len(data['train'])} train / "
          f"{len(data['valid'])} valid / {len(data['test'])} test examples")
    step, epochs_run = 0, 0
    for epoch in itertools.count():
        if args.max_epochs is not None and epoch >= args.max_epochs:
            break
        valid_iter = itertools.cycle(list(iterate_batches(data["valid"], args.batch_size, pad, img,
                                                          seed * 1000 + epoch + 500, args.device))) if smat else None
        sums = np.zeros(3)
        for batch in common.progress(iterate_batches(data["train"], args.batch_size, pad, img, seed * 1000 + epoch,
                                                     args.device), desc=f"epoch {epoch}"):
            student.train()
            y = y_T["train"][batch["index"]]
            e_T = s_T = None
            if signals is not None:
                if batch["inputs_mask"] is None:  # images: no padding, every patch (and CLS) is a token
                    batch["inputs_mask"] = torch.ones(len(y), signals[0].shape[-1], device=args.device)
                T = batch["inputs_mask"].shape[1]
                if args.explainer in GRADIENT_EXPLAINERS:
                    e_T = batch_signal(signals, batch["index"], T, 0.0)
                else:
                    s_T = batch_signal(signals, batch["index"], T, NEG)
                    e_T, _ = attention_explanation(s_T, phi_T.detach(), args.head_normalizer, batch["inputs_mask"])
            losses = student_step(student, phi_S, batch, y, e_T, args, last)
            common.check_finite(losses[0], f"epoch {epoch}, step {step}")
            rec = dict(zip(("L", "L_sim", "L_expl"), losses, strict=True))
            if smat:
                vb = next(valid_iter)
                g, outer = meta_gradient(student, phi_S, phi_T, batch, y, s_T, vb, y_T["valid"][vb["index"]], args,
                                         last)
                common.check_finite(outer + float(g.abs().sum()), f"meta step of epoch {epoch}, step {step}")
                meta_opt.step([g])  # Eq. (9): phi_T <- phi_T - eta_out * Adam(clip(grad))
                lam = normalize_heads(phi_T.detach(), args.head_normalizer)
                rec.update(L_outer=outer, metagrad_norm=g.norm().item(), active_heads=int((lam > 0).sum()))
            log(epoch=epoch, step=step, **rec)
            sums += losses
            step += 1
        valid = simulability(predict(student, data["valid"], args.eval_batch_size, pad, img), y_T["valid"])
        stopper.step(valid, epoch, holder)
        epochs_run += 1
        n = max(1, math.ceil(len(data["train"]) / args.batch_size))
        log(epoch=epoch, valid=valid, best=stopper.best)
        print(f"epoch {epoch:3d}  L {sums[0] / n:.4f}  L_sim {sums[1] / n:.4f}  L_expl {sums[2] / n:.4f}  "
              f"valid sim {valid:.4f}  best {stopper.best:.4f}")
        if stopper.stop:
            break
    stopper.restore(holder)  # the best-valid epoch's student, S-explainer and T-explainer
    logits = predict_logits(student, data["test"], args.eval_batch_size, pad, img)
    test = simulability(logits.argmax(-1) if logits.size(-1) > 1 else logits, y_T["test"])
    common.write_predictions(run / "predictions.jsonl", data["test"], prediction_rows(logits, y_T["test"]))
    results = {"task": args.task, "setup": args.setup, "explainer": args.explainer, "seed": seed,
               "metric": "pearson" if args.task == "mlqe" else "accuracy", "test": test, "valid": stopper.best,
               "best_epoch": stopper.best_epoch, "epochs_run": epochs_run,
               "steps": step, "beta": args.beta, "n_train": len(data["train"]), "n_valid": len(data["valid"]),
               "n_test": len(data["test"]), "shortfall": shortfall(args.num_examples, len(data["train"])),
               "teacher_student_test_metric": meta.get("student_test_metric"),
               **({"alignment": shared["alignment"]} if shared["alignment"] is not None else {})}
    if args.explainer.startswith("attention"):
        lam = normalize_heads(phi_T.detach(), args.head_normalizer)
        results["active_teacher_heads"] = int((lam > 0).sum())
        write_head_coeffs(run, phi_T, args, student.num_layers, student.num_heads)
    # explanations of the first test examples: integrated gradients, the student's own explainer (E_S with the
    # learned phi_S) and the teacher's explanation it was taught with (E_T; SMaT: with the learned phi_T)
    own = {"attention": attention_explainer(student, phi_S.detach(), args.head_normalizer, last)}
    if args.explainer != "none":
        own["teacher"] = teacher_explainer(shared["teacher"], args.explainer, phi_T.detach(), args)
    results.update(explain_run(run, student, shared["explained"], own, args, pad, labels))
    common.write_json_atomic(run / "results.json", results)  # same seed -> byte-identical file, wherever it is
    results["runtime_s"], results["run_dir"] = round(timer(), 1), str(run)
    common.write_json_atomic(run / "timing.json", {"runtime_s": results["runtime_s"]})
    common.release_run_dir(run)
    print(f"seed {seed}: test simulability {100 * test:.2f} (valid {100 * stopper.best:.2f} at epoch "
          f"{stopper.best_epoch}) -> {run}")
    return results


# ------------------------------------------------------------------------------------------------------
# Plausibility on ERASER Movie Reviews (Table 2)
# ------------------------------------------------------------------------------------------------------
def word_level(expl: list, word_ids: list, evidence: list) -> tuple[list, list]:
    """(gold, score) per word that survived truncation: score = sum of its wordpieces' probabilities (App. A),
    gold = 1 if the word is in a human evidence span; [CLS]/[SEP] (word id None) are dropped."""
    score: dict[int, float] = {}
    for pos, w in enumerate(word_ids):
        if w is not None:
            score[w] = score.get(w, 0.0) + float(expl[pos])
    words = sorted(score)
    return [evidence[w] for w in words], [score[w] for w in words]


def eraser_examples(docs: list, tok, max_len: int) -> list[dict]:
    """Each ERASER document's words tokenised as pre-split words, truncated to the first max_len wordpieces
    ([CLS]/[SEP] included), with the word id of every wordpiece (None for [CLS]/[SEP])."""
    examples = []
    for i, d in enumerate(docs):
        enc = tok(d["words"], is_split_into_words=True, truncation=True, max_length=max_len)
        examples.append({"index": i, "input_ids": enc["input_ids"], "label": d["label"],
                         "token_type_ids": enc.get("token_type_ids", [0] * len(enc["input_ids"])),
                         "word_ids": enc.word_ids()})
    return examples


def custom_documents(rows: list, tok, max_len: int, labels: Sequence[str]) -> tuple[list[dict], list[dict], dict]:
    """Your data's examples as plausibility() scores them, the counterpart of eraser_examples(): (documents {words,
    evidence: the rationale per word of the text and then of the pair, or None when not annotated}, examples encoded
    by encode_custom() with `word_ids` (per wordpiece its word, None at special tokens), the alignment counts)."""
    examples, counts = encode_custom(rows, tok, max_len, labels)
    docs = []
    for x, r in zip(examples, rows, strict=True):
        x["word_ids"] = [None if w < 0 else w for w in x["word_of_piece"]]
        evidence = None if r["rationale"] is None else r["rationale"] + (r["pair_rationale"] or [])
        docs.append({"words": r["words"] + (r["pair_words"] or []), "evidence": evidence})
    return docs, examples, counts


def plausibility(args: Args, data_dir: Path, explainers: dict | None = None, dataset: dict | None = None) -> dict:
    """Teacher explanations on ERASER Movie Reviews (first max_len wordpieces of each review), or on the test split
    of your data (`dataset`, --task custom: its rationales, both texts of a pair): a word's score is the sum of its
    wordpieces' probabilities, its gold label whether it lies in a human evidence span (custom: whether the
    rationale marks it); ROC AUC per document (documents with one class only, or not annotated, are skipped),
    averaged over documents. `explainers` (for checks: tests/test_smat_plausibility.py) adds named explainers
    fn(batch, examples, docs) -> (B, T) token probabilities, scored through the same pipeline."""
    timer = common.Timer()
    teacher, meta = load_teacher(args, dataset["labels"] if dataset is not None else None)
    check_explainers(teacher, meta["model"], args)  # before the run directory is claimed
    split = "test" if dataset is not None else args.eraser_split
    run = common.make_run_dir(args.out_dir, SCRIPT, f"{args.task}-plausibility-{split}")
    common.write_json_atomic(run / "config.json", dataclasses.asdict(args))
    tok = common.load_tokenizer(meta["model"])
    if dataset is None:
        splits = ["train", "val", "test"] if args.eraser_split == "all" else [args.eraser_split]
        docs = [d for s in splits for d in common.read_eraser_movies(data_dir, s)][:args.max_docs]
        examples, extra = eraser_examples(docs, tok, args.max_len), {}
    else:
        docs, examples, counts = custom_documents(dataset["test"][:args.max_docs], tok, args.max_len,
                                                  dataset["labels"])
        extra = {"n_without_rationale": sum(d["evidence"] is None for d in docs), "alignment": {"test": counts}}
    kinds = [k for k in EXPLAINERS[1:] if args.explainer in ("all", k)]
    if args.head_coeffs:
        kinds.append("attention_smat")
        phi_smat = read_head_coeffs(args.head_coeffs, teacher.num_layers * teacher.num_heads)
    explainers = explainers or {}
    kinds += list(explainers)
    auc = {}
    for kind in kinds:
        per_doc = []
        bs = max(1, args.eval_batch_size // args.ig_steps) if kind == "integrated_gradients" else \
            max(1, args.eval_batch_size // 4)
        for batch in common.progress(iterate_batches(examples, bs, tok.pad_token_id, device=args.device), desc=kind):
            mask = batch["inputs_mask"]
            if kind in explainers:
                expl = explainers[kind](batch, examples, docs)
            elif kind in GRADIENT_EXPLAINERS:
                z = gradient_explanation_logits(teacher, batch["inputs"], kind, args.ig_variant, args.ig_steps,
                                                args.eval_batch_size)
                expl = saliency(z.detach(), mask)
            else:
                with torch.inference_mode():
                    out = teacher(batch["inputs"])
                    last = kind == "attention_last"
                    s = head_scores(out, teacher.num_heads, last)
                    phi = phi_smat.to(s.device) if kind == "attention_smat" else \
                        torch.full((s.shape[1],), 1.0 / s.shape[1], device=s.device)
                    expl, _ = attention_explanation(s, phi, args.head_normalizer, mask)
            for b, i in enumerate(batch["index"].tolist()):
                if docs[i]["evidence"] is None:  # not annotated (custom data)
                    continue
                a = common.roc_auc(*word_level(expl[b].tolist(), examples[i]["word_ids"], docs[i]["evidence"]))
                if not math.isnan(a):
                    per_doc.append(a)
        # auc None: no document had both evidence and non-evidence words (n_docs 0)
        auc[kind] = {"auc": float(np.mean(per_doc)) if per_doc else None, "n_docs": len(per_doc)}
        print(f"plausibility {kind:22s} AUC {np.mean(per_doc) if per_doc else float('nan'):.4f} over "
              f"{len(per_doc)} documents")
    results = {"auc": auc, "n_docs": len(docs), "ig_steps": args.ig_steps, "ig_variant": args.ig_variant,
               "head_coeffs": Path(args.head_coeffs).name if args.head_coeffs else None, "max_len": args.max_len,
               **extra}
    common.write_json_atomic(run / "results.json", results)
    common.write_json_atomic(run / "timing.json", {"runtime_s": round(timer(), 1)})
    common.release_run_dir(run)
    return {**results, "run_dir": str(run)}


# ------------------------------------------------------------------------------------------------------
# Your own training loop: SMaT's explanation term on a Hugging Face classifier (docs/smat.md, "Your own loop")
# ------------------------------------------------------------------------------------------------------
def hf_attention_explanation(model: nn.Module, batch: dict, head_coeffs: torch.Tensor | None = None, *,
                             normalizer: str = "sparsemax", last_layer_only: bool = False) -> torch.Tensor:
    """Eq. (11) on a Hugging Face model (AutoModel, AutoModelForSequenceClassification, ...; any attention
    implementation): E = softmax over the wordpieces of sum_h lambda_h s^h, lambda = NORMALIZE(head_coeffs)
    (uniform 1/heads when None), s^h the pre-softmax attention logits q.k/sqrt(d) of every head of every layer
    (layer-major; the last layer only with last_layer_only) averaged over the non-pad query rows (head_scores()).
    The logits are read by forward hooks on the query/key projections during one forward pass of the encoder under
    the model (`model.base_model`), as the run's Model reads them: not from output_attentions, whose eager weights
    are the probabilities after attention dropout in train mode (zeros, no logits) and which SDPA does not return.
    batch: input_ids, attention_mask, optional token_type_ids (passed only to a model that takes them). Returns
    (B, L), 0 at padding, differentiable w.r.t. the model and head_coeffs (call it under no_grad for a teacher)."""
    encoder = getattr(model, "base_model", model)
    _, _, qk = encoder_parts(encoder)
    if qk is None:
        raise ValueError(f"{type(encoder).__name__} has no query/key projections named "
                         f"{'/'.join(QUERY_KEY_NAMES[0])} and {'/'.join(QUERY_KEY_NAMES[1])} in every layer, whose "
                         "q.k/sqrt(d) is its attention logit (BERT, ELECTRA, RoBERTa/XLM-R, DistilBERT have them)")
    heads = encoder.config.num_attention_heads
    n = heads * (1 if last_layer_only else len(qk))
    phi = torch.full((n,), 1.0 / n) if head_coeffs is None else head_coeffs
    if tuple(phi.shape) != (n,):
        layers = "" if last_layer_only else f"{len(qk)} layers x "
        raise ValueError(f"head_coeffs must hold one coefficient per head, {n} ({layers}{heads} heads), got shape "
                         f"{tuple(phi.shape)}")
    rec: dict = {"q": [], "k": []}
    hooks = [m.register_forward_hook(lambda module, inputs, out, key=key: rec[key].append(out))
             for pair in qk for key, m in zip(("q", "k"), pair, strict=True)]
    try:
        types = batch.get("token_type_ids") if common.takes_token_type_ids(encoder) else None
        encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                **({} if types is None else {"token_type_ids": types}))
    finally:
        for h in hooks:
            h.remove()
    mask = batch["attention_mask"].to(rec["q"][0].dtype)
    s = head_scores({"q": rec["q"], "k": rec["k"], "mask": mask}, heads, last_layer_only)
    return attention_explanation(s, phi.to(s.device, s.dtype), normalizer, mask)[0]


def explanation_term(model: nn.Module, batch: dict, head_coeffs: torch.Tensor | None = None, *,
                     normalizer: str = "sparsemax", last_layer_only: bool = False) -> torch.Tensor:
    """SMaT's training term for your own loop: L_expl of Eq. (3), KL(teacher explanation || the student's attention
    explanation) summed over the wordpieces, mean over the batch (explanation_loss(), as the run), to add to your
    loss as `beta * L_expl` (beta 5 for attention explanations, 0.2 for gradient ones; L_sim is your cross-entropy
    with the teacher's predictions as labels). `model`: the student, a Hugging Face
    AutoModelForSequenceClassification (anything hf_attention_explanation() takes); `head_coeffs`: the student
    explainer's phi_S (the paper learns it with the student: a Parameter in your optimiser; None: uniform, fixed).
    `batch`: input_ids, attention_mask, optional token_type_ids, and `teacher_explanation` (B, L): the teacher's
    explanation, per example a distribution over its wordpieces (summing to 1; 0 at padding; a row of zeros adds
    nothing), e.g. hf_attention_explanation(teacher, batch, phi_T) under no_grad, phi_T uniform or the
    head_coeffs.csv of a SMaT run (read_head_coeffs()). One forward pass of the student's encoder of its own."""
    t = batch.get("teacher_explanation")
    ids = batch["input_ids"]
    if not torch.is_tensor(t) or t.shape != ids.shape:
        got = "none" if t is None else f"shape {tuple(t.shape)}" if torch.is_tensor(t) else type(t).__name__
        raise ValueError(f"the batch needs 'teacher_explanation', a tensor of the shape of input_ids "
                         f"{tuple(ids.shape)} (the teacher's explanation per wordpiece), got {got}")
    mask = batch["attention_mask"].to(torch.float32)
    total = (t.float() * mask).sum(-1)
    if not torch.isfinite(t).all() or ((total - 1).abs() > 1e-3).logical_and(total != 0).any():
        raise ValueError("each row of 'teacher_explanation' must be a distribution over the example's wordpieces "
                         "(finite, summing to 1; or all zeros)")
    e_S = hf_attention_explanation(model, batch, head_coeffs, normalizer=normalizer, last_layer_only=last_layer_only)
    return explanation_loss(t.to(e_S.dtype), e_S, mask.to(e_S.dtype))


def main(args: Args) -> dict:
    cache: dict = {}
    args = resolve(args, cache)
    dataset = cache["dataset"]  # --task custom's, read and checked by resolve(); None for the paper tasks
    labels = dataset["labels"] if dataset is not None else None
    if args.keep_freed_memory:
        keep_freed_memory()
    data_dir = common.resolve_data_dir(args.data_dir)
    if args.setup == "teacher":
        return train_teacher(args, data_dir, dataset)
    if args.setup == "plausibility":
        return plausibility(args, data_dir, dataset=dataset)
    seeds = common.parse_seeds(args.seeds, args.seed)
    read_teacher_meta(args, labels)  # a missing or broken teacher is reported before the data is read
    sp = load_splits(args, data_dir, "student", dataset)  # and the pool size is checked before any model loads
    teacher, meta = load_teacher(args, labels)
    check_explainers(teacher, meta["model"], args)  # the student shares the teacher's encoder
    shared = student_data(args, sp, teacher, meta, labels)
    runs = [train_student(args, s, shared) for s in seeds]
    if len(runs) == 1:
        return runs[0]
    agg = common.aggregate([r["test"] for r in runs])
    median_seed = min(runs, key=lambda r: abs(r["test"] - agg["median"]))["seed"]
    summary = {"metric": runs[0]["metric"], "test": agg, "valid": common.aggregate([r["valid"] for r in runs]),
               "seeds": seeds, "median_seed": median_seed, "runs": runs}
    name = run_name(args, "seeds")
    common.write_json_atomic(Path(args.out_dir) / SCRIPT / name / "summary.json", common.relative_runs(summary))
    print(f"test simulability over seeds {seeds}: median {100 * agg['median']:.2f} "
          f"[{100 * agg['q1']:.2f}:{100 * agg['q3']:.2f}]")
    return summary


def cli(argv=None) -> int:
    return common.run_cli(main, parse_args, argv)


if __name__ == "__main__":
    sys.exit(cli())
