"""The hook probe's record: user hooks counted over time, and hooks that replaced a gradient."""
from __future__ import annotations

from dataclasses import dataclass, field

from gradscope.records.base import ProbeRecord, Record


@dataclass(frozen=True)
class HookChange(Record):
    where: str = ""
    kind: str = ""
    times: int = 0


@dataclass(frozen=True)
class HookSample(Record):
    """User hooks per place (``"module fc"``, ``"parameter fc.weight"``) after a step."""

    step: int = 0
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HooksRecord(ProbeRecord, probe="hooks"):
    hook_counts: dict[str, int] = field(default_factory=dict)    # at the last sample
    gradient_changed_by: list[HookChange] = field(default_factory=list)
    samples: list[HookSample] | None = None

    evidence = {"GS601": ("samples",)}
