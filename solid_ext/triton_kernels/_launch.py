"""Every kernel launch of the Triton backend goes through :func:`launch`.

One indirection, so the launches the ops make can be recorded instead of run
(:func:`recording`, used by :mod:`solid_ext.triton_kernels.aot` to compile each one
for a GPU that is not there) without patching anything inside Triton.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

# The innermost active recording (None: launch for real). Process-wide, like the
# backend switch: recording is for tools, not for concurrent use.
_recorder: list[Recorded] | None = None


@dataclass
class Recorded:
    """One launch that was recorded instead of run."""

    kernel: Any  # the triton.jit function
    grid: tuple
    args: tuple  # positional: the runtime arguments
    kwargs: dict[str, Any] = field(default_factory=dict)  # constexprs and launch options


def launch(kernel: Any, grid: tuple, *args: Any, **kwargs: Any) -> None:
    """``kernel[grid](*args, **kwargs)``, or record it inside :func:`recording`."""
    if _recorder is not None:
        _recorder.append(Recorded(kernel, grid, args, kwargs))
        return
    kernel[grid](*args, **kwargs)


@contextmanager
def recording() -> Iterator[list[Recorded]]:
    """Record the launches made inside the block instead of running them."""
    global _recorder
    outer, _recorder = _recorder, []
    try:
        yield _recorder
    finally:
        _recorder = outer
