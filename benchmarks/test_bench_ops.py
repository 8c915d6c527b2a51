"""pytest-benchmark cases for both ops and both modules, every provider, every mode.

Run through ``python -m benchmarks.run`` (which sets SOLID_BENCH_MODE, measures
the ceilings and renders BENCHMARKS.md); plain ``pytest benchmarks`` runs the
smoke sizes once each, so the suite is exercised by the test command.
"""

from __future__ import annotations

import functools

import pytest
import torch

import solid_ext
from solid_ext import DynamicLinear, SemanticCodebook, ops
from solid_ext.reference import dynamic_linear_ref
from solid_ext.testing import codebook_quantize_inputs, dynamic_linear_inputs

from .common import MODE, peak_mib, pedantic

FULL = MODE == "full"
# Peers outside PyTorch: forward search only (no backward), and their memory is not
# PyTorch's, so no peak is measured for them.
FAISS = {"faiss", "faiss+gather"}
SMOKE = MODE == "smoke"
TAU = 0.01
F32 = 4

if SMOKE:
    DL_SIZES = [(8, 1, 5, 7), (8, 3, 5, 7)]
    CQ_SIZES = [(50, 16, 8)]
else:
    DL_SIZES = [(1024, 1, 32, 64), (1024, 10, 32, 64)]
    CQ_SIZES = [(10240, k, d) for d in (32, 64) for k in (64, 256, 1024, 8192)]
    if FULL:
        DL_SIZES += [(b, 10, 32, 64) for b in (256, 4096, 16384)]
        CQ_SIZES += [(m, 1024, 32) for m in (2560, 40960, 163840)]

MODES = ["fwd", "bwd", "fwdbwd"]
# The fused ops once per CPU kernel variant this machine runs: "fused[avx2]".
ISAS = solid_ext.cpu_isas()
FUSED = [f"fused[{isa}]" for isa in ISAS]


def _isa(provider: str) -> str | None:
    return provider[len("fused[") : -1] if provider.startswith("fused[") else None


def _info(benchmark, provider: str, **kw) -> None:
    benchmark.extra_info.update(
        provider=provider, isa=_isa(provider), threads=torch.get_num_threads(), **kw
    )


def _fresh(*tensors):
    return [t.detach().clone().requires_grad_(True) if t is not None else None for t in tensors]


def _run_mode(benchmark, mode, forward, inputs, grad_fn):
    """Time ``mode`` of ``forward(*leaves)``; grads are reset outside the timed region."""
    leaves = _fresh(*inputs)

    def setup():
        for t in leaves:
            if t is not None:
                t.grad = None
        if mode == "bwd":
            out = forward(*leaves)
            return (out,), {}
        return (), {}

    def fwd():
        with torch.no_grad():
            return forward(*leaves)

    def bwd(out):
        grad_fn(out)

    def fwdbwd():
        grad_fn(forward(*leaves))

    target = {"fwd": fwd, "bwd": bwd, "fwdbwd": fwdbwd}[mode]
    if mode != "bwd" and benchmark.extra_info.get("provider") not in FAISS:
        setup()
        benchmark.extra_info["peak_mib"] = peak_mib(target)
    pedantic(benchmark, target, setup)


# --- dynamic_linear ------------------------------------------------------------------


def _dl_cost(b, l, n_in, n_out, mode):
    w = b * n_in * n_out
    fwd_bytes = (b * l * n_in + 2 * w + 2 * b * n_out + b * l * n_out) * F32
    bwd_bytes = (b * l * n_out + b * l * n_in + 2 * w + b * n_out) * F32  # reads
    bwd_bytes += (b * l * n_in + 2 * w + 2 * b * n_out) * F32  # writes
    fwd_flops, bwd_flops = 2 * b * l * n_in * n_out, 4 * b * l * n_in * n_out
    return {
        "fwd": (fwd_flops, fwd_bytes),
        "bwd": (bwd_flops, bwd_bytes),
        "fwdbwd": (fwd_flops + bwd_flops, fwd_bytes + bwd_bytes),
    }[mode]


