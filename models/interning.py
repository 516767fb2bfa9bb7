"""Interning: a bijection between hashable values and dense ints, for cheap global states.

Why: Python does not cache the hash of a tuple, so a global state built from nested core
snapshots is re-hashed, element by element, at every deduplication lookup. Replacing each
snapshot (or channel, or bookkeeping record) by the int it is interned as makes a state a tuple
of small ints that hashes in a few nanoseconds per field. The mapping is a bijection (a value
always gets the same id, an id always stands for one value), so deduplicating ids is exactly
deduplicating the values behind them.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

__all__ = ["Interned"]


class Interned:
    """Values numbered 0, 1, 2, ... in order of first sight."""

    __slots__ = ("ids", "values")

    def __init__(self) -> None:
        self.ids: dict[Hashable, int] = {}
        self.values: list[Any] = []

    def __call__(self, value: Hashable) -> tuple[int, bool]:
        """(id of ``value``, whether it was seen for the first time)."""
        known = self.ids.get(value)
        if known is not None:
            return known, False
        known = len(self.values)
        self.ids[value] = known
        self.values.append(value)
        return known, True

    def __len__(self) -> int:
        return len(self.values)
