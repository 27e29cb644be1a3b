"""The loss probe's record: the loss each step backpropagated, as the training script computed it."""
from __future__ import annotations

from dataclasses import dataclass, field

from gradscope.records.base import ProbeRecord, Vector, empty_vector, fail
from gradscope.records.stats import Stats

MIN_STEPS_FOR_TREND = 10


@dataclass(frozen=True)
class LossRecord(ProbeRecord, probe="loss"):
    """Per kept step, the sum of the losses its backward passes started from (with gradient
    accumulation divided as the script divides it, that is the step's loss)."""

    steps: list[int] = field(default_factory=list)
    loss: Vector = field(default_factory=empty_vector)
    stats: Stats = field(default_factory=Stats)

    def validate(self, path: str) -> None:
        if len(self.loss) != len(self.steps):
            raise fail(f"{path}.loss", f"{len(self.steps)} values (one per step)", self.loss.tolist())

    def falling(self) -> bool | None:
        """Whether the loss fell over the run: the median of the last third of the finite values
        at least 10% below the first third's, and a downward trend over all of them (Kendall's
        tau below -0.2, so one lucky batch is not a trend). None with fewer than 10 values: a
        loss that varies from batch to batch cannot say more in a handful of steps."""
        import numpy as np

        values = self.loss[np.isfinite(self.loss)]
        if values.size < MIN_STEPS_FOR_TREND:
            return None
        third = values.size // 3
        early, late = float(np.median(values[:third])), float(np.median(values[-third:]))
        i, j = np.triu_indices(values.size, k=1)
        tau = float(np.sign(values[j] - values[i]).mean())
        return late < early - 0.1 * abs(early) and tau < -0.2
