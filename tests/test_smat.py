"""SMaT (smat_jax_free.py): parity with the original JAX code, the math against independent computations,
the original's IMDB splits, smoke runs of every setup / explainer / task (with their explanations.jsonl), same
seed -> same result, bad inputs. Your own data and the own-loop term: tests/test_smat_own_data.py."""
import functools
import io
import itertools
import json
import math
import platform
import random
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

import common
import smat_jax_free as sm

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "smat_jax_reference"


# ---------------------------------------------------------------------------------------------- parity fixture
def tiny_electra_config():
    from transformers import ElectraConfig
    cfg = json.loads((FIXTURE / "tiny_electra_config.json").read_text())
    cfg = ElectraConfig(**{k: v for k, v in cfg.items() if k != "transformers_version"})
    cfg._attn_implementation = "eager"
    return cfg


def flax_to_torch(ref, prefix: str) -> dict:
    """The fixture's Flax weights as a state dict of sm.Model: `kernel` (in, out) -> Linear.weight (out, in)
    (transposed), `embedding`/`scale` -> weight, scalarmix/{coeffs, gamma} -> mix_coeffs, gamma."""
    sd = {}
    for key in ref.files:
        if not key.startswith(prefix + "/params/"):
            continue
        name, v = key[len(prefix) + 8:], torch.tensor(ref[key])
        if name.startswith("scalarmix/"):
            sd[{"scalarmix/coeffs": "mix_coeffs", "scalarmix/gamma": "gamma"}[name]] = v
            continue
        name = name.replace("electra_module/electra/", "encoder/").replace("electra_module/classifier/", "")
        *path, leaf = name.split("/")
        sd[".".join(path) + "." + ("bias" if leaf == "bias" else "weight")] = v.T if leaf == "kernel" else v
    return sd


def fixture_model(ref, prefix: str, dtype=torch.float32) -> sm.Model:
    from transformers import ElectraModel
    model = sm.Model(ElectraModel(tiny_electra_config()), 2, image=False)
    model.load_state_dict(flax_to_torch(ref, prefix), strict=True)
    return model.to(dtype)


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE / "smat_tiny_electra_ref.npz")


def fixture_batch(ref, which="input"):
    inputs = {k: torch.tensor(ref[f"{which}/{k}"]).long() for k in ("input_ids", "attention_mask", "token_type_ids")}
    return {"inputs": inputs, "inputs_mask": inputs["attention_mask"].float()}


def close(got, want, atol=1e-5, rtol=1e-5):
    got, want = torch.as_tensor(got).double(), torch.as_tensor(np.asarray(want)).double()
    assert got.shape == want.shape, (got.shape, want.shape)
    assert torch.allclose(got, want, atol=atol, rtol=rtol), f"max abs diff {(got - want).abs().max():.3g}"


def test_parity_with_the_original_jax_implementation(ref):
    """The script's functions on the fixture's tiny ELECTRA (stock transformers.ElectraModel, Flax weights)
    reproduce the original code's outputs: forward pass, attention logits, all explainers, the student step,
    the meta-gradient through the pilot step, the outer Adam step and a 3-step trajectory."""
    teacher, student = fixture_model(ref, "teacher").eval(), fixture_model(ref, "student").train()
    batch, vbatch = fixture_batch(ref), fixture_batch(ref, "valid_input")
    mask = batch["inputs_mask"]
    with torch.no_grad():
        out = teacher(batch["inputs"])
    close(out["logits"], ref["out/teacher_logits"])
    m = mask[:, None, :, None]
    close(torch.stack(out["states"], 1) * m, torch.tensor(ref["out/teacher_hidden_states"]) * m)  # pads: unused
    close(sm.full_attention_logits(out, 2), ref["out/teacher_attn_logits_all"])  # via hooks on query/key
    s_T = sm.head_scores(out, 2)
    phi_T = torch.nn.Parameter(torch.tensor(ref["teacher_expl/params/head_coeffs"]))
    expl, z = sm.attention_explanation(s_T, phi_T.detach(), "sparsemax", mask)
    close(expl, ref["out/teacher_attention_expl"])
    close(z, ref["out/teacher_attention_expl_logits"])
    for kind, name, temperature in (("gradient_l2", "gradient_norm_explainer", 1.0),
                                    ("gradient_x_input", "gradient_input_explainer", 0.1),
                                    ("integrated_gradients", "integrated_gradients_explainer", 0.5)):
        z = sm.gradient_explanation_logits(teacher, batch["inputs"], kind, ig_variant="original", ig_steps=10)
        close(z * temperature, ref[f"out/{name}_logits"] * temperature)  # g.e to 1e-5 (before the 1/temperature)
        close(sm.saliency(z, mask), ref[f"out/{name}"])

    args = sm.resolve(sm.parse_args(["--setup", "smat", "--task", "imdb"]))
    assert (args.beta, args.meta_lr) == (5.0, 5e-4)
    phi_S = torch.nn.Parameter(torch.tensor(ref["student_expl/params/head_coeffs"]))
    y, vy = out["logits"].argmax(-1), teacher(vbatch["inputs"])["logits"].argmax(-1)
    meta_opt = sm.OptaxAdam([phi_T], args.meta_lr, wd=0.0, max_norm=sm.META_CLIP)
    trajectory = []
    for it in range(4):
        e_T, _ = sm.attention_explanation(s_T, phi_T.detach(), "sparsemax", mask)
        losses = sm.student_step(student, phi_S, batch, y, e_T, args, last_layer_only=False)
        g, _ = sm.meta_gradient(student, phi_S, phi_T, batch, y, s_T, vbatch, vy, args)
        if it == 0:
            close(losses, [float(ref[f"out/step1_{k}_loss"]) for k in ("total", "main", "expl")])
            close(phi_S.detach(), ref["out/student_expl_head_coeffs_after_step1"])
            close(g, ref["out/metagrad_head_coeffs"], atol=1e-7)
            assert abs(g.sum()) < 1e-7  # sparsemax Jacobian at uniform phi is I - 11^T/n: the entries sum to 0
        meta_opt.step([g])
        if it == 0:
            close(phi_T.detach(), ref["out/head_coeffs_after_meta_step"])
        else:
            trajectory.append((losses, phi_T.detach().clone()))
    close([t[0] for t in trajectory], ref["out/traj_losses_total_main_expl"])
    close(torch.stack([t[1] for t in trajectory]), ref["out/traj_teacher_head_coeffs"])


def test_hooked_attention_logits_are_the_models_own(ref):
    """softmax of the logits rebuilt from the hooked query/key projections = HF's attention probabilities."""
    teacher = fixture_model(ref, "teacher").eval()
    batch = fixture_batch(ref)
    with torch.no_grad():
        out = teacher(batch["inputs"])
        hf = teacher.encoder(**batch["inputs"], output_attentions=True).attentions
    A = sm.full_attention_logits(out, 2).softmax(-1)
    rows = batch["inputs_mask"][:, None, :, None].bool()
    for layer, probs in enumerate(hf):
        assert torch.allclose(A[:, layer].masked_fill(~rows, 0), probs.masked_fill(~rows, 0), atol=1e-6)


