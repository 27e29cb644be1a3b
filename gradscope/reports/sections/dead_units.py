"""The "Dead units" section."""
from __future__ import annotations

from gradscope.records.dead_units import DeadUnitsRecord
from gradscope.reports.page import Row, Section, SectionContext, Table, num, text

CODES = ("GS207",)


def section_dead_units(rec: DeadUnitsRecord, ctx: SectionContext) -> Section | None:
    if not rec.layers:
        return None
    limit = ctx.run.judged_with().dead_fraction
    rows = [Row([text(u.module, mono=True), num(u.units), num(100 * u.dead_fraction, "%"), num(u.batches)],
                css="warn" if u.dead_fraction > limit else "") for u in rec.layers]
    s = Section("dead-units", "Dead units")
    s.tables.append(Table("dead-units", ["after module", "units", "never active", "batches"], rows))
    s.related = ctx.related(CODES)
    return s
