"""The reference probe's record: where a run left the envelope of known-good reference runs.

The departures are computed from the run's other records and the references (``gradscope.reference``)
and kept here as plain values, so a record on disk says what changed without the reference files.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gradscope.records.base import ProbeRecord, Record


@dataclass(frozen=True)
class Departure(Record):
    """One way the run differs from its references: a quantity that left the band at ``step``
    (``value`` against the band ``low``..``high`` there), or a setting that differs (no step)."""

    code: str = ""
    severity: Literal["error", "warning", "info"] = "warning"   # the catalog's, or a new finding's (GS809)
    where: str = ""
    quantity: str = ""               # grad_norm, loss, update_ratio, clip, lr, optimizer, parameters, ...
    step: int | None = None          # the first step outside the envelope; None for a setting
    value: float | None = None       # this run's value there
    low: float | None = None         # the band at that step (tolerance included)
    high: float | None = None
    message: str = ""


@dataclass(frozen=True)
class ReferenceRecord(ProbeRecord, probe="reference"):
    references: list[str] = field(default_factory=list)       # the reference runs' names (file names)
    reference_steps: list[int] = field(default_factory=list)  # steps each of them completed
    compared_until: int | None = None                         # the last step of this run compared
    departures: list[Departure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)            # what could not be compared, and why
