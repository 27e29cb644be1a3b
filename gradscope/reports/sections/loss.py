"""The "Loss" section: the loss each step backpropagated."""
from __future__ import annotations

import functools

from gradscope.records.loss import LossRecord
from gradscope.reports.page import Section, SectionContext, draw, fmt_number, stats_facts


def section_loss(rec: LossRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    if not rec.steps:
        return None
    s = Section("loss", "Loss", gist=f"last {fmt_number(float(rec.loss[-1]))}")
    st = rec.stats
    s.facts += [(f"loss: {k}", v) for k, v in stats_facts(st.count, st.min, st.max, st.mean, st.first_nonfinite_step)]
    falling = rec.falling()
    if falling is not None:
        s.facts.append(("falling over the run", "yes" if falling else "no"))
    s.figures = draw([("loss figure", functools.partial(F.loss_figure, rec))], s.notes)
    s.notes.append("The value each step's backward() started from (summed over a step's backward passes), "
                   "as the training code computed it.")
    return s
