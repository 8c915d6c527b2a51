"""The registered ops (``torch.ops.solid_ext.*``) check their own arguments.

They are public: a caller may skip the Python wrappers of :mod:`solid_ext.ops` (and
their checks), so the C++ glue must reject a bad call before a kernel touches memory.
An undersized ``bias`` would otherwise be read past its end and an out-of-range code
index would read and write outside the codebook's gradient. Every bad call must raise
a RuntimeError that names the op and the argument at fault; none may crash.

A segfault here kills the pytest process: that is the failure mode these tests exist
to rule out, so they run in-process rather than in a forgiving subprocess.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import solid_ext
from solid_ext.reference import codebook_quantize_ref, dynamic_linear_ref
from solid_ext.testing import codebook_quantize_inputs, dynamic_linear_inputs, non_contiguous

pytestmark = pytest.mark.skipif(
    "cpu" not in solid_ext.available_backends(), reason="compiled extension not built"
)

TAU = 0.05
NAN, INF = math.nan, math.inf


def _rand(shape, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(dtype)


# --- calling the raw ops -------------------------------------------------------------


def dl_args(b=3, l=2, n_in=4, n_out=5, dtype=torch.float64) -> dict:
    names = ("x", "weight", "bias", "branch_weight", "branch_bias")
    args = dynamic_linear_inputs(b, l, n_in, n_out, dtype=dtype, seed=2, tau=TAU)
    grad = _rand((b, l, n_out), dtype, 1)
    return {"grad": grad, **dict(zip(names, args, strict=True)), "tau": TAU}


def call_dl(a: dict):
    return torch.ops.solid_ext.dynamic_linear(
        a["x"], a["weight"], a["bias"], a["branch_weight"], a["branch_bias"], a["tau"]
    )


def call_dl_backward(a: dict):
    return torch.ops.solid_ext.dynamic_linear_backward(
        a["grad"], a["x"], a["weight"], a["branch_weight"], a["branch_bias"], a["tau"],
        True, True, True,
    )  # fmt: skip


def cq_args(m=6, k=4, d=3, dtype=torch.float64, st_codebook=True) -> dict:
    z, c = codebook_quantize_inputs(m, k, d, dtype=dtype, seed=7)
    idx = torch.arange(m) % k
    return {
        "grad_q": _rand((m, d), dtype, 9),
        "grad_sq": _rand((m,), dtype, 10),
        "z": z,
        "codebook": c,
        "indices": idx,
        "straight_through_codebook": st_codebook,
    }


def call_cq(a: dict):
    return torch.ops.solid_ext.codebook_quantize(
        a["z"], a["codebook"], a["straight_through_codebook"]
    )


def call_cq_backward(a: dict):
    return torch.ops.solid_ext.codebook_quantize_backward(
        a["grad_q"], a["grad_sq"], a["z"], a["codebook"], a["indices"],
        a["straight_through_codebook"],
    )  # fmt: skip


OPS: dict[str, tuple[Callable[[dict], object], Callable[..., dict]]] = {
    "dynamic_linear": (call_dl, dl_args),
    "dynamic_linear_backward": (call_dl_backward, dl_args),
    "codebook_quantize": (call_cq, cq_args),
    "codebook_quantize_backward": (call_cq_backward, cq_args),
}


def expect_named_error(op: str, call: Callable[[dict], object], args: dict, name: str) -> str:
    """The call raises a RuntimeError that names the op and the argument ``name``."""
    with pytest.raises(RuntimeError) as err:
        call(args)
    msg = str(err.value)
    assert op in msg, msg
    assert re.search(rf"\b{name}\b", msg), f"{name!r} not named in: {msg}"
    return msg


# --- targeted cases ------------------------------------------------------------------


def _with(**kw):
    return lambda a: {**a, **{k: f(a) for k, f in kw.items()}}


DL_BAD = [
    # Undersized optional tensors: read out of bounds before.
    ("bias", _with(bias=lambda a: a["bias"][:, :2])),
    ("bias", _with(bias=lambda a: a["bias"][:1])),
    ("bias", _with(bias=lambda a: a["bias"][0])),
    ("branch_weight", _with(branch_weight=lambda a: a["branch_weight"][:, :, :2])),
    ("branch_weight", _with(branch_weight=lambda a: a["branch_weight"][:1])),
    ("branch_weight", _with(branch_weight=lambda a: a["branch_weight"][:, :1])),
    ("branch_bias", _with(branch_bias=lambda a: a["branch_bias"][:, :1])),
    ("branch_bias", _with(branch_bias=lambda a: a["branch_bias"].reshape(-1))),
    # dtypes
    ("bias", _with(bias=lambda a: a["bias"].float())),
    ("branch_weight", _with(branch_weight=lambda a: a["branch_weight"].float())),
    ("branch_bias", _with(branch_bias=lambda a: a["branch_bias"].int())),
    ("weight", _with(weight=lambda a: a["weight"].float())),
    ("x", _with(x=lambda a: a["x"].half())),
    ("x", _with(x=lambda a: a["x"].long())),
    # ranks and the x/weight agreement
    ("x", _with(x=lambda a: a["x"][0])),
    ("weight", _with(weight=lambda a: a["weight"][..., None])),
    ("x", _with(x=lambda a: a["x"][:, :, :3])),
    ("x", _with(x=lambda a: a["x"][:2])),
    # tau
    ("tau", _with(tau=lambda a: -0.1)),
    ("tau", _with(tau=lambda a: NAN)),
    ("tau", _with(tau=lambda a: INF)),
    ("tau", _with(tau=lambda a: -INF)),
]


DL_CASES = [
    pytest.param(op, name, mutate, id=f"{op}-{name}-{i}")
    for op in ("dynamic_linear", "dynamic_linear_backward")
    for i, (name, mutate) in enumerate(DL_BAD)
    if not (op == "dynamic_linear_backward" and name == "bias")  # the backward has no bias
]


@pytest.mark.parametrize("op,name,mutate", DL_CASES)
def test_dynamic_linear_rejects(op, name, mutate):
    call, make = OPS[op]
    expect_named_error(op, call, mutate(make()), name)


@pytest.mark.parametrize(
    "mutate",
    [
        _with(grad=lambda a: a["grad"][:, :, :2]),
        _with(grad=lambda a: a["grad"][:, :1]),
        _with(grad=lambda a: a["grad"][:1]),
        _with(grad=lambda a: a["grad"][0]),
        _with(grad=lambda a: a["grad"].float()),
    ],
)
def test_dynamic_linear_backward_rejects_grad(mutate):
    expect_named_error("dynamic_linear_backward", call_dl_backward, mutate(dl_args()), "grad")


def test_undersized_bias_message_gives_the_expected_shape():
    msg = expect_named_error(
        "dynamic_linear", call_dl, _with(bias=lambda a: a["bias"][:, :2])(dl_args()), "bias"
    )
    assert "(B, N_out)" in msg and "[3, 5]" in msg and "[3, 2]" in msg


def test_tau_none_is_named():
    a = {**dl_args(), "tau": None}
    with pytest.raises(RuntimeError, match="tau"):
        call_dl(a)


CQ_BAD = [
    # indices: out of range (crashed or corrupted memory before), dtype, shape
    ("indices", _with(indices=lambda a: torch.full_like(a["indices"], 4))),
    ("indices", _with(indices=lambda a: torch.full_like(a["indices"], 1 << 40))),
    ("indices", _with(indices=lambda a: a["indices"].index_fill(0, torch.tensor([5]), -1))),
    ("indices", _with(indices=lambda a: a["indices"].int())),
    ("indices", _with(indices=lambda a: a["indices"].double())),
    ("indices", _with(indices=lambda a: a["indices"][:3])),
    ("indices", _with(indices=lambda a: a["indices"][:, None])),
    ("grad_q", _with(grad_q=lambda a: a["grad_q"][:, :1])),
    ("grad_q", _with(grad_q=lambda a: a["grad_q"][:2])),
    ("grad_q", _with(grad_q=lambda a: a["grad_q"].float())),
    ("grad_sq", _with(grad_sq=lambda a: a["grad_sq"][:2])),
    ("grad_sq", _with(grad_sq=lambda a: a["grad_sq"][:, None])),
    ("grad_sq", _with(grad_sq=lambda a: a["grad_sq"].float())),
    ("z", _with(z=lambda a: a["z"][:2])),
    ("z", _with(z=lambda a: a["z"][0])),
    ("z", _with(z=lambda a: a["z"].int())),
    ("codebook", _with(codebook=lambda a: a["codebook"][:, :2])),
    ("codebook", _with(codebook=lambda a: a["codebook"].float())),
    ("codebook", _with(codebook=lambda a: a["codebook"][0])),
]


@pytest.mark.parametrize("name,mutate", CQ_BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(CQ_BAD)])
def test_codebook_quantize_backward_rejects(name, mutate):
    expect_named_error("codebook_quantize_backward", call_cq_backward, mutate(cq_args()), name)


def test_out_of_range_index_message_gives_the_range():
    a = _with(indices=lambda a: torch.full_like(a["indices"], 7))(cq_args())
    msg = expect_named_error("codebook_quantize_backward", call_cq_backward, a, "indices")
    assert "[0, 4)" in msg and "7" in msg


@pytest.mark.parametrize(
    "name,mutate",
    [
        ("z", _with(z=lambda a: a["z"][0])),
        ("z", _with(z=lambda a: a["z"][None])),
        ("z", _with(z=lambda a: a["z"].half())),
        ("codebook", _with(codebook=lambda a: a["codebook"][:0])),
        ("codebook", _with(codebook=lambda a: a["codebook"][:, :2])),
        ("codebook", _with(codebook=lambda a: a["codebook"].float())),
        ("codebook", _with(codebook=lambda a: a["codebook"][None])),
    ],
)
def test_codebook_quantize_rejects(name, mutate):
    expect_named_error("codebook_quantize", call_cq, mutate(cq_args()), name)


# --- fuzz: one random defect in an otherwise valid call --------------------------------

# Per op and tensor argument, the dims that another argument pins (a changed size there
# is a mismatch); the rest are free (x's L in the forward, z's M in the search, ...).
PINNED = {
    "dynamic_linear": {
        "x": (0, 2), "weight": (0, 1, 2), "bias": (0, 1),
        "branch_weight": (0, 1, 2), "branch_bias": (0, 1),
    },
    "dynamic_linear_backward": {
        "grad": (0, 1, 2), "x": (0, 1, 2), "weight": (0, 1, 2),
        "branch_weight": (0, 1, 2), "branch_bias": (0, 1),
    },
    "codebook_quantize": {"z": (1,), "codebook": (1,)},
    "codebook_quantize_backward": {
        "grad_q": (0, 1), "grad_sq": (0,), "z": (0, 1), "codebook": (1,), "indices": (0,),
    },
}  # fmt: skip
FLOAT_DTYPES = (torch.float32, torch.float64)
OTHER_DTYPES = (torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.uint8, torch.bool)


@st.composite
def defect(draw, op: str):
    """(args, name of the argument made invalid)."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    if op.startswith("dynamic"):
        dims = [draw(st.integers(1, 5)) for _ in range(4)]
        args = dl_args(*dims, dtype=dtype)
    else:
        m, k, d = draw(st.integers(1, 9)), draw(st.integers(1, 6)), draw(st.integers(1, 5))
        args = cq_args(m, k, d, dtype=dtype, st_codebook=draw(st.booleans()))
        args["indices"] = torch.tensor(
            draw(st.lists(st.integers(0, k - 1), min_size=m, max_size=m)), dtype=torch.long
        )
    names = sorted(PINNED[op])
    if op.startswith("dynamic"):
        names.append("tau")
    if op == "codebook_quantize_backward":
        names.append("indices-range")
    name = draw(st.sampled_from(names))
    if name == "tau":
        args["tau"] = draw(
            st.one_of(st.floats(max_value=0.0, exclude_max=True), st.sampled_from([NAN, INF]))
        )
        return args, name
    if name == "indices-range":
        idx = args["indices"].clone()
        k = args["codebook"].shape[0]
        pos = draw(st.integers(0, idx.numel() - 1))
        idx[pos] = draw(st.one_of(st.integers(-(2**62), -1), st.integers(k, 2**62)))
        args["indices"] = idx
        return args, "indices"
    t = args[name]
    kind = draw(st.sampled_from(["size", "rank", "dtype"]))
    if kind == "size":
        dim = draw(st.sampled_from(PINNED[op][name]))
        shape = list(t.shape)
        shape[dim] = draw(st.integers(0, shape[dim] + 3).filter(lambda n: n != shape[dim]))
        new = torch.zeros(shape, dtype=t.dtype)
    elif kind == "rank":
        shape = list(t.shape)
        if draw(st.booleans()) or len(shape) == 1:
            shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(1, 3)))
        else:
            del shape[draw(st.integers(0, len(shape) - 1))]
        new = torch.zeros(shape, dtype=t.dtype)
    else:
        choices = [dt for dt in (*FLOAT_DTYPES, *OTHER_DTYPES) if dt != t.dtype]
        new = t.to(draw(st.sampled_from(choices)))
    args[name] = new
    return args, name


