"""The CPU kernel variants: run-time choice, the SOLID_EXT_CPU_ISA override and its
errors. (Every op test runs once per variant through the ``backend`` fixture.)"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import solid_ext
from solid_ext import ops
from solid_ext.reference import codebook_quantize_ref
from solid_ext.testing import codebook_quantize_inputs

pytestmark = pytest.mark.skipif(
    "cpu" not in solid_ext.available_backends(),
    reason="compiled extension not built (the build itself fails `make test` first)",
)
KNOWN = ("avx512", "avx2", "baseline")


def _run(code: str, isa: str | None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SOLID_EXT_CPU_ISA"}
    if isa is not None:
        env["SOLID_EXT_CPU_ISA"] = isa
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_supported_variants_are_ordered_and_include_baseline():
    isas = solid_ext.cpu_isas()
    assert isas[-1] == "baseline"
    assert list(isas) == [i for i in KNOWN if i in isas]
    assert solid_ext.cpu_isa() in isas


def test_default_is_the_widest_supported():
    res = _run("import solid_ext; print(solid_ext.cpu_isa(), solid_ext.cpu_isas()[0])", None)
    assert res.returncode == 0, res.stderr
    used, widest = res.stdout.split()
    assert used == widest


@pytest.mark.parametrize("isa", solid_ext.cpu_isas() + ["auto"])
def test_env_selects_each_variant(isa):
    code = (
        "import torch, solid_ext\n"
        "z, c = torch.randn(50, 7), torch.randn(9, 7)\n"
        "solid_ext.codebook_quantize(z, c)\n"
        "print(solid_ext.cpu_isa())"
    )
    res = _run(code, isa)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == (solid_ext.cpu_isas()[0] if isa == "auto" else isa)


def test_env_unknown_value_is_a_clear_error():
    res = _run("import solid_ext; solid_ext.cpu_isa()", "avx1024")
    assert res.returncode != 0
    assert "ValueError" in res.stderr
    assert "SOLID_EXT_CPU_ISA=avx1024" in res.stderr
    assert "this CPU supports: " + ", ".join(solid_ext.cpu_isas()) in res.stderr
    # and an op call raises it too, instead of running some variant silently
    res = _run(
        "import torch, solid_ext; solid_ext.dynamic_linear(*[torch.randn(2, 3, 3)] * 2)", "x"
    )
    assert res.returncode != 0 and "SOLID_EXT_CPU_ISA=x: unknown CPU kernel variant" in res.stderr


def test_env_unsupported_value_is_a_clear_error():
    missing = [i for i in KNOWN if i not in solid_ext.cpu_isas()]
    if not missing:
        # This CPU runs every variant, so there is no unsupported one to ask for; the
        # same check (find_runnable in isa.cpp) rejects unknown names above.
        return
    res = _run("import solid_ext; solid_ext.cpu_isa()", missing[0])
    assert res.returncode != 0
    assert f"this CPU cannot run the '{missing[0]}' kernels" in res.stderr


def test_use_cpu_isa_restores_and_rejects_unknown():
    before = solid_ext.cpu_isa()
    with solid_ext.use_cpu_isa("baseline") as name:
        assert name == "baseline" == solid_ext.cpu_isa()
    assert solid_ext.cpu_isa() == before
    with (
        pytest.raises(ValueError, match="cpu_isa=sse1: unknown CPU kernel variant"),
        solid_ext.use_cpu_isa("sse1"),
    ):
        pass
    assert solid_ext.cpu_isa() == before


@pytest.mark.parametrize("isa", solid_ext.cpu_isas())
def test_fma_peak_loop_counts_flops(isa):
    ext = solid_ext._backend.compiled_extension()
    lanes = {"avx512": 16, "avx2": 8, "baseline": 4}[isa]
    flops = ext.fma_flops(isa, 1000, 2)
    assert flops > 0 and flops % (2 * 1000 * lanes * 2) == 0


@pytest.mark.parametrize("isa", solid_ext.cpu_isas())
def test_variants_agree_on_a_large_search(isa):
    # Sizes that cross every tile, chunk and group boundary of every variant.
    z, c = codebook_quantize_inputs(1000, 2100, 37, dtype=torch.float32, seed=3)
    with solid_ext.use_backend("cpu"), solid_ext.use_cpu_isa(isa):
        q, idx, sq = ops.codebook_quantize(z, c)
    _, idx_ref, sq_ref = codebook_quantize_ref(z.double(), c.double())
    dist = ((z.double()[:, None] - c.double()[None]) ** 2).sum(-1)
    chosen = dist.gather(1, idx[:, None]).squeeze(1)
    assert (chosen - dist.min(1).values <= 1e-5 * (1 + dist.min(1).values)).all()
    assert (idx == idx_ref).float().mean() > 0.99
    torch.testing.assert_close(q, c[idx])
