"""Step time of SMaT's student steps relative to a plain student step (no explanation), measured in one run.

    python bench/bench_smat.py [--data-dir DIR] [--teacher-dir DIR] [--max-len 256] [--repeats 3] [--kinds smat]
                               [--no-keep-freed-memory] [--device auto]

On one IMDB student batch (the first 32 reviews of the student pool, default MiniLM encoder): one SGD step of the
student with L_sim alone (plain), with L_sim + beta L_expl for each teacher explainer, and one full SMaT step
(student step + pilot step + meta-gradient through it + outer Adam step), and the meta part of that step alone
(pilot step + meta-gradient + outer Adam step) against the same plain steps. Each method step and a plain step are
interleaved in ABBA order (machine load hits both alike); medians after one warm-up. The teacher's explanations
are fixed, so the script computes them once per training example before training (`teacher_signals`): that
one-off cost per batch is printed separately. Uses the trained teacher if --teacher-dir holds one (timings do not
depend on it).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import toolbox as tb  # noqa: E402
from timing import interleaved_medians, run_bench, timed  # noqa: E402

import common  # noqa: E402
import smat_jax_free as sm  # noqa: E402

KINDS = sm.EXPLAINERS[1:] + ["smat"]


def _folder_or_absent(value: str) -> Path:
    path = tb.PATH.convert(value)
    if not tb.nearest_existing(path).is_dir():  # the path, or where it would be, is under a plain file
        raise ValueError(value)
    return path


def build_parser():
    p = tb.OneLineParser(prog="bench_smat.py", description=tb.first_paragraph(__doc__))
    tb.add(p, "--data-dir", domain=tb.EXISTING_DIR, help="folder holding imdb/ (default: the data/ folder of the "
           "repository)")
    tb.add(p, "--teacher-dir", default="runs/smat_jax_free/imdb-teacher",
           domain=tb.Domain("a folder path (a trained teacher's; where none is, an untrained teacher is used)",
                            _folder_or_absent), help="the teacher's run directory")
    tb.add(p, "--max-len", default=256, domain=tb.Int(8, 512), help="max wordpieces per review")
    tb.add(p, "--batch-size", default=32, domain=tb.Int(1, 4096), help="student batch size")
    tb.add(p, "--repeats", default=3, domain=tb.Int(1, 1000), help="timed repeats per row (medians)")
    tb.add(p, "--kinds", default=KINDS, domain=tb.Names(KINDS), help="rows to time: explainers and/or smat "
           "(default: all)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="as smat_jax_free.py's flag of that name (its default: on) [on or off]")
    tb.add(p, "--device", default="auto", domain=tb.DEVICE, help=common.DEVICE_HELP)
    return p


def parse_args(argv=None):
    """The flags checked and smat_jax_free.py's own arguments resolved (and checked there): nothing loaded yet."""
    a = build_parser().parse_args(argv)
    a.device = str(common.resolve_device(a.device))
    a.data_dir = common.resolve_data_dir(str(a.data_dir) if a.data_dir else None)
    a.args = sm.resolve(sm.parse_args(["--setup", "smat", "--max-len", str(a.max_len), "--teacher-dir",
                                       str(a.teacher_dir), "--device", a.device]))
    return a


def load_teacher(args) -> tuple:
    """The trained teacher of --teacher-dir; where there is none, an untrained one (timings do not depend on it).
    A teacher that is there but damaged is an error."""
    if not (sm.teacher_dir(args) / "teacher.pt").is_file():
        model = sm.build_model(common.DEFAULT_MODEL, "imdb", args.device).eval()
        return model, {"model": common.DEFAULT_MODEL}, "untrained teacher (no checkpoint)"
    teacher, meta = sm.load_teacher(args)
    return teacher, meta, f"trained teacher {sm.teacher_dir(args)}"


def main(a) -> None:
    args, device = a.args, a.device
    if a.keep_freed_memory:
        sm.keep_freed_memory()
    teacher, meta, source = load_teacher(args)
    tok, pad, img = sm.load_processor(args, meta["model"])
    rows = sm.load_splits(sm.resolve(sm.parse_args(["--num-examples", str(a.batch_size)])), a.data_dir,
                          "student")["train"]
    examples = sm.encode(rows, tok, a.max_len)
    batch = common.to_device(sm.collate_model_batch(examples, pad), device)
    y = sm.predict(teacher, examples, 64, pad, img)
    torch.manual_seed(0)
    student = sm.build_model(meta["model"], "imdb", device).train()
    B, T = batch["inputs"]["input_ids"].shape
    print(f"keep_freed_memory {a.keep_freed_memory}  torch threads {torch.get_num_threads()}  {source}  "
          f"batch {B} x {T} wordpieces  repeats {a.repeats}")
    print(f"{'step':30s} {'plain s':>8s} {'step s':>8s} {'ratio':>6s}  {'teacher precompute s/batch':>26s}")
    signals = {kind: time_kind(kind, a, args, teacher, student, examples, batch, y, pad, img) for kind in a.kinds}
    if "smat" not in a.kinds:
        return
    print("SMaT meta step by stage (the stages of sm.meta_gradient, timed one by one; median):")
    args.explainer, args.setup, args.beta = "attention_all", "smat", explanation_weight("attention_all")
    s_T = sm.batch_signal(signals["smat"], batch["index"], T, sm.NEG)
    n = teacher.num_heads * teacher.num_layers
    phi_S = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=device))
    phi_T = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=device))
    stages = [smat_stages(student, phi_S, phi_T, batch, y, s_T, args) for _ in range(a.repeats)]
    print("  " + "  ".join(f"{k} {statistics.median(t[k] for t in stages):.2f}s" for k in stages[0]))


