"""GS701 (DDP's forward never ran) and GS702 (replicas drifted apart)."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.judges import short
from gradscope.records.replicas import ReplicasRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds


def judge_replicas(rec: ReplicasRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    if rec.ddp and rec.backwards and not rec.wrapper_forwards:
        out.append(finding(
            "GS701", run.root_name,
            f"{rec.backwards} backward pass(es) ran but DistributedDataParallel's forward never did: the "
            "training calls the wrapped module directly (model.module(x)), so DDP never prepares the "
            "all-reduce and every rank trains on its own gradients."))
    if rec.drifted:
        out.append(finding(
            "GS702", short(rec.drifted),
            f"{len(rec.drifted)} parameter tensor(s) differ between ranks (first seen at the flush of step "
            f"{rec.first_drift_step}): {short(rec.drifted)}. Data-parallel replicas must stay identical; "
            "from here on each rank trains a different model."))
    return out
