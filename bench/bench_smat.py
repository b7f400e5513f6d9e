"""Step time of SMaT's student steps relative to a plain student step (no explanation), measured in one run.

    python bench/bench_smat.py [--data-dir DIR] [--teacher-dir DIR] [--max-len 256] [--repeats 3] [--kinds smat]
                               [--no-keep-freed-memory] [--device auto]

On one IMDB student batch (the first 32 reviews of the student pool, default MiniLM encoder): one SGD step of the
student with L_sim alone (plain), with L_sim + beta L_expl for each teacher explainer, and one full SMaT step
(student step + pilot step + meta-gradient through it + outer Adam step), and the meta part of that step alone
(pilot step + meta-gradient + outer Adam step) against the same plain steps. Each method step and a plain step are
interleaved in ABBA order (machine load hits both alike); medians after one warm-up. The teacher's explanations
are fixed, so the script computes them once per training example before training (`teacher_signals`): that
one-off cost per batch is printed separately. Uses the trained teacher if --teacher-dir holds one (timings do not depend on it).
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import common  # noqa: E402
import smat_jax_free as sm  # noqa: E402


DEVICE = "cpu"


def timed(fn) -> float:
    common.synchronize(DEVICE)
    t0 = time.perf_counter()
    fn()
    common.synchronize(DEVICE)
    return time.perf_counter() - t0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default=None)
    p.add_argument("--teacher-dir", default="runs/smat_jax_free/imdb-teacher")
    p.add_argument("--max-len", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--kinds", default=",".join(sm.EXPLAINERS[1:] + ["smat"]),
                   help="comma-separated rows to time: explainers and/or smat (default: all)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="as smat_jax_free.py's flag of that name (its default: on)")
    p.add_argument("--device", default="auto", help=common.DEVICE_HELP)
    a = p.parse_args()
    global DEVICE
    DEVICE = str(common.resolve_device(a.device))
    if a.keep_freed_memory:
        sm.keep_freed_memory()
    data_dir = common.resolve_data_dir(a.data_dir)
    args = sm.resolve(sm.parse_args(["--setup", "smat", "--max-len", str(a.max_len), "--teacher-dir", a.teacher_dir,
                                     "--device", DEVICE]))
    try:
        teacher, meta = sm.load_teacher(args)
        source = f"trained teacher {a.teacher_dir}"
    except common.UsageError:
        teacher, meta, source = sm.build_model(common.DEFAULT_MODEL, "imdb", DEVICE).eval(), {"model": common.DEFAULT_MODEL}, \
            "untrained teacher (no checkpoint)"
    tok, pad, img = sm.load_processor(args, meta["model"])
    rows = sm.load_splits(sm.resolve(sm.parse_args(["--num-examples", str(a.batch_size)])), data_dir, "student")["train"]
    examples = sm.encode(rows, tok, a.max_len)
    batch = common.to_device(sm.collate_model_batch(examples, pad), DEVICE)
    y = sm.predict(teacher, examples, 64, pad, img)
    torch.manual_seed(0)
    student = sm.build_model(meta["model"], "imdb", DEVICE).train()
    B, T = batch["inputs"]["input_ids"].shape
    print(f"keep_freed_memory {a.keep_freed_memory}  torch threads {torch.get_num_threads()}  {source}  "
          f"batch {B} x {T} wordpieces  repeats {a.repeats}")
    print(f"{'step':30s} {'plain s':>8s} {'step s':>8s} {'ratio':>6s}  {'teacher precompute s/batch':>26s}")

    def plain():
        args.beta = 0.0
        sm.student_step(student, phi_S, batch, y, None, args, False)

    kinds, meta_times = a.kinds.split(","), []
    for kind in kinds:
        explainer = "attention_all" if kind == "smat" else kind
        args.explainer, args.setup = explainer, "smat" if kind == "smat" else "student"
        last = explainer == "attention_last"
        t0 = time.perf_counter()
        signals = sm.teacher_signals(teacher, examples, args, pad, img, last)
        pre = time.perf_counter() - t0
        n = teacher.num_heads * (1 if last else teacher.num_layers)
        phi_S = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=DEVICE))
        phi_T = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=DEVICE))
        meta_opt = sm.OptaxAdam([phi_T], args.meta_lr, wd=0.0, max_norm=sm.META_CLIP)
        beta = 0.2 if explainer in sm.GRADIENT_EXPLAINERS else 5.0

        def step():
            args.beta = beta
            if explainer in sm.GRADIENT_EXPLAINERS:
                e_T, s_T = sm.batch_signal(signals, batch["index"], T, 0.0), None
            else:
                s_T = sm.batch_signal(signals, batch["index"], T, sm.NEG)
                e_T, _ = sm.attention_explanation(s_T, phi_T.detach(), args.head_normalizer, batch["inputs_mask"])
            sm.student_step(student, phi_S, batch, y, e_T, args, last)
            if kind == "smat":  # the pilot/meta step uses the same batch as a stand-in for the valid batch
                meta_times.append(timed(lambda: meta_opt.step([sm.meta_gradient(student, phi_S, phi_T, batch, y, s_T,
                                                                                 batch, y, args, last)[0]])))

        times_plain, times_step = [], []
        for r in range(a.repeats + 1):  # ABBA order, so a drift in machine load or memory hits both alike
            tp, ts = (timed(plain), timed(step)) if r % 2 else tuple(reversed((timed(step), timed(plain))))
            if r:
                times_plain.append(tp)
                times_step.append(ts)
        tp, ts = statistics.median(times_plain), statistics.median(times_step)
        label = "SMaT (student + pilot + meta)" if kind == "smat" else f"student + {kind}"
        print(f"{label:30s} {tp:8.2f} {ts:8.2f} {ts / tp:6.2f}  {pre:26.2f}", flush=True)
        if kind == "smat":
            tm = statistics.median(meta_times[1:])  # the warm-up pass is dropped, as above
            print(f"{'  meta part alone (pilot+meta)':30s} {tp:8.2f} {tm:8.2f} {tm / tp:6.2f}", flush=True)
    if "smat" not in kinds:
        return
    print("SMaT meta step by stage (the stages of sm.meta_gradient, timed one by one; median):")
    s_T = sm.batch_signal(signals, batch["index"], T, sm.NEG)  # the last loop pass was SMaT's (attention_all)
    stages = [smat_stages(student, phi_S, phi_T, batch, y, s_T, args) for _ in range(a.repeats)]
    print("  " + "  ".join(f"{k} {statistics.median(t[k] for t in stages):.2f}s" for k in stages[0]))


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
    pilot = dict(zip(params, sm.sgd_update(tensors, grads, lr=args.lr)[:-1]))
    t["sgd_in_graph"], t0 = time.perf_counter() - t0, time.perf_counter()
    student.eval()
    outer = sm.simulation_loss(torch.func.functional_call(student, pilot, (batch["inputs"],))["logits"], y)
    student.train()
    t["outer_fwd"], t0 = time.perf_counter() - t0, time.perf_counter()
    torch.autograd.grad(outer, phi_T)
    t["outer_bwd"] = time.perf_counter() - t0
    return t


if __name__ == "__main__":
    main()
