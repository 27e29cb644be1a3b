"""The update-ratio probe's record: ``||dw|| / ||w||`` per layer at sampled steps."""
from __future__ import annotations

from dataclasses import dataclass, field

from gradscope.records.base import Matrix, ProbeRecord, empty_matrix, fail


@dataclass(frozen=True)
class UpdateRatioRecord(ProbeRecord, probe="update_ratio"):
    """``ratios`` is NaN where a layer's weight norm was 0 (a ratio to nothing is undefined)."""

    layers: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    ratios: Matrix = field(default_factory=empty_matrix)

    def validate(self, path: str) -> None:
        if (self.steps or self.ratios.size) and self.ratios.shape != (len(self.steps), len(self.layers)):
            raise fail(f"{path}.ratios", f"{len(self.steps)} rows of {len(self.layers)} values",
                       self.ratios.tolist())
