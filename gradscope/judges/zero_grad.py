"""GS503 from the zero-grad record."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.records.run import RunRecord
from gradscope.records.zero_grad import ZeroGradRecord
from gradscope.thresholds import Thresholds


def judge_zero_grad(rec: ZeroGradRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    if not rec.steps_with_stale_gradients:
        return []
    first = f" (first at step {rec.first_stale_step})" if rec.first_stale_step is not None else ""
    return [finding(
        "GS503", run.root_name,
        f"optimizer.step() ran again without zero_grad(): at {rec.steps_with_stale_gradients} of "
        f"{rec.steps_checked} steps{first} the gradient of the previous steps was still in .grad (seen "
        f"on {rec.watched_parameter}) when backward added the new one, so every update uses the sum "
        "of all gradients so far.")]
