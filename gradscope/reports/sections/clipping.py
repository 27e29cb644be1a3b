"""The "Clipping" section."""
from __future__ import annotations

import functools

from gradscope.judges.grad_norm import layer_shares
from gradscope.records.clipping import ClippingRecord
from gradscope.records.grad_norm import GradNormRecord
from gradscope.reports.page import Row, Section, SectionContext, Table, draw, fmt_number, num, pct, text

CODES = ("GS4",)


def section_clipping(rec: ClippingRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    summary = rec.summary
    s = Section("clipping", "Clipping")
    s.facts.append(("clip calls", fmt_number(summary.calls or len(rec.calls))))
    s.facts.append(("norm clipping calls", fmt_number(summary.norm_calls)))
    if summary.clipped_fraction is not None:
        s.facts.append(("norm clipping acted on", pct(summary.clipped_fraction) + " of calls"))
        s.gist = f"acted on {pct(summary.clipped_fraction)} of calls"
    if summary.mean_saturated is not None:
        s.facts.append(("value clipping: mean share of elements clipped", pct(summary.mean_saturated)))
    thresholds = sorted({f"{fmt_number(c.threshold)} ({c.kind})" for c in rec.calls})
    if thresholds:
        s.facts.append(("thresholds", ", ".join(thresholds[:8])))
    for events, label in ((rec.misplaced, "clip calls with nothing fresh to clip"),
                          (rec.scaled, "clip calls on scaled gradients"),
                          (rec.per_micro_batch, "accumulation steps clipped per micro-batch")):
        if events:
            s.facts.append((label, f"{len(events)} (first at step {events[0].step})"))
    s.figures = draw([("clipping figure", functools.partial(F.clipping_figure, rec))], s.notes)
    grad = ctx.run.probe(GradNormRecord)
    if grad is not None:
        top = layer_shares(grad, [c.step for c in rec.calls if c.acted])
        if top:
            rows = [Row([text(k, mono=True), num(100 * v, "%")]) for k, v in top.items()]
            s.tables.append(Table("clip-layers", ["layer", "share of squared norm"], rows,
                                  "Layers carrying most of the norm on steps that were clipped"))
    s.related = ctx.related(CODES)
    return s