def test_meta_gradient_equals_finite_difference(ref):
    """d outer / d phi_T through the pilot step (float64 tiny ELECTRA, no dropout) vs central differences."""
    student = fixture_model(ref, "student", torch.float64).train()
    teacher = fixture_model(ref, "teacher", torch.float64)
    batch, vbatch = fixture_batch(ref), fixture_batch(ref, "valid_input")
    batch["inputs_mask"], vbatch["inputs_mask"] = batch["inputs_mask"].double(), vbatch["inputs_mask"].double()
    args = sm.resolve(sm.parse_args(["--setup", "smat"]))
    with torch.no_grad():
        out = teacher(batch["inputs"])
        s_T, y, vy = sm.head_scores(out, 2), out["logits"].argmax(-1), teacher(vbatch["inputs"])["logits"].argmax(-1)
    phi_S = torch.full((4,), 0.25, dtype=torch.float64, requires_grad=True)
    phi_T = torch.tensor([0.31, 0.22, 0.27, 0.20], dtype=torch.float64, requires_grad=True)  # all heads in the support
    g, _ = sm.meta_gradient(student, phi_S, phi_T, batch, y, s_T, vbatch, vy, args)

    def outer(phi):  # the same pilot step, evaluated without any second-order machinery
        params = dict(student.named_parameters())
        e_T, _ = sm.attention_explanation(s_T, phi, "sparsemax", batch["inputs_mask"])
        L, _, _ = sm.student_objective(student, params, phi_S, batch, y, e_T, args.beta, False, "sparsemax")
        grads = torch.autograd.grad(L, list(params.values()) + [phi_S], allow_unused=True)
        pilot = dict(zip(params, sm.sgd_update(list(params.values()) + [phi_S], grads, lr=args.lr)[:-1], strict=True))
        student.eval()
        loss = sm.simulation_loss(torch.func.functional_call(student, pilot, (vbatch["inputs"],))["logits"], vy)
        student.train()
        return loss.item()

    eps = 1e-5
    fd = [(outer(phi_T.detach() + eps * e) - outer(phi_T.detach() - eps * e)) / (2 * eps)
          for e in torch.eye(4, dtype=torch.float64)]
    assert torch.allclose(g, torch.tensor(fd, dtype=torch.float64), atol=1e-7, rtol=1e-4), (g, fd)
    assert g.abs().max() > 1e-4


# ---------------------------------------------------------------------------------------------- normalisers
def brute_force_simplex_projection(z):
    """argmin_{p in simplex} ||p - z||^2 by trying every support S: p_S = z_S - tau, tau = (sum z_S - 1)/|S|."""
    best, n = None, len(z)
    for r in range(1, n + 1):
        for S in itertools.combinations(range(n), r):
            tau = (sum(z[i] for i in S) - 1) / r
            p = [z[i] - tau if i in S else 0.0 for i in range(n)]
            if min(p) < -1e-12:
                continue
            dist = sum((a - b) ** 2 for a, b in zip(p, z, strict=True))
            if best is None or dist < best[0]:
                best = (dist, p)
    return best[1]


def test_sparsemax_equals_brute_force_projection_and_its_jacobian():
    g = torch.Generator().manual_seed(0)
    for trial in range(30):
        n = 2 + trial % 6
        z = torch.randn(n, generator=g, dtype=torch.float64) * (0.3 + trial / 10)
        p = sm.sparsemax(z)
        want = torch.tensor(brute_force_simplex_projection(z.tolist()), dtype=torch.float64)
        assert torch.allclose(p, want, atol=1e-12)
        J = torch.autograd.functional.jacobian(sm.sparsemax, z)
        s = (p > 0).double()
        assert torch.allclose(J, torch.diag(s) - torch.outer(s, s) / s.sum(), atol=1e-12)  # diag(s) - ss^T/|S|
        fd = torch.stack([(sm.sparsemax(z + 1e-7 * e) - sm.sparsemax(z - 1e-7 * e)) / 2e-7
                          for e in torch.eye(n, dtype=torch.float64)], 1)
        assert torch.allclose(J, fd, atol=1e-6)
    batched = torch.randn(3, 5, 7, generator=g)
    assert torch.allclose(sm.sparsemax(batched, dim=1)[1, :, 2], sm.sparsemax(batched[1, :, 2]))


def test_sparsemax_second_derivative_is_not_silently_zero():
    """Hessian of f(sparsemax(z)) (f nonlinear) by double backward = finite difference of the gradient, and != 0.
    (The `entmax` package, 1.3, gives this Hessian too; what it lacks is a usable second derivative of its entmax15:
    its backward differentiates sqrt(p), so double backward is NaN wherever an output p_i is 0.)"""
    c = torch.tensor([1.0, -2.0, 0.5, 3.0, 0.0], dtype=torch.float64)

    def f(z):
        return ((sm.sparsemax(z) ** 2) * c).sum() + torch.log1p(sm.sparsemax(z)).sum()

    def grad_f(x):
        return torch.autograd.grad(f(x), x, create_graph=True)[0]

    def grad_f_at(x):
        return grad_f(x.detach().requires_grad_())

    z = torch.tensor([0.3, 0.25, 0.1, 0.28, -0.5], dtype=torch.float64, requires_grad=True)
    assert ((sm.sparsemax(z) > 0).sum()) == 4  # a support of 4 out of 5
    g = grad_f(z)
    H = torch.stack([torch.autograd.grad(g[i], z, retain_graph=True)[0] for i in range(5)])
    fd = torch.stack([(grad_f_at(z + 1e-6 * e) - grad_f_at(z - 1e-6 * e)) / 2e-6
                      for e in torch.eye(5, dtype=torch.float64)], 1)
    assert torch.allclose(H, fd, atol=1e-6)
    assert H.abs().max() > 0.1


def test_entmax15_equals_bisection_and_other_normalisers():
    g = torch.Generator().manual_seed(1)
    for _ in range(10):
        z = torch.randn(6, generator=g, dtype=torch.float64) * 2
        lo, hi = (z / 2).max().item() - 1, (z / 2).max().item()  # p = [z/2 - tau]_+^2 sums to 1 at some tau in [lo, hi]
        for _ in range(200):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if torch.clamp(z / 2 - mid, min=0).pow(2).sum() > 1 else (lo, mid)
        assert torch.allclose(sm.entmax15(z), torch.clamp(z / 2 - lo, min=0) ** 2, atol=1e-9)
    phi = torch.full((4,), 0.25)
    for kind in ("sparsemax", "softmax", "entmax15"):
        assert torch.allclose(sm.normalize_heads(phi, kind), phi)  # uniform init = mean over heads
    assert torch.equal(sm.normalize_heads(torch.tensor([2.0, -1.0]), "none"), torch.tensor([2.0, -1.0]))


def bisection_reference(z, entmax15=False):
    """float64 sparsemax(z) = [z - tau]_+ or 1.5-entmax(z) = [z/2 - tau]_+^2 along the last dim, tau by bisection
    on sum_i p_i = 1 (the sum falls from >= 1 at tau = max - 1 to 0 at tau = max). Returns (p, tau)."""
    y = z.double() / 2 if entmax15 else z.double()

    def p_at(t):
        return torch.clamp(y - t, min=0) ** (2 if entmax15 else 1)

    lo, hi = y.amax(-1, keepdim=True) - 1, y.amax(-1, keepdim=True)
    for _ in range(200):
        mid = (lo + hi) / 2
        above = p_at(mid).sum(-1, keepdim=True) > 1
        lo, hi = torch.where(above, mid, lo), torch.where(above, hi, mid)
    return p_at(hi), hi


