"""Learning rates over the run (GS308, GS309), read from the optimizers' own param groups.

Right before each step's ``optimizer.step()`` the probe copies every param group's ``lr`` (a host
float: no sync; a tensor learning rate is copied on the device and read at a flush). Learning-rate
schedulers of the watched optimizers are found when the scope starts (among the live objects) and
when one is created later (its constructor is observed while a scope is open); at the end the
record says whether each was ever stepped.
"""
from __future__ import annotations

import functools
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
    """Observes the schedulers' constructors while any learning-rate probe is attached: the base
    class's, and those of ``SequentialLR`` and ``ChainedScheduler``, which do not call it."""

    def __init__(self) -> None:
        self.probes: list[LrProbe] = []
        self.originals: list[tuple[type, Any]] = []

    def add(self, probe: LrProbe) -> None:
        if probe in self.probes:
            return
        if not self.probes:
            for cls in _scheduler_classes():
                original = cls.__dict__["__init__"]
                self.originals.append((cls, original))
                cls.__init__ = self._observed(original)  # type: ignore[misc]
        self.probes.append(probe)

    def _observed(self, original: Any) -> Any:
        @functools.wraps(original)
        def init(scheduler: Any, *args: Any, **kwargs: Any) -> None:
            original(scheduler, *args, **kwargs)
            for p in list(self.probes):
                p.saw_scheduler(scheduler)
        return init

    def remove(self, probe: LrProbe) -> None:
        if probe in self.probes:
            self.probes.remove(probe)
            if not self.probes:
                for cls, original in self.originals:
                    cls.__init__ = original  # type: ignore[misc]
                self.originals.clear()


def _scheduler_base() -> Any:
    lr_scheduler = torch.optim.lr_scheduler
    return getattr(lr_scheduler, "LRScheduler", None) or getattr(lr_scheduler, "_LRScheduler", None)


def _scheduler_classes() -> list[type]:
    lr_scheduler = torch.optim.lr_scheduler
    found = [_scheduler_base(), getattr(lr_scheduler, "SequentialLR", None),
             getattr(lr_scheduler, "ChainedScheduler", None)]
    return [cls for cls in found if isinstance(cls, type) and "__init__" in cls.__dict__]


def _has_scheduler(optimizer: torch.optim.Optimizer) -> bool:
    """Whether a scheduler was ever built for ``optimizer``: its constructor wraps ``step``."""
    step = getattr(optimizer, "step", None)
    return bool(getattr(step, "_wrapped_by_lr_sched", False) or getattr(step, "_with_counter", False))


class _Scheduler:
    """A scheduler of a watched optimizer, and the ``last_epoch`` it had when found and lately."""

    def __init__(self, scheduler: Any, optimizer: str, step: int) -> None:
        self.ref = weakref.ref(scheduler)
        self.name = type(scheduler).__name__
        self.optimizer = optimizer
        self.found_at = step
        self.epoch = self.last_seen = _epoch(scheduler)
        self.children = [weakref.ref(c) for c in getattr(scheduler, "_schedulers", None) or []]

    def look(self) -> None:
        scheduler = self.ref()
        if scheduler is not None:
            self.last_seen = _epoch(scheduler)


def _epoch(scheduler: Any) -> int:
    value = getattr(scheduler, "last_epoch", 0)
    return value if isinstance(value, int) else 0


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
        self.schedulers: list[_Scheduler] = []
        self._last_step = -1

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.labels = [f"{type(opt).__name__}#{oi}.{gi}" for oi, opt in enumerate(run.optimizers)
                       for gi in range(len(opt.param_groups))]
        if not run.optimizers:
            return
        self._find_schedulers(run.optimizers)
        SCHEDULERS.add(self)

    def _find_schedulers(self, optimizers: list[torch.optim.Optimizer]) -> None:
        """The schedulers built before the scope opened: those that refer to a watched optimizer
        (searched only for an optimizer whose ``step`` a scheduler wrapped)."""
        base = _scheduler_base()
        holding = [opt for opt in optimizers if _has_scheduler(opt)]
        if base is None or not holding:
            return
        # the class, not isinstance: isinstance on a dead weakref.proxy raises, and on a
        # deprecated module's proxy it warns
        for obj in gc.get_referrers(*holding):
            if issubclass(type(obj), base):
                self.saw_scheduler(obj)

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
            if opt is mine and not any(s.ref() is scheduler for s in self.schedulers):
                self.schedulers.append(_Scheduler(scheduler, f"{type(mine).__name__}#{oi}", run.step))

    def on_step_begin(self) -> None:
        run = self._state()
        if run.step == self._last_step or not run.optimizers:
            return  # several optimizers step in one training step: the first one's look is enough
        self._last_step = run.step
        for scheduler in self.schedulers:
            scheduler.look()
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
        # a SequentialLR or ChainedScheduler steps its children itself: judge the composite alone
        owned = {id(c()) for s in self.schedulers for c in s.children if c() is not None}
        for s in self.schedulers:
            s.look()
            if s.ref() is not None and id(s.ref()) in owned:
                continue
            states.append(SchedulerState(name=s.name, optimizer=s.optimizer, stepped=s.last_seen != s.epoch,
                                         steps_watched=run.step - s.found_at))
        width = len(self.labels)
        rows = [r[:width] + [float("nan")] * (width - len(r)) for r in self.rows]  # groups added later
        return LrRecord(groups=list(self.labels), steps=list(self.steps),
                        lr=np.array(rows, dtype=float).reshape(-1, width), schedulers=states)
