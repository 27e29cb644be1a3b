"""The clipping probe's record: every observed clip call and the misplaced ones."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gradscope.records.base import ProbeRecord, Record, Vector, empty_vector

ClipKind = Literal["norm", "value", "with_norm"]


@dataclass(frozen=True)
class ClipCall(Record):
    """One call. Norm clipping has ``total_norm`` (pre-clip), ``coefficient``, ``clipped_norm``
    and ``acted``; value clipping has ``saturated`` (share of elements clipped)."""

    step: int = 0
    kind: ClipKind = "norm"
    threshold: float = 0.0
    total_norm: float | None = None
    coefficient: float | None = None
    clipped_norm: float | None = None
    acted: bool | None = None
    saturated: float | None = None


@dataclass(frozen=True)
class ClipEvent(Record):
    """A clip call that ran at the wrong time (``when`` says which)."""

    step: int = 0
    function: str = ""
    when: str = ""


@dataclass(frozen=True)
class ClipSummary(Record):
    calls: int = 0
    norm_calls: int = 0
    clipped_fraction: float | None = None
    rolling_clipped_fraction: Vector = field(default_factory=empty_vector)   # over the last 50
    mean_saturated: float | None = None


@dataclass(frozen=True)
class ClippingRecord(ProbeRecord, probe="clipping"):
    calls: list[ClipCall] = field(default_factory=list)
    summary: ClipSummary = field(default_factory=ClipSummary)
    misplaced: list[ClipEvent] | None = None        # GS403: nothing fresh to clip
    scaled: list[ClipEvent] | None = None           # GS406: still scaled by a GradScaler
    per_micro_batch: list[ClipEvent] | None = None  # GS407: clipped inside accumulation
    clip_steps: int | None = None                   # steps with at least one clip call

    evidence = {"GS403": ("misplaced",), "GS406": ("scaled",), "GS407": ("per_micro_batch", "clip_steps")}
