"""The replica probe's record: whether a DDP model's wrapper ran, and whether the ranks still hold
the same weights."""
from __future__ import annotations

from dataclasses import dataclass, field

from gradscope.records.base import ProbeRecord


@dataclass(frozen=True)
class ReplicasRecord(ProbeRecord, probe="replicas"):
    ddp: bool = False                 # the watched model was a DistributedDataParallel wrapper
    wrapper_forwards: int = 0         # training forwards through the wrapper
    backwards: int = 0
    checks: int = 0                   # flushes at which the ranks compared their weights
    drifted: list[str] = field(default_factory=list)  # parameters that differ between ranks
    first_drift_step: int | None = None
