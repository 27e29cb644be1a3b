"""Data-parallel replicas (GS701, GS702): is DDP really in the loop, and do the ranks agree?

A forward pre-hook on a ``DistributedDataParallel`` wrapper counts the training forwards that go
through it; backward passes with none mean the script calls ``model.module(x)`` and nothing is
all-reduced. At every flush of a multi-rank run with whole (not sharded) parameters, each rank
fingerprints its parameters (float64 sum and norm per tensor, on the device, as the freeze probe
does) and one all-reduce of the maxima and minima tells whether any tensor differs between ranks.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradscope.distributed import reduce_rows_max
from gradscope.judges.replicas import judge_replicas
from gradscope.probes.base import Probe
from gradscope.probes.freeze import fingerprint
from gradscope.records.replicas import ReplicasRecord
from gradscope.reports.sections.replicas import section_replicas


class ReplicasProbe(Probe):
    name = "replicas"
    codes = ("GS701", "GS702")
    record_type = ReplicasRecord
    judge = staticmethod(judge_replicas)
    section = staticmethod(section_replicas)
    report_order = 950

    def __init__(self) -> None:
        super().__init__()
        self.ddp = False
        self.forwards = 0
        self.backwards = 0
        self.checks = 0
        self.drifted: list[str] = []
        self.first_drift_step: int | None = None

    def attach(self, run: Any) -> None:
        super().attach(run)
        from torch.nn.parallel import DistributedDataParallel

        self.ddp = isinstance(run.root, DistributedDataParallel)
        if self.ddp:
            self.handles.append(run.wrapper.register_forward_pre_hook(self._on_forward))

    def _on_forward(self, _module: nn.Module, _args: Any) -> None:
        if torch.is_grad_enabled():
            self.forwards += 1

    def on_backward_end(self) -> None:
        self.backwards += 1

    def flush(self, steps: list[int]) -> None:
        run = self._state()
        if not (steps and run.collective and run.params) or run.sharded:
            return  # one process, a read in mid-run, or sharded parameters (different by design)
        prints = fingerprint(run.params)
        both = reduce_rows_max(torch.cat([prints, -prints]))  # one all-reduce: maxima and minima
        n = prints.shape[0]
        differ = (both[:n] != -both[n:]).any(dim=1).tolist()
        self.checks += 1
        names = [name for name, d in zip(run.param_names, differ) if d]
        if names and not self.drifted:
            self.drifted, self.first_drift_step = names, steps[-1]

    def record(self) -> ReplicasRecord | None:
        if not self.ddp and not self.checks:
            return None
        return ReplicasRecord(ddp=self.ddp, wrapper_forwards=self.forwards, backwards=self.backwards,
                              checks=self.checks, drifted=list(self.drifted), first_drift_step=self.first_drift_step)