def closed_form_jacobians(p, entmax15=False):
    """sparsemax: diag(s) - s s^T / |S|, s = [p_i > 0]; 1.5-entmax: diag(g) - g g^T / sum(g), g = sqrt(p)."""
    g = p.sqrt() if entmax15 else (p > 1e-9).double()  # quantised inputs: nonzero p_i >= 1/(4n) for sparsemax
    return torch.diag_embed(g) - g[..., :, None] * g[..., None, :] / g.sum(-1)[..., None, None]


def batched_jacobians(fn, z):
    """(B, n, n) Jacobians of fn applied to each row of z (B, n): rows are independent, so d(sum_b fn(z)_b)/dz."""
    return torch.autograd.functional.jacobian(lambda x: fn(x).sum(0), z).permute(1, 0, 2)


def test_sparsemax_and_entmax15_at_ties_and_support_boundaries():
    J = torch.autograd.functional.jacobian
    z = torch.tensor([1.0, 0.0], dtype=torch.float64)  # tau = 0: z_2 sits on the support boundary
    assert torch.equal(sm.sparsemax(z), torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.equal(J(sm.sparsemax, z), torch.zeros(2, 2, dtype=torch.float64))  # z_2 counts as outside
    z3 = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # a tie on the boundary
    assert torch.equal(J(sm.sparsemax, z3), torch.zeros(3, 3, dtype=torch.float64))
    z = torch.tensor([2.0, 2.0, 0.0, 0.0, -1.0], dtype=torch.float64)  # ties inside and outside the support
    for fn, entmax15 in ((sm.sparsemax, False), (sm.entmax15, True)):
        p = fn(z)
        assert torch.allclose(p, torch.tensor([0.5, 0.5, 0, 0, 0], dtype=torch.float64), atol=1e-15)
        Jz = J(fn, z)
        assert torch.isfinite(Jz).all()
        assert torch.allclose(Jz, closed_form_jacobians(p, entmax15), atol=1e-12)
        zg = z.clone().requires_grad_()  # ties are smooth points (no support change): derivatives must check
        assert torch.autograd.gradcheck(fn, (zg,)) and torch.autograd.gradgradcheck(fn, (zg,))
    g = torch.tensor([0.5, 0.5, 0, 0, 0], dtype=torch.float64).sqrt()
    assert torch.allclose(J(sm.entmax15, z)[0, :2], torch.tensor([0.5, -0.5], dtype=torch.float64) * g[0])


def test_sparsemax_and_entmax15_on_quantised_inputs_equal_bisection_and_closed_form_jacobians():
    gen = torch.Generator().manual_seed(2)
    z = torch.cat([torch.randint(-6, 7, (300, 6), generator=gen).double() / 4,  # quarter and integer grids:
                   torch.randint(-3, 4, (300, 6), generator=gen).double()])      # ties and boundaries are common
    for fn, entmax15 in ((sm.sparsemax, False), (sm.entmax15, True)):
        p_ref, tau = bisection_reference(z, entmax15)
        on_boundary = ((z / (2 if entmax15 else 1) - tau).abs() < 1e-12).any(-1)
        assert on_boundary.sum() >= 20  # the inputs do exercise z_i = tau
        p = fn(z)
        assert torch.allclose(p, p_ref, atol=1e-12)
        Jz = batched_jacobians(fn, z)
        assert torch.isfinite(Jz).all()
        assert torch.allclose(Jz, closed_form_jacobians(p_ref, entmax15), atol=1e-7)
        assert Jz.sum(1).abs().max() < 1e-12 and Jz.sum(2).abs().max() < 1e-12  # sum p = 1; shift-invariance
        assert torch.allclose(fn(z.T, dim=0).T, p, atol=1e-15)


@pytest.mark.parametrize("name", ["sparsemax", "entmax15"])
def test_sparsemax_and_entmax15_with_large_offsets(name):
    """Shift-invariance. float64: offsets up to 1e6 change p by no more than the input's own rounding allows.
    float32: z + c is rounded to ulp(c)/2 (3e-5 at 1e3, 5e-4 at 1e4); p is 2-Lipschitz in the max-norm
    (max_i sum_j |J_ij| <= 2), so |p(z + c) - p(z)| <= 2 max|dz| with dz the rounding of the input; p itself must
    still sum to 1 to 1e-5 and equal the float64 reference on the rounded input."""
    fn, entmax15 = getattr(sm, name), name == "entmax15"
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(50, 7, generator=gen, dtype=torch.float64) * 1.5
    p = fn(z)
    for c in (1e2, 1e4, 1e6, -1e6):
        dz = ((z + c) - c - z).abs().max().item()  # float64 rounding of the input, <= 6e-11 at 1e6
        assert (fn(z + c) - p).abs().max() <= 2 * dz + 1e-14, c
    z32 = z.float()
    p32 = fn(z32)
    for c in (1e3, -1e3, 1e4):
        zc = z32 + c
        dz = (zc.double() - c - z32.double()).abs().max().item()  # exact in float64
        assert 0 < dz <= abs(c) * torch.finfo(torch.float32).eps  # |z| < 8: dz <= eps/2 |z + c|
        pc = fn(zc)
        assert (pc.double().sum(-1) - 1).abs().max() < 1e-5, c
        assert (pc - p32).abs().max().item() <= 2 * dz + 2e-6, c
        assert torch.allclose(pc.double(), bisection_reference(zc.double() - c, entmax15)[0], atol=1e-6), c


def test_sparsemax_and_entmax15_gradcheck_and_gradgradcheck():
    gen = torch.Generator().manual_seed(4)
    for shape, dim in (((5,), -1), ((3, 4), 0), ((2, 3, 6), 1), ((2, 6), -1)):
        z = torch.randn(*shape, generator=gen, dtype=torch.float64) * 2
        for fn, entmax15 in ((sm.sparsemax, False), (sm.entmax15, True)):
            _, tau = bisection_reference(z.movedim(dim, -1), entmax15)
            y = z.movedim(dim, -1) / (2 if entmax15 else 1)
            assert (y - tau).abs().min() > 1e-4  # generic: no z_i within gradcheck's eps (1e-6) of the boundary
            assert (fn(z, dim) == 0).any()  # partial supports
            zg = z.clone().requires_grad_()
            along_dim = functools.partial(fn, dim=dim)
            assert torch.autograd.gradcheck(along_dim, (zg,))
            assert torch.autograd.gradgradcheck(along_dim, (zg,))


def test_sparsemax_and_entmax15_equal_the_entmax_package():
    """Value and Jacobian equal those of `entmax` (not in requirements.txt: pip install entmax==1.3 to run this),
    at generic points and on quantised inputs with ties and boundaries."""
    entmax = pytest.importorskip("entmax", reason="the `entmax` package is not installed (optional reference)")
    gen = torch.Generator().manual_seed(5)
    zs = (torch.randn(40, 6, generator=gen, dtype=torch.float64) * 2,
          torch.randint(-6, 7, (40, 6), generator=gen).double() / 4)
    for z in zs:
        for ours, theirs in ((sm.sparsemax, entmax.sparsemax), (sm.entmax15, entmax.entmax15)):
            assert torch.allclose(ours(z), theirs(z, dim=-1), atol=1e-12)
            assert torch.allclose(batched_jacobians(ours, z), batched_jacobians(functools.partial(theirs, dim=-1), z),
                                  atol=1e-12)
        assert torch.allclose(sm.entmax15(z.T, dim=0), entmax.entmax15(z.T, dim=0), atol=1e-12)


# ---------------------------------------------------------------------------------------------- explainers, losses
def test_explanation_loss_equals_hand_computed_kl():
    t = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.7, 0.3, 0.0, 0.0]])
    s = torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.0, 1.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])

    def clip(p):
        return min(max(p, 1e-7), 1 - 1e-7)

    want = [sum(tt * (math.log(clip(tt)) - math.log(clip(ss))) for tt, ss, m in zip(tr, sr, mr, strict=True)
                if m and tt > 0)
            for tr, sr, mr in zip(t.tolist(), s.tolist(), mask.tolist(), strict=True)]
    assert abs(sm.explanation_loss(t, s, mask).item() - sum(want) / 2) < 1e-6
    assert want[1] > 5  # the clip keeps log(0) finite: 0.7 * (log 0.7 - log 1e-7)


