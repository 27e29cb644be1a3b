"""Host-side storage for per-step statistics that stays bounded however long the run.

Two parts, both updated once per flush, never per step:

- ``RunningStats``: exact count, sum, min, max and first non-finite step of every column over
  *all* steps (they see every row before anything is dropped).
- ``DecimatedSeries``: the rows themselves, for plots. It keeps every ``stride``-th row offered
  (with one row per step from step 0: the steps that are multiples of the stride); when it holds
  more than ``max_rows`` rows the stride doubles and every other row goes.
  Memory is therefore at most ``max_rows`` rows, and the kept steps stay evenly spaced.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from gradscope.records.stats import StatsTable


@dataclass
class RunningStats:
    """Exact per-column statistics over every step seen, ignoring non-finite values."""

    width: int
    count: torch.Tensor = field(init=False)
    total: torch.Tensor = field(init=False)
    minimum: torch.Tensor = field(init=False)
    maximum: torch.Tensor = field(init=False)
    first_nonfinite_step: list[int | None] = field(init=False)

    def __post_init__(self) -> None:
        self.count = torch.zeros(self.width, dtype=torch.long)
        self.total = torch.zeros(self.width, dtype=torch.float64)
        self.minimum = torch.full((self.width,), float("inf"), dtype=torch.float64)
        self.maximum = torch.full((self.width,), float("-inf"), dtype=torch.float64)
        self.first_nonfinite_step = [None] * self.width

    def update(self, steps: list[int], rows: torch.Tensor) -> None:
        """Fold in ``rows`` (one per step in ``steps``, CPU float64)."""
        if rows.numel() == 0:
            return
        finite = torch.isfinite(rows)
        if not bool(finite.all()):
            bad_rows, bad_cols = (~finite).nonzero(as_tuple=True)
            for r, c in zip(bad_rows.tolist(), bad_cols.tolist()):
                if self.first_nonfinite_step[c] is None:
                    self.first_nonfinite_step[c] = steps[r]
        clean = torch.where(finite, rows, torch.zeros_like(rows))
        self.count += finite.sum(dim=0)
        self.total += clean.sum(dim=0)
        self.minimum = torch.minimum(self.minimum, torch.where(finite, rows, torch.inf).amin(dim=0))
        self.maximum = torch.maximum(self.maximum, torch.where(finite, rows, -torch.inf).amax(dim=0))

    def mean(self) -> torch.Tensor:
        return self.total / self.count.clamp_min(1)

    def table(self) -> StatsTable:
        """The statistics as a record: one entry per column (NaN where nothing was finite)."""
        seen = self.count > 0
        nan = torch.full_like(self.total, float("nan"))
        return StatsTable(count=self.count.tolist(),
                          min=torch.where(seen, self.minimum, nan).numpy().copy(),
                          max=torch.where(seen, self.maximum, nan).numpy().copy(),
                          mean=torch.where(seen, self.mean(), nan).numpy().copy(),
                          first_nonfinite_step=list(self.first_nonfinite_step))


@dataclass
class DecimatedSeries:
    """Rows of ``width`` values keyed by step, thinned to at most ``max_rows`` evenly spaced steps."""

    width: int
    max_rows: int = 2048
    stride: int = 1
    steps: list[int] = field(default_factory=list)
    _blocks: list[torch.Tensor] = field(default_factory=list)

    offered: int = 0  # rows ever offered; the k-th kept row is the (k * stride)-th offered one

    def append(self, steps: list[int], rows: torch.Tensor) -> None:
        # Thin by position among the offered rows, not by step number: steps that are sparse or
        # all odd (a tensor probed every 10th step from step 5) are thinned evenly, not dropped.
        keep = [i for i in range(len(steps)) if (self.offered + i) % self.stride == 0]
        self.offered += len(steps)
        if keep:
            self.steps.extend(steps[i] for i in keep)
            self._blocks.append(rows[keep].clone())
        while len(self.steps) > self.max_rows:
            self.stride *= 2
            merged = self.values()
            keep = list(range(0, len(self.steps), 2))
            self.steps = [self.steps[i] for i in keep]
            self._blocks = [merged[keep].clone()]

    def values(self) -> torch.Tensor:
        """All kept rows as one (kept steps x width) tensor."""
        if not self._blocks:
            return torch.zeros(0, self.width, dtype=torch.float64)
        if len(self._blocks) > 1:
            self._blocks = [torch.cat(self._blocks)]
        return self._blocks[0]
