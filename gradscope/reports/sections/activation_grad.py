"""The "Activation gradients" and "Named tensors" sections."""
from __future__ import annotations

import functools

from gradscope.records.activation_grad import ActivationGradRecord, TensorGradRecord
from gradscope.reports.page import Row, Section, SectionContext, Table, draw, num, stats_table, text


def section_activation_grad(rec: ActivationGradRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    s = Section("activations", "Activation gradients", gist=f"{len(rec.modules):,} modules watched")
    s.figures = draw([("activation flow figure", functools.partial(F.activation_flow_figure, rec)),
                      ("activation heatmap", functools.partial(F.activation_heatmap, rec))], s.notes)
    table = stats_table("activation-stats", "Output gradient norm per module", "module", rec.modules, rec.stats)
    if table:
        s.tables.append(table)
    return s


def section_tensor_grad(rec: TensorGradRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    if not rec.tensors:
        return None
    s = Section("tensors", "Named tensors", gist=f"{len(rec.tensors):,} tensor(s)")
    s.figures = draw([("tensor grad figure", functools.partial(F.tensor_grad_figure, rec))], s.notes)
    rows = []
    for name, series in rec.tensors.items():
        st, peak = series.norm_stats, series.max_abs_stats
        rows.append(Row([text(name, mono=True), text(series.via), num(st.mean), num(st.min), num(st.max),
                         num(peak.max), num(st.count), num(st.first_nonfinite_step)],
                        css="flag" if st.first_nonfinite_step is not None else ""))
    s.tables.append(Table("tensor-stats", ["tensor", "via", "mean norm", "min norm", "max norm", "max |g|",
                                           "values", "first non-finite step"], rows, "Named tensors"))
    return s
