"""The in-memory form every reader produces, before the protocol is applied."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: One category path, root first, e.g. ("Industrial & Scientific", "Lab", "Pipettes").
CategoryPath = tuple[str, ...]


@dataclass
class RawDataset:
    """Interactions as integer codes into ``user_ids`` / ``item_ids``.

    Rows are in file order. If ``time`` is None the file order is each user's
    chronological order; otherwise rows are ordered by ``time`` per user, ties broken
    by file order. ``time`` is a sort key, not necessarily the timestamps themselves:
    integer timestamps as they are, ISO-8601 date/times in nanoseconds since the epoch,
    and decimals (or anything an int64 cannot hold exactly) as their dense rank under
    exact comparison, so equal timestamps get equal keys and distinct ones never tie.
    ``titles`` and ``categories`` (when present) align with ``item_ids``; an item may
    carry several category paths (e.g. MovieLens genres).
    """

    user: np.ndarray  # int64 (n,)
    item: np.ndarray  # int64 (n,)
    time: np.ndarray | None  # int64 (n,) order key, or None
    user_ids: np.ndarray  # str (num_users,)
    item_ids: np.ndarray  # str (num_items,)
    titles: list[str] | None = None
    categories: list[tuple[CategoryPath, ...]] | None = None
    inputs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.user)
        if len(self.item) != n or (self.time is not None and len(self.time) != n):
            raise ValueError("user, item and time must have equal lengths")
        for name in ("titles", "categories"):
            values = getattr(self, name)
            if values is not None and len(values) != len(self.item_ids):
                raise ValueError(f"{name} must align with item_ids")
