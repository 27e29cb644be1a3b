"""The non-finite probe's record: where NaN/Inf first reached the forward output or the loss."""
from __future__ import annotations

from dataclasses import dataclass, field

from gradscope.records.base import ProbeRecord


@dataclass(frozen=True)
class NonFiniteRecord(ProbeRecord, probe="nonfinite"):
    """``located`` maps a step (as text) to the first module whose output was non-finite, or
    "input" when the batch already was. In a distributed run the flags are those of every rank,
    and the ranks say which rank saw them first."""

    first_nonfinite_output_step: int | None = None
    first_nonfinite_loss_step: int | None = None
    located: dict[str, str] = field(default_factory=dict)
    first_nonfinite_output_rank: int | None = None   # in a distributed run: the first rank that saw it
    first_nonfinite_loss_rank: int | None = None
    located_rank: dict[str, int] = field(default_factory=dict)  # step -> the rank that located it
