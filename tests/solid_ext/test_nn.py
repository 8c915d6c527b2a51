from __future__ import annotations

import pytest
import torch
from torch import nn

import solid_ext
from solid_ext import (
    DynamicLinear,
    FullRankGenerator,
    LowRankGenerator,
    ParameterGenerator,
    SemanticCodebook,
)
from solid_ext.reference import codebook_quantize_ref, dynamic_linear_ref


def rand(*shape, seed=0, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- DynamicLinear ----------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (4, 3, 7)])
def test_forward_alone_is_nn_linear(bias, shape):
    torch.manual_seed(0)
    lin = nn.Linear(7, 11, bias=bias, dtype=torch.float64)
    torch.manual_seed(0)
    dyn = DynamicLinear(7, 11, bias=bias, dtype=torch.float64)
    # same constructor, same RNG → same initialisation as nn.Linear
    torch.testing.assert_close(dyn.weight, lin.weight, rtol=0, atol=0)
    x = rand(*shape)
    torch.testing.assert_close(dyn(x), lin(x), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(6, 5), (6, 4, 5)])
def test_from_linear_with_zero_heads_is_identical(backend, shape):
    lin = nn.Linear(5, 3, dtype=torch.float64)
    dyn = DynamicLinear.from_linear(lin, tau=0.01, cond_features=4, branch_cond_features=2)
    x = rand(*shape)
    out = dyn(x, cond=rand(6, 4, seed=1), branch_cond=rand(6, 2, seed=2))
    torch.testing.assert_close(out, lin(x), rtol=1e-12, atol=1e-12)
    assert dyn.weight.data_ptr() != lin.weight.data_ptr()


def test_explicit_deltas_follow_eq12(backend):
    b, n_in, n_out, tau = 4, 6, 5, 0.02
    dyn = DynamicLinear(n_in, n_out, tau=tau, dtype=torch.float64)
    x, dw, db = rand(b, 3, n_in), rand(b, n_in, n_out, seed=1), rand(b, n_out, seed=2)
    bw, bb = rand(b, n_in, n_out, seed=3) * 0.05, rand(b, n_out, seed=4) * 0.05
    out = dyn(x, dw, db, bw, bb)
    expect = dynamic_linear_ref(x, dw + dyn.weight.t(), db + dyn.bias, bw, bb, tau)
    torch.testing.assert_close(out, expect)
    only_branch = dyn(x, branch_weight=bw, branch_bias=bb)
    w_static = dyn.weight.t().expand(b, -1, -1)
    expect = dynamic_linear_ref(x, w_static, dyn.bias.expand(b, -1), bw, bb, tau)
    torch.testing.assert_close(only_branch, expect)


def test_gradients_reach_heads_and_static_weights(backend):
    dyn = DynamicLinear(4, 3, cond_features=5, branch_cond_features=6, dtype=torch.float64)
    with torch.no_grad():  # leave the zero start so the heads' inputs matter
        dyn.weight_head.weight.normal_()
        dyn.branch_head.weight.normal_(std=0.01)
    x, c, bc = rand(7, 4), rand(7, 5, seed=1), rand(7, 6, seed=2)
    dyn(x, cond=c, branch_cond=bc).square().sum().backward()
    for name, p in dyn.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_cond_without_head_is_a_clear_error():
    dyn = DynamicLinear(4, 3)
    with pytest.raises(ValueError, match="branch_cond_features"):
        dyn(torch.randn(2, 4), branch_cond=torch.randn(2, 3))
    with pytest.raises(ValueError, match="either cond or explicit"):
        DynamicLinear(4, 3, cond_features=2)(
            torch.randn(2, 4), torch.randn(2, 4, 3), cond=torch.randn(2, 2)
        )
    with pytest.raises(ValueError, match="tau"):
        DynamicLinear(4, 3, tau=-1.0)


