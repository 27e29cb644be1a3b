"""The learning-rate probe's record: each param group's learning rate over the run, and the
schedulers that were meant to move it."""
from __future__ import annotations

from dataclasses import dataclass, field

from gradscope.records.base import Matrix, ProbeRecord, Record, empty_matrix, fail


@dataclass(frozen=True)
class SchedulerState(Record):
    """A learning-rate scheduler of a watched optimizer."""

    name: str = ""                 # its class
    optimizer: str = ""            # the optimizer, as the groups name it ("SGD#0")
    stepped: bool = True           # step() was called while the scope watched
    steps_watched: int = 0         # training steps the scope saw after it found the scheduler


@dataclass(frozen=True)
class LrRecord(ProbeRecord, probe="lr"):
    """``lr`` holds, per kept step, the learning rate of each param group (in ``groups`` order:
    ``"SGD#0.0"`` is group 0 of the first optimizer), read right before ``optimizer.step()``."""

    groups: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    lr: Matrix = field(default_factory=empty_matrix)
    schedulers: list[SchedulerState] = field(default_factory=list)

    def validate(self, path: str) -> None:
        if (self.steps or self.lr.size) and self.lr.shape != (len(self.steps), len(self.groups)):
            raise fail(f"{path}.lr", f"{len(self.steps)} rows of {len(self.groups)} values", self.lr.tolist())

    def at(self, step: int) -> list[float] | None:
        """The learning rates in force at ``step`` (those of the last kept step at or before it)."""
        import bisect

        i = bisect.bisect_right(self.steps, step) - 1
        return None if i < 0 else [float(x) for x in self.lr[i]]
