"""Triton kernels vs the reference, on CPU tensors in the Triton interpreter.

TRITON_INTERPRET=1 must be set before ``triton`` is imported, and registering any
``torch.library.custom_op`` imports it, so these cases cannot share the suite's
process: in an ordinary run only ``test_interpreter_suite`` runs, and it runs this
file again in a subprocess with TRITON_INTERPRET=1 (where every other test runs and
the launcher skips). The rest of the suite is unaffected. Shapes are small and
deliberately not block multiples; every output is allocated under
``poisoned_empty`` (NaN-filled), so an element a kernel fails to write shows up as NaN.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("triton")

import solid_ext  # noqa: E402
from solid_ext import triton_kernels as tk  # noqa: E402
from solid_ext.reference import (  # noqa: E402
    codebook_quantize_ref,
    dynamic_linear_ref,
    generated_linear_ref,
)
from solid_ext.testing import (  # noqa: E402
    codebook_quantize_inputs,
    dynamic_linear_inputs,
    generated_linear_inputs,
)

from .conftest import poisoned_empty  # noqa: E402

TAU = 0.01


IN_INTERPRETER = os.environ.get("TRITON_INTERPRET") == "1"
# Cases marked ``interp`` need the interpreter: an ordinary run deselects them (see
# ``pytest_collection_modifyitems`` in conftest.py) and test_interpreter_suite runs them.
interp = pytest.mark.triton_interpreter


#: The files whose ``interp`` cases one interpreter process runs (one pytest start-up).
SUITE = [
    Path(__file__),
    Path(__file__).with_name("test_triton_sparse_row_update.py"),
    Path(__file__).with_name("test_triton_item_softmax.py"),
    Path(__file__).with_name("test_triton_item_scores.py"),
]


@pytest.mark.skipif(IN_INTERPRETER, reason="this is the interpreter run itself")
def test_interpreter_suite():
    env = dict(os.environ, TRITON_INTERPRET="1")
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *map(str, SUITE)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    tail = proc.stdout[-6000:] + proc.stderr[-2000:]
    assert proc.returncode == 0, f"interpreter run failed:\n{tail}"
    # Guard against a vacuous pass: the cases must actually have run, none skipped
    # except this launcher.
    summary = proc.stdout.strip().splitlines()[-1]
    passed = re.search(r"(\d+) passed", summary)
    assert passed and int(passed.group(1)) >= 97 + 100 + 30 + 26, tail
    assert re.search(r"\b1 skipped", summary), summary
    print(proc.stdout.splitlines()[-1])


def _tol(dtype: torch.dtype) -> dict[str, float]:
    return {
        torch.float64: {"atol": 1e-12, "rtol": 1e-12},
        torch.float32: {"atol": 2e-5, "rtol": 1e-5},
        torch.float16: {"atol": 2e-2, "rtol": 1e-2},
        torch.bfloat16: {"atol": 1e-1, "rtol": 2e-2},
    }[dtype]


def _assert_close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> None:
    assert a.dtype == dtype, (a.dtype, dtype)
    assert not torch.isnan(a).any(), "NaN in output: an element was not written"
    torch.testing.assert_close(a.to(b.dtype), b, **_tol(dtype))


# --- dynamic_linear -------------------------------------------------------------------


def _dl_inputs(B, L, I, O, dtype, bias=True, branch=True, scale=None, **kw):  # noqa: E741
    """Branch straddles ±tau (``scale`` 2 tau by default), and a few entries sit exactly
    on it (inclusive mask)."""
    seed = B * 1000 + L * 100 + I * 10 + O
    kw = dict(bias=bias, branch=branch, weight_scale=0.3, branch_scale=scale, **kw)
    return dynamic_linear_inputs(B, L, I, O, dtype=dtype, seed=seed, tau=TAU, pin_tau=True, **kw)


def _dl_check(B, L, I, O, dtype, bias=True, branch=True, need=(0, 1, 2, 3, 4)):  # noqa: E741
    args = _dl_inputs(B, L, I, O, dtype, bias, branch)
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    ref_args = [None if a is None else a.to(ref_dtype) for a in args]
    leaves, ref_leaves = [], []
    for i, (a, ra) in enumerate(zip(args, ref_args, strict=True)):
        if a is not None and i in need:
            a.requires_grad_(True)
            ra.requires_grad_(True)
            leaves.append(a)
            ref_leaves.append(ra)
    with poisoned_empty():
        y = tk.dynamic_linear(*args, TAU)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(dtype)
        grads = torch.autograd.grad(y, leaves, g)
    # torch.clamp compares against tau rounded to the input dtype: do the same here.
    tau_ref = float(torch.tensor(TAU, dtype=dtype))
    y_ref = dynamic_linear_ref(*ref_args, tau_ref)
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, g.to(ref_dtype))
    assert y.shape == (B, L, O)
    _assert_close(y, y_ref, dtype)
    for got, want in zip(grads, grads_ref, strict=True):
        _assert_close(got, want, dtype)


@pytest.mark.parametrize("L", [1, 3, 10, 70])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@interp
def test_dynamic_linear_matches_reference(L, dtype):
    # L=1/3: broadcast path; 10: one dot tile; 70: several L tiles + separate dx kernel
    # (float64 never uses tl.dot and tiles L by 8, so L=10 already loops there).
    _dl_check(3, L, 5, 7, dtype)


@pytest.mark.parametrize("L", [1, 10])
@interp
def test_dynamic_linear_multiple_blocks(L):
    # N_in=37 > BLOCK_I=32 and N_out=70 > BLOCK_O=64: two blocks each way.
    _dl_check(2, L, 37, 70, torch.float32)


@pytest.mark.parametrize(("bias", "branch"), [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("L", [1, 10])
@interp
def test_dynamic_linear_optional_args(bias, branch, L):
    _dl_check(3, L, 5, 7, torch.float32, bias=bias, branch=branch)


@pytest.mark.parametrize("need", [(0,), (1,), (3,), (3, 4), (2, 4)])
@pytest.mark.parametrize("L", [3, 70])
@interp
def test_dynamic_linear_partial_grads(need, L):
    _dl_check(2, L, 5, 7, torch.float32, need=need)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("L", [1, 10])
@interp
def test_dynamic_linear_half(dtype, L):
    _dl_check(3, L, 5, 7, dtype)


@interp
def test_dynamic_linear_clip_boundary_inclusive():
    # |w| == tau keeps its gradient (as torch.clamp), just above loses it; NaN -> 0.
    x = torch.ones(1, 1, 2)
    w = torch.zeros(1, 2, 3)
    bw = torch.tensor([[[TAU, -TAU, 0.0100001], [0.02, float("nan"), 0.005]]])
    bw.requires_grad_(True)
    y = tk.dynamic_linear(x, w, None, bw, None, TAU)
    (g,) = torch.autograd.grad(y.sum(), bw)
    assert g.flatten().tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert torch.isnan(y[0, 0, 1]) and not torch.isnan(y[0, 0, [0, 2]]).any()


@interp
def test_dynamic_linear_through_public_op():
    # solid_ext.ops with the triton backend: 2-D x (L squeezed) and 3-D x.
    x2, w, b, bw, bb = _dl_inputs(3, 1, 5, 7, torch.float32)
    x2 = x2[:, 0]
    with solid_ext.use_backend("triton"):
        y2 = solid_ext.dynamic_linear(x2, w, b, bw, bb, TAU)
    assert y2.shape == (3, 7)
    torch.testing.assert_close(y2, dynamic_linear_ref(x2, w, b, bw, bb, TAU))


@interp
def test_dynamic_linear_empty_and_noncontiguous():
    w = torch.randn(0, 4, 5)
    assert tk.dynamic_linear(torch.randn(0, 2, 4), w, None, None, None, TAU).shape == (
        0,
        2,
        5,
    )
    x = torch.randn(3, 4, 2).transpose(1, 2)  # (3, 2, 4), non-contiguous
    w = torch.randn(3, 5, 4).transpose(1, 2)
    torch.testing.assert_close(
        tk.dynamic_linear(x, w, None, None, None, TAU),
        dynamic_linear_ref(x, w, None, None, None, TAU),
    )


# --- generated_linear -----------------------------------------------------------------

# About half of the generated weights fall inside ±GL_TAU (generated_linear_inputs).
GL_TAU = 0.5


def _gl_check(B, L, I, O, C, dtype, tau=GL_TAU, need=(0, 1, 2, 3), contiguous=True):  # noqa: E741
    """Forward and the gradients of the inputs in ``need`` (x, cond, gen_weight, base)
    against generated_linear_ref (float32 for half inputs, as the kernels compute)."""
    seed = B * 10000 + L * 1000 + I * 100 + O * 10 + C
    args = generated_linear_inputs(
        B, L, I, O, C, dtype=dtype, seed=seed, tau=GL_TAU, contiguous=contiguous
    )
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    ref_args = [a.detach().to(ref_dtype) for a in args]
    leaves = [a.requires_grad_(True) for i, a in enumerate(args) if i in need]
    ref_leaves = [a.requires_grad_(True) for i, a in enumerate(ref_args) if i in need]
    with poisoned_empty():
        y = tk.generated_linear(*args, tau)
        g = torch.randn(y.shape, generator=torch.Generator().manual_seed(7)).to(dtype)
        grads = torch.autograd.grad(y, leaves, g)
    # torch.clamp compares against tau rounded to the input dtype: do the same here.
    tau_ref = None if tau is None else float(torch.tensor(tau, dtype=dtype))
    y_ref = generated_linear_ref(*ref_args, tau_ref)
    grads_ref = torch.autograd.grad(y_ref, ref_leaves, g.to(ref_dtype))
    assert y.shape == (B, L, O)
    _assert_close(y, y_ref, dtype)
    for got, want in zip(grads, grads_ref, strict=True):
        _assert_close(got, want, dtype)
    if tau is not None and B and C and I * O:
        # The clip is exercised: pre-clip weights both inside and outside ±tau.
        w = (ref_args[1] @ ref_args[2].t()).detach() + ref_args[3].detach().reshape(-1)
        inside = w.abs() <= tau_ref
        assert inside.any() and not inside.all()


@pytest.mark.parametrize("tau", [None, GL_TAU])
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@interp
def test_generated_linear_matches_reference(L, dtype, tau):
    # Broadcast (rank-1) generation: B, C below the dot minimum; odd N_in, N_out, C.
    _gl_check(3, L, 5, 7, 3, dtype, tau)


@pytest.mark.parametrize("tau", [None, GL_TAU])
@interp
def test_generated_linear_dot_and_multiple_blocks(tau):
    # tl.dot generation (B, C >= 8); B=17, N_out=17 and C=17 just past their 16-wide
    # blocks, L=17 past one L tile (weights regenerated per L tile); dx swaps N_in/N_out.
    _gl_check(17, 17, 5, 17, 17, torch.float32, tau)


@pytest.mark.parametrize(("dtype", "C"), [(torch.float32, 8), (torch.float64, 2)])
@interp
def test_generated_linear_many_samples(dtype, C):
    # 130 samples: 9 sample blocks; dgen_weight/dbase summed over 5 chunks of two
    # blocks each (the last partly empty). float32 with C=8 uses tl.dot, float64 not.
    _gl_check(130, 1, 2, 3, C, dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@interp
def test_generated_linear_half(dtype):
    _gl_check(9, 2, 5, 7, 9, dtype)


@pytest.mark.parametrize("need", [(0,), (1,), (2,), (3,), (1, 3)])
@interp
def test_generated_linear_partial_grads(need):
    _gl_check(3, 3, 5, 7, 3, torch.float32, need=need)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@interp
def test_generated_linear_noncontiguous(dtype):
    _gl_check(3, 2, 5, 7, 3, dtype, contiguous=False)


@pytest.mark.parametrize(
    ("B", "L", "I", "O", "C"),
    [(0, 2, 3, 4, 3), (2, 0, 3, 4, 3), (2, 2, 0, 4, 3), (2, 2, 3, 0, 3), (2, 2, 3, 4, 0)],
)
@interp
def test_generated_linear_empty_dims(B, L, I, O, C):  # noqa: E741
    # Zero-size batch, rows, N_in, N_out or C: the right shapes and zero (or reference)
    # values, no kernel reading out of bounds. C=0: the weights are base alone.
    _gl_check(B, L, I, O, C, torch.float64)


@interp
def test_generated_linear_clip_boundary_inclusive():
    # Pre-clip weight == ±tau keeps its gradient (as torch.clamp), just above loses it;
    # a NaN weight passes through the forward and gets a zero gradient.
    x = torch.ones(1, 1, 2)
    cond = torch.ones(1, 1)
    gen = torch.tensor([[GL_TAU], [-GL_TAU], [0.5000001], [0.7], [float("nan")], [0.25]])
    base = torch.zeros(2, 3)
    gen.requires_grad_(True)
    base.requires_grad_(True)
    y = tk.generated_linear(x, cond, gen, base, GL_TAU)
    dgen, dbase = torch.autograd.grad(y.sum(), (gen, base))
    assert dgen.flatten().tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert dbase.flatten().tolist() == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    assert torch.isnan(y[0, 0, 1]) and not torch.isnan(y[0, 0, [0, 2]]).any()


@interp
def test_generated_linear_through_public_op():
    # solid_ext.ops.generated_linear with the triton backend: 2-D x (L squeezed).
    x, cond, gen, base = generated_linear_inputs(3, None, 5, 7, 3, dtype=torch.float32, tau=GL_TAU)
    with solid_ext.use_backend("triton"):
        y = solid_ext.ops.generated_linear(x, cond, gen, base, GL_TAU)
    assert y.shape == (3, 7)
    torch.testing.assert_close(y, generated_linear_ref(x, cond, gen, base, GL_TAU))


@interp
def test_generated_linear_rejects_bad_arguments():
    x, cond, gen, base = generated_linear_inputs(2, 2, 3, 4, 3, dtype=torch.float32)
    with pytest.raises((ValueError, TypeError), match=r"\bgen_weight\b"):
        tk.generated_linear(x, cond, gen[:-1], base, GL_TAU)
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises((ValueError, TypeError), match=r"\btau\b"):
            tk.generated_linear(x, cond, gen, base, bad)
    with pytest.raises((ValueError, TypeError), match=r"\bgrad\b"):
        torch.ops.solid_ext_triton.generated_linear_backward(
            torch.ones(2, 2, 5), x, cond, gen, base, None, True, True, True, True
        )


@interp
def test_opcheck_generated_linear():
    args = generated_linear_inputs(2, 2, 3, 4, 3, dtype=torch.float32, requires_grad=True)
    for tau in (None, GL_TAU):
        torch.library.opcheck(torch.ops.solid_ext_triton.generated_linear, (*args, tau))


# --- codebook_quantize ----------------------------------------------------------------


def _cq_check(M, K, D, dtype, st, grads=("q", "sq"), codebook=None, z=None):
    g = torch.Generator().manual_seed(M * 100 + K + D)
    if z is None and codebook is None:
        z, codebook = codebook_quantize_inputs(M, K, D, dtype=dtype, seed=g)
    assert z is not None and codebook is not None, "give both z and codebook, or neither"
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    z, codebook = z.requires_grad_(True), codebook.requires_grad_(True)
    zr = z.detach().to(ref_dtype).requires_grad_(True)
    cr = codebook.detach().to(ref_dtype).requires_grad_(True)
    gq = torch.randn(M, D, generator=g, dtype=torch.float64).to(dtype)
    gs = torch.randn(M, generator=g, dtype=torch.float64).to(dtype)
    with poisoned_empty():
        q, sq, idx = tk.codebook_quantize(z, codebook, st)
        loss = sum((q * gq).sum() if n == "q" else (sq * gs).sum() for n in grads)
        dz, dc = torch.autograd.grad(loss, (z, codebook), allow_unused=True)
    qr, idx_r, sqr = codebook_quantize_ref(zr, cr, st)
    assert idx.dtype == torch.long and idx.shape == (M,)
    if dtype in (torch.float32, torch.float64):
        assert torch.equal(idx, idx_r)
    else:
        # Reduced precision may flip near-ties: the chosen code must be (nearly) as
        # close as the best one, in exact arithmetic.
        d_all = torch.cdist(zr.detach(), cr.detach()) ** 2
        chosen = d_all.gather(1, idx[:, None])[:, 0]
        assert (chosen <= d_all.min(1).values + 5e-2 * (1 + chosen)).all()
        idx_r = idx
        qr = cr[idx]
        diff = zr - qr
        sqr = (diff * diff).sum(-1)
        qr = (qr if st else qr.detach()) + (zr - zr.detach())
    lr = sum(
        (qr * gq.to(ref_dtype)).sum() if n == "q" else (sqr * gs.to(ref_dtype)).sum() for n in grads
    )
    dzr, dcr = torch.autograd.grad(lr, (zr, cr), allow_unused=True)
    assert torch.equal(q, codebook.detach()[idx]), "quantized must be codebook[idx]"
    _assert_close(sq, sqr.detach(), dtype)
    _assert_close(dz, dzr, dtype)
    if dcr is None:  # only the straight-through-free q term: codebook gets zeros
        dcr = torch.zeros_like(cr)
    _assert_close(dc, dcr, dtype)


@pytest.mark.parametrize("st", [False, True])
@pytest.mark.parametrize(("M", "K", "D"), [(37, 70, 5), (130, 300, 33), (1, 1, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@interp
def test_codebook_quantize_matches_reference(M, K, D, st, dtype):
    _cq_check(M, K, D, dtype, st)


@pytest.mark.parametrize("grads", [("q",), ("sq",)])
@pytest.mark.parametrize("st", [False, True])
@interp
def test_codebook_quantize_single_output_grad(grads, st):
    _cq_check(37, 70, 5, torch.float32, st, grads=grads)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("st", [False, True])
@interp
def test_codebook_quantize_half(dtype, st):
    _cq_check(37, 70, 20, dtype, st)


@interp
def test_codebook_quantize_ties_lowest_index():
    # Code 3 duplicated at 40 and 69 (other K tiles): every row equidistant to them
    # must pick 3; z exactly between codes 0 and 1 picks 0.
    g = torch.Generator().manual_seed(0)
    c = torch.randn(70, 6, generator=g) * 10
    c[40] = c[3]
    c[69] = c[3]
    z = c[3].repeat(5, 1) + 1e-3
    c[0] = torch.zeros(6)
    c[1] = torch.zeros(6)
    c[1, 0] = 2.0
    mid = torch.zeros(1, 6)
    mid[0, 0] = 1.0
    z = torch.cat([z, mid])
    _, _, idx = tk.codebook_quantize(z, c, False)
    assert idx.tolist() == [3, 3, 3, 3, 3, 0]
    _cq_check(6, 70, 6, torch.float32, True, codebook=c, z=z)


@interp
def test_codebook_quantize_nan_semantics():
    c = torch.randn(70, 4, generator=torch.Generator().manual_seed(1))
    z = torch.randn(3, 4, generator=torch.Generator().manual_seed(2))
    z[1, 2] = float("nan")
    q, sq, idx = tk.codebook_quantize(z, c, False)
    _, idx_r, sq_r = codebook_quantize_ref(z, c)
    assert idx[1] == 0 and torch.isnan(sq[1])
    assert torch.equal(idx, idx_r)
    # A NaN codebook row (in the second K tile) is chosen by every row.
    c[65, 0] = float("nan")
    _, _, idx = tk.codebook_quantize(z, c, False)
    _, idx_r, _ = codebook_quantize_ref(z, c)
    assert idx.tolist() == [65, 0, 65] and torch.equal(idx, idx_r)


@interp
def test_codebook_quantize_public_op_leading_dims():
    z = torch.randn(2, 3, 5)
    c = torch.randn(9, 5)
    with solid_ext.use_backend("triton"):
        q, idx, sq = solid_ext.codebook_quantize(z, c)
    qr, idx_r, sqr = codebook_quantize_ref(z, c)
    assert q.shape == (2, 3, 5) and idx.shape == (2, 3) and sq.shape == (2, 3)
    assert torch.equal(idx, idx_r)
    torch.testing.assert_close(sq, sqr)


@interp
def test_codebook_quantize_backward_none_grads():
    # The backward op accepts missing output grads (schema Tensor?).
    z, c = torch.randn(5, 3), torch.randn(4, 3)
    q, sq, idx = tk.codebook_quantize(z, c, True)
    gz, gc = torch.ops.solid_ext_triton.codebook_quantize_backward(None, None, z, c, idx, True)
    assert torch.equal(gz, torch.zeros_like(z)) and torch.equal(gc, torch.zeros_like(c))


@interp
def test_codebook_quantize_empty():
    q, sq, idx = tk.codebook_quantize(torch.randn(0, 4), torch.randn(3, 4), False)
    assert q.shape == (0, 4) and sq.shape == (0,) and idx.shape == (0,)


# --- registration -----------------------------------------------------------------------


@interp
def test_opcheck_custom_ops():
    x, w, b, bw, bb = _dl_inputs(2, 3, 4, 5, torch.float32, requires_grad=True)
    torch.library.opcheck(torch.ops.solid_ext_triton.dynamic_linear, (x, w, b, bw, bb, TAU))
    z = torch.randn(6, 4, requires_grad=True)
    c = torch.randn(5, 4, requires_grad=True)
    torch.library.opcheck(torch.ops.solid_ext_triton.codebook_quantize, (z, c, True))


@interp
def test_is_available_follows_interpreter_flag(monkeypatch):
    assert tk.is_available()
    assert "triton" in solid_ext.available_backends()
    monkeypatch.delenv("TRITON_INTERPRET")
    assert tk.is_available() == torch.cuda.is_available()


# --- edge cases shared with the other backends -------------------------------------------


@pytest.mark.parametrize("st", [False, True])
@interp
def test_codebook_quantize_infinite_inputs(st):
    # quantized is exactly codebook[idx]; with only quantized in the loss the gradient
    # to z is the upstream one (sq_dist's zero gradient adds nothing, not 0 * inf); with
    # both, the gradients are the reference's (infinite where z is).
    g = torch.Generator().manual_seed(5)
    z, c = torch.randn(12, 4, generator=g), torch.randn(9, 4, generator=g)
    z[2, 1], z[5, 3], z[8] = float("inf"), float("-inf"), float("inf")
    zl, cl = z.clone().requires_grad_(True), c.clone().requires_grad_(True)
    q, sq, idx = tk.codebook_quantize(zl, cl, st)
    _, idx_r, sq_r = codebook_quantize_ref(z, c)
    assert torch.equal(idx, idx_r) and torch.equal(q.detach(), c[idx])
    torch.testing.assert_close(sq.detach(), sq_r)
    gq = torch.randn(12, 4, generator=g)
    dz, dc = torch.autograd.grad(q, (zl, cl), gq, allow_unused=True)
    assert torch.equal(dz, gq)
    zl, cl = z.clone().requires_grad_(True), c.clone().requires_grad_(True)
    q, sq, idx = tk.codebook_quantize(zl, cl, st)
    gs = torch.randn(12, generator=g)
    dz, dc = torch.autograd.grad((q * gq).sum() + (sq * gs).sum(), (zl, cl))
    zr, cr = z.clone().requires_grad_(True), c.clone().requires_grad_(True)
    qr, _, sqr = codebook_quantize_ref(zr, cr, st)
    dzr, dcr = torch.autograd.grad((qr * gq).sum() + (sqr * gs).sum(), (zr, cr))
    torch.testing.assert_close(dz, dzr, equal_nan=True)
    torch.testing.assert_close(dc, dcr, equal_nan=True)


@interp
def test_codebook_quantize_zero_dim_public_op():
    with solid_ext.use_backend("triton"):
        q, idx, sq = solid_ext.codebook_quantize(torch.randn(2, 3, 0), torch.randn(5, 0))
    assert q.shape == (2, 3, 0) and (idx == 0).all() and (sq == 0).all()


@pytest.mark.parametrize("tau", [1e5, 1e30])
@interp
def test_dynamic_linear_half_large_tau(tau):
    args = _dl_inputs(3, 4, 5, 7, torch.float16, scale=50.0)
    y = tk.dynamic_linear(*args, tau)
    y32 = dynamic_linear_ref(*[a.float() for a in args], tau)
    torch.testing.assert_close(y.float(), y32.half().float(), rtol=1e-2, atol=1e-2)


@interp
def test_raw_ops_reject_bad_arguments():
    x, w, b, bw, bb = _dl_inputs(3, 2, 4, 5, torch.float32)
    with pytest.raises((ValueError, TypeError), match=r"\bbias\b"):
        tk.dynamic_linear(x, w, b[:, :2], bw, bb, TAU)
    for bad in (float("nan"), -1.0, float("inf")):
        with pytest.raises((ValueError, TypeError), match=r"\btau\b"):
            tk.dynamic_linear(x, w, b, bw, bb, bad)
    z, c = torch.randn(5, 3), torch.randn(4, 3)
    for idx in (torch.full((5,), 4), torch.full((5,), -1), torch.zeros(5, dtype=torch.int32)):
        with pytest.raises((ValueError, TypeError, IndexError), match=r"\bindices\b"):
            torch.ops.solid_ext_triton.codebook_quantize_backward(None, None, z, c, idx, True)


@interp
def test_backward_kernel_masks_out_of_range_indices():
    """On a GPU the wrappers skip the host-side range check (a device sync per
    backward); the kernel itself must then never read or write outside the codebook."""
    from solid_ext.triton_kernels import _codebook_quantize as cqk

    z, c = torch.randn(6, 3), torch.randn(4, 3)
    gq, gsq = torch.randn(6, 3), torch.randn(6)
    idx = torch.tensor([0, 4, 1, -1, 3, 1 << 40])
    gz, gc = cqk.backward(gq, gsq, z, c, idx, True)
    ok = (idx >= 0) & (idx < 4)
    ref_gz, ref_gc = cqk.backward(gq[ok], gsq[ok], z[ok], c, idx[ok], True)
    torch.testing.assert_close(gz[ok], ref_gz)
    torch.testing.assert_close(gc, ref_gc)
    torch.testing.assert_close(gz[~ok], gq[~ok])  # no codebook row: only the gq term
