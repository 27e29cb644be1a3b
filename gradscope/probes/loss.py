"""The loss each step backpropagated, seen where every script hands it over: ``backward()``.

``torch.autograd.backward`` (which ``Tensor.backward`` calls) is observed while a scope is open,
the way the clipping probe observes the clip functions: the call runs unchanged, and a scalar loss
it starts from is added, detached and on the device, to the step's row. So a training script run
as-is still has a loss curve, and the judges can tell a run that learns from one that does not
(GS204, GS401) and see a non-finite loss whose gradient is finite (GS206). Losses of backward
passes that reach none of this scope's parameters (another model's) are not counted.
"""
from __future__ import annotations

import functools
import weakref
from typing import Any, Callable

import torch

from gradscope.probes.base import Probe
from gradscope.records.loss import LossRecord
from gradscope.reports.sections.loss import section_loss
from gradscope.series import DecimatedSeries, RunningStats


class _BackwardPatch:
    """The one observer of ``torch.autograd.backward`` that all open scopes share."""

    def __init__(self) -> None:
        self.probes: list[LossProbe] = []
        self.original: Callable[..., Any] | None = None

    def add(self, probe: LossProbe) -> None:
        if not self.probes:
            self.original = torch.autograd.backward

            def backward(tensors: Any, *args: Any, **kwargs: Any) -> Any:
                return self._observed(tensors, *args, **kwargs)

            torch.autograd.backward = functools.wraps(self.original)(backward)
        self.probes.append(probe)

    def remove(self, probe: LossProbe) -> None:
        if probe in self.probes:
            self.probes.remove(probe)
            if not self.probes and self.original is not None:
                torch.autograd.backward = self.original
                self.original = None

    def _observed(self, tensors: Any, *args: Any, **kwargs: Any) -> Any:
        assert self.original is not None
        loss = _scalar_loss(tensors)
        for probe in self.probes:
            probe.current = loss
        try:
            return self.original(tensors, *args, **kwargs)
        finally:
            for probe in self.probes:
                probe.current = None


# Losses a GradScaler returned, by id: (the scaled tensor, the scale it was multiplied by). The
# clipping probe, which observes GradScaler.scale, fills it; a backward from one of them records
# the loss divided by its scale, the loss the script computed.
SCALED_LOSSES: dict[int, tuple[weakref.ref[torch.Tensor], torch.Tensor]] = {}


def note_scaled(scaled: Any, scale: Any) -> None:
    if isinstance(scaled, torch.Tensor) and isinstance(scale, torch.Tensor) and scaled.numel() == 1:
        if len(SCALED_LOSSES) > 16:   # scaled and never backpropagated: forget them
            SCALED_LOSSES.clear()
        SCALED_LOSSES[id(scaled)] = (weakref.ref(scaled), scale)


def _unscaled(t: torch.Tensor) -> torch.Tensor:
    value = t.detach().reshape(()).to(torch.float32)
    entry = SCALED_LOSSES.pop(id(t), None)
    if entry is not None and entry[0]() is t:
        value = value / entry[1].reshape(()).to(value.device, torch.float32)
    return value


def _scalar_loss(tensors: Any) -> torch.Tensor | None:
    """The loss a backward starts from: the sum of its scalar roots (None when a root is not a
    scalar, as in ``y.backward(v)``: that is no loss), divided by a GradScaler's scale."""
    items = [tensors] if isinstance(tensors, torch.Tensor) else list(tensors or [])
    if not items or any(not isinstance(t, torch.Tensor) or t.numel() != 1 for t in items):
        return None
    total = _unscaled(items[0])
    for t in items[1:]:
        total = total + _unscaled(t)
    return total


PATCH = _BackwardPatch()


class LossProbe(Probe):
    """The loss per step, on the device until a flush."""

    name = "loss"
    record_type = LossRecord
    section = staticmethod(section_loss)
    report_order = 90

    def __init__(self) -> None:
        super().__init__()
        self.current: torch.Tensor | None = None   # the loss of the backward call in progress
        self.buffer: torch.Tensor | None = None
        self.rows_written: set[int] = set()
        self.series: DecimatedSeries | None = None
        self.stats = RunningStats(1)

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.series = DecimatedSeries(1, run.max_kept_steps)
        PATCH.add(self)

    def detach(self) -> None:
        super().detach()
        PATCH.remove(self)

    def on_backward_end(self) -> None:
        loss = self.current
        if loss is None:
            return
        run = self._state()
        if self.buffer is None or self.buffer.device != loss.device:
            fresh = torch.zeros(run.flush_every + 1, dtype=torch.float32, device=loss.device)
            if self.buffer is not None:
                fresh.copy_(self.buffer.to(loss.device))
            self.buffer = fresh
        self.buffer[run.row].add_(loss)
        self.rows_written.add(run.row)

    def flush(self, steps: list[int]) -> None:
        if self.buffer is None or not steps:
            return
        assert self.series is not None
        n = len(steps)
        rows = self.buffer[:n].to("cpu", torch.float64, copy=True)
        in_progress = n in self.rows_written  # a flush in mid-step keeps that step's row
        if in_progress:
            self.buffer[0].copy_(self.buffer[n])
        self.buffer[int(in_progress):].zero_()
        kept = [i for i in range(n) if i in self.rows_written]
        self.rows_written = {0} if in_progress else set()
        if kept:
            at = [steps[i] for i in kept]
            values = rows[kept].unsqueeze(1)
            self.series.append(at, values)
            self.stats.update(at, values)

    def record(self) -> LossRecord | None:
        if self.series is None or not self.series.steps:
            return None
        return LossRecord(steps=list(self.series.steps), loss=self.series.values()[:, 0].numpy(),
                          stats=self.stats.table().row(0))
