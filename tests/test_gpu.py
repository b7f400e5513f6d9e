"""CPU vs CUDA: one training step of every method on a tiny random model gives the same loss and gradients (within
1e-4 relative), and every script's quick config runs end to end on CUDA. Skipped where CUDA is absent.

    python -m pytest -m gpu          # on a machine with a GPU (bench/gpu_check.sh runs this first)
"""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import common

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (a GPU)")]
ROOT = Path(__file__).resolve().parents[1]
RTOL = 1e-4


@pytest.fixture(scope="module")
def nodrop_model(tmp_path_factory):
    """A tiny random BERT without dropout (dropout masks come from each device's own RNG)."""
    from transformers import BertConfig, BertModel
    tok = common.load_tokenizer(None)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    path = tmp_path_factory.mktemp("nodrop-bert")
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def close(cpu, gpu, what):
    """Every tensor or number of two dicts agrees between CPU and CUDA within 1e-4 relative, above an absolute floor
    for quantities that are 0 in exact arithmetic and so only rounding noise in float32: 1e-6 for losses and other
    values (a KL between two nearly equal distributions is ~1e-6), and 1e-6 x the norm of all gradients for gradient
    tensors (the key biases' gradient is exactly 0: softmax is shift-invariant)."""
    grad_norm = sum(float(torch.as_tensor(v, dtype=torch.float64).norm() ** 2) for k, v in cpu.items()
                    if k.startswith("grad:")) ** 0.5
    for k in cpu:
        a, b = torch.as_tensor(cpu[k], dtype=torch.float64), torch.as_tensor(gpu[k], dtype=torch.float64).cpu()
        floor = 1e-6 * grad_norm if k.startswith("grad:") else 1e-6
        err = float((a - b).norm())
        assert err <= RTOL * float(a.norm()) + floor, \
            f"{what}: {k} differs by {err:.2e} (norm {float(a.norm()):.2e}) between CPU and CUDA"


def grads(model) -> dict:
    return {f"grad:{n}": p.grad.detach().cpu().clone() for n, p in model.named_parameters() if p.grad is not None}


def uimer_setup(nodrop_model, tiny_data, task, device):
    tok = common.load_tokenizer(nodrop_model)
    data = common.load_uimer_task(task, tiny_data, "1" if task != "nli" else "6", 55, tok, 40)
    torch.manual_seed(0)
    labels = len(data["labels"])
    model = common.TaskModel(common.load_encoder(nodrop_model), task, labels, 0.0).to(device).train()
    batch = common.batches(data["train"], 8, tok.pad_token_id, device=device)[0]
    return tok, data, model, batch


@pytest.mark.parametrize("task", ["ic", "sf", "nli"])
def test_im_loss_and_gradients_equal_on_cpu_and_cuda(nodrop_model, tiny_data, task):
    import uimer_im as im
    out = {}
    for device in ("cpu", "cuda"):
        tok, data, model, batch = uimer_setup(nodrop_model, tiny_data, task, device)
        args = im.resolve(im.parse_args(["--task", task, "--strategy", "uniform", "--device", device]))
        info = im.token_info(tok, [e["input_ids"] for e in data["train"]])
        sets = im.build_replacement_sets(data["train"], torch.Generator().manual_seed(0), info, strategy=args.strategy,
                                         num_samples=args.num_samples, replace_cap=args.replace_cap,
                                         max_rationale_fraction=args.max_rationale_fraction)
        L_int, n = im.im_loss(model, batch, sets, epsilon=args.epsilon, lower_bound=args.lower_bound)
        L = model.task_loss(model(batch), batch) + args.alpha * L_int
        L.backward()
        out[device] = {"L": L.item(), "L_int": L_int.item(), **grads(model)}
        assert n > 0
    close(out["cpu"], out["cuda"], f"IM {task}")


@pytest.mark.parametrize("variant", [["--variant", "ghaeini", "--wrt", "embedding-output"],
                                     ["--variant", "huang", "--gate", "--order"]])
