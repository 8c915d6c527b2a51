"""solid_ext: fused kernels and modules for SOLID-style dynamic recommendation models.

Ops (``solid_ext.ops``): ``dynamic_linear``, ``generated_linear`` and ``codebook_quantize``;
for item tables ``sparse_row_update`` and ``item_softmax_xent``.
Row-wise optimizers for embedding tables (``solid_ext.optim``): :class:`LazyAdam`,
:class:`RowwiseAdagrad`.
Modules: :class:`DynamicLinear` with its parameter generators (:class:`FullRankGenerator`,
the default, DUET's; :class:`LowRankGenerator`, APG's; the :class:`ParameterGenerator`
protocol), :class:`SemanticCodebook`.
Backends: :func:`available_backends`, :func:`use_backend`, env ``SOLID_EXT_BACKEND``.
CPU kernel variant: :func:`cpu_isa`, :func:`cpu_isas`, :func:`use_cpu_isa`, env
``SOLID_EXT_CPU_ISA``.
"""

from . import ops, optim, reference
from ._backend import available_backends, cpu_isa, cpu_isas, use_backend, use_cpu_isa
from .nn import (
    DynamicLinear,
    FullRankGenerator,
    LowRankGenerator,
    ParameterGenerator,
    SemanticCodebook,
)
from .ops import (
    codebook_quantize,
    dynamic_linear,
    generated_linear,
    item_softmax_xent,
    sparse_row_update,
)
from .optim import LazyAdam, RowwiseAdagrad

__version__ = "0.1.0"

__all__ = [
    "DynamicLinear",
    "FullRankGenerator",
    "LazyAdam",
    "LowRankGenerator",
    "ParameterGenerator",
    "RowwiseAdagrad",
    "SemanticCodebook",
    "available_backends",
    "codebook_quantize",
    "cpu_isa",
    "cpu_isas",
    "dynamic_linear",
    "generated_linear",
    "item_softmax_xent",
    "ops",
    "optim",
    "reference",
    "sparse_row_update",
    "use_backend",
    "use_cpu_isa",
]
