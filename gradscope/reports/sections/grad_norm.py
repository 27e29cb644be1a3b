"""The "Gradient norms" section."""
from __future__ import annotations

import functools

from gradscope.records.clipping import ClippingRecord
from gradscope.records.grad_norm import GradNormRecord
from gradscope.reports.page import Section, SectionContext, draw, fmt_number, stats_facts, stats_table

CODES = ("GS201", "GS202", "GS203", "GS204", "GS205")


def section_grad_norm(rec: GradNormRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    s = Section("gradients", "Gradient norms")
    stride = f" (every {rec.stride}th step kept)" if rec.stride > 1 else ""
    s.facts.append(("recorded steps", f"{len(rec.steps):,}{stride}"))
    s.facts.append(("parameter tensors", fmt_number(len(rec.parameters))))
    s.facts.append(("layers", fmt_number(len(rec.layers))))
    t = rec.total_stats
    if t.count:
        s.facts += [(f"total norm: {k}", v) for k, v in
                    stats_facts(t.count, t.min, t.max, t.mean, t.first_nonfinite_step)]
        s.gist = f"total norm mean {fmt_number(t.mean)}, max {fmt_number(t.max)}"
    clip = ctx.run.probe(ClippingRecord)
    s.figures = draw([("total norm figure", functools.partial(F.total_norm_figure, rec, clip)),
                      ("grad norm heatmap", functools.partial(F.grad_norm_heatmap, rec)),
                      ("gradient flow figure", functools.partial(F.gradient_flow_figure, rec))], s.notes)
    for table in (stats_table("layer-stats", "Per-layer gradient norm over the run", "layer", rec.layers,
                              rec.layer_stats),
                  stats_table("parameter-stats", "Per-parameter gradient norm over the run", "parameter",
                              rec.parameters, rec.parameter_stats)):
        if table:
            s.tables.append(table)
    if rec.backward_order:
        order = rec.backward_order
        shown = ", ".join(order[:12]) + (f", … ({len(order):,} in all)" if len(order) > 12 else "")
        s.notes.append(f"Order in which gradients arrived in the first backward pass: {shown}.")
    if rec.no_gradient:
        s.notes.append(f"{len(rec.no_gradient)} trainable parameter(s) never received a gradient: "
                       + ", ".join(rec.no_gradient[:8]) + ("…" if len(rec.no_gradient) > 8 else "") + ".")
    s.notes.append("Norms are taken after backward and before clipping; rows in red saw NaN/Inf, "
                   "rows in yellow have no recorded value.")
    s.related = ctx.related(CODES)
    return s