def test_attention_explainer_equals_naive_loop_over_heads_and_rows(ref):
    """Eq. 11 from the script (mean over rows on the queries first) vs a loop over layers, heads, rows, columns."""
    model = fixture_model(ref, "student").eval()
    batch = fixture_batch(ref)
    with torch.no_grad():
        out = model(batch["inputs"])
    mask, H = batch["inputs_mask"], 2
    phi = torch.tensor([0.6, -0.1, 0.3, 0.2])
    for last in (False, True):
        lam = sm.sparsemax(phi[-H:] if last else phi)
        expl, z = sm.attention_explanation(sm.head_scores(out, H, last), phi[-H:] if last else phi, "sparsemax", mask)
        layers = [len(out["q"]) - 1] if last else range(len(out["q"]))
        for b in range(mask.shape[0]):
            n = int(mask[b].sum())
            zb = [0.0] * n
            for j, (layer, h) in enumerate(itertools.product(layers, range(H))):
                q = out["q"][layer][b].view(-1, H, 16)[:, h].double()
                k = out["k"][layer][b].view(-1, H, 16)[:, h].double()
                for t in range(n):
                    s_ht = sum(float(q[i] @ k[t]) / 4.0 for i in range(n)) / n  # mean over the n non-pad rows
                    zb[t] += float(lam[j]) * s_ht
            want = torch.softmax(torch.tensor(zb), 0)
            assert torch.allclose(z[b, :n].double(), torch.tensor(zb, dtype=torch.float64), atol=1e-5)
            assert torch.allclose(expl[b, :n], want.float(), atol=1e-6) and expl[b, n:].sum() == 0


def test_precomputed_teacher_signals_equal_the_direct_computation(ref):
    """train_student's glue: teacher_signals (per example, cut to its length, computed in length-sorted batches)
    re-padded by batch_signal into a training batch of another composition give the same teacher explanation
    as computing it directly on that batch (attention: s^h then Eq. 11; gradient explainers: the saliency)."""
    teacher = fixture_model(ref, "teacher").eval()
    ids, att = torch.tensor(ref["input/input_ids"]).long(), torch.tensor(ref["input/attention_mask"]).long()
    lengths = [int(n) for n in att.sum(1)]
    examples = [{"index": i, "input_ids": ids[i, :n].tolist(), "token_type_ids": [0] * n, "label": 0}
                for i, n in enumerate(lengths)]
    phi = torch.tensor([0.5, 0.1, 0.3, 0.1])
    for explainer in ("attention_all", "attention_last", "gradient_l2", "integrated_gradients"):
        args = sm.resolve(sm.parse_args(["--setup", "student", "--explainer", explainer, "--eval-batch-size", "3",
                                         "--ig-steps", "4"]))
        last = explainer == "attention_last"
        signals = sm.teacher_signals(teacher, examples, args, 0, None, last)
        batch = sm.collate_model_batch([examples[i] for i in (2, 0, 3)], 0)  # not the order teacher_signals used
        mask, T = batch["inputs_mask"], batch["inputs_mask"].shape[1]
        if explainer.startswith("attention"):
            p = phi[-2:] if last else phi
            with torch.no_grad():
                scores = sm.head_scores(teacher(batch["inputs"]), 2, last)
                want, _ = sm.attention_explanation(scores, p, "sparsemax", mask)
            got, _ = sm.attention_explanation(sm.batch_signal(signals, batch["index"], T, sm.NEG), p, "sparsemax", mask)
        else:
            z = sm.gradient_explanation_logits(teacher, batch["inputs"], explainer, ig_steps=4)
            want, got = sm.saliency(z.detach(), mask), sm.batch_signal(signals, batch["index"], T, 0.0)
        assert torch.allclose(got, want, atol=1e-6), explainer
        assert torch.equal(got[mask == 0], torch.zeros(int((mask == 0).sum())))


def test_integrated_gradients_standard_is_complete(tiny_model):
    """Standard IG: sum over tokens of the attributions = f(e) - f(0) (completeness), as the steps grow."""
    model = sm.Model(common.load_encoder(tiny_model), 2, image=False).double().eval()
    with torch.no_grad():  # non-zero biases: at the zero baseline LayerNorm would otherwise see variance 0
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    tok = common.load_tokenizer(tiny_model)
    enc = sm.encode([{"text": "a gripping film", "label": 1}, {"text": "dull and far too long", "label": 0}], tok, 32)
    batch = sm.collate_model_batch(enc, tok.pad_token_id)
    z = sm.gradient_explanation_logits(model, batch["inputs"], "integrated_gradients", "standard", ig_steps=101)
    with torch.no_grad():
        out = model(batch["inputs"])
        y = out["logits"].argmax(-1)
        f_x = out["logits"].gather(1, y[:, None])[:, 0]
        at_zero = model(batch["inputs"], embeddings=torch.zeros_like(out["states"][0]))["logits"]
        f_0 = at_zero.gather(1, y[:, None])[:, 0]
    attributions = (0.5 * z * batch["inputs_mask"]).sum(-1)  # z = attribution / temperature 0.5
    assert torch.allclose(attributions, f_x - f_0, rtol=2e-3, atol=1e-4), (attributions, f_x - f_0)
    assert (f_x - f_0).abs().min() > 1e-3
    alphas, w = sm.ig_path(10, "original")
    assert abs(w.sum() - 0.9) < 1e-6 and alphas.max() < 0.1  # the original's quirk, kept behind --ig-variant original


