"""Learning rates over the run (GS308, GS309), read from the optimizers' own param groups.

Right before each step's ``optimizer.step()`` the probe copies every param group's ``lr`` (a host
float: no sync; a tensor learning rate is copied on the device and read at a flush). Learning-rate
schedulers of the watched optimizers are found when the scope starts (among the live objects) and
when one is created later (its constructor is observed while a scope is open); at the end the
record says whether each was ever stepped.
"""
from __future__ import annotations

import gc
import weakref
from typing import Any

import numpy as np
import torch

from gradscope.judges.lr import judge_lr
from gradscope.probes.base import Probe
from gradscope.records.lr import LrRecord, SchedulerState
from gradscope.reports.sections.lr import section_lr


class _SchedulerWatch:
    """Observes ``LRScheduler.__init__`` while any learning-rate probe is attached."""

    def __init__(self) -> None:
        self.probes: list[LrProbe] = []
        self.original: Any = None

    def add(self, probe: LrProbe) -> None:
        base = _scheduler_base()
        if base is None:
            return
        if probe in self.probes:
            return
        if not self.probes:
            self.original = base.__init__
            original = self.original

            def init(scheduler: Any, *args: Any, **kwargs: Any) -> None:
                original(scheduler, *args, **kwargs)
                for p in list(self.probes):
                    p.saw_scheduler(scheduler)

            base.__init__ = init
        self.probes.append(probe)

    def remove(self, probe: LrProbe) -> None:
        if probe in self.probes:
            self.probes.remove(probe)
            if not self.probes and self.original is not None:
                base = _scheduler_base()
                if base is not None:
                    base.__init__ = self.original
                self.original = None


def _scheduler_base() -> Any:
    lr_scheduler = torch.optim.lr_scheduler
    return getattr(lr_scheduler, "LRScheduler", None) or getattr(lr_scheduler, "_LRScheduler", None)


SCHEDULERS = _SchedulerWatch()


class LrProbe(Probe):
    name = "lr"
    codes = ("GS308", "GS309")
    record_type = LrRecord
    judge = staticmethod(judge_lr)
    section = staticmethod(section_lr)
    report_order = 580

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = []
        self.steps: list[int] = []
        self.rows: list[list[float]] = []
        self.pending: list[tuple[int, list[Any]]] = []   # rows holding tensor learning rates
        self.stride = 1
        self.offered = 0
        self.schedulers: list[tuple[weakref.ref[Any], str, str, int, int]] = []  # ref, class, optimizer, epoch, step
        self._last_step = -1

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.labels = [f"{type(opt).__name__}#{oi}.{gi}" for oi, opt in enumerate(run.optimizers)
                       for gi in range(len(opt.param_groups))]
        if not run.optimizers:
            return
        base = _scheduler_base()
        if base is not None:
            # the class, not isinstance: isinstance on a dead weakref.proxy raises, and on a
            # deprecated module's proxy it warns
            for obj in gc.get_objects():
                if issubclass(type(obj), base):
                    self.saw_scheduler(obj)
        SCHEDULERS.add(self)

    def detach(self) -> None:
        super().detach()
        SCHEDULERS.remove(self)

    def on_optimizer_added(self, optimizer: torch.optim.Optimizer) -> None:
        run = self._state()
        oi = len(run.optimizers) - 1
        self.labels += [f"{type(optimizer).__name__}#{oi}.{gi}" for gi in range(len(optimizer.param_groups))]
        if len(run.optimizers) == 1:
            SCHEDULERS.add(self)

    def saw_scheduler(self, scheduler: Any) -> None:
        run = self._state()
        opt = getattr(scheduler, "optimizer", None)
        for oi, mine in enumerate(run.optimizers):
            if opt is mine and not any(ref() is scheduler for ref, *_ in self.schedulers):
                self.schedulers.append((weakref.ref(scheduler), type(scheduler).__name__,
                                        f"{type(mine).__name__}#{oi}", int(getattr(scheduler, "last_epoch", 0)),
                                        run.step))

    def on_step_begin(self) -> None:
        run = self._state()
        if run.step == self._last_step or not run.optimizers:
            return  # several optimizers step in one training step: the first one's look is enough
        self._last_step = run.step
        self.offered += 1
        if (self.offered - 1) % self.stride:
            return
        row = [group["lr"] for opt in run.optimizers for group in opt.param_groups]
        if any(isinstance(x, torch.Tensor) for x in row):
            self.pending.append((run.step, [x.detach().clone() if isinstance(x, torch.Tensor) else x for x in row]))
        else:
            self._keep(run.step, [float(x) for x in row])

    def _keep(self, step: int, row: list[float]) -> None:
        self.steps.append(step)
        self.rows.append(row)
        while len(self.steps) > self._state().max_kept_steps:  # bounded: every other row goes
            self.steps, self.rows = self.steps[::2], self.rows[::2]
            self.stride *= 2

    def flush(self, steps: list[int]) -> None:
        for step, row in self.pending:  # tensor learning rates: read now, when the flush syncs anyway
            self._keep(step, [float(x) for x in row])
        self.pending.clear()

    def record(self) -> LrRecord | None:
        if not self.labels or not self.steps:
            return None
        run = self._state()
        states = []
        for ref, cls, opt, epoch, at in self.schedulers:
            scheduler = ref()
            stepped = scheduler is None or int(getattr(scheduler, "last_epoch", epoch)) != epoch
            states.append(SchedulerState(name=cls, optimizer=opt, stepped=stepped, steps_watched=run.step - at))
        width = len(self.labels)
        rows = [r[:width] + [float("nan")] * (width - len(r)) for r in self.rows]  # groups added later
        return LrRecord(groups=list(self.labels), steps=list(self.steps),
                        lr=np.array(rows, dtype=float).reshape(-1, width), schedulers=states)
