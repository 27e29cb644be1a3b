"""The "Replicas" section of a data-parallel run."""
from __future__ import annotations

from gradscope.records.replicas import ReplicasRecord
from gradscope.reports.page import Section, SectionContext, fmt_number


def section_replicas(rec: ReplicasRecord, ctx: SectionContext) -> Section | None:
    s = Section("replicas", "Replicas", gist="identical" if not rec.drifted else "drifted apart")
    if rec.ddp:
        s.facts.append(("training forwards through DistributedDataParallel", fmt_number(rec.wrapper_forwards)))
    s.facts += [("backward passes", fmt_number(rec.backwards)),
                ("flushes that compared the ranks' weights", fmt_number(rec.checks)),
                ("tensors that differ between ranks", ", ".join(rec.drifted[:10]) or "none")]
    s.related = ctx.related(("GS701", "GS702"))
    return s