def test_generators_are_interchangeable(backend):
    """A LowRankGenerator in either slot computes what its explicit deltas do; the
    full-rank default keeps its state_dict keys (weight_head / branch_head)."""
    torch.manual_seed(0)
    trunk = LowRankGenerator(6, 5, 4, rank=3, dtype=torch.float64)
    branch = LowRankGenerator(6, 5, 2, rank=2, dtype=torch.float64)
    dyn = DynamicLinear(6, 5, tau=0.02, dtype=torch.float64, generator=trunk)
    dyn.set_generator(branch, branch=True)
    with torch.no_grad():
        for g in (trunk, branch):
            g.b_head.weight.normal_(std=0.1)
    x, c, bc = rand(7, 3, 6), rand(7, 4, seed=1), rand(7, 2, seed=2)
    (dw, db), (bw, bb) = trunk(c), branch(bc)
    torch.testing.assert_close(dyn(x, cond=c, branch_cond=bc), dyn(x, dw, db, bw, bb))
    assert dyn(x).shape == (7, 3, 5)
    for gen in (trunk, branch, dyn.weight_head):
        assert isinstance(gen, ParameterGenerator)
    default = DynamicLinear(6, 5, cond_features=4, branch_cond_features=2)
    assert isinstance(default.weight_head, FullRankGenerator)
    assert list(default.state_dict()) == [
        "weight",
        "bias",
        "weight_head.weight",
        "weight_head.bias",
        "branch_head.weight",
        "branch_head.bias",
    ]
    assert default.weight_head.weight.shape == (6 * 5 + 5, 4)


def test_generator_checks():
    with pytest.raises(ValueError, match=r"generator makes \(6, 5\) weights.*\(5, 6\)"):
        DynamicLinear(5, 6, generator=LowRankGenerator(6, 5, 4, rank=2))
    with pytest.raises(ValueError, match="cond_features or generator, not both"):
        DynamicLinear(6, 5, cond_features=4, generator=LowRankGenerator(6, 5, 4, rank=2))
    with pytest.raises(TypeError, match="ParameterGenerator"):
        DynamicLinear(6, 5).set_generator(nn.Linear(4, 30), branch=True)
    dyn = DynamicLinear(6, 5, cond_features=4)
    dyn.set_generator(None)
    assert dyn.weight_head is None
    with pytest.raises(ValueError, match="no cond generator"):
        dyn(torch.randn(2, 6), cond=torch.randn(2, 4))
    # A generator without a bias on a layer with one: the static bias stays.
    bare = LowRankGenerator(6, 5, 4, rank=2, bias=False)
    layer = DynamicLinear(6, 5, generator=bare)
    x, c = torch.randn(3, 6), torch.randn(3, 4)
    dw, db = bare(c)
    assert db is None
    expect = dynamic_linear_ref(x, dw + layer.weight.t(), layer.bias.expand(3, 5))
    torch.testing.assert_close(layer(x, cond=c), expect)
    lin = nn.Linear(6, 5)
    conv = DynamicLinear.from_linear(lin, generator=LowRankGenerator(6, 5, 4, rank=2))
    assert isinstance(conv.weight_head, LowRankGenerator) and torch.equal(conv.weight, lin.weight)


def test_compile_module_inductor():
    torch.manual_seed(0)
    dyn = DynamicLinear(8, 6, cond_features=4, branch_cond_features=4)
    cb = SemanticCodebook(10, 6, init="random")
    with torch.no_grad():
        dyn.weight_head.weight.normal_(std=0.1)
        dyn.branch_head.weight.normal_(std=0.1)

    def step(x, c, bc):
        h = dyn(x, cond=c, branch_cond=bc)
        q, idx, loss = cb(h)
        return q.square().mean() + loss

    x, c, bc = torch.randn(5, 3, 8), torch.randn(5, 4), torch.randn(5, 4)
    eager = step(x, c, bc)
    compiled = torch.compile(step, fullgraph=True)
    torch.testing.assert_close(compiled(x, c, bc), eager, rtol=1e-5, atol=1e-6)
    compiled(x, c, bc).backward()
    assert cb.codebook.grad is not None and dyn.branch_head.weight.grad is not None


# --- SemanticCodebook --------------------------------------------------------------


