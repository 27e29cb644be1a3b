"""The "Step timings" section."""
from __future__ import annotations

import functools

from gradscope.records.timing import TimingRecord, summarise
from gradscope.reports.page import Row, Section, SectionContext, Table, draw, fmt_number, num, text

CODES = ("GS510",)


def section_timing(rec: TimingRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    s = Section("timings", "Step timings")
    s.facts.append(("clock", rec.clock))
    s.facts.append(("steps kept", fmt_number(len(rec.steps))))
    s.facts.append(("warm-up steps left out", fmt_number(rec.warmup_steps)))
    summary = rec.summary
    if summary is None:  # a short run: every kept step was a warm-up step; summarise them anyway
        summary = summarise(rec.columns, rec.ms.tolist())
        if summary is None:
            return s
        s.notes.append(f"Every recorded step was a warm-up step (the first {rec.warmup_steps} are left out of "
                       "summaries): these medians include cuDNN autotuning, allocator growth and lazy set-up.")
    step = summary.phases.get("step")
    if step is not None:
        s.facts.append(("median step", f"{fmt_number(step.median_ms)} ms (90th percentile "
                                       f"{fmt_number(step.p90_ms)} ms)"))
    s.facts.append(("steps measured", fmt_number(summary.steps_measured)))
    if summary.steps_per_second is not None:
        s.facts.append(("steps per second", fmt_number(summary.steps_per_second)))
        s.gist = f"{fmt_number(summary.steps_per_second)} steps/s"
    s.figures = draw([("timings figure", functools.partial(F.timings_figure, summary))], s.notes)
    rows = [Row([text(k), num(v.median_ms), num(v.p90_ms), num(v.mean_ms)]) for k, v in summary.phases.items()]
    if rows:
        s.tables.append(Table("timings", ["phase", "median ms", "90th percentile ms", "mean ms"], rows))
    s.related = ctx.related(CODES)
    return s