def test_gb_double_backward_equal_on_cpu_and_cuda(nodrop_model, tiny_data, variant):
    import uimer_gb as gb
    out = {}
    for device in ("cpu", "cuda"):
        tok, data, model, batch = uimer_setup(nodrop_model, tiny_data, "sf", device)
        args = gb.resolve(gb.parse_args(["--task", "sf", *variant, "--device", device]))
        special = torch.tensor(sorted(set(tok.all_special_ids)), device=device)
        L_task, L_int, n = gb.gb_loss(model, batch, special, torch.Generator().manual_seed(0), variant=args.variant,
                                      gate=args.gate, order=args.order, guard=args.guard, wrt=args.wrt)
        (L_task + L_int).backward()
        out[device] = {"L_task": L_task.item(), "L_int": L_int.item(), **grads(model)}
    close(out["cpu"], out["cuda"], f"GB {variant}")


def test_dm_gates_losses_and_gradients_equal_on_cpu_and_cuda(nodrop_model, tiny_data):
    import uimer_dm as dm
    out = {}
    for device in ("cpu", "cuda"):
        tok, data, model, batch = uimer_setup(nodrop_model, tiny_data, "ic", device)
        args = dm.resolve(dm.parse_args(["--task", "ic", "--device", device]))
        special = torch.tensor(sorted(set(tok.all_special_ids)), device=device)
        torch.manual_seed(1)
        mask_row = model.embed(torch.tensor([tok.mask_token_id], device=device))[0]
        ext = dm.Extractor(model.encoder.config.hidden_size, model.encoder.config.num_hidden_layers + 2,
                           mask_row.cpu()).to(device)
        gen = torch.Generator().manual_seed(0)
        content = common.content_mask(batch, special)
        loss_phi, KL, L0 = dm.extractor_loss(model, ext, batch, content, 2, gen, kl_margin=args.kl_margin, l0=args.l0)
        loss_phi.backward()
        g_ext = {f"grad:ext.{n}": p.grad.detach().cpu().clone() for n, p in ext.named_parameters()
                 if p.grad is not None}
        ext.requires_grad_(False)
        model.zero_grad()
        a, _ = dm.gates(ext, dm.encode(model, batch)[1], content, len(ext.probes) - 1, torch.Generator().manual_seed(3))
        L_task, L_int, n = dm.dm_loss(model, ext, batch, special, torch.Generator().manual_seed(3), guard=args.guard)
        (L_task + L_int).backward()
        out[device] = {"gates": a.detach().cpu(), "KL": KL.cpu(), "L0": L0.cpu(), "L_int": L_int.item(), **g_ext,
                       **grads(model)}
    close(out["cpu"], out["cuda"], "DM")


def test_regex_igr_vat_ig_egt_equal_on_cpu_and_cuda(nodrop_model):
    import regex_robust as rx
    tok = common.load_tokenizer(nodrop_model)
    ex = [rx.encode_text(tok, s.split(), 32, y, i) for i, (s, y) in enumerate(
        [("a warm funny engaging film", 1), ("the plot is boring and slow", 0), ("great acting", 1)])]
    out = {}
    for device in ("cpu", "cuda"):
        args = rx.resolve(rx.parse_args(["--device", device, "--ig-steps", "5"]))
        torch.manual_seed(0)
        model = common.TaskModel(common.load_encoder(nodrop_model), "cls", 2, 0.0).to(device)
        clf = rx.as_classifier(model, tok)
        batch = common.to_device(common.collate(ex, tok.pad_token_id), device)
        model.train()
        torch.manual_seed(5)  # the VAT start direction is drawn from the CPU RNG
        L, rec = rx.train_step(clf, batch, args, egt_on=True)
        L.backward()
        e = clf.embed(batch["input_ids"]).detach()
        model.eval()
        ig = rx.integrated_gradients(clf, batch, e, rx.baseline_embeddings(clf, batch, e, "zero"),
                                     torch.tensor([1, 0, 1], device=device), 5)
        out[device] = {**{k: v for k, v in rec.items() if k.startswith("L")}, "ig": ig.cpu(), **grads(model)}
    assert {"L_IGR", "L_VAT", "L_EGT"} <= set(out["cpu"])
    close(out["cpu"], out["cuda"], "REGEX")


