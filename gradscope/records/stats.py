"""Per-column statistics over every step of a run (count, min, max, mean, first non-finite step)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gradscope.records.base import Record, Vector, empty_vector, fail


@dataclass(frozen=True)
class Stats(Record):
    """One column's statistics: ``min``/``max``/``mean`` are over finite values, None if none."""

    count: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    first_nonfinite_step: int | None = None


@dataclass(frozen=True)
class StatsTable(Record):
    """Statistics of many columns (parameters, layers, modules), one entry per column, in the
    order of the names the owning record lists. ``min``, ``max`` and ``mean`` are NaN for a
    column with no finite value (``count`` 0)."""

    count: list[int] = field(default_factory=list)
    min: Vector = field(default_factory=empty_vector)
    max: Vector = field(default_factory=empty_vector)
    mean: Vector = field(default_factory=empty_vector)
    first_nonfinite_step: list[int | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.count)

    def row(self, i: int) -> Stats:
        def num(a: np.ndarray) -> float | None:
            return float(a[i]) if self.count[i] and i < len(a) else None

        return Stats(self.count[i], num(self.min), num(self.max), num(self.mean),
                     self.first_nonfinite_step[i] if i < len(self.first_nonfinite_step) else None)

    def validate(self, path: str) -> None:
        n = len(self.count)
        for name in ("min", "max", "mean", "first_nonfinite_step"):
            if len(getattr(self, name)) != n:
                raise fail(f"{path}.{name}", f"{n} entries (one per entry of count)", getattr(self, name))

    @staticmethod
    def from_named(table: Any, names: list[str]) -> dict[str, Any]:
        """The columnar JSON of a 0.1-style ``{name: {count, min, max, mean, ...}}`` object."""
        rows = [table.get(n) if isinstance(table.get(n), dict) else {} for n in names]
        return {"count": [r.get("count", 0) for r in rows], "min": [r.get("min") for r in rows],
                "max": [r.get("max") for r in rows], "mean": [r.get("mean") for r in rows],
                "first_nonfinite_step": [r.get("first_nonfinite_step") for r in rows]}


def upgrade_named(data: dict[str, Any], key: str, names_key: str) -> None:
    """In place: turn ``data[key]`` from the by-name layout of records before version 2 into
    columns ordered like ``data[names_key]``."""
    table = data.get(key)
    if isinstance(table, dict) and "count" not in table:
        names = data.get(names_key)
        order = [str(n) for n in names] if isinstance(names, list) else list(table)
        order += [k for k in table if k not in set(order)]
        data[key] = StatsTable.from_named(table, order)
