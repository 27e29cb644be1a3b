"""The training-loop sections: train/eval mode (GS504) and stale gradients (GS503)."""
from __future__ import annotations

from gradscope.records.mode import ModeRecord
from gradscope.records.zero_grad import ZeroGradRecord
from gradscope.reports.page import Section, SectionContext, fmt_number


def section_mode(rec: ModeRecord, ctx: SectionContext) -> Section | None:
    s = Section("mode", "Train and eval mode")
    s.facts.append(("evaluation forwards", fmt_number(rec.evaluation_forwards)))
    s.facts.append(("evaluation forwards with layers in train mode",
                    ", ".join(f"{k}: {v}" for k, v in rec.evaluation_in_train_mode.items()) or "none"))
    s.facts.append(("training backward passes in eval mode", fmt_number(rec.training_steps_in_eval_mode)))
    s.related = ctx.related(("GS504",))
    s.gist = "wrong mode seen" if s.related else "as expected"
    return s


def section_zero_grad(rec: ZeroGradRecord, ctx: SectionContext) -> Section | None:
    s = Section("zero-grad", "zero_grad")
    s.facts += [("watched parameter", rec.watched_parameter), ("steps checked", fmt_number(rec.steps_checked)),
                ("steps with stale gradients", fmt_number(rec.steps_with_stale_gradients))]
    if rec.first_stale_step is not None:
        s.facts.append(("first stale step", fmt_number(rec.first_stale_step)))
    s.related = ctx.related(("GS503",))
    s.gist = f"{rec.steps_with_stale_gradients} stale step(s)"
    return s
