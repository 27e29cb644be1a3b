"""The "Freezing and the optimizer" section."""
from __future__ import annotations

from gradscope.records.freeze import FreezeRecord
from gradscope.reports.page import Row, Section, SectionContext, Table, capped, fmt_number, num, text

CODES = ("GS3",)


def section_freeze(rec: FreezeRecord, ctx: SectionContext) -> Section | None:
    s = Section("freezing", "Freezing and the optimizer")
    s.facts += [("parameters", fmt_number(rec.parameters)), ("trainable", fmt_number(rec.trainable)),
                ("frozen", fmt_number(rec.frozen))]
    subtrees = rec.frozen_subtrees
    s.facts.append(("frozen submodules", ", ".join(subtrees[:20])
                    + (f", … ({len(subtrees)} in all)" if len(subtrees) > 20 else "") if subtrees else "none"))
    if rec.batchnorm_train_in_frozen:
        s.facts.append(("BatchNorm in train mode inside frozen parts", ", ".join(rec.batchnorm_train_in_frozen[:20])))
    if rec.parameters:
        s.gist = f"{100 * rec.frozen / rec.parameters:.1f}% frozen"
    rows = []
    for r in rec.table:
        problem = (r.not_in_optimizer and r.trainable) or (r.frozen and r.changed)
        rows.append(Row([text(r.module, mono=True), num(r.tensors), num(r.trainable), num(r.frozen),
                         num(r.in_optimizer), num(r.not_in_optimizer), text(", ".join(fmt_number(x) for x in r.lr)),
                         text(", ".join(fmt_number(x) for x in r.weight_decay)), num(r.changed)],
                        css="warn" if problem else ""))
    if rows:
        rows, note = capped(rows, "modules")
        s.tables.append(Table("freeze", ["module", "tensors", "trainable", "frozen", "in optimizer",
                                         "not in optimizer", "lr", "weight decay", "tensors changed"],
                              rows, "Freeze table (parameter counts per module)", note))
    s.related = ctx.related(CODES)
    return s