def explanation_weight(explainer: str) -> float:
    """beta of L_expl in the timed steps (its value does not change the time, only that the term is there)."""
    return 0.2 if explainer in sm.GRADIENT_EXPLAINERS else 5.0


def time_kind(kind: str, a, args, teacher, student, examples, batch, y, pad, img):
    """One row: a plain student step against the student step with this explainer (for smat: plus the pilot and
    meta step), interleaved in ABBA order; returns the teacher's signals of this explainer."""
    device, T = a.device, batch["inputs"]["input_ids"].shape[1]
    explainer = "attention_all" if kind == "smat" else kind
    args.explainer, args.setup = explainer, "smat" if kind == "smat" else "student"
    last = explainer == "attention_last"
    t0 = time.perf_counter()
    signals = sm.teacher_signals(teacher, examples, args, pad, img, last)
    pre = time.perf_counter() - t0
    n = teacher.num_heads * (1 if last else teacher.num_layers)
    phi_S = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=device))
    phi_T = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=device))
    meta_opt = sm.OptaxAdam([phi_T], args.meta_lr, wd=0.0, max_norm=sm.META_CLIP)
    beta = explanation_weight(explainer)
    meta_times = []

    def plain():
        args.beta = 0.0
        sm.student_step(student, phi_S, batch, y, None, args, False)

    def meta(s_T):
        meta_opt.step([sm.meta_gradient(student, phi_S, phi_T, batch, y, s_T, batch, y, args, last)[0]])

    def step():
        args.beta = beta
        if explainer in sm.GRADIENT_EXPLAINERS:
            e_T, s_T = sm.batch_signal(signals, batch["index"], T, 0.0), None
        else:
            s_T = sm.batch_signal(signals, batch["index"], T, sm.NEG)
            e_T, _ = sm.attention_explanation(s_T, phi_T.detach(), args.head_normalizer, batch["inputs_mask"])
        sm.student_step(student, phi_S, batch, y, e_T, args, last)
        if kind == "smat":  # the pilot/meta step uses the same batch as a stand-in for the valid batch
            meta_times.append(timed(lambda: meta(s_T), device))

    t = interleaved_medians({"plain": plain, "step": step}, a.repeats, device, abba=True)
    label = "SMaT (student + pilot + meta)" if kind == "smat" else f"student + {kind}"
    print(f"{label:30s} {t['plain']:8.2f} {t['step']:8.2f} {t['step'] / t['plain']:6.2f}  {pre:26.2f}", flush=True)
    if kind == "smat":
        tm = statistics.median(meta_times[1:])  # the warm-up round is dropped, as above
        print(f"{'  meta part alone (pilot+meta)':30s} {t['plain']:8.2f} {tm:8.2f} {tm / t['plain']:6.2f}", flush=True)
    return signals


def smat_stages(student, phi_S, phi_T, batch, y, s_T, args) -> dict:
    """sm.meta_gradient split into its stages: pilot forward (L_student(phi_T)), pilot backward with
    create_graph, the in-graph SGD update, outer forward at the pilot parameters, outer backward to phi_T."""
    t = {}
    t0 = time.perf_counter()
    params = dict(student.named_parameters())
    e_T, _ = sm.attention_explanation(s_T, phi_T, args.head_normalizer, batch["inputs_mask"])
    L, _, _ = sm.student_objective(student, params, phi_S, batch, y, e_T, args.beta, False, args.head_normalizer)
    t["pilot_fwd"], t0 = time.perf_counter() - t0, time.perf_counter()
    tensors = list(params.values()) + [phi_S]
    grads = torch.autograd.grad(L, tensors, create_graph=True, allow_unused=True)
    t["pilot_bwd"], t0 = time.perf_counter() - t0, time.perf_counter()
    pilot = dict(zip(params, sm.sgd_update(tensors, grads, lr=args.lr)[:-1], strict=True))
    t["sgd_in_graph"], t0 = time.perf_counter() - t0, time.perf_counter()
    student.eval()
    outer = sm.simulation_loss(torch.func.functional_call(student, pilot, (batch["inputs"],))["logits"], y)
    student.train()
    t["outer_fwd"], t0 = time.perf_counter() - t0, time.perf_counter()
    torch.autograd.grad(outer, phi_T)
    t["outer_bwd"] = time.perf_counter() - t0
    return t


def cli(argv=None) -> int:
    return run_bench(main, parse_args, "bench_smat.py", argv, errors=(common.UsageError,))


if __name__ == "__main__":
    sys.exit(cli())
