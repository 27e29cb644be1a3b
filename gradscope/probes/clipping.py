"""Clipping analysis (GS401–GS407): every call of PyTorch's clip functions, observed unchanged.

``clip_grad_norm_``, ``clip_grad_value_`` and ``clip_grads_with_norm_`` are module functions that
PyTorch wraps in a small no-grad wrapper; every import of them (``torch.nn.utils.clip_grad_norm_``,
``from torch.nn.utils import clip_grad_norm_``, ...) is that one wrapper object. While a scope is
open, the wrapper's inner function (its closure cell) is swapped for an observer that calls the
original with the same arguments and returns its result unchanged; the cell is restored on exit.
So calls are seen however the user imported the function, even before ``watch()`` started.
Where a torch version has no such wrapper, the module attributes are patched instead.

What each call records stays on the device (pre-clip total norm, whether it acted) until a flush.
GS406 needs to know about a ``torch.amp.GradScaler``: ``GradScaler.scale`` is observed the same way
(class attribute, restored on exit) to learn which scalers are in use.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.utils.clip_grad as clip_module

from gradscope.distributed import is_dtensor, local
from gradscope.judges.clipping import judge_clipping
from gradscope.norms import clip_coefficient
from gradscope.probes.base import Probe
from gradscope.probes.loss import note_scaled
from gradscope.records.clipping import ClipCall, ClipEvent, ClippingRecord, ClipSummary
from gradscope.reports.sections.clipping import section_clipping

ROLLING_WINDOW = 50  # clip calls in the rolling share of calls that clipped


@dataclass
class _Pending:
    """One observed clip call (device tensors until the flush turns them into floats)."""

    step: int
    kind: str                       # "norm", "value" or "with_norm"
    threshold: float                # max_norm or clip_value
    total: Any = None               # pre-clip total norm (norm kinds)
    saturated: Any = None           # value clipping: share of elements clipped


def _materialise(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Turn a parameters generator into a list both the observer and PyTorch can read.

    PyTorch reads it into a list itself; an empty generator is passed on as an empty generator so
    that PyTorch's own "empty generator" warning still fires.
    """
    if args:
        params, rest = args[0], args[1:]
    elif "parameters" in kwargs:
        params, rest = kwargs["parameters"], ()
    else:
        return args, kwargs
    if isinstance(params, (torch.Tensor, list, tuple)) or params is None:
        return args, kwargs
    items = list(params)
    value: Any = items if items else (p for p in items)
    if args:
        return (value, *rest), kwargs
    return args, {**kwargs, "parameters": value}


