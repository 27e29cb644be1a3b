"""The "Update-to-weight ratio" section."""
from __future__ import annotations

import functools

from gradscope.records.update_ratio import UpdateRatioRecord
from gradscope.reports.page import Section, SectionContext, draw

CODES = ("GS208",)


def section_update_ratio(rec: UpdateRatioRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    s = Section("update-ratio", "Update-to-weight ratio", gist=f"{len(rec.steps)} sampled steps")
    s.figures = draw([("update ratio figure",
                       functools.partial(F.update_ratio_figure, rec, ctx.run.judged_with()))], s.notes)
    s.notes.append("||Δw|| / ||w|| per optimizer step, sampled; about 1e-3 is typical for a healthy "
                   "learning rate.")
    s.related = ctx.related(CODES)
    return s
