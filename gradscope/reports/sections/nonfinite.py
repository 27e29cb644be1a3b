"""The "NaN and Inf" section."""
from __future__ import annotations

from gradscope.records.nonfinite import NonFiniteRecord
from gradscope.reports.page import Section, SectionContext, fmt_number

CODES = ("GS205", "GS206")


def section_nonfinite(rec: NonFiniteRecord, ctx: SectionContext) -> Section | None:
    related = ctx.related(CODES)
    if not related and rec.first_nonfinite_output_step is None and rec.first_nonfinite_loss_step is None \
            and not rec.located:
        return None
    s = Section("nonfinite", "NaN and Inf")
    if rec.first_nonfinite_output_step is not None:
        s.facts.append(("first non-finite forward output at step", fmt_number(rec.first_nonfinite_output_step)))
    if rec.first_nonfinite_loss_step is not None:
        s.facts.append(("first non-finite loss at step", fmt_number(rec.first_nonfinite_loss_step)))
    for step, where in rec.located.items():
        s.facts.append((f"located at step {step}", where or ctx.run.root_name))
    s.related = related
    return s
