"""GS510 from the timing record: the step waits for its data."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.records.run import RunRecord
from gradscope.records.timing import TimingRecord
from gradscope.thresholds import Thresholds

MIN_STEPS = 5  # steps past the warm-up before a share of the step means anything


def judge_timing(rec: TimingRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    summary = rec.summary
    if summary is None or summary.steps_measured < MIN_STEPS or "step" not in summary.phases:
        return []
    phases = summary.phases
    step = phases["step"].median_ms
    data = sum(phases[p].median_ms for p in ("data", "h2d") if p in phases)
    limit = th.input_bound_share
    if step > 0 and data / step > limit and data >= th.input_bound_min_ms:
        return [finding(
            "GS510", "DataLoader",
            f"training is input-bound: waiting for data (and copying it to the device) takes "
            f"{data:.1f} ms of a {step:.1f} ms median step ({data / step:.0%}, threshold {limit:.0%}): "
            "the model waits for the loader.")]
    return []
