"""GS503 from the zero-grad record."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.records.run import RunRecord
from gradscope.records.zero_grad import ZeroGradRecord
from gradscope.thresholds import Thresholds


def judge_zero_grad(rec: ZeroGradRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    return _stale(rec, run) + _emptied(rec, run)


def _emptied(rec: ZeroGradRecord, run: RunRecord) -> list[Finding]:
    emptied, steps = rec.emptied_accumulation_steps or 0, rec.accumulation_steps or 0
    if emptied < 2 or emptied < steps / 2:
        return []
    return [finding(
        "GS511", run.root_name,
        f"zero_grad() ran before every backward pass of {emptied} of {steps} accumulation steps (first at "
        f"step {rec.first_emptied_step}; seen on {rec.watched_parameter}): each micro-batch starts from an "
        "empty .grad, so the optimizer steps with the last micro-batch's gradient alone and the "
        "accumulation does nothing.")]


def _stale(rec: ZeroGradRecord, run: RunRecord) -> list[Finding]:
    if not rec.steps_with_stale_gradients:
        return []
    first = f" (first at step {rec.first_stale_step})" if rec.first_stale_step is not None else ""
    return [finding(
        "GS503", run.root_name,
        f"optimizer.step() ran again without zero_grad(): at {rec.steps_with_stale_gradients} of "
        f"{rec.steps_checked} steps{first} the gradient of the previous steps was still in .grad (seen "
        f"on {rec.watched_parameter}) when backward added the new one, so every update uses the sum "
        "of all gradients so far.")]
