"""Step timings: where each training step's time goes, on CPU and CUDA, without per-step syncs.

Phases and where their edges come from:

- ``data`` and ``h2d``: marked by the loop with ``scope.phase("data")`` / ``scope.phase("h2d")``
  (``gradscope.fit`` does); in a user's own loop they fall into ``other``.
- ``forward``: the root module's forward pre-hook to its forward hook (training forwards only).
- ``backward``: the first gradient reaching the root's output to the end of the backward pass
  (this includes gradscope's end-of-backward work, shown separately as ``gradscope``).
- ``clip``: each observed ``clip_grad_*`` call.
- ``optimizer``: ``optimizer.step()``'s pre-hook to its post-hook.
- ``step``: from the end of one step to the end of the next; ``other`` is what no phase covers
  (``zero_grad``, the loss, the user's own code).
- ``gradscope``: host time spent in gradscope's own step and backward callbacks.

On CPU the edges are ``time.perf_counter_ns()``. On CUDA each edge records a
``torch.cuda.Event(enable_timing=True)`` taken from a reused pool; the events are read at the
next flush, when gradscope synchronises anyway, never in between. The first ``warmup`` steps
(cuDNN autotuning, allocator growth, lazy initialisation) are kept but left out of summaries.
"""
from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from gradscope.judges.timing import judge_timing
from gradscope.probes.base import Probe
from gradscope.probes.outputs import first_grad_tensor
from gradscope.records.timing import PHASES, TimingRecord, TimingSummary, summarise
from gradscope.reports.sections.timing import section_timing

MEASURED = PHASES[:6]


class _EventPool:
    """Reusable CUDA timing events: no allocation per step."""

    def __init__(self) -> None:
        self.free: list[torch.cuda.Event] = []

    def record(self) -> torch.cuda.Event:
        event = self.free.pop() if self.free else torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def give_back(self, *events: torch.cuda.Event) -> None:
        self.free.extend(events)


class TimingProbe(Probe):
    """Per-step phase durations in milliseconds."""

    name = "timing"
    codes = ("GS510",)
    record_type = TimingRecord
    judge = staticmethod(judge_timing)
    section = staticmethod(section_timing)
    report_order = 800

    def __init__(self, warmup: int = 5) -> None:
        super().__init__()
        self.warmup = warmup
        self.cuda = False
        self.pool = _EventPool()
        self._open: dict[str, Any] = {}
        self._cpu_ms: dict[str, float] = {}
        self._events: list[tuple[str, Any, Any]] = []
        self._step_start: Any = None
        self._overhead_seen = 0
        # (step, phase parts: ms by phase on the CPU, event pairs on CUDA, start, stop, overhead ms)
        self.pending: list[tuple[int, Any, Any, Any, float]] = []
        self.steps: list[int] = []
        self.rows: list[list[float]] = []

    def attach(self, run: Any) -> None:
        super().attach(run)
        params = list(run.model.parameters())
        self.cuda = bool(params) and params[0].is_cuda
        run.listeners.append(self._on_event)
        model: nn.Module = run.wrapper
        self.handles.append(model.register_forward_pre_hook(self._on_forward_pre))
        self.handles.append(model.register_forward_hook(self._on_forward))
        self._step_start = self._now()

    def detach(self) -> None:
        super().detach()
        run = self.run
        if run is not None and self._on_event in run.listeners:
            run.listeners.remove(self._on_event)

    # ---- edges -----------------------------------------------------------------------------------
    def _now(self) -> Any:
        return self.pool.record() if self.cuda else time.perf_counter_ns()

    def begin(self, phase: str) -> None:
        self._open[phase] = self._now()

    def end(self, phase: str) -> None:
        start = self._open.pop(phase, None)
        if start is None:
            return
        stop = self._now()
        if self.cuda:
            self._events.append((phase, start, stop))
        else:
            self._cpu_ms[phase] = self._cpu_ms.get(phase, 0.0) + (stop - start) / 1e6

    def _on_event(self, event: str) -> None:
        phase, _, edge = event.rpartition("_")
        if edge == "begin":
            self.begin(phase)
        elif edge == "end":
            self.end(phase)

    def _on_forward_pre(self, _module: nn.Module, _args: Any) -> None:
        if torch.is_grad_enabled() and not self._state().locating:
            self.begin("forward")

    def _on_forward(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if "forward" not in self._open:
            return
        self.end("forward")
        out = first_grad_tensor(output)
        if out is not None:
            out.register_hook(functools.partial(self._on_output_grad))

    def _on_output_grad(self, _grad: torch.Tensor) -> None:
        if "backward" not in self._open:
            self.begin("backward")

    def on_backward_end(self) -> None:
        self.end("backward")

    def on_step_begin(self) -> None:
        self.begin("optimizer")

    def on_step_end(self) -> None:
        run = self._state()
        self.end("optimizer")
        stop = self._now()
        overhead_ms = (run.overhead_ns - self._overhead_seen) / 1e6
        self._overhead_seen = run.overhead_ns
        if self.cuda:
            self.pending.append((run.step, self._events, self._step_start, stop, overhead_ms))
            self._events = []
        else:
            self.pending.append((run.step, self._cpu_ms, self._step_start, stop, overhead_ms))
            self._cpu_ms = {}
        self._step_start = self._now()
        for phase in ("forward", "backward"):  # a forward with no backward (or the reverse)
            left = self._open.pop(phase, None)
            if self.cuda and left is not None:
                self.pool.give_back(left)

    # ---- flush -----------------------------------------------------------------------------------
    def flush(self, steps: list[int]) -> None:
        if not self.pending:
            return
        if self.cuda:
            self.pending[-1][3].synchronize()  # flushes synchronise anyway; this one waits for the last step
        for step, parts, start, stop, overhead_ms in self.pending:
            if self.cuda:
                phases: dict[str, float] = {}
                for phase, a, b in parts:
                    phases[phase] = phases.get(phase, 0.0) + a.elapsed_time(b)
                    self.pool.give_back(a, b)
                total = start.elapsed_time(stop)
                self.pool.give_back(start, stop)
            else:
                phases = dict(parts)
                total = (stop - start) / 1e6
            row = [phases.get(p, 0.0) for p in MEASURED]
            other = max(0.0, total - sum(row))
            self.steps.append(step)
            self.rows.append(row + [overhead_ms, other, total])
        self.pending.clear()
        run = self._state()
        while len(self.steps) > run.max_kept_steps:  # bounded: keep every other step
            self.steps, self.rows = self.steps[::2], self.rows[::2]

    # ---- results ---------------------------------------------------------------------------------
    def summary(self) -> TimingSummary | None:
        """Median, 90th percentile and mean of each phase over the kept steps past the warm-up."""
        return summarise(PHASES, [r for s, r in zip(self.steps, self.rows) if s >= self.warmup])

    def record(self) -> TimingRecord | None:
        if not self.rows:
            return None
        return TimingRecord(columns=list(PHASES), steps=list(self.steps),
                            ms=np.array(self.rows, dtype=float).reshape(-1, len(PHASES)),
                            clock="cuda events" if self.cuda else "perf_counter_ns",
                            warmup_steps=self.warmup, summary=self.summary())