def test_student_step_is_clipped_sgd_with_weight_decay_at_the_given_lr(ref):
    """Eqs. 6-7: p <- p - lr (g * min(1, 5 / ||g||) + 0.01 p), the norm over (theta, phi_S) jointly; --lr is used."""
    args = sm.resolve(sm.parse_args(["--setup", "student", "--lr", "0.3", "--beta", "5"]))
    model, teacher = fixture_model(ref, "student").train(), fixture_model(ref, "teacher").eval()
    batch = fixture_batch(ref)
    with torch.no_grad():
        out = teacher(batch["inputs"])
        e_T, _ = sm.attention_explanation(sm.head_scores(out, 2), torch.full((4,), 0.25), "sparsemax",
                                          batch["inputs_mask"])
    phi_S = torch.nn.Parameter(torch.tensor([0.4, 0.1, 0.3, 0.2]))
    before = [p.detach().clone() for p in model.parameters()] + [phi_S.detach().clone()]
    out_s = model(batch["inputs"])
    e_S, _ = sm.attention_explanation(sm.head_scores(out_s, 2), phi_S, "sparsemax", batch["inputs_mask"])
    L = torch.nn.functional.cross_entropy(out_s["logits"], out["logits"].argmax(-1)) + 5 * sm.explanation_loss(
        e_T, e_S, batch["inputs_mask"])
    g = torch.autograd.grad(L, list(model.parameters()) + [phi_S], allow_unused=True)
    g = [torch.zeros_like(b) if x is None else x for x, b in zip(g, before, strict=True)]
    norm = math.sqrt(sum(float((x ** 2).sum()) for x in g))
    scale = min(1.0, 5.0 / norm)
    sm.student_step(model, phi_S, batch, out["logits"].argmax(-1), e_T, args, last_layer_only=False)
    for b, x, p in zip(before, g, list(model.parameters()) + [phi_S], strict=True):
        assert torch.allclose(p.detach(), b - 0.3 * (x * scale + 0.01 * b), atol=1e-6)
    assert norm > 5  # the clip was active


def test_optax_adam_matches_hand_written_update():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = sm.OptaxAdam([p], lr=0.1, wd=0.01, max_norm=1.0, warmup=2)
    g = torch.tensor([3.0, 4.0])  # norm 5 -> clipped to norm 1
    opt.step([g])
    gc = g / 5
    m, v = 0.1 * gc, 0.001 * gc ** 2
    upd = (m / 0.1) / (torch.sqrt(v / 0.001 + 1e-8) + 1e-8) + 0.01 * torch.tensor([1.0, -2.0])
    assert torch.allclose(p.detach(), torch.tensor([1.0, -2.0]) - 1e-6 * upd)  # step 0 of the warm-up: lr 1e-6
    assert opt.lr_at(1) == pytest.approx(1e-6 + (0.1 - 1e-6) / 2) and opt.lr_at(5) == 0.1


# ---------------------------------------------------------------------------------------------- splits
def original_load_data(train, test, setup, split, teacher_valid_size, student_valid_size, student_test_size, seed=0):
    """The original smat/data/imdb.py load_data, on lists instead of the HF dataset."""
    data = list(train if (setup == "no_teacher" and split == "train") else test)
    np.random.RandomState(seed).shuffle(data)
    if setup == "no_teacher":
        return data if split == "train" else data[:teacher_valid_size]
    dev = student_test_size + student_valid_size
    return {"train": data[teacher_valid_size:-dev], "valid": data[-dev:-student_test_size],
            "test": data[-student_test_size:]}[split]


