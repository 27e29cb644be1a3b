"""The "Loss inputs" section: what the logit losses were fed."""
from __future__ import annotations

from gradscope.records.loss_inputs import LossInputsRecord
from gradscope.reports.page import Row, Section, SectionContext, Table, num, text


def section_loss_inputs(rec: LossInputsRecord, ctx: SectionContext) -> Section | None:
    if not rec.sites:
        return None
    s = Section("loss-inputs", "Loss inputs", gist=f"{len(rec.sites)} loss call site(s) sampled")
    rows = [Row([text(site.function, mono=True), text(site.site or "", mono=True), num(site.checked),
                 num(site.in_unit_interval), num(site.rows_sum_to_one), num(site.non_negative)])
            for site in rec.sites]
    s.tables.append(Table("loss-inputs", ["function", "called at", "sampled calls", "all in (0, 1)",
                                          "rows sum to 1", "all >= 0"], rows))
    s.related = ctx.related(("GS501",))
    return s