def test_metacode_init_copies_and_checks_shape():
    table = rand(6, 4)
    cb = SemanticCodebook.from_metacode(table)
    torch.testing.assert_close(cb.codebook.detach(), table, rtol=0, atol=0)
    assert cb.codebook.data_ptr() != table.data_ptr()
    with pytest.raises(ValueError, match=r"metacode must be \(K, D\) = \(6, 4\)"):
        cb.load_metacode(rand(5, 4))
    with pytest.raises(ValueError, match="init must be"):
        SemanticCodebook(3, 2, init="kmeans")


def test_loss_is_lambda_mse_with_gradient_to_both(backend):
    table, z = rand(5, 3), rand(4, 7, 3, seed=1)
    cb = SemanticCodebook.from_metacode(table, lam=0.1)
    zl = z.clone().requires_grad_(True)
    q, idx, loss = cb(zl)
    _, idx_ref, _ = codebook_quantize_ref(z, table)
    assert torch.equal(idx, idx_ref)
    mse = ((z - table[idx_ref]) ** 2).mean()
    torch.testing.assert_close(loss, 0.1 * mse)
    loss.backward()
    n = z.numel()
    torch.testing.assert_close(zl.grad, 0.1 * 2 * (z - table[idx]) / n)
    exp_c = torch.zeros_like(table).index_add_(
        0, idx.reshape(-1), (-0.1 * 2 * (z - table[idx]) / n).reshape(-1, 3)
    )
    torch.testing.assert_close(cb.codebook.grad, exp_c)


def test_codebook_and_commitment_weights_scale_each_side(backend):
    table, z = rand(5, 3), rand(8, 3, seed=1)
    grads = {}
    for cw, kw in [(1.0, 1.0), (0.5, 0.25)]:
        cb = SemanticCodebook.from_metacode(
            table, lam=0.1, codebook_weight=cw, commitment_weight=kw
        )
        zl = z.clone().requires_grad_(True)
        _, _, loss = cb(zl)
        loss.backward()
        grads[(cw, kw)] = (loss.detach(), zl.grad, cb.codebook.grad)
    base, split = grads[(1.0, 1.0)], grads[(0.5, 0.25)]
    torch.testing.assert_close(split[0], base[0])  # same value
    torch.testing.assert_close(split[1], 0.25 * base[1])
    torch.testing.assert_close(split[2], 0.5 * base[2])


def test_quantized_is_straight_through(backend):
    cb = SemanticCodebook.from_metacode(rand(4, 2))
    z = rand(6, 2, seed=3).requires_grad_(True)
    q, idx, _ = cb(z)
    torch.testing.assert_close(q, cb.codebook[idx])
    (q * 3).sum().backward()
    torch.testing.assert_close(z.grad, torch.full_like(z, 3.0))
    # loss unused and no straight-through to codes: the codebook learns nothing
    g = cb.codebook.grad
    assert g is None or not g.any()


def test_kmeans_recovers_separated_clusters(backend):
    centers = torch.tensor([[10.0, 0.0], [-10.0, 0.0], [0.0, 10.0], [0.0, -10.0]])
    g = torch.Generator().manual_seed(0)
    data = centers.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2, generator=g)
    cb = SemanticCodebook(4, 2)
    assign = cb.init_kmeans(data, iters=10)
    found = cb.codebook.detach()
    dist = torch.cdist(centers, found)
    assert dist.min(1).values.max() < 0.1  # every true centre has a code next to it
    assert len(set(assign.tolist())) == 4
    with pytest.raises(ValueError, match="at least K=4"):
        cb.init_kmeans(data[:3])


def test_empty_input_gives_zero_loss():
    cb = SemanticCodebook(3, 2)
    q, idx, loss = cb(torch.randn(0, 2))
    assert q.shape == (0, 2) and idx.shape == (0,) and loss.item() == 0.0


def test_public_api_surface():
    assert set(solid_ext.available_backends()) >= {"reference"}
    for name in (
        "DynamicLinear",
        "FullRankGenerator",
        "LowRankGenerator",
        "ParameterGenerator",
        "SemanticCodebook",
        "dynamic_linear",
        "codebook_quantize",
        "available_backends",
        "use_backend",
    ):
        assert hasattr(solid_ext, name)


# --- argument checks and edge cases ----------------------------------------------------


