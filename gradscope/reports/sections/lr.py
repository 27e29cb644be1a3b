"""The "Learning rate" section."""
from __future__ import annotations

import functools

from gradscope.records.lr import LrRecord
from gradscope.reports.page import Row, Section, SectionContext, Table, draw, fmt_number, num, text


def section_lr(rec: LrRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    if not rec.steps:
        return None
    s = Section("lr", "Learning rate", gist=", ".join(f"{g} {fmt_number(float(rec.lr[-1, j]))}"
                                                     for j, g in enumerate(rec.groups[:3])))
    s.figures = draw([("lr figure", functools.partial(F.lr_figure, rec))], s.notes)
    rows = [Row([text(g, mono=True), num(float(rec.lr[0, j])), num(float(rec.lr[:, j].max())),
                 num(float(rec.lr[-1, j]))]) for j, g in enumerate(rec.groups)]
    s.tables.append(Table("lr", ["param group", "first", "highest", "last"], rows))
    for sched in rec.schedulers:
        s.facts.append((f"scheduler {sched.name} of {sched.optimizer}",
                        "stepped" if sched.stepped else "never stepped"))
    s.related = ctx.related(("GS308", "GS309"))
    return s
