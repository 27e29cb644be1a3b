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
    accumulation_steps: int | None = None           # steps with several backward passes (GS511)
    emptied_accumulation_steps: int | None = None   # of those, steps whose every later backward found .grad emptied
    first_emptied_step: int | None = None

    evidence = {"GS511": ("accumulation_steps", "emptied_accumulation_steps")}
