"""The zero-grad probe's record: steps that started with the previous steps' gradients."""
from __future__ import annotations

from dataclasses import dataclass

from gradscope.records.base import ProbeRecord


@dataclass(frozen=True)
class ZeroGradRecord(ProbeRecord, probe="zero_grad"):
    watched_parameter: str = ""
    steps_checked: int = 0
    steps_with_stale_gradients: int = 0
    first_stale_step: int | None = None
