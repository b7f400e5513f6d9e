"""Step-time ratios of every method at the papers' shapes, with randomly initialised encoders, measured in one run.

    python bench/bench_paper_shapes.py --device cuda            # what bench/gpu_check.sh runs on a GPU node
    python bench/bench_paper_shapes.py --device cpu --tiny      # the same code path on tiny shapes (a test runs it)

Each row times one optimisation step of a method against one plain step (the task loss alone, same model, same
batch), interleaved (A B A B ...), medians after warm-ups; on CUDA every timing is bracketed by synchronisations,
and the peak GPU memory of the method's steps is reported. Shapes (weights are random: step times do not depend on
them): UIMER (IC classification, IM +Uniform k = 4, GB, DM) and REGEX on BERT-base (12 x 768, 12 heads), batch
32 x 128; SMaT on ELECTRA-small (12 x 256, 4 heads, embeddings 128) and MiniLM (6 x 384, 12 heads), batch 32 x 256.
Prints one markdown table: method, shape, plain step ms, method step ms, ratio, peak GPU memory.
"""
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from timing import interleaved_medians, run_bench  # noqa: E402

import common  # noqa: E402

VOCAB, CLS, SEP, PAD, MASK = 30522, 101, 102, 0, 103
SPECIAL = [0, 100, 101, 102, 103]


def configs(tiny: bool) -> dict:
    from transformers import BertConfig, ElectraConfig
    if tiny:
        small = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        return {"bert-base": BertConfig(vocab_size=VOCAB, **small),
                "electra-small": ElectraConfig(vocab_size=VOCAB, embedding_size=16, **small),
                "minilm": BertConfig(vocab_size=VOCAB, **small), "uimer_shape": (4, 16), "smat_shape": (4, 24)}
    return {"bert-base": BertConfig(vocab_size=VOCAB),  # 12 layers x 768, 12 heads, intermediate 3072
            "electra-small": ElectraConfig(vocab_size=VOCAB, embedding_size=128, hidden_size=256,
                                           num_hidden_layers=12, num_attention_heads=4, intermediate_size=1024),
            "minilm": BertConfig(vocab_size=VOCAB, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                 intermediate_size=1536),
            "uimer_shape": (32, 128), "smat_shape": (32, 256)}


def encoder(cfg, device):
    from transformers import AutoModel
    torch.manual_seed(0)
    return AutoModel.from_config(cfg, attn_implementation="eager").to(device)


