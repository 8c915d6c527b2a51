"""solid_ext: fused kernels and modules for SOLID-style dynamic recommendation models.

Ops (``solid_ext.ops``): ``dynamic_linear`` and ``codebook_quantize``.
Modules: :class:`DynamicLinear`, :class:`SemanticCodebook`.
Backends: :func:`available_backends`, :func:`use_backend`, env ``SOLID_EXT_BACKEND``.
"""

from . import ops, reference
from ._backend import available_backends, use_backend
from .nn import DynamicLinear, SemanticCodebook
from .ops import codebook_quantize, dynamic_linear

__version__ = "0.1.0"

__all__ = [
    "DynamicLinear",
    "SemanticCodebook",
    "available_backends",
    "codebook_quantize",
    "dynamic_linear",
    "ops",
    "reference",
    "use_backend",
]
