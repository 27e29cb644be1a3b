"""GS308 (a learning rate that collapses) and GS309 (a scheduler that is never stepped)."""
from __future__ import annotations

import numpy as np

from gradscope.findings import Finding, finding
from gradscope.records.lr import LrRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds

MIN_STEPS = 10          # GS309: steps after the scheduler was found, before "never" means anything


def judge_lr(rec: LrRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    for j, group in enumerate(rec.groups):
        col = rec.lr[:, j]
        col = col[np.isfinite(col)]
        if col.size < 2:
            continue
        peak = float(col.max())
        # only after the peak: a warm-up that starts from 0 is no collapse. A cosine schedule
        # reaches peak/1000 in its last 2% of steps; a collapse stays there
        low = col[int(np.argmax(col)):] < peak / th.lr_collapse
        share = float(low.sum()) / col.size
        if peak > 0 and share > th.lr_collapse_share and low[-1]:
            full = rec.lr[:, j]
            first = rec.steps[int(np.flatnonzero((full < peak / th.lr_collapse)
                                                 & (np.arange(full.size) >= int(np.nanargmax(full))))[0])]
            out.append(finding(
                "GS308", group,
                f"the learning rate of {group} fell from {peak:.3g} to {float(col[-1]):.3g}, below "
                f"1/{th.lr_collapse:g} of its peak from step {first} on ({share:.0%} of the recorded "
                "steps): from there the weights barely move."))
    for s in rec.schedulers:
        if not s.stepped and s.steps_watched >= MIN_STEPS:
            out.append(finding(
                "GS309", s.optimizer,
                f"a {s.name} was built for {s.optimizer} but its step() was never called in "
                f"{s.steps_watched} training steps: the learning rate never follows the schedule."))
    return out
