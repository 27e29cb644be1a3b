"""GS601 and GS602 from the hook record."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.records.hooks import HooksRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds


def judge_hooks(rec: HooksRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    samples = rec.samples or []
    places = sorted({w for s in samples for w in s.counts})
    for where in places:
        series = [(s.step, s.counts.get(where, 0)) for s in samples]
        run_len, best = 0, 0
        for (_, a), (_, b) in zip(series, series[1:]):
            run_len = run_len + 1 if b > a else 0
            best = max(best, run_len)
        if best >= th.hooks_growth_samples:
            (s0, c0), (s1, c1) = series[0], series[-1]
            out.append(finding(
                "GS601", where.split(" ", 1)[-1],
                f"the {where} had {c0} hook(s) after step {s0} and {c1} after step {s1}: a hook is "
                "registered again every step and never removed, so each backward or forward runs all "
                "of them and memory grows."))
    for change in rec.gradient_changed_by:
        what = "a tensor hook" if change.kind == "tensor" else f"a {change.kind}"
        out.append(finding(
            "GS602", change.where,
            f"{what} on {change.where} returned a different gradient {change.times} time(s): what the "
            "optimizer sees is not what backward computed."))
    return out