def write_tiny_imdb(root: Path, n_train=80, n_test=100, seed=0) -> Path:
    rng = random.Random(seed)
    pos, neg = "great wonderful superb loved brilliant".split(), "awful boring terrible hated dull".split()
    d = root / "imdb"
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for i in range(n):
            words = [rng.choice(pos if i % 2 else neg) for _ in range(rng.randint(2, 8))] + \
                    [rng.choice("the a movie film plot actor".split()) for _ in range(rng.randint(2, 8))]
            rng.shuffle(words)
            rows.append({"id": f"{split}/{i}", "text": " ".join(words) + "<br /><br />end", "label": i % 2})
        (d / f"imdb_{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_imdb_splits_exactly_as_the_original(tmp_path):
    write_tiny_imdb(tmp_path)
    train, test = common.read_imdb(tmp_path, "train"), common.read_imdb(tmp_path, "test")
    assert "<br />" not in train[0]["text"] and train[0]["text"].endswith(" end")
    sizes = dict(teacher_valid_size=40, student_valid_size=10, student_test_size=20)
    t = sm.imdb_splits(train, test, "teacher", **sizes)
    assert t["train"] == original_load_data(train, test, "no_teacher", "train", **sizes)
    assert t["valid"] == original_load_data(train, test, "no_teacher", "valid", **sizes)
    s = sm.imdb_splits(train, test, "student", **sizes)
    for split in ("train", "valid", "test"):
        assert s[split] == original_load_data(train, test, "static_teacher", split, **sizes)
    assert (len(s["train"]), len(s["valid"]), len(s["test"])) == (30, 10, 20)

    def ids(rows):
        return {r["id"] for r in rows}

    assert not (ids(t["valid"]) & ids(s["train"])) and not (ids(s["train"]) & ids(s["test"]))
    # through the script: the first N of the pool, the same for every seed
    args = sm.resolve(sm.parse_args(["--setup", "student", "--num-examples", "12", "--imdb-split-sizes", "40,10,20"]))
    got = sm.load_splits(args, tmp_path, "student")
    assert [r["id"] for r in got["train"]] == [r["id"] for r in s["train"][:12]]
    with pytest.raises(common.UsageError, match="larger than the student pool of 30"):
        sm.load_splits(sm.resolve(sm.parse_args(["--num-examples", "31", "--imdb-split-sizes", "40,10,20"])), tmp_path,
                       "student")


def test_more_examples_than_the_data_holds_is_one_line_before_any_model_loads(tmp_path, tiny_model, capsys,
                                                                              monkeypatch):
    """--num-examples (student pool of 30) and --teacher-train-size (80 training reviews) above what the data holds:
    one line naming the flag, the size and --allow-smaller, exit 2, before any model is built (build_model fails
    here, the teacher's checkpoint is junk) and with no run directory."""
    data = write_tiny_imdb(tmp_path / "data")

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the pool size was checked")

    monkeypatch.setattr(sm, "build_model", no_model)
    teacher = tmp_path / "teacher"
    teacher.mkdir()
    (teacher / "teacher.pt").write_bytes(b"junk, never read")
    (teacher / "teacher.json").write_text(json.dumps({"model": tiny_model, "task": "imdb", "max_len": 24}))
    argv = base(data, tmp_path / "runs")
    err = cli_error(capsys, argv + ["--setup", "teacher", "--model", tiny_model, "--teacher-train-size", "81"])
    assert "--teacher-train-size 81 is larger than the teacher's training split of 80 examples" in err
    assert "--allow-smaller" in err
    err = cli_error(capsys, argv + ["--setup", "student", "--teacher-dir", str(teacher), "--num-examples", "31"])
    assert "--num-examples 31 is larger than the student pool of 30 examples" in err and "--allow-smaller" in err
    assert not (tmp_path / "runs").exists()
    # with --allow-smaller: all there is, and the shortfall results.json records
    for setup, flag, n in (("teacher", "--teacher-train-size", 80), ("student", "--num-examples", 30)):
        args = sm.resolve(sm.parse_args(argv + ["--setup", setup, flag, str(n + 1), "--allow-smaller"]))
        assert len(sm.load_splits(args, data, setup)["train"]) == n
    assert sm.shortfall(31, 30) == {"train": {"asked": 31, "available": 30}}
    assert sm.shortfall(30, 30) == {} and sm.shortfall(None, 80) == {}


# ------------------------------------------------------------------------------------------ tiny data for smoke runs
def write_tiny_mlqe(root: Path, n=6) -> Path:
    rng = random.Random(0)
    for split, n_rows in (("train", n), ("dev", 3), ("test", 3)):
        d = root / "mlqe_pe" / "data" / "direct-assessments" / split
        d.mkdir(parents=True, exist_ok=True)
        for pair in sm.MLQE_PAIRS:
            folder = pair if split == "test" else f"{pair}-{split}"
            fname = f"{'test20' if split == 'test' else split}.{pair.replace('-', '')}.df.short.tsv"
            lines = ["index\toriginal\ttranslation\tscores\tmean\tz_scores\tz_mean\tmodel_scores"]
            for i in range(n_rows):
                z = rng.uniform(-2, 1)
                mt = f"le chat {'bon' if z > 0 else 'mal'} {i}"
                lines.append(f"{i}\tthe cat sat on mat {i}\t{mt}\t[1]\t50\t[0.1]\t{z}\t-0.3")
            data = ("\n".join(lines) + "\n").encode()
            with tarfile.open(d / f"{pair}-{split}.tar.gz", "w:gz") as tar:
                info = tarfile.TarInfo(f"{folder}/{fname}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return root


def write_tiny_cifar(root: Path, n_train=30, n_test=8) -> Path:
    import datasets
    from PIL import Image
    rng = np.random.RandomState(0)
    def split(n):
        labels = rng.randint(0, 100, size=n).tolist()
        imgs = [Image.fromarray(rng.randint(0, 255, size=(20, 20, 3), dtype=np.uint8)) for _ in range(n)]
        return datasets.Dataset.from_dict({"img": imgs, "fine_label": labels},
                                          features=datasets.Features({"img": datasets.Image(),
                                                                      "fine_label": datasets.Value("int64")}))
    datasets.DatasetDict({"train": split(n_train), "test": split(n_test)}).save_to_disk(str(root / "cifar100"))
    return root


def write_tiny_eraser(root: Path) -> Path:
    d = root / "eraser_movies"
    (d / "docs").mkdir(parents=True, exist_ok=True)
    docs = {"negR_000.txt": ("this film was dull and boring .\nthe plot made no sense at all .", [(3, 6)]),
            "posR_000.txt": ("a wonderful , moving story .\ngreat acting throughout .", [(1, 4), (6, 8)]),
            "posR_001.txt": ("no evidence marked here .", [])}
    for split in ("train", "val", "test"):
        rows = []
        for docid, (text, spans) in docs.items():
            (d / "docs" / docid).write_text(text)
            rows.append({"annotation_id": docid, "classification": "POS" if docid.startswith("pos") else "NEG",
                         "evidences": [[{"docid": docid, "start_token": a, "end_token": b, "text": ""}]
                                       for a, b in spans]})
        (d / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def make_tiny_vit(path: Path) -> Path:
    from transformers import ViTConfig, ViTModel
    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    """Tiny IMDB / MLQE-PE / CIFAR-100 / ERASER data and a trained tiny teacher per task (one run each)."""
    root = tmp_path_factory.mktemp("smat")
    data = root / "data"
    write_tiny_imdb(data)
    write_tiny_mlqe(data)
    write_tiny_cifar(data)
    write_tiny_eraser(data)
    vit = str(make_tiny_vit(root / "tiny-vit"))
    out = root / "runs"
    teachers = {}
    for task, model in (("imdb", tiny_model), ("mlqe", tiny_model), ("cifar100", vit)):
        teachers[task] = sm.main(sm.parse_args(base(data, out, task) + ["--setup", "teacher", "--model", model,
                                                                         "--max-epochs", "2", "--warmup-steps", "0",
                                                                         "--lr", "3e-3"]))  # differs from the student
    return {"data": data, "out": out, "teachers": teachers, "vit": vit}


def base(data, out, task="imdb"):
    return ["--task", task, "--data-dir", str(data), "--out-dir", str(out), "--imdb-split-sizes", "40,10,20",
            "--max-len", "24", "--eval-batch-size", "16"]


def student_argv(world, task="imdb", *extra):
    n = {"imdb": "16", "mlqe": "12", "cifar100": "12"}[task]
    return base(world["data"], world["out"], task) + ["--num-examples", n, "--max-epochs", "2", "--batch-size", "8",
                                                      *extra]


# ---------------------------------------------------------------------------------------------- smoke runs
def check_run(r, task="imdb"):
    assert math.isfinite(r["test"]) and math.isfinite(r["valid"])
    assert -1 <= r["test"] <= 1 and r["metric"] == ("pearson" if task == "mlqe" else "accuracy")
    run = Path(r["run_dir"])
    assert json.loads((run / "results.json").read_text())["test"] == r["test"]
    steps = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if '"L_sim"' in line]
    assert steps and all(math.isfinite(s["L"]) and math.isfinite(s["L_expl"]) for s in steps)
    return run, steps


def check_smat_explanations(run: Path, n: int, names: set) -> list[dict]:
    """explanations.jsonl of an IMDB run: the documented fields (docs/report.md), one score per word and explainer
    (`attention`, the run's own; `teacher` for a student taught with an explanation; `ig`), no rationale (IMDB has
    none), and results.json's plausibility counting every example as without rationale data."""
    from conftest import EXPLANATION_FIELDS
    rows = [json.loads(line) for line in (run / "explanations.jsonl").read_text().splitlines()]
    assert len(rows) == n and [r["index"] for r in rows] == list(range(n))
    for r in rows:
        assert set(r) == EXPLANATION_FIELDS and set(r["scores"]) == names and 0 <= r["p_pred"] <= 1
        assert r["rationale"] is None and r["skipped"] == "no rationale data" and r["pair_start"] is None
        assert len(r["pieces"]) == len(r["words"]) and all(r["pieces"])  # --max-len 24 keeps these short reviews
        for s in r["scores"].values():
            assert len(s) == len(r["words"]) and all(math.isfinite(x) for x in s)
    plaus = json.loads((run / "results.json").read_text())["plausibility"]
    assert plaus["own"] == "attention" and set(plaus["explainers"]) == names
    assert plaus["n_explained"] == plaus["n_no_rationale_data"] == n and plaus["n_used"] == 0
    return rows


@pytest.mark.slow
def test_teachers_trained(world):
    for task, t in world["teachers"].items():
        assert math.isfinite(t["valid"]) and math.isfinite(t["student_test_metric"]), task
        assert (Path(t["dir"]) / "teacher.pt").is_file() and t["epochs_run"] == 2
        if task == "imdb":  # explained: the first 20 (all) student-test reviews, with the teacher's static attention
            check_smat_explanations(Path(t["dir"]), 20, {"attention", "ig"})
        else:  # MLQE-PE (regression) and CIFAR-100 (images): no explanations, said so in results.json
            assert t["plausibility"] is None and t["explanations_skipped"] == sm.EXPLAIN_SKIPPED[task]
            assert not (Path(t["dir"]) / "explanations.jsonl").exists()


@pytest.mark.slow
@pytest.mark.parametrize("explainer", sm.EXPLAINERS)
def test_smoke_student_every_explainer(world, explainer):
    r = sm.main(sm.parse_args(student_argv(world, "imdb", "--setup", "student", "--explainer", explainer)))
    run, steps = check_run(r)
    assert r["beta"] == {"none": 0.0, "attention_all": 5.0, "attention_last": 5.0}.get(explainer, 0.2)
    assert (r["epochs_run"], r["n_train"]) == (2, 16)
    if explainer != "none":
        assert all(s["L_expl"] > 0 for s in steps)  # the explanation loss is on
    if explainer.startswith("attention"):
        rows = list((run / "head_coeffs.csv").read_text().splitlines())
        assert len(rows) == 1 + (2 if explainer == "attention_last" else 4)
    rows = check_smat_explanations(run, 20, {"attention", "ig"} | ({"teacher"} if explainer != "none" else set()))
    for r in rows:  # attention explanations are distributions over the wordpieces: a word gets its pieces' mass
        assert all(x >= 0 for x in r["scores"]["attention"]) and sum(r["scores"]["attention"]) <= 1 + 1e-5


@pytest.mark.slow
def test_allow_smaller_trains_on_all_there_is_and_records_the_shortfall(world, tiny_model, tmp_path):
    """--allow-smaller: a student asking for 1000 of a pool of 30 and a teacher asking for 1000 of 80 training
    reviews train on all of them; results.json says what was asked and what was there (`shortfall`)."""
    r = sm.main(sm.parse_args(student_argv(world, "imdb", "--setup", "student", "--num-examples", "1000",
                                           "--allow-smaller", "--max-epochs", "1")))
    saved = json.loads((Path(r["run_dir"]) / "results.json").read_text())
    assert saved["n_train"] == 30 and saved["shortfall"] == {"train": {"asked": 1000, "available": 30}}
    t = sm.main(sm.parse_args(base(world["data"], tmp_path) + ["--setup", "teacher", "--model", tiny_model,
                                                               "--max-epochs", "1", "--teacher-train-size", "1000",
                                                               "--allow-smaller"]))
    saved = json.loads((Path(t["dir"]) / "results.json").read_text())
    assert saved["n_train"] == 80 and saved["shortfall"] == {"train": {"asked": 1000, "available": 80}}
    assert world["teachers"]["imdb"]["shortfall"] == {}  # asked for nothing: no shortfall


@pytest.mark.slow
@pytest.mark.parametrize("normalizer", ["sparsemax", "softmax", "entmax15", "none"])
def test_smoke_smat_and_head_normalizers(world, normalizer):
    extra = [] if normalizer == "sparsemax" else ["--max-epochs", "1"]
    r = sm.main(sm.parse_args(student_argv(world, "imdb", "--setup", "smat", "--head-normalizer", normalizer, *extra)))
    run, steps = check_run(r)
    assert all(math.isfinite(s["L_outer"]) and math.isfinite(s["metagrad_norm"]) for s in steps)
    phi = sm.read_head_coeffs(str(run / "head_coeffs.csv"), 4)
    assert len(phi) == 4 and not torch.allclose(phi, torch.full((4,), 0.25))  # the teacher explainer was learned
    assert (run / "head_coeffs.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.parametrize("task", ["mlqe", "cifar100"])
def test_smoke_mlqe_and_cifar100_paths(world, task):
    for setup, explainer in (("student", "integrated_gradients"), ("smat", "attention_all")):
        r = sm.main(sm.parse_args(student_argv(world, task, "--setup", setup, "--explainer", explainer,
                                               "--ig-steps", "3", "--max-epochs", "1")))
        check_run(r, task)
        assert r["plausibility"] is None and r["explanations_skipped"] == sm.EXPLAIN_SKIPPED[task]
        assert not (Path(r["run_dir"]) / "explanations.jsonl").exists()
    assert world["teachers"][task]["n_train"] == (36 if task == "mlqe" else 27)


@pytest.mark.slow
def test_plausibility_on_eraser(world):
    r = sm.main(sm.parse_args(base(world["data"], world["out"]) + ["--setup", "plausibility", "--ig-steps", "4",
                                                                   "--eraser-split", "test"]))
    assert set(r["auc"]) == set(sm.EXPLAINERS[1:])
    for kind, v in r["auc"].items():
        assert v["n_docs"] == 2 and 0 <= v["auc"] <= 1, kind  # the document without evidence is skipped
    smat_run = next((world["out"] / "smat_jax_free").glob("imdb-smat-attention_all-n16-0"), None)
    if smat_run is None:  # run alone (-k plausib): the SMaT smoke test has not left its run
        smat_run = Path(sm.main(sm.parse_args(student_argv(world, "imdb", "--setup", "smat")))["run_dir"])
    r = sm.main(sm.parse_args(base(world["data"], world["out"]) + ["--setup", "plausibility", "--explainer",
                                                                   "attention_all", "--head-coeffs",
                                                                   str(smat_run / "head_coeffs.csv")]))
    assert set(r["auc"]) == {"attention_all", "attention_smat"} and r["n_docs"] == 9


def test_with_words_maps_wordpieces_to_the_whitespace_words_of_the_raw_text(tiny_model):
    """IMDB's explained examples keep the input ids the model was evaluated on (the raw text, tokenised once) and
    map each wordpiece to its whitespace word through the offsets: the same map as tokenising the words one by one
    (is_split_into_words), also with punctuation, runs of spaces, accents and truncation."""
    tok = common.load_tokenizer(tiny_model)
    rows = [{"id": "a", "text": "A  film   about... nothing!! (really) -- caf\u00e9 noir's end", "label": 1},
            {"id": "b", "text": "short", "label": 0},
            {"id": "c", "text": " ".join(f"word{i}, again" for i in range(40)), "label": 0}]
    got = sm.with_words(sm.encode(rows, tok, 24), rows, tok, 24)
    for g, r in zip(got, rows, strict=True):
        words = r["text"].split()
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=24)
        assert g["input_ids"] == enc["input_ids"] and g["words"] == words
        assert g["word_of_piece"] == [-1 if w is None else w for w in enc.word_ids()]
    assert max(got[2]["word_of_piece"]) < len(got[2]["words"]) - 1  # truncated: the last words have no piece


def test_explained_model_is_the_models_classifier_through_either_input(tiny_model):
    """The adapter explain_examples sees: the same logits from input ids and from their word embeddings (what
    integrated gradients differentiates), log p(label) as the log-softmax, the wrapped model's mode kept."""
    tok = common.load_tokenizer(tiny_model)
    model = sm.Model(common.load_encoder(tiny_model), 3, image=False).eval()
    adapter = sm.ExplainedModel(model)
    assert not adapter.training
    ex = sm.encode([{"text": "a fine film", "label": 2}, {"text": "dull , so dull", "label": 0}], tok, 16)
    batch = common.collate(ex, tok.pad_token_id)
    with torch.no_grad():
        logits = model(sm.text_inputs(batch))["logits"]
        assert torch.allclose(adapter(batch), logits) and torch.allclose(
            adapter(batch, inputs_embeds=adapter.embed(batch["input_ids"])), logits, atol=1e-6)
        want = torch.log_softmax(logits, -1)[[0, 1], [2, 0]]
        assert torch.allclose(adapter.gold_log_likelihood(logits, batch), want)
    assert adapter.predict(logits, batch) == logits.argmax(-1).tolist()


def test_word_level_scores_and_auc_by_pair_counting():
    expl = [0.05, 0.2, 0.1, 0.3, 0.15, 0.2, 0.0]  # [CLS] w0 w1(2 pieces) w1 w2 w3 [SEP]
    word_ids = [None, 0, 1, 1, 2, 3, None]
    gold, score = sm.word_level(expl, word_ids, [0, 1, 0, 1, 1])  # word 4 was truncated away
    assert gold == [0, 1, 0, 1] and score == pytest.approx([0.2, 0.4, 0.15, 0.2])
    pos = [s for s, g in zip(score, gold, strict=True) if g]
    neg = [s for s, g in zip(score, gold, strict=True) if not g]
    want = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))
    assert common.roc_auc(gold, score) == pytest.approx(want) == 0.875