def examples(B: int, L: int, seed: int = 0, num_labels: int = 7) -> list[dict]:
    """B synthetic sentences of L wordpieces ([CLS] ... [SEP]), ~20% of the content marked as rationale."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(B):
        ids = [CLS] + torch.randint(1000, VOCAB, (L - 2,), generator=g).tolist() + [SEP]
        rat = [0] + (torch.rand(L - 2, generator=g) < 0.2).long().tolist() + [0]
        rat[1], rat[2] = 1, 0  # every sentence has a rationale and a non-rationale word
        out.append({"input_ids": ids, "token_type_ids": [0] * L, "rationale": rat,
                    "content": [0] + [1] * (L - 2) + [0], "index": i, "label": i % num_labels, "id": str(i)})
    return out


def compare(plain, method, device, repeats: int, warmup: int = 2) -> tuple[float, float, float | None]:
    """(plain s, method s, peak GiB of the timed steps) from interleaved medians after `warmup` rounds."""
    cuda = torch.device(device).type == "cuda"
    t = interleaved_medians({"plain": plain, "method": method}, repeats, device, warmup=warmup,
                            after_warmup=torch.cuda.reset_peak_memory_stats if cuda else None)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return t["plain"], t["method"], peak


def sgd_step(model, loss_fn):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def step():
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def uimer_rows(cfgs, device, repeats):
    import uimer_dm as dm
    import uimer_gb as gb
    import uimer_im as im
    B, L = cfgs["uimer_shape"]
    ex = examples(B, L)
    batch = common.to_device(common.collate(ex, PAD), device)
    model = common.TaskModel(encoder(cfgs["bert-base"], device), "ic", 7).to(device).train()
    special = torch.tensor(SPECIAL, device=device)
    plain = sgd_step(model, lambda: model.task_loss(model(batch), batch))
    rows = []
    # UIMER-IM +Uniform, k = 4 replaced sentences per set: one extra batched forward over n * 2k rows
    args = im.resolve(im.parse_args(["--task", "ic", "--strategy", "uniform", "--device", device]))
    info = {"mask_id": MASK, "special_ids": SPECIAL, "allowed_ids": torch.arange(1000, VOCAB),
            "counts": torch.ones(VOCAB, dtype=torch.long)}
    sets = im.build_replacement_sets(ex, torch.Generator().manual_seed(0), info, strategy=args.strategy,
                                     num_samples=args.num_samples, replace_cap=args.replace_cap,
                                     max_rationale_fraction=args.max_rationale_fraction)
    step = sgd_step(model, lambda: model.task_loss(model(batch), batch) + args.alpha * im.im_loss(
        model, batch, sets, epsilon=args.epsilon, lower_bound=args.lower_bound)[0])
    rows.append(("UIMER-IM +Uniform (k = 4)", "BERT-base", B, L, *compare(plain, step, device, repeats)))
    for label, flags in (("UIMER-GB Ghaeini (embedding output)",
                          ["--variant", "ghaeini", "--wrt", "embedding-output"]),
                         ("UIMER-GB Huang +Order", ["--variant", "huang", "--order"])):
        a = gb.resolve(gb.parse_args(["--task", "ic", *flags, "--device", device]))
        gen = torch.Generator().manual_seed(0)
        step = sgd_step(model, lambda a=a, gen=gen: sum(gb.gb_loss(model, batch, special, gen, variant=a.variant,
                                                                   gate=a.gate, order=a.order, guard=a.guard,
                                                                   wrt=a.wrt)[:2]))
        rows.append((label, "BERT-base", B, L, *compare(plain, step, device, repeats)))
    a = dm.resolve(dm.parse_args(["--task", "ic", "--device", device]))
    n_states = model.encoder.config.num_hidden_layers + 2
    ext = dm.Extractor(model.encoder.config.hidden_size, n_states,
                       model.embed(torch.tensor([MASK], device=device))[0].detach()).to(device).requires_grad_(False)
    gen = torch.Generator().manual_seed(0)
    step = sgd_step(model, lambda: sum(dm.dm_loss(model, ext, batch, special, gen, guard=a.guard)[:2]))
    rows.append(("UIMER-DM model step (Eq. 7)", "BERT-base", B, L, *compare(plain, step, device, repeats)))
    content = common.content_mask(batch, special)
    ext_opt = torch.optim.AdamW(ext.parameters(), lr=1e-3)

    def ext_step():  # as train_extractor(): the model frozen in eval mode, the probes and placeholder trained
        model.eval().requires_grad_(False)
        ext.requires_grad_(True)
        loss = dm.extractor_loss(model, ext, batch, content, n_states - 1, gen, kl_margin=a.kl_margin, l0=a.l0)[0]
        ext_opt.zero_grad(set_to_none=True)
        loss.backward()
        ext_opt.step()
        ext.requires_grad_(False)
        model.train().requires_grad_(True)
    rows.append(("UIMER-DM extractor step", "BERT-base", B, L, *compare(plain, ext_step, device, repeats)))
    return rows


def regex_rows(cfgs, device, repeats):
    import regex_robust as rx
    B, L = cfgs["uimer_shape"]
    ex = examples(B, L, num_labels=2)
    batch = common.to_device(common.collate(ex, PAD), device)
    model = common.TaskModel(encoder(cfgs["bert-base"], device), "cls", 2).to(device).train()
    tok = common.load_tokenizer(None)  # the packaged MiniLM's: bert-base-uncased's vocabulary and special ids
    assert (tok.cls_token_id, tok.sep_token_id, tok.pad_token_id, tok.mask_token_id) == (CLS, SEP, PAD, MASK)
    clf = rx.as_classifier(model, tok)
    off = rx.resolve(rx.parse_args(["--no-igr", "--no-vat", "--no-egt", "--device", device]))
    plain = sgd_step(model, lambda: rx.train_step(clf, batch, off, False)[0])
    rows = []
    for label, flags, egt in (("REGEX IGR only", ["--igr", "--no-vat", "--no-egt"], False),
                              ("REGEX VAT only", ["--no-igr", "--vat", "--no-egt"], False),
                              ("REGEX EGT only (IG m = 10)", ["--no-igr", "--no-vat", "--egt"], True),
                              ("REGEX IGR + VAT + EGT (m = 10)", ["--igr", "--vat", "--egt"], True)):
        a = rx.resolve(rx.parse_args([*flags, "--device", device]))
        step = sgd_step(model, lambda a=a, egt=egt: rx.train_step(clf, batch, a, egt)[0])
        rows.append((label, "BERT-base", B, L, *compare(plain, step, device, repeats)))
    return rows


def smat_rows(cfgs, device, repeats):
    B, L = cfgs["smat_shape"]
    rows = []
    for name in ("electra-small", "minilm"):
        shape = "ELECTRA-small" if name == "electra-small" else "MiniLM"
        plain, meta, smat_step = smat_steps(cfgs[name], device, B, L)
        rows.append(("SMaT meta step (pilot + meta-gradient + outer Adam)", shape, B, L,
                     *compare(plain, meta, device, repeats)))
        rows.append(("SMaT step (student step + meta step)", shape, B, L, *compare(plain, smat_step, device, repeats)))
    return rows


def smat_steps(cfg, device, B: int, L: int):
    """A plain student step, the meta step alone, and a whole SMaT step (student step + meta step)."""
    import smat_jax_free as sm
    ex = examples(B, L, num_labels=2)
    args = sm.resolve(sm.parse_args(["--setup", "smat", "--device", device]))
    teacher = sm.Model(encoder(cfg, device), 2, image=False).to(device).eval()
    student = sm.Model(encoder(cfg, device), 2, image=False).to(device).train()
    batch = next(sm.iterate_batches(ex, B, PAD, device=device))
    valid = next(sm.iterate_batches(examples(B, L, seed=1, num_labels=2), B, PAD, device=device))
    y = sm.predict(teacher, ex, B, PAD, None)
    with torch.no_grad():
        s_T = sm.head_scores(teacher(batch["inputs"]), teacher.num_heads)
    n = s_T.shape[1]
    phi_S = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=device))
    phi_T = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=device))
    meta_opt = sm.OptaxAdam([phi_T], args.meta_lr, wd=0.0, max_norm=sm.META_CLIP)

    def plain():
        sm.student_step(student, phi_S, batch, y, None, args, False)

    def meta():
        g, _ = sm.meta_gradient(student, phi_S, phi_T, batch, y, s_T, valid, y, args)
        meta_opt.step([g])

    def smat_step():
        e_T, _ = sm.attention_explanation(s_T, phi_T.detach(), args.head_normalizer, batch["inputs_mask"])
        sm.student_step(student, phi_S, batch, y, e_T, args, False)
        meta()
    return plain, meta, smat_step


GROUPS = {"uimer": uimer_rows, "regex": regex_rows, "smat": smat_rows}


def build_parser():
    p = tb.OneLineParser(prog="bench_paper_shapes.py", description=tb.first_paragraph(__doc__))
    tb.add(p, "--device", default="auto", domain=tb.DEVICE, help=common.DEVICE_HELP)
    tb.add(p, "--repeats", default=5, domain=tb.Int(1, 1000), help="timed repeats per row (medians)")
    p.add_argument("--tiny", action="store_true", help="tiny shapes (checks the code path, times nothing useful)")
    tb.add(p, "--only", default=list(GROUPS), domain=tb.Names(list(GROUPS)), help="the groups of rows to time "
           "(default: uimer,regex,smat)")
    return p


def parse_args(argv=None):
    a = build_parser().parse_args(argv)
    a.device = str(common.resolve_device(a.device))
    return a


def main(a) -> list:
    torch.backends.cuda.matmul.allow_tf32 = False  # the scripts' numerics: full float32
    cfgs = configs(a.tiny)
    device = a.device
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else \
        f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; float32; medians of {a.repeats} interleaved repeats")
    rows = []
    for g in a.only:
        rows += GROUPS[g](cfgs, device, a.repeats)
    print("\n| method | encoder (random init) | batch | plain step (ms) | method step (ms) | ratio "
          "| peak GPU memory (GiB) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, enc, B, L, tp, tm, peak in rows:
        mem = f"{peak:.1f}" if peak is not None else "-"
        enc = f"{enc} (tiny shape)" if a.tiny else enc
        print(f"| {label} | {enc} | {B} x {L} | {1000 * tp:.1f} | {1000 * tm:.1f} | {tm / tp:.2f} | {mem} |")
    return rows


def cli(argv=None) -> int:
    return run_bench(main, parse_args, "bench_paper_shapes.py", argv, errors=(common.UsageError,))


if __name__ == "__main__":
    sys.exit(cli())