def test_smat_meta_gradient_equal_on_cpu_and_cuda(nodrop_model):
    import smat_jax_free as sm
    tok = common.load_tokenizer(nodrop_model)
    rows = [{"text": t, "label": y} for t, y in [("a warm funny film", 1), ("boring", 0), ("great acting and plot", 1),
                                                 ("the worst script ever written", 0)]]
    out = {}
    for device in ("cpu", "cuda"):
        args = sm.resolve(sm.parse_args(["--setup", "smat", "--device", device]))
        torch.manual_seed(0)
        teacher = sm.build_model(nodrop_model, "imdb", device).eval()
        student = sm.build_model(nodrop_model, "imdb", device).train()
        ex = sm.encode(rows, tok, 16)
        batch = next(sm.iterate_batches(ex, 4, tok.pad_token_id, device=device))
        y = sm.predict(teacher, ex, 4, tok.pad_token_id, None)
        with torch.no_grad():
            s_T = sm.head_scores(teacher(batch["inputs"]), teacher.num_heads)
        n = s_T.shape[1]
        phi_S = torch.nn.Parameter(torch.full((n,), 1.0 / n, device=device))
        phi_T = torch.nn.Parameter(torch.linspace(0.0, 0.2, n, device=device))
        e_T, _ = sm.attention_explanation(s_T, phi_T.detach(), args.head_normalizer, batch["inputs_mask"])
        losses = sm.student_step(student, phi_S, batch, y, e_T, args, False)
        g, outer = sm.meta_gradient(student, phi_S, phi_T, batch, y, s_T, batch, y, args)
        out[device] = {"L": losses[0], "L_expl": losses[2], "outer": outer, "grad:metagrad": g.cpu(),
                       "phi_S": phi_S.detach().cpu()}
    close(out["cpu"], out["cuda"], "SMaT")


QUICK = {  # each script's quick config on the tiny model and tiny data, on CUDA
    "uimer_im.py": ["--task", "ic", "--shots", "1", "--strategy", "uniform", "--max-epochs", "2"],
    "uimer_gb.py": ["--task", "sf", "--shots", "1", "--variant", "huang", "--order", "--max-epochs", "2"],
    "uimer_dm.py": ["--task", "ic", "--shots", "1", "--schedule", "one-pass", "--warmup-epochs", "1",
                    "--max-epochs", "1", "--extractor-epochs", "1"],
    "regex_robust.py": ["--task", "sst2", "--igr", "--egt", "--max-epochs", "1", "--ig-steps", "3", "--egt-start", "0",
                        "--attributions", "random,attention,ig,deeplift"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", list(QUICK))
def test_quick_config_runs_end_to_end_on_cuda(script, tiny_model, tiny_data, tmp_path):
    if script == "regex_robust.py":
        from test_regex import write_tiny_text_data
        write_tiny_text_data(tiny_data)
    p = subprocess.run([sys.executable, str(ROOT / script), *QUICK[script], "--model", tiny_model, "--data-dir",
                        str(tiny_data), "--out-dir", str(tmp_path), "--device", "cuda"], capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = next(tmp_path.rglob("config.json")).read_text()
    assert '"device": "cuda:0"' in cfg
    assert next(tmp_path.rglob("results.json")).is_file() and next(tmp_path.rglob("predictions.jsonl")).is_file()


@pytest.mark.slow
def test_smat_teacher_and_smat_student_run_on_cuda(tiny_model, tmp_path):
    from test_smat import write_tiny_imdb
    data = write_tiny_imdb(tmp_path / "d")
    base = [sys.executable, str(ROOT / "smat_jax_free.py"), "--task", "imdb", "--data-dir", str(data), "--out-dir",
            str(tmp_path / "runs"), "--device", "cuda", "--max-len", "32", "--imdb-split-sizes", "8,8,8"]
    p = subprocess.run(base + ["--setup", "teacher", "--model", tiny_model, "--max-epochs", "1"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    p = subprocess.run(base + ["--setup", "smat", "--num-examples", "8", "--max-epochs", "1"], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert any("smat-attention_all" in str(f) for f in (tmp_path / "runs").rglob("results.json"))


def test_cuda_runs_are_repeatable_for_one_seed(nodrop_model, tiny_data, tmp_path):
    """Two CUDA runs of one seed with the deterministic settings: the same results.json bytes (on the same GPU and
    software)."""
    import uimer_gb as gb
    argv = ["--task", "ic", "--shots", "1", "--variant", "huang", "--order", "--max-epochs", "3", "--model",
            nodrop_model, "--data-dir", str(tiny_data), "--device", "cuda"]
    a = gb.main(gb.parse_args(argv + ["--out-dir", str(tmp_path / "a")]))
    b = gb.main(gb.parse_args(argv + ["--out-dir", str(tmp_path / "b")]))

    def read(r):
        return (Path(r["run_dir"]) / "results.json").read_text().replace(r["run_dir"], "")

    assert read(a) == read(b)