@pytest.mark.slow
def test_same_seed_same_result_and_seed_aggregation(world):
    argv = student_argv(world, "imdb", "--setup", "smat", "--seeds", "3,4", "--max-epochs", "1")
    a = sm.main(sm.parse_args(argv))
    first = [(Path(r["run_dir"]) / "results.json").read_bytes() for r in a["runs"]]
    b = sm.main(sm.parse_args(argv))
    assert first == [(Path(r["run_dir"]) / "results.json").read_bytes() for r in b["runs"]]  # byte-identical
    assert a["test"]["n"] == 2 and a["median_seed"] in (3, 4)
    assert (world["out"] / "smat_jax_free" / "imdb-smat-attention_all-n16-seeds" / "summary.json").is_file()
    assert sm.resolve(sm.parse_args(["--seeds", "paper"])).seeds == "0,9,11,30,69"


@pytest.mark.slow
def test_keep_freed_memory_does_not_change_results(world, tmp_path):
    """The allocator setting is numerically neutral: a SMaT run in a fresh process without it (glibc defaults)
    gives the same losses and simulabilities as one with it (in-process; main() sets it by default)."""
    teacher = str(world["out"] / "smat_jax_free" / "imdb-teacher")
    argv = student_argv(world, "imdb", "--setup", "smat", "--max-epochs", "1", "--teacher-dir", teacher)
    argv[argv.index("--out-dir") + 1] = str(tmp_path / "a")
    a = sm.main(sm.parse_args(argv))
    argv[argv.index("--out-dir") + 1] = str(tmp_path / "b")
    subprocess.run([sys.executable, str(ROOT / "smat_jax_free.py"), *argv, "--no-keep-freed-memory"], cwd=ROOT,
                   check=True, timeout=300, capture_output=True)
    b = json.loads((tmp_path / "b" / "smat_jax_free" / Path(a["run_dir"]).name / "results.json").read_text())

    def strip(r):
        return {k: v for k, v in r.items() if k != "run_dir"}

    def log(run):
        return [line for line in (run / "log.jsonl").read_text().splitlines() if '"L_sim"' in line]

    assert strip(b) == strip(json.loads((Path(a["run_dir"]) / "results.json").read_text()))
    assert log(Path(a["run_dir"])) == log(tmp_path / "b" / "smat_jax_free" / Path(a["run_dir"]).name)