def _fused_dl(isa):
    def fn(*a):
        with solid_ext.use_backend("cpu"), solid_ext.use_cpu_isa(isa):
            return ops.dynamic_linear(*a, tau=TAU)

    return fn


def _eager_dl(*a):
    return dynamic_linear_ref(*a, tau=TAU)


@functools.cache
def _compiled_dl():
    return torch.compile(_eager_dl, dynamic=False)


DL_PROVIDERS = FUSED + ["eager"] + ([] if SMOKE else ["compile"])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("provider", DL_PROVIDERS)
@pytest.mark.parametrize("size", DL_SIZES, ids=lambda s: "B{}-L{}-{}x{}".format(*s))
def test_dynamic_linear(benchmark, size, provider, mode):
    if _isa(provider):
        fn = _fused_dl(_isa(provider))
    else:
        fn = {"eager": _eager_dl, "compile": lambda *a: _compiled_dl()(*a)}[provider]
    inputs = dynamic_linear_inputs(*size, dtype=torch.float32, tau=TAU)
    gy = torch.randn(size[0], size[1], size[3])
    flops, bytes_ = _dl_cost(*size, mode)
    _info(
        benchmark,
        provider,
        op="dynamic_linear",
        mode=mode,
        flops=flops,
        bytes=bytes_,
        size=dict(zip(("B", "L", "N_in", "N_out"), size, strict=True)),
    )
    _run_mode(benchmark, mode, fn, inputs, lambda y: y.backward(gy))


# DynamicLinear module with condition vectors (generator heads included) against a
# static nn.Linear of the same size: the price of per-sample weights.
@pytest.mark.parametrize("mode", ["fwd", "fwdbwd"])
@pytest.mark.parametrize("provider", ["DynamicLinear", "DynamicLinear(reference)", "nn.Linear"])
@pytest.mark.parametrize("size", DL_SIZES[:2], ids=lambda s: "B{}-L{}-{}x{}".format(*s))
def test_dynamic_linear_module(benchmark, size, provider, mode):
    b, l, n_in, n_out = size
    n_cond = 32 if not SMOKE else 4
    torch.manual_seed(0)
    if provider == "nn.Linear":
        layer = torch.nn.Linear(n_in, n_out)

        def forward(x, c, bc):
            return layer(x)
    else:
        layer = DynamicLinear(n_in, n_out, cond_features=n_cond, branch_cond_features=n_cond)
        backend = "reference" if "reference" in provider else "cpu"

        def forward(x, c, bc):
            with solid_ext.use_backend(backend):
                return layer(x, cond=c, branch_cond=bc)

    x, c, bc = torch.randn(b, l, n_in), torch.randn(b, n_cond), torch.randn(b, n_cond)
    _info(
        benchmark,
        provider,
        op="DynamicLinear module",
        mode=mode,
        flops=0,
        bytes=0,
        size=dict(zip(("B", "L", "N_in", "N_out"), size, strict=True)),
    )
    layer.zero_grad(set_to_none=True)
    _run_mode(benchmark, mode, forward, [x, c, bc], lambda y: y.sum().backward())


# --- codebook_quantize -----------------------------------------------------------------


def _cq_cost(m, k, d, mode):
    fwd_bytes = (m * d + k * d + m * d + m) * F32 + m * 8
    bwd_bytes = (3 * m * d + m + 2 * k * d) * F32 + m * 8
    fwd_flops, bwd_flops = 2 * m * k * d, 4 * m * d
    return {
        "fwd": (fwd_flops, fwd_bytes),
        "bwd": (bwd_flops, bwd_bytes),
        "fwdbwd": (fwd_flops + bwd_flops, fwd_bytes + bwd_bytes),
    }[mode]


def _eager_cq(z, c):
    """What a PyTorch user writes: the full (M, K) distance matrix, argmin, gather."""
    scores = (c * c).sum(1) - 2 * z @ c.t()
    idx = scores.argmin(1)
    chosen = c[idx]
    sq = (z - chosen).square().sum(1)
    return z + (chosen - z).detach(), idx, sq


