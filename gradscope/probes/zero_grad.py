"""A missing ``zero_grad`` (GS503): gradients from earlier steps still in ``.grad`` at a new step.

At the end of the first step the probe picks one small parameter that got a gradient and puts a
read-only tensor hook on it. That hook fires in every backward before the new gradient is added
to ``.grad`` and notes whether ``.grad`` was empty (``None``: a host check) or still held a
non-zero gradient (a device flag, ANDed over the step's backwards). A step is stale when every
backward since the previous ``optimizer.step()`` found an old non-zero gradient: nothing was
zeroed in between, by any means (``optimizer.zero_grad()``, ``model.zero_grad()``,
``p.grad = None``, ``set_to_none=False``). Intended accumulation (several backwards, one step,
then zeroing) is not flagged, and neither is a GAN's discriminator that receives gradients from
the generator's loss and is zeroed before its own backward. The flags reach the host at a flush.
"""
from __future__ import annotations

import torch

from gradscope.judges.zero_grad import judge_zero_grad
from gradscope.probes.base import Probe
from gradscope.records.zero_grad import ZeroGradRecord
from gradscope.reports.sections.loop import section_zero_grad


class ZeroGradProbe(Probe):
    """GS503."""

    name = "zero_grad"
    codes = ("GS503",)
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

    def on_step_end(self) -> None:
        run = self._state()
        if self.watched is not None or not run.optimizers:
            return
        candidates = [(p.numel(), name, p) for name, p in zip(run.param_names, run.params)
                      if p.grad is not None and not p.grad.is_sparse]
        if not candidates:
            return
        _, name, param = min(candidates, key=lambda c: (c[0], c[1]))
        self.watched = name
        handle = param.register_hook(lambda _g, p=param: self._on_grad(p))
        self.handles.append(handle)
        run.own_hook_ids.add(handle.id)

    def _on_grad(self, param: torch.Tensor) -> None:
        run = self._state()
        if run.step == 0:
            return
        grad = param.grad
        if grad is None:
            self._reset_seen = True
        elif not self._reset_seen:
            stale = grad.detach().abs().amax() > 0
            self._stale = stale if self._stale is None else self._stale & stale

    def on_step_begin(self) -> None:
        run = self._state()
        if self.watched is None or run.step == 0 or run.backwards_in_step == 0:
            return
        self.checked += 1
        if not self._reset_seen and self._stale is not None:
            self.flags.append((run.step, self._stale))
        self._reset_seen = False
        self._stale = None

    def flush(self, steps: list[int]) -> None:
        if not self.flags:
            return
        values = torch.stack([f for _, f in self.flags]).cpu().tolist()
        self.stale_steps += [s for (s, _), stale in zip(self.flags, values) if stale]
        self.flags.clear()

    def record(self) -> ZeroGradRecord | None:
        if self.watched is None:
            return None
        return ZeroGradRecord(watched_parameter=self.watched, steps_checked=self.checked,
                              steps_with_stale_gradients=len(self.stale_steps),
                              first_stale_step=self.stale_steps[0] if self.stale_steps else None)