FUZZ_EXAMPLES = 300
_fuzz_settings = settings(
    max_examples=FUZZ_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("op", sorted(OPS))
@_fuzz_settings
@given(data=st.data())
def test_fuzz_one_defect_raises_naming_it(op, data):
    args, name = data.draw(defect(op))
    expect_named_error(op, OPS[op][0], args, name)


# --- fuzz: valid calls stay accepted (non-contiguous, empty, every optional) -----------


def _maybe_strided(draw, t: torch.Tensor | None) -> torch.Tensor | None:
    """The same values in a non-contiguous layout, half of the time."""
    if t is None or t.dim() < 2 or not draw(st.booleans()):
        return t
    return non_contiguous(t)


@_fuzz_settings
@given(data=st.data())
def test_fuzz_valid_dynamic_linear_calls_are_accepted(data):
    b, l, n_in, n_out = (data.draw(st.integers(0, 4)) for _ in range(4))
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    a = dl_args(b, l, n_in, n_out, dtype=dtype)
    for k in ("bias", "branch_weight", "branch_bias"):
        if data.draw(st.booleans()):
            a[k] = None
    for k in ("grad", "x", "weight", "bias", "branch_weight", "branch_bias"):
        a[k] = _maybe_strided(data.draw, a[k])
    a["tau"] = data.draw(st.sampled_from([0.0, TAU, 1e300]))
    y = call_dl(a)
    ref = dynamic_linear_ref(a["x"], a["weight"], a["bias"], a["branch_weight"],
                             a["branch_bias"], a["tau"])  # fmt: skip
    torch.testing.assert_close(y, ref)
    dx, dw, dbw, db, dbb = call_dl_backward(a)
    assert dx.shape == a["x"].shape and dw.shape == a["weight"].shape
    assert db.shape == (b, n_out)


@_fuzz_settings
@given(data=st.data())
def test_fuzz_valid_codebook_quantize_calls_are_accepted(data):
    m, k, d = (data.draw(st.integers(lo, hi)) for lo, hi in ((0, 9), (1, 6), (0, 5)))
    dtype = data.draw(st.sampled_from(FLOAT_DTYPES))
    a = cq_args(m, k, d, dtype=dtype, st_codebook=data.draw(st.booleans()))
    for key in ("grad_q", "grad_sq"):
        if data.draw(st.booleans()):
            a[key] = None
    for key in ("grad_q", "z", "codebook"):
        a[key] = _maybe_strided(data.draw, a[key])
    q, sq, idx = call_cq(a)
    _, idx_ref, _ = codebook_quantize_ref(a["z"], a["codebook"])
    assert torch.equal(idx, idx_ref) and torch.equal(q, a["codebook"][idx])
    a["indices"] = idx
    gz, gc = call_cq_backward(a)
    assert gz.shape == (m, d) and gc.shape == (k, d)
