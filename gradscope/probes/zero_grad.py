"""A missing ``zero_grad`` (GS503): gradients from earlier steps still in ``.grad`` at a new step.

Right after the first backward (or at the end of the first step) the probe picks one small
parameter an optimizer holds that got a gradient, and puts a read-only tensor hook on it. That hook
fires in every backward before the new gradient is added to ``.grad`` and notes whether ``.grad``
was empty (``None``: a host check) or still held a non-zero gradient (a device flag, ANDed over the
step's backwards). A step is stale when every backward since the previous ``optimizer.step()``
found an old non-zero gradient: nothing was zeroed in between, by any means
(``optimizer.zero_grad()``, ``model.zero_grad()``, ``p.grad = None``, ``set_to_none=False``).
Intended accumulation (several backwards, one step, then zeroing) is not flagged, and neither is a
GAN's discriminator that receives gradients from the generator's loss and is zeroed before its own
backward. The flags reach the host at a flush.
"""
from __future__ import annotations

from typing import Any

import torch

from gradscope.judges.zero_grad import judge_zero_grad
from gradscope.probes.base import Probe
from gradscope.records.zero_grad import ZeroGradRecord
from gradscope.reports.sections.loop import section_zero_grad


class ZeroGradProbe(Probe):
    """GS503."""

    name = "zero_grad"
    codes = ("GS503", "GS511")
    record_type = ZeroGradRecord
    judge = staticmethod(judge_zero_grad)
    section = staticmethod(section_zero_grad)
    report_order = 760

    def __init__(self) -> None:
        super().__init__()
        self.watched: str | None = None
        self.flags: list[tuple[int, torch.Tensor]] = []
        self.stale_steps: list[int] = []
        self.checked = 0
        self._reset_seen = False
        self._stale: torch.Tensor | None = None
        # GS511: backward passes after a step's first one, and how many found .grad emptied
        self._backwards = 0
        self._later_empty_host = 0
        self._later_empty: torch.Tensor | None = None
        self._inside_step = False       # optimizer.step(closure) evaluating its closure
        self.micro: list[tuple[int, int, int, torch.Tensor | None]] = []  # step, later backwards, host, device
        self.accumulation_steps = 0
        self.zeroed_steps: list[int] = []

    def attach(self, run: Any) -> None:
        super().attach(run)
        for opt in run.optimizers:
            for handle in (opt.register_step_pre_hook(self._enter_step), opt.register_step_post_hook(self._leave_step)):
                self.handles.append(handle)
                run.own_hook_ids.add(handle.id)

    def on_optimizer_added(self, optimizer: torch.optim.Optimizer) -> None:
        for handle in (optimizer.register_step_pre_hook(self._enter_step),
                       optimizer.register_step_post_hook(self._leave_step)):
            self.handles.append(handle)
            self._state().own_hook_ids.add(handle.id)

    def _enter_step(self, *_: Any) -> None:
        self._inside_step = True

    def _leave_step(self, *_: Any) -> None:
        self._inside_step = False

    def on_backward_end(self) -> None:
        if self.watched is None and not self._inside_step:
            self._pick_sentinel(backwards_seen=1)

    def on_step_end(self) -> None:
        if self.watched is None:
            self._pick_sentinel(backwards_seen=0)

    def _pick_sentinel(self, backwards_seen: int) -> None:
        """Right after the first backward (a trainer may zero the gradients before the step
        ends), or at the end of the first step."""
        run = self._state()
        if not run.optimizers:
            return
        # the sentinel must be a parameter an optimizer steps and its zero_grad() clears: one
        # that no optimizer holds piles up gradients by design (its .grad is nobody's to zero)
        owned = {id(p) for opt in run.optimizers for g in opt.param_groups for p in g["params"]}
        candidates = [(p.numel(), name, p) for name, p in zip(run.param_names, run.params)
                      if id(p) in owned and p.grad is not None and not p.grad.is_sparse]
        if not candidates:
            return
        _, name, param = min(candidates, key=lambda c: (c[0], c[1]))
        self.watched = name
        self._backwards = backwards_seen   # the backward that just ended was this step's first
        handle = param.register_hook(lambda _g, p=param: self._on_grad(p))
        self.handles.append(handle)
        run.own_hook_ids.add(handle.id)

    def _on_grad(self, param: torch.Tensor) -> None:
        if self._inside_step:
            return
        grad = param.grad
        if self._backwards:  # a later backward of the step: was the accumulated gradient emptied?
            if grad is None:
                self._later_empty_host += 1
            else:
                empty = (grad.detach().abs().amax() == 0).to(torch.int32)
                self._later_empty = empty if self._later_empty is None else self._later_empty + empty
        self._backwards += 1
        if grad is None:
            self._reset_seen = True
        elif not self._reset_seen:
            stale = grad.detach().abs().amax() > 0
            self._stale = stale if self._stale is None else self._stale & stale

    def on_step_begin(self) -> None:
        run = self._state()
        if self.watched is None or run.backwards_in_step == 0:
            return
        if run.step > 0:   # the first step starts from empty gradients whatever the loop does
            self.checked += 1
            if not self._reset_seen and self._stale is not None:
                self.flags.append((run.step, self._stale))
        if self._backwards > 1:
            self.micro.append((run.step, self._backwards - 1, self._later_empty_host, self._later_empty))
        self._reset_seen = False
        self._stale = None
        self._backwards = self._later_empty_host = 0
        self._later_empty = None

    def flush(self, steps: list[int]) -> None:
        if self.flags:
            values = torch.stack([f for _, f in self.flags]).cpu().tolist()
            self.stale_steps += [s for (s, _), stale in zip(self.flags, values) if stale]
            self.flags.clear()
        for step, later, host, device in self.micro:  # one host copy each, at the flush
            self.accumulation_steps += 1
            if host + (int(device) if device is not None else 0) == later:
                self.zeroed_steps.append(step)
        self.micro.clear()

    def record(self) -> ZeroGradRecord | None:
        if self.watched is None:
            return None
        return ZeroGradRecord(watched_parameter=self.watched, steps_checked=self.checked,
                              steps_with_stale_gradients=len(self.stale_steps),
                              first_stale_step=self.stale_steps[0] if self.stale_steps else None,
                              accumulation_steps=self.accumulation_steps,
                              emptied_accumulation_steps=len(self.zeroed_steps),
                              first_emptied_step=self.zeroed_steps[0] if self.zeroed_steps else None)