@pytest.mark.parametrize(
    "bad", [None, float("nan"), -0.1, float("inf"), torch.tensor(0.1), "0.1", True]
)
def test_bad_tau_is_named(bad):
    with pytest.raises((TypeError, ValueError), match=r"\btau\b"):
        DynamicLinear(4, 3, tau=bad)
    with pytest.raises((TypeError, ValueError), match=r"\btau\b"):
        DynamicLinear.from_linear(nn.Linear(4, 3), tau=bad)


@pytest.mark.parametrize("bad", ["yes", 1, None, torch.tensor(True)])
def test_straight_through_flag_must_be_a_bool(bad):
    with pytest.raises(TypeError, match="straight_through_codebook must be a bool"):
        SemanticCodebook(3, 2, straight_through_codebook=bad)
    with pytest.raises(TypeError, match="straight_through_codebook must be a bool"):
        SemanticCodebook.from_metacode(rand(3, 2), straight_through_codebook=bad)


@pytest.mark.parametrize("shape", [(6, 0), (6, 2, 0)])
@pytest.mark.parametrize("n_out", [3, 0])
def test_zero_in_features_with_cond(backend, shape, n_out):
    # nn.Linear(0, n) maps to its bias; so does the layer, also through its heads.
    dyn = DynamicLinear(0, n_out, cond_features=4, branch_cond_features=2, dtype=torch.float64)
    with torch.no_grad():
        dyn.weight_head.bias.normal_()  # the generated bias delta
    x = rand(*shape)
    out = dyn(x, cond=rand(6, 4, seed=1), branch_cond=rand(6, 2, seed=2))
    assert out.shape == (*shape[:-1], n_out)
    expect = (dyn.bias + dyn.weight_head.bias).expand(6, n_out)
    if len(shape) == 3:
        expect = expect.unsqueeze(1).expand(shape[0], shape[1], n_out)
    torch.testing.assert_close(out, expect)
    out.sum().backward()


@pytest.mark.parametrize(
    "name,shape",
    [
        ("bias", (3,)),
        ("bias", (1, 3)),
        ("bias", (5, 1)),
        ("bias", (5, 3, 1)),
        ("branch_bias", (3,)),
        ("branch_bias", (5, 1)),
        ("weight", (4, 3)),
        ("weight", (1, 4, 3)),
        ("branch_weight", (5, 4, 1)),
    ],
)
def test_wrong_shaped_deltas_are_rejected(backend, name, shape):
    # Deltas are per sample: a (N_out,) bias delta must not broadcast over the batch.
    dyn = DynamicLinear(4, 3, dtype=torch.float64)
    x = rand(5, 4)
    with pytest.raises(ValueError, match=rf"\b{name}\b") as err:
        dyn(x, **{name: rand(*shape, seed=1)})
    assert str(tuple(shape)) in str(err.value)


def test_x_of_another_width_is_rejected():
    dyn = DynamicLinear(4, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"in_features=4"):
        dyn(rand(5, 6), bias=rand(5, 3))


def test_kmeans_rejects_data_of_another_dim():
    # (100, 4) has as many values as (200, 2): it must not be reshaped into D=2 rows.
    cb = SemanticCodebook(4, 2)
    with pytest.raises(ValueError, match=r"\(100, 4\).*D=2|D=2.*\(100, 4\)"):
        cb.init_kmeans(rand(100, 4, dtype=torch.float32))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_module_with_large_tau(dtype):
    # A tau beyond float16's range clips nothing; the branch-bias-only path once
    # raised an overflow in torch.clamp.
    dyn = DynamicLinear(4, 3, tau=1e5, dtype=dtype)
    x, bb = rand(5, 4).to(dtype), rand(5, 3, seed=1).to(dtype) * 100
    out = dyn(x, branch_bias=bb)
    torch.testing.assert_close(out, (dyn(x) + bb).to(dtype), rtol=1e-2, atol=1e-2)
    out2 = dyn(x, branch_weight=rand(5, 4, 3, seed=2).to(dtype), branch_bias=bb)
    assert out2.dtype == dtype and torch.isfinite(out2).all()
