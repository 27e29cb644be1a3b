"""The loss-input probe's record: what reached the losses that expect logits or log-probabilities."""
from __future__ import annotations

from dataclasses import dataclass, field

from gradscope.records.base import ProbeRecord, Record


@dataclass(frozen=True)
class LossInputSite(Record):
    """One loss function called from one place, and what its sampled inputs looked like."""

    function: str = ""              # "cross_entropy", "nll_loss", "binary_cross_entropy_with_logits"
    site: str | None = None         # file:line of the call in the training code
    checked: int = 0                # sampled calls
    in_unit_interval: int = 0       # of those, inputs all strictly between 0 and 1 (sigmoid outputs)
    rows_sum_to_one: int = 0        # of those, non-negative rows over the class dimension summing to 1
    non_negative: int = 0           # of those, inputs all >= 0 (never log-probabilities)


@dataclass(frozen=True)
class LossInputsRecord(ProbeRecord, probe="loss_inputs"):
    sites: list[LossInputSite] = field(default_factory=list)

