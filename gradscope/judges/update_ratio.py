"""GS208 from the update-ratio record."""
from __future__ import annotations

import numpy as np

from gradscope.findings import Finding, finding
from gradscope.records.lr import LrRecord
from gradscope.records.run import RunRecord
from gradscope.records.update_ratio import UpdateRatioRecord
from gradscope.thresholds import Thresholds

WARMUP_SHARE = 0.1  # a sample taken with every learning rate below this share of its peak is warm-up


def _away_from_warmup(rec: UpdateRatioRecord, run: RunRecord) -> np.ndarray:
    """Which samples to judge: not those taken while the learning rate was still warming up (or
    had decayed to nearly nothing), when a small update says nothing about the learning rate."""
    lrs = run.probe(LrRecord)
    keep = np.ones(len(rec.steps), dtype=bool)
    if lrs is None or lrs.lr.size == 0:
        return keep
    # a param group added in mid-run has no learning rate before it (NaN): its peak is over the rest
    peak = np.array([float(np.nanmax(col)) if np.isfinite(col).any() else 0.0 for col in lrs.lr.T])
    for i, step in enumerate(rec.steps):
        now = lrs.at(step)
        if now is not None and all(not (v >= WARMUP_SHARE * p) for v, p in zip(now, peak) if p > 0):
            keep[i] = False
    return keep


def judge_update_ratio(rec: UpdateRatioRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    if rec.ratios.size == 0:
        return []
    keep = _away_from_warmup(rec, run)
    out = []
    for j, layer in enumerate(rec.layers):
        col = rec.ratios[keep, j]
        col = col[np.isfinite(col) & (col > 0)]  # layers that never moved belong to GS305 and GS302
        if col.size == 0:
            continue
        median = float(np.sort(col)[(col.size - 1) // 2])  # the lower median, as torch.median takes
        if median < th.update_ratio_low or median > th.update_ratio_high:
            side = "small" if median < th.update_ratio_low else "large"
            out.append(finding(
                "GS208", layer,
                f"the median update-to-weight ratio of {layer} is {median:.2g} over {col.size} sampled "
                f"steps (healthy is about 1e-3; this is {side}, outside {th.update_ratio_low:g}.."
                f"{th.update_ratio_high:g}): "
                + ("it barely learns." if side == "small" else
                   "each step rewrites a large share of the weights.")))
    return out