class _CellPatch:
    """Swap the function a no-grad wrapper calls; put it back on ``undo``."""

    def __init__(self, wrapper: Callable[..., Any], make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        self.cell = None
        self.original: Callable[..., Any] | None = None
        code = getattr(wrapper, "__code__", None)
        closure = getattr(wrapper, "__closure__", None)
        if code is not None and closure and "func" in code.co_freevars:
            self.cell = closure[code.co_freevars.index("func")]
            self.original = self.cell.cell_contents
            self.cell.cell_contents = make(self.original)

    @property
    def ok(self) -> bool:
        return self.cell is not None

    def undo(self) -> None:
        if self.cell is not None:
            self.cell.cell_contents = self.original
            self.cell = None


class _Patches:
    """The one set of patches all open scopes share.

    Installed when the first clipping probe attaches and removed when the last one detaches, in
    whatever order scopes close (nested scopes, or a script's models closed first-in-first-out),
    so PyTorch's functions always end up exactly as they were. Each call is offered to every
    open probe, which keeps it only when it clips that probe's own model.
    """

    def __init__(self) -> None:
        self.probes: list[ClipProbe] = []
        self.cells: list[_CellPatch] = []
        self.attrs: list[tuple[Any, str, Any]] = []
        self.depth = 0

    def add(self, probe: ClipProbe) -> None:
        if not self.probes:
            self._install()
        self.probes.append(probe)

    def remove(self, probe: ClipProbe) -> None:
        if probe in self.probes:
            self.probes.remove(probe)
            if not self.probes:
                self._uninstall()

    def _install(self) -> None:
        for name, kind in (("clip_grad_norm_", "norm"), ("clip_grad_value_", "value"),
                           ("_clip_grads_with_norm_", "with_norm")):
            wrapper = getattr(clip_module, name, None)
            if wrapper is None:
                continue
            label = name.lstrip("_")  # the public names: clip_grad_norm_, clip_grads_with_norm_
            patch = _CellPatch(wrapper, functools.partial(self._observer, kind, label))
            if patch.ok:
                self.cells.append(patch)
            else:  # no wrapper to reach into: patch the public names instead
                observed = self._observer(kind, label, wrapper)
                for module in (clip_module, torch.nn.utils):
                    public = "clip_grads_with_norm_" if module is torch.nn.utils and kind == "with_norm" else name
                    if getattr(module, public, None) is wrapper:
                        self.attrs.append((module, public, wrapper))
                        setattr(module, public, observed)
        fsdp = _fsdp1_class()
        if fsdp is not None and "clip_grad_norm_" in fsdp.__dict__:
            # FSDP1 clips its shards itself (local norms, an all-reduce, grad.mul_) and never calls
            # torch's clip functions: observe its method, with the module's parameters as the call's
            original = fsdp.__dict__["clip_grad_norm_"]
            self.attrs.append((fsdp, "clip_grad_norm_", original))
            fsdp.clip_grad_norm_ = self._observer(
                "norm", "FullyShardedDataParallel.clip_grad_norm_", original,
                lambda args, kwargs: ((list(args[0].parameters()), *args[1:]), kwargs))
        scaler_cls = torch.amp.GradScaler
        original_scale = scaler_cls.__dict__["scale"]

        original_update = scaler_cls.__dict__["update"]

        def update(scaler: Any, *args: Any, **kwargs: Any) -> Any:
            for probe in self.probes:
                probe.saw_update()
            return original_update(scaler, *args, **kwargs)

        self.attrs.append((scaler_cls, "update", original_update))
        scaler_cls.update = functools.wraps(original_update)(update)  # type: ignore[method-assign,assignment]

        def scale(scaler: Any, outputs: Any) -> Any:
            for probe in self.probes:
                probe.saw_scaler(scaler)
            scaled = original_scale(scaler, outputs)
            note_scaled(scaled, getattr(scaler, "_scale", None))
            return scaled

        self.attrs.append((scaler_cls, "scale", original_scale))
        scaler_cls.scale = functools.wraps(original_scale)(scale)  # type: ignore[method-assign,assignment]

    def _uninstall(self) -> None:
        while self.cells:
            self.cells.pop().undo()
        while self.attrs:
            owner, attr, original = self.attrs.pop()
            setattr(owner, attr, original)

    def _observer(self, kind: str, label: str, original: Callable[..., Any],
                  as_call: Callable[[tuple[Any, ...], dict[str, Any]], tuple[tuple[Any, ...], dict[str, Any]]]
                  | None = None) -> Callable[..., Any]:
        def observed(*args: Any, **kwargs: Any) -> Any:
            if self.depth:  # clip_grad_norm_ calls _clip_grads_with_norm_ itself: count it once
                return original(*args, **kwargs)
            self.depth += 1
            try:
                if as_call is None:
                    args, kwargs = _materialise(args, kwargs)
                    seen = (args, kwargs)
                else:  # a method: (module, max_norm, ...) read as (parameters, max_norm, ...)
                    seen = as_call(args, kwargs)
                calls = [(probe, probe._before(kind, label, *seen)) for probe in list(self.probes)]
                mine = [(probe, call) for probe, call in calls if call is not False]
                for probe, _ in mine:
                    probe._state().emit("clip_begin")
                try:
                    result = original(*args, **kwargs)
                finally:
                    for probe, _ in mine:
                        probe._state().emit("clip_end")
                if kind == "norm":
                    for _, call in mine:
                        if isinstance(call, _Pending):
                            total = result.full_tensor() if is_dtensor(result) else result  # FSDP2: Replicate
                            call.total = total.detach().to(torch.float32, copy=True).reshape(())
                return result
            finally:
                self.depth -= 1
        return observed


def _fsdp1_class() -> Any:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover - builds without distributed
        return None
    return FullyShardedDataParallel


PATCHES = _Patches()


class ClipProbe(Probe):
    """Observes clipping; GS401–GS407."""

    name = "clipping"
    codes = ("GS401", "GS402", "GS403", "GS404", "GS405", "GS406", "GS407")
    record_type = ClippingRecord
    judge = staticmethod(judge_clipping)
    section = staticmethod(section_clipping)
    report_order = 400

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[_Pending] = []
        self.done: list[ClipCall] = []
        self.misplaced: list[ClipEvent] = []         # GS403
        self.scaled: list[ClipEvent] = []            # GS406
        self.accumulation_steps: list[ClipEvent] = []  # GS407
        self.clip_steps = 0                                # steps with at least one observed clip
        self._last_clip_step: int | None = None
        self._fresh: dict[int, bool] = {}  # optimizer id -> a backward ended since its last step
        self._fresh_any = False            # the same without an optimizer
        self._clipped_at: dict[int | None, int] = {}  # optimizer id -> backwards at its last clip
        self._mine: set[int] = set()       # ids of this model's parameters

    # ---- attach ----------------------------------------------------------------------------------
    def attach(self, run: Any) -> None:
        super().attach(run)
        self._mine = {id(p) for p in run.model.parameters()}
        for opt in run.optimizers:
            self._fresh[id(opt)] = False
            self.handles.append(opt.register_step_pre_hook(self._on_optimizer_step))
        PATCHES.add(self)

    def detach(self) -> None:
        super().detach()
        PATCHES.remove(self)

    def on_optimizer_added(self, optimizer: torch.optim.Optimizer) -> None:
        self._fresh[id(optimizer)] = False
        self.handles.append(optimizer.register_step_pre_hook(self._on_optimizer_step))

    def saw_scaler(self, scaler: Any) -> None:
        """A GradScaler scaled a loss while this scope was open."""
        run = self._state()
        if scaler not in run.scalers:
            run.scalers.append(scaler)

    def saw_update(self) -> None:
        """``GradScaler.update()``: the iteration is over, also when the scaler skipped the
        optimizer's step (its step hooks never ran); clips after it belong to the next one."""
        self._clipped_at.clear()

    # ---- the clock -------------------------------------------------------------------------------
    def on_backward_end(self) -> None:
        self._fresh_any = True
        for key in self._fresh:
            self._fresh[key] = True

    def _on_optimizer_step(self, optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        self._fresh[id(optimizer)] = False
        self._fresh_any = False
        self._clipped_at.pop(id(optimizer), None)

    def on_step_begin(self) -> None:
        if not self._state().optimizers:  # manual clock: the step is the update
            self._fresh_any = False

    def _holders(self, params: list[Any]) -> list[torch.optim.Optimizer]:
        """The optimizers holding any of ``params``."""
        ids = {id(p) for p in params}
        return [opt for opt in self._state().optimizers
                if any(id(q) in ids for g in opt.param_groups for q in g["params"])]

    def _before(self, kind: str, label: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                ) -> _Pending | None | bool:
        """Record one call before it runs. False: the call clips another model's parameters."""
        run = self._state()
        params = args[0] if args else kwargs.get("parameters")
        if isinstance(params, torch.Tensor):
            params = [params]
        elif not isinstance(params, (list, tuple)):
            params = []
        if params and not any(id(p) in self._mine for p in params):
            return False  # another model's clip call (a GAN's other half): not this scope's
        holders = self._holders(list(params))
        fresh = any(self._fresh.get(id(o), False) for o in holders) if holders else self._fresh_any
        if run.step != self._last_clip_step:   # a count, not a set: long runs stay flat
            self._last_clip_step = run.step
            self.clip_steps += 1
        grads = [local(p.grad) for p in (params or []) if p.grad is not None]
        if not fresh:
            when = ("before this step's backward() (the gradients were just zeroed)"
                    if not grads else "after optimizer.step() or before this step's backward()")
            self.misplaced.append(ClipEvent(run.step, label, when))
        # A clip, then more backward passes, then a clip again, with no step of the optimizer
        # holding those parameters in between: clipping per micro-batch. Several clips after the
        # last backward (one per parameter group or optimizer) are not that.
        for opt in holders:
            before = self._clipped_at.get(id(opt))
            if before is not None and before < run.backwards and (
                    not self.accumulation_steps or self.accumulation_steps[-1].step != run.step):
                self.accumulation_steps.append(ClipEvent(run.step, label, "between backward passes"))
            self._clipped_at[id(opt)] = run.backwards
        threshold_key = {"norm": "max_norm", "value": "clip_value", "with_norm": "max_norm"}[kind]
        threshold = args[1] if len(args) > 1 else kwargs.get(threshold_key)
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
            return None  # a tensor threshold would need a sync to read; let PyTorch judge the rest
        if not math.isfinite(threshold):
            return None  # clip_grad_norm_(params, inf) measures the norm (HF with max_grad_norm=0): no clipping
        threshold_value = float(threshold)
        call = _Pending(run.step, kind, threshold_value)
        if kind == "with_norm":
            total = args[2] if len(args) > 2 else kwargs.get("total_norm")
            if isinstance(total, torch.Tensor):
                call.total = total.detach().to(torch.float32, copy=True).reshape(())
        if kind == "value" and grads:
            over = torch.stack([(g.detach().abs() > threshold_value).sum() for g in grads]).sum()
            call.saturated = over.to(torch.float64) / sum(g.numel() for g in grads)
        if self._scaled_gradients(run, holders):
            self.scaled.append(ClipEvent(run.step, label, "before scaler.unscale_(optimizer)"))
        self.calls.append(call)
        return call

    def _scaled_gradients(self, run: Any, holders: list[torch.optim.Optimizer]) -> bool:
        """Whether the clipped gradients are still scaled: an enabled scaler has not unscaled the
        optimizer(s) holding them (only those: the AMP recipe unscales the one it clips)."""
        from torch.amp.grad_scaler import OptState

        for scaler in run.scalers:
            if not scaler.is_enabled():
                continue
            for opt in holders or run.optimizers:
                state = scaler._per_optimizer_states.get(id(opt))
                if state is None or state["stage"] is not OptState.UNSCALED:
                    return True
        return False

    # ---- flush -----------------------------------------------------------------------------------
    def flush(self, steps: list[int]) -> None:
        if not self.calls:
            return
        totals = [c.total for c in self.calls if c.total is not None]
        sats = [c.saturated for c in self.calls if c.saturated is not None]
        host_totals = torch.stack(totals).to("cpu", torch.float64) if totals else torch.zeros(0)
        limits = torch.tensor([c.threshold for c in self.calls if c.total is not None], dtype=torch.float64)
        coefficients = clip_coefficient(host_totals, limits).tolist()
        acted = (host_totals > limits).tolist()
        host_totals_list = host_totals.tolist()
        host_sats = torch.stack(sats).to("cpu", torch.float64).tolist() if sats else []
        ti = si = 0
        for c in self.calls:
            total = coefficient = clipped = saturated = None
            did: bool | None = None
            if c.total is not None:
                total, coefficient, did = host_totals_list[ti], coefficients[ti], acted[ti]
                clipped = total * coefficient
                ti += 1
            if c.saturated is not None:
                saturated = host_sats[si]
                si += 1
            self.done.append(ClipCall(step=c.step, kind=c.kind, threshold=c.threshold,  # type: ignore[arg-type]
                                      total_norm=total, coefficient=coefficient, clipped_norm=clipped,
                                      acted=did, saturated=saturated))
        self.calls.clear()
        run = self._state()
        if len(self.done) > 4 * run.max_kept_steps:  # bounded: keep every other observed call
            self.done = self.done[::2]

    # ---- results ---------------------------------------------------------------------------------
    def summary(self) -> ClipSummary:
        norm_calls = [c for c in self.done if c.acted is not None]
        flags = [1.0 if c.acted else 0.0 for c in norm_calls]
        rolling = [sum(flags[max(0, i - ROLLING_WINDOW + 1): i + 1]) / min(i + 1, ROLLING_WINDOW)
                   for i in range(len(flags))]
        sats = [c.saturated for c in self.done if c.saturated is not None]
        return ClipSummary(calls=len(self.done), norm_calls=len(norm_calls),
                           clipped_fraction=sum(flags) / len(flags) if flags else None,
                           rolling_clipped_fraction=np.array(rolling, dtype=float),
                           mean_saturated=sum(sats) / len(sats) if sats else None)

    def record(self) -> ClippingRecord | None:
        if not self.done and not self.misplaced and not self.clip_steps:
            return None
        return ClippingRecord(calls=list(self.done), summary=self.summary(), misplaced=list(self.misplaced),
                              scaled=list(self.scaled), per_micro_batch=list(self.accumulation_steps),
                              clip_steps=self.clip_steps)
