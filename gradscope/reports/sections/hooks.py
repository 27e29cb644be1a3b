"""The "Hooks" section."""
from __future__ import annotations

from gradscope.records.hooks import HooksRecord
from gradscope.reports.page import Row, Section, SectionContext, Table, num, text

CODES = ("GS6",)


def section_hooks(rec: HooksRecord, ctx: SectionContext) -> Section | None:
    related = ctx.related(CODES)
    if not rec.hook_counts and not rec.gradient_changed_by and not related:
        return None
    s = Section("hooks", "Hooks", gist=f"{len(rec.hook_counts)} place(s) with user hooks")
    if rec.hook_counts:
        s.tables.append(Table("hook-counts", ["where", "hooks at the last sample"],
                              [Row([text(k, mono=True), num(v)]) for k, v in rec.hook_counts.items()],
                              "User hooks"))
    if rec.gradient_changed_by:
        s.tables.append(Table("hook-changed", ["where", "kind", "times"],
                              [Row([text(c.where, mono=True), text(c.kind), num(c.times)])
                               for c in rec.gradient_changed_by], "Hooks that replaced a gradient"))
    s.related = related
    return s
