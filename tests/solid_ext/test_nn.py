from __future__ import annotations

import math

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
from solid_ext import nn as snn
from solid_ext.reference import codebook_quantize_ref, dynamic_linear_ref
from solid_ext.testing import dynamic_linear_inputs, non_contiguous


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


# --- DynamicLinear: x (B, *, N_in) with per-sample arguments; errors name the argument -----


def cond_layer(dtype, tau=0.5):
    """DynamicLinear(5, 4) with both generators (cond 3, branch_cond 2) off their zero
    start, so that the generated weights matter and the branch is partly clipped."""
    g = torch.Generator().manual_seed(1)
    dyn = DynamicLinear(5, 4, tau=tau, cond_features=3, branch_cond_features=2, dtype=dtype)
    with torch.no_grad():
        for p in dyn.parameters():
            p.normal_(generator=g)
    return dyn


@pytest.mark.parametrize("contiguous", [True, False])
@pytest.mark.parametrize("middle", [(6,), (2, 3), (3, 1, 2), (2, 0, 3)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_middle_dims_with_cond(backend, dtype, middle, contiguous):
    # x (B, *, N_in) with cond (B, C) is the (B, L, N_in) case with the middle dims as L.
    b, n_in, n_out = 4, 5, 4
    dyn = cond_layer(dtype)
    x3 = dynamic_linear_inputs(b, math.prod(middle), n_in, n_out, dtype=dtype, seed=11)[0]
    x = x3.reshape(b, *middle, n_in)
    x = (x if contiguous else non_contiguous(x)).requires_grad_(True)
    assert x.is_contiguous() == (contiguous or x.numel() == 0)
    c, bc = rand(b, 3, seed=12, dtype=dtype), rand(b, 2, seed=13, dtype=dtype)
    out = dyn(x, cond=c, branch_cond=bc)
    assert out.shape == (b, *middle, n_out)
    by_hand = dyn(x.reshape(b, -1, n_in), cond=c, branch_cond=bc).view(out.shape)
    torch.testing.assert_close(out, by_hand)
    (dw, db), (bw, bb) = dyn.weight_head(c, dyn.weight.t(), dyn.bias), dyn.branch_head(bc)
    expect = dynamic_linear_ref(x.reshape(b, -1, n_in), dw, db, bw, bb, dyn.tau)
    expect = expect.view(out.shape)
    torch.testing.assert_close(out, expect)
    gy = torch.randn(out.shape, generator=torch.Generator().manual_seed(14), dtype=dtype)
    grads = [torch.autograd.grad(y, [x, *dyn.parameters()], gy) for y in (out, by_hand, expect)]
    for want in grads[1:]:
        for got, w in zip(grads[0], want, strict=True):
            torch.testing.assert_close(got, w)


@pytest.mark.parametrize("branch_only", [False, True])
def test_middle_dims_with_explicit_deltas(backend, branch_only):
    # Both paths: the op (weight deltas) and the bias-only one (nn.Linear plus the deltas).
    b, n_in, n_out, tau = 3, 5, 4, 0.02
    dyn = DynamicLinear(n_in, n_out, tau=tau, dtype=torch.float64)
    x3, dw, db, bw, bb = dynamic_linear_inputs(b, 6, n_in, n_out, seed=21, tau=tau)
    x = non_contiguous(x3.reshape(b, 2, 3, n_in))
    if branch_only:
        deltas = {"bias": db, "branch_bias": bb}
    else:
        deltas = {"weight": dw, "bias": db, "branch_weight": bw, "branch_bias": bb}
    out = dyn(x, **deltas)
    assert out.shape == (b, 2, 3, n_out)
    torch.testing.assert_close(out, dyn(x3, **deltas).view(out.shape))


def test_middle_dims_with_cond_gradcheck(backend):
    dyn = cond_layer(torch.float64)
    x = rand(2, 2, 3, 5, seed=31).requires_grad_(True)
    c, bc = (rand(2, n, seed=32 + n).requires_grad_(True) for n in (3, 2))
    assert torch.autograd.gradcheck(lambda *a: dyn(a[0], cond=a[1], branch_cond=a[2]), (x, c, bc))


def layer_and_x() -> tuple[DynamicLinear, torch.Tensor]:
    """DynamicLinear(4, 3) with cond 5 and branch_cond 2, and an x (6, 4) for it."""
    dyn = DynamicLinear(4, 3, cond_features=5, branch_cond_features=2, dtype=torch.float64)
    return dyn, rand(6, 4)


@pytest.mark.parametrize(
    "args,match",
    [
        # A condition of another width: once a raw "mat1 and mat2 shapes" error.
        ({"cond": (6, 7)}, r"^cond must be \(B, cond_features=5\) = \(6, 5\).*got shape \(6, 7\)"),
        (
            {"branch_cond": (6, 7)},
            r"^branch_cond must be \(B, branch_cond_features=2\) = \(6, 2\).*got shape \(6, 7\)",
        ),
        ({"cond": (6, 1, 5)}, r"^cond must be \(B, cond_features=5\).*got shape \(6, 1, 5\)"),
        ({"cond": (5,)}, r"^cond must be \(B, cond_features=5\).*got shape \(5,\)"),
        ({"branch_cond": (6, 2, 1)}, r"^branch_cond must be .*got shape \(6, 2, 1\)"),
        # A weight delta laid out as W (N_out, N_in) per sample instead of W^T.
        ({"weight": (6, 3, 4)}, r"^weight must be \(B, N_in, N_out\) = \(6, 4, 3\).*\(6, 3, 4\)"),
        ({"branch_weight": (6, 3, 4)}, r"^branch_weight must be .*\(B, N_out, N_in\)"),
        ({"cond": (5, 5)}, r"^batch mismatch: cond has B=5 .* but x has B=6 "),
        ({"branch_cond": (7, 2)}, r"^batch mismatch: branch_cond has B=7 .* but x has B=6 "),
        ({"weight": (5, 4, 3)}, r"^batch mismatch: weight has B=5 .* but x has B=6 "),
        ({"branch_bias": (1, 3)}, r"^batch mismatch: branch_bias has B=1 .* but x has B=6 "),
        ({"x": (4,), "cond": (1, 5)}, r"^x must be \(B, \*, in_features=4\).*shape \(4,\)"),
        ({"x": (6, 2, 5), "cond": (6, 5)}, r"^x must be \(B, \*, in_features=4\).*\(6, 2, 5\)"),
    ],
)
def test_bad_shapes_with_cond_are_named(args, match):
    dyn, x = layer_and_x()
    args = {k: rand(*shape, seed=1) for k, shape in args.items()}
    with pytest.raises(ValueError, match=match):
        dyn(args.pop("x", x), **args)


@pytest.mark.parametrize("name", ["x", "cond", "branch_cond", "weight", "bias", "branch_bias"])
def test_dtype_and_device_with_cond_are_named(name):
    # The op computes in the layer's dtype on its device: another one is named, not
    # promoted (a float32 delta once was) nor left to a raw matmul error (a cond was).
    dyn, x = layer_and_x()
    shapes = {"x": (6, 4), "weight": (6, 4, 3), "bias": (6, 3), "branch_bias": (6, 3)}
    shapes |= {"cond": (6, 5), "branch_cond": (6, 2)}
    args = {"x": x, name: rand(*shapes[name], seed=1)}
    if name == "x":
        args["cond"] = rand(6, 5, seed=2)
    for bad, exc, match in (
        (args[name].float(), TypeError, rf"^{name} has dtype torch.float32 .*torch.float64"),
        (args[name].long(), TypeError, rf"^{name} has dtype torch.int64 "),
        (args[name].to("meta"), ValueError, rf"^{name} is on meta but .* on cpu"),
    ):
        with pytest.raises(exc, match=match):
            dyn(**(args | {name: bad}))
    with pytest.raises(TypeError, match=rf"^{name} must be a torch.Tensor"):
        dyn(**(args | {name: args[name].tolist()}))


@pytest.mark.parametrize("cls", [FullRankGenerator, LowRankGenerator])
def test_generators_name_a_bad_cond(cls):
    # Called directly, a 3-D cond once came out as weights of the wrong rank (or failed
    # inside the maps' matmuls).
    gen = cls(4, 3, 5, dtype=torch.float64)
    for shape in ((6, 1, 5), (6, 7), (5,)):
        with pytest.raises(ValueError, match=r"^cond must be \(B, cond_features=5\) for this "):
            gen(rand(*shape))
    with pytest.raises(TypeError, match="^cond must be a torch.Tensor"):
        gen([[0.0] * 5])


class BuggyGenerator(nn.Module):
    """A custom generator with a bug: its weight comes out (B, n_out, n_in) with
    ``transpose``, and its bias (B, bias_width)."""

    def __init__(self, n_in: int, n_out: int, cond_features: int, transpose: bool, bias_width: int):
        super().__init__()
        self.n_in, self.n_out, self.cond_features = n_in, n_out, cond_features
        self.transpose, self.bias_width = transpose, bias_width

    def forward(self, cond, static_weight=None, static_bias=None):
        w = cond.new_zeros(cond.shape[0], self.n_in, self.n_out)
        return (w.mT if self.transpose else w), cond.new_zeros(cond.shape[0], self.bias_width)


def test_a_generator_returning_bad_shapes_is_named():
    # Once reported by the op as a bad "weight" (or "bias"), which the caller never passed.
    dyn, x = layer_and_x()
    dyn.set_generator(BuggyGenerator(4, 3, 5, transpose=True, bias_width=3))
    with pytest.raises(ValueError, match=r"^weight_head \(BuggyGenerator\) returned a weight "):
        dyn(x, cond=rand(6, 5))
    dyn.set_generator(BuggyGenerator(4, 3, 2, transpose=False, bias_width=4), branch=True)
    with pytest.raises(ValueError, match=r"^branch_head .* returned a bias of shape \(6, 4\)"):
        dyn(x, branch_cond=rand(6, 2))


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


@pytest.mark.parametrize(("cw", "kw"), [(1.0, 1.0), (0.25, 0.5)])
@pytest.mark.parametrize("st", [False, True])
def test_codebook_mask_equals_quantising_the_valid_rows_only(cw: float, kw: float, st: bool):
    """``forward(z, mask)``: every position quantised, the loss (and every gradient) that
    of the valid rows alone, as boolean indexing gave; no data-dependent shape."""
    torch.manual_seed(3)
    z = torch.randn(4, 7, 5, dtype=torch.float64)
    mask = torch.rand(4, 7) > 0.4
    mask[0] = False  # a row with no valid position
    kw_args = dict(codebook_weight=cw, commitment_weight=kw, straight_through_codebook=st)
    cb = SemanticCodebook(6, 5, init="random", lam=0.3, **kw_args).double()
    ref = SemanticCodebook(6, 5, init=cb.codebook.detach().clone(), lam=0.3, **kw_args).double()
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    q, idx, loss = cb(za, mask)
    qr, idxr, lossr = ref(zb[mask])
    torch.testing.assert_close(q[mask], qr)
    torch.testing.assert_close(idx[mask], idxr)
    torch.testing.assert_close(loss, lossr)
    w = torch.randn_like(q)
    (loss + (torch.where(mask.unsqueeze(-1), q, 0) * w).sum()).backward()
    (lossr + (qr * w[mask]).sum()).backward()
    torch.testing.assert_close(za.grad, zb.grad)
    torch.testing.assert_close(cb.codebook.grad, ref.codebook.grad)
    # Nothing valid: zero loss, not NaN.
    _, _, empty = cb(z, torch.zeros(4, 7, dtype=torch.bool))
    assert empty.item() == 0.0


@pytest.mark.parametrize(("cw", "kw"), [(1.0, 1.0), (0.25, 0.5)])
def test_codebook_mask_keeps_nonfinite_padding_out(cw: float, kw: float):
    cb = SemanticCodebook(3, 2, init="random", codebook_weight=cw, commitment_weight=kw)
    z = torch.randn(2, 3, 2)
    z[1, 2] = torch.inf
    z.requires_grad_()
    mask = torch.ones(2, 3, dtype=torch.bool)
    mask[1, 2] = False
    _, _, loss = cb(z, mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(cb.codebook.grad).all()
    assert torch.isfinite(z.grad[mask]).all()


def test_codebook_mask_is_checked():
    cb = SemanticCodebook(3, 2)
    z = torch.randn(4, 2)
    with pytest.raises(TypeError, match="mask must be a bool tensor, got torch.int64"):
        cb(z, torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"mask must have z's shape without its last dim, \(4,\)"):
        cb(z, torch.ones(3, dtype=torch.bool))


# --- full-rank generators through ops.generated_linear (fused_generation) ----------


def _params_and_grads(layer, x, cond, branch_cond, mode):
    layer.fused_generation = mode
    layer.zero_grad(set_to_none=True)
    xx = x.clone().requires_grad_(True)
    cs = [None if c is None else c.clone().requires_grad_(True) for c in (cond, branch_cond)]
    y = layer(xx, cond=cs[0], branch_cond=cs[1])
    g = torch.randn(y.shape, generator=torch.Generator().manual_seed(5), dtype=y.dtype)
    y.backward(g)
    grads = {n: p.grad for n, p in layer.named_parameters()}
    return y.detach(), xx.grad, [None if c is None else c.grad for c in cs], grads


@pytest.mark.parametrize("x_shape", [(6, 5), (6, 3, 5), (6, 2, 3, 5)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("trunk,branch", [(True, True), (True, False), (False, True)])
def test_fused_generation_equals_generating_the_weights(backend, x_shape, bias, trunk, branch):
    layer = DynamicLinear(
        5, 7, bias=bias, tau=0.05, cond_features=4, branch_cond_features=3, dtype=torch.float64
    )
    with torch.no_grad():  # generators start at zero: give them weights to generate with
        for p in (*layer.weight_head.parameters(), *layer.branch_head.parameters()):
            p.normal_(std=0.05)
    x = rand(*x_shape)
    cond = rand(6, 4, seed=1) if trunk else None
    branch_cond = rand(6, 3, seed=2) if branch else None
    layer.fused_generation = "always"
    assert layer._fuses(x, cond, branch_cond)
    fused = _params_and_grads(layer, x, cond, branch_cond, "always")
    plain = _params_and_grads(layer, x, cond, branch_cond, "never")
    torch.testing.assert_close(fused[0], plain[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fused[1], plain[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(fused[2], plain[2], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert fused[3].keys() == plain[3].keys()
    for name in fused[3]:
        torch.testing.assert_close(fused[3][name], plain[3][name], rtol=1e-12, atol=1e-12)


def test_fused_generation_only_for_full_rank_generators():
    layer = DynamicLinear(5, 7, tau=0.05, cond_features=4, dtype=torch.float64)
    layer.set_generator(LowRankGenerator(5, 7, 3, rank=2, dtype=torch.float64), branch=True)
    x, cond, bcond = rand(6, 5), rand(6, 4, seed=1), rand(6, 3, seed=2)
    layer.fused_generation = "always"
    assert layer._fuses(x, cond, None) and not layer._fuses(x, cond, bcond)
    layer.fused_generation = "never"
    assert not layer._fuses(x, cond, None)
    y = layer(x, cond=cond, branch_cond=bcond)  # the generate-then-apply path
    assert y.shape == (6, 7)
    layer.fused_generation = "yes"
    with pytest.raises(ValueError, match="fused_generation must be"):
        layer(x, cond=cond)


@pytest.mark.parametrize("batch,rows", [(1024, None), (1024, 1), (1023, None), (1024, 2)])
def test_fused_generation_auto_follows_the_measured_rule(backend, batch, rows):
    layer = DynamicLinear(3, 2, cond_features=2, dtype=torch.float64)
    x = rand(batch, 3) if rows is None else rand(batch, rows, 3)
    cond = rand(batch, 2, seed=1)
    want = (
        backend.startswith("cpu")
        and solid_ext.cpu_isa() in snn.FUSED_CPU_ISAS
        and batch >= snn.FUSED_MIN_BATCH
        and (rows or 1) <= snn.FUSED_MAX_ROWS
    )
    assert layer._fuses(x, cond, None) == want