def _fused_cq(isa):
    def fn(z, c):
        with solid_ext.use_backend("cpu"), solid_ext.use_cpu_isa(isa):
            return ops.codebook_quantize(z, c)

    return fn


@functools.cache
def _compiled_cq():
    return torch.compile(_eager_cq, dynamic=False)


def _faiss_search(gather):
    import faiss

    cache = {}

    def fn(z, c):
        key = c.data_ptr()
        if key not in cache:
            cache.clear()
            index = faiss.IndexFlatL2(c.shape[1])
            index.add(c.detach().numpy())
            cache[key] = index
        sq, idx = cache[key].search(z.detach().numpy(), 1)
        idx_t = torch.from_numpy(idx[:, 0])
        return (c[idx_t] if gather else None), idx_t, torch.from_numpy(sq[:, 0])

    return fn


@functools.cache
def _vq_module(k, d):
    from vector_quantize_pytorch import VectorQuantize

    return VectorQuantize(
        dim=d,
        codebook_size=k,
        commitment_weight=1.0,
        learnable_codebook=True,
        ema_update=False,
    )


def _vq(z, c):
    vq = _vq_module(c.shape[0], c.shape[1])
    q, idx, loss = vq(z.unsqueeze(0))
    return q[0], idx[0], loss


def _peer_available(name):
    try:
        __import__(name)
        return True
    except ImportError:
        return False


CQ_PROVIDERS = FUSED + ["eager"] + ([] if SMOKE else ["compile"])
CQ_PROVIDERS += ["faiss", "faiss+gather"] if _peer_available("faiss") else []
CQ_PROVIDERS += ["vector-quantize-pytorch"] if _peer_available("vector_quantize_pytorch") else []


# faiss is a peer for the forward search only (it has no backward): forward rows only.
CQ_CASES = [(p, m) for p in CQ_PROVIDERS for m in MODES if p not in FAISS or m == "fwd"]


@pytest.mark.parametrize(("provider", "mode"), CQ_CASES, ids=lambda v: v)
@pytest.mark.parametrize("size", CQ_SIZES, ids=lambda s: "M{}-K{}-D{}".format(*s))
def test_codebook_quantize(benchmark, size, provider, mode):
    m, k, d = size
    z, c = codebook_quantize_inputs(m, k, d, dtype=torch.float32)
    fn = (
        _fused_cq(_isa(provider))
        if _isa(provider)
        else {
            "eager": _eager_cq,
            "compile": lambda zz, cc: _compiled_cq()(zz, cc),
            "faiss": _faiss_search(False),
            "faiss+gather": _faiss_search(True),
            "vector-quantize-pytorch": _vq,
        }[provider]
    )
    gq = torch.randn(m, d, generator=torch.Generator().manual_seed(1))

    def grad_fn(out):
        q, _, sq = out
        (q * gq).sum().add(sq.sum()).backward()

    flops, bytes_ = _cq_cost(m, k, d, mode)
    _info(
        benchmark,
        provider,
        op="codebook_quantize",
        mode=mode,
        flops=flops,
        bytes=bytes_,
        size={"M": m, "K": k, "D": d},
    )
    _run_mode(benchmark, mode, fn, [z, c], grad_fn)


@pytest.mark.parametrize("provider", ["SemanticCodebook", "SemanticCodebook(reference)"])
@pytest.mark.parametrize("size", CQ_SIZES[:1], ids=lambda s: "M{}-K{}-D{}".format(*s))
def test_semantic_codebook_module(benchmark, size, provider):
    m, k, d = size
    cb = SemanticCodebook(k, d)
    backend = "reference" if "reference" in provider else "cpu"

    def forward(z):
        with solid_ext.use_backend(backend):
            q, _, loss = cb(z)
        return q.sum() + loss

    _info(
        benchmark,
        provider,
        op="SemanticCodebook module",
        mode="fwdbwd",
        flops=0,
        bytes=0,
        size={"M": m, "K": k, "D": d},
    )
    _run_mode(benchmark, "fwdbwd", forward, [torch.randn(m, d)], lambda y: y.backward())
