"""The timing probe's record: milliseconds per phase of each kept step, and their summary."""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any, Sequence

from gradscope.records.base import Matrix, ProbeRecord, Record, empty_matrix, fail

PHASES = ("data", "h2d", "forward", "backward", "clip", "optimizer", "gradscope", "other", "step")


@dataclass(frozen=True)
class PhaseStats(Record):
    median_ms: float = 0.0
    p90_ms: float = 0.0
    mean_ms: float = 0.0


@dataclass(frozen=True)
class TimingSummary(Record):
    """Over the steps after the warm-up; ``phases["step"]`` is the whole step."""

    steps_measured: int = 0
    phases: dict[str, PhaseStats] = field(default_factory=dict)
    steps_per_second: float | None = None


def summarise(columns: Sequence[str], rows: Sequence[Sequence[float]]) -> TimingSummary | None:
    """Median, 90th percentile (the value at 90% of the sorted rows) and mean of each column;
    ``steps_per_second`` from the median of the "step" column."""
    if not rows:
        return None
    phases = {}
    for j, phase in enumerate(columns):
        values = sorted(float(r[j]) for r in rows)
        phases[phase] = PhaseStats(median_ms=statistics.median(values),
                                   p90_ms=values[min(len(values) - 1, int(0.9 * len(values)))],
                                   mean_ms=sum(values) / len(values))
    step = phases.get("step")
    return TimingSummary(steps_measured=len(rows), phases=phases,
                         steps_per_second=1000.0 / step.median_ms if step and step.median_ms > 0 else None)


@dataclass(frozen=True)
class TimingRecord(ProbeRecord, probe="timing"):
    columns: list[str] = field(default_factory=lambda: list(PHASES))
    steps: list[int] = field(default_factory=list)
    ms: Matrix = field(default_factory=empty_matrix)
    clock: str = "perf_counter_ns"
    warmup_steps: int = 5
    summary: TimingSummary | None = None

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        # Before version 2 the summary sat at the top level, and "phases" was the column names
        # until the warm-up was over, then the summary by phase.
        phases = data.pop("phases", None)
        if isinstance(phases, dict) and "summary" not in data:
            data["summary"] = {"steps_measured": data.pop("steps_measured", 0), "phases": phases,
                               "steps_per_second": data.pop("steps_per_second", None)}
        elif isinstance(phases, list) and "columns" not in data:
            data["columns"] = phases
        data.pop("steps_measured", None)
        data.pop("steps_per_second", None)
        return data

    def validate(self, path: str) -> None:
        if (self.steps or self.ms.size) and self.ms.shape != (len(self.steps), len(self.columns)):
            raise fail(f"{path}.ms", f"{len(self.steps)} rows of {len(self.columns)} values "
                       "(one per column)", self.ms.tolist())

    def column(self, phase: str) -> list[float]:
        """One phase's milliseconds over the kept steps (empty when the phase is not a column)."""
        if phase not in self.columns or not self.steps:
            return []
        return [float(x) for x in self.ms[:, self.columns.index(phase)]]