# ---------------------------------------------------------------------------------------------- bad input
def cli_error(capsys, argv):
    try:
        code = sm.cli(argv)
    except SystemExit as e:  # flags are checked by the parser (argparse exits with 2)
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.slow
def test_bad_inputs_one_line_exit_2(world, tmp_path, capsys):
    args = base(world["data"], world["out"])
    assert "no trained teacher" in cli_error(capsys, base(world["data"], tmp_path) + ["--setup", "student"])
    assert "--setup teacher --task imdb" in cli_error(capsys, base(world["data"], tmp_path) + ["--setup", "smat"])
    assert "larger than the student pool" in cli_error(capsys, args + ["--num-examples", "1000"])
    assert "imdb/imdb_{train,test}.jsonl" in cli_error(capsys, base(tmp_path, world["out"]) + ["--setup", "teacher"])
    assert "--data-dir" in cli_error(capsys, base(tmp_path / "nowhere", world["out"]) + ["--setup", "teacher"])
    assert "SMaT learns an attention explainer" in cli_error(capsys, args + ["--setup", "smat", "--explainer",
                                                                             "gradient_l2"])
    assert "--imdb-split-sizes" in cli_error(capsys, args + ["--imdb-split-sizes", "1,2"])
    assert "mlqe_pe" in cli_error(capsys, base(tmp_path, world["out"], "mlqe") + ["--setup", "teacher"])
    err = cli_error(capsys, base(tmp_path, world["out"], "cifar100") + ["--setup", "teacher"])
    assert "cannot load cifar100" in err and "uoft-cs/cifar100" in err and "save_to_disk" in err
    for flag, value in (("--setup", "pilot"), ("--explainer", "lime"), ("--task", "sst2")):
        with pytest.raises(SystemExit) as e:
            sm.cli([flag, value])
        assert e.value.code == 2 and "invalid choice" in capsys.readouterr().err


@pytest.mark.parametrize("argv,expect", [(["--explainer", "lime"], "invalid choice"),
                                         (["--task", "cifar100", "--setup", "teacher", "--data-dir", "."],
                                          "cannot load cifar100")])
@pytest.mark.slow
def test_bad_inputs_as_a_subprocess(argv, expect, tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "smat_jax_free.py"), *argv, "--out-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1 and expect in p.stderr, p.stderr


def test_mlqe_reader_on_real_slices():
    from conftest import REAL_SLICES
    mlqe = sm.read_mlqe_pe(REAL_SLICES, "dev")
    assert len(mlqe) == 6 * 8 and [e["pair"] for e in mlqe[::8]] == list(sm.MLQE_PAIRS)
    assert all(isinstance(e["z_mean"], float) for e in mlqe)


KEEP_MEMORY_PROBE = """
import sys, torch, smat_jax_free as sm
def rss_mb():
    return int(open('/proc/self/statm').read().split()[1]) * 4096 / 2**20
if sys.argv[1] == 'keep':
    assert sm.keep_freed_memory()
x = torch.ones(50_000_000)  # 200 MB, above glibc's mmap threshold
before = rss_mb()
del x
print(before - rss_mb())
"""


@pytest.mark.skipif(not Path("/proc/self/statm").exists() or platform.libc_ver()[0] != "glibc",
                    reason="needs Linux with glibc")
@pytest.mark.slow
def test_keep_freed_memory_stops_glibc_returning_large_blocks():
    """Default glibc hands a freed 200 MB tensor back to the OS (RSS drops); after keep_freed_memory() it keeps it."""
    root = Path(__file__).resolve().parents[1]
    drop = {mode: float(subprocess.run([sys.executable, "-c", KEEP_MEMORY_PROBE, mode], cwd=root, timeout=120,
                                       capture_output=True, text=True, check=True).stdout)
            for mode in ("default", "keep")}
    assert drop["default"] > 150 and drop["keep"] < 10, drop
