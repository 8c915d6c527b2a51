"""Sizes from configs and flags checked against this machine's memory before anything
is allocated: a value that cannot fit is refused naming its key and the bytes it needs,
instead of an allocation traceback (or minutes of swapping) later."""

from __future__ import annotations

import os

GIB = 1 << 30


def physical_bytes() -> int:
    """This machine's physical memory (0 where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


def check_fits(nbytes: float, key: str, value: object, what: str, limit: int | None = None) -> None:
    """ValueError naming ``key`` (set to ``value``) when ``nbytes``, an estimate of what
    ``what`` needs, is above ``limit`` (default: the physical memory)."""
    limit = physical_bytes() if limit is None else limit
    if limit and nbytes > limit:
        raise ValueError(
            f"{key} {value}: {what} needs about {nbytes / GIB:,.1f} GiB, more than the "
            f"{limit / GIB:,.1f} GiB of memory here; lower {key}"
        )


def model_bytes(
    num_items: int,
    num_semantic: int,
    dim: int,
    hidden: int,
    cond_dim: int,
    layers: int,
    optimizer_copies: int = 4,
) -> float:
    """An estimate of a model's training memory: its largest parameter blocks (item and
    semantic tables, transformer layers, the generated head) times ``optimizer_copies``
    (weights, gradients, Adam's two moments)."""
    params = (num_items + 1 + num_semantic + 1) * dim  # id and semantic tables
    params += layers * 12 * dim * dim  # attention + feed-forward per layer
    params += 2 * (dim * hidden + hidden * hidden) * (cond_dim + 1)  # generated head
    return 4.0 * params * optimizer_copies
