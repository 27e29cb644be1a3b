"""What the training code feeds the losses that want logits (GS501 in any loop, not only ours).

``F.cross_entropy``, ``F.nll_loss`` and ``F.binary_cross_entropy_with_logits`` (which the
``nn.CrossEntropyLoss``, ``nn.NLLLoss`` and ``nn.BCEWithLogitsLoss`` modules call) are observed
while a scope is open. A call with gradients enabled whose input is this scope's model output (or
a view of it; with one model watched, any input) is sampled: the first four calls, then calls 16,
64, 256 and 1024 of each call site. A sample is three booleans computed on the device (inputs all
strictly inside (0, 1); rows non-negative and summing to 1; all non-negative), read at the next
flush: no sync in the step.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gradscope.judges.loss_inputs import judge_loss_inputs
from gradscope.probes.base import Probe, grad_outputs
from gradscope.probes.patches import FunctionPatch, call_site
from gradscope.records.loss_inputs import LossInputSite, LossInputsRecord
from gradscope.reports.sections.loss_inputs import section_loss_inputs

LOSSES = ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits")
PATCHES = {name: FunctionPatch(F, name) for name in LOSSES}
SAMPLED_CALLS = frozenset({0, 1, 2, 3, 16, 64, 256, 1024})
_OPEN: list[LossInputProbe] = []   # probes attached now: with one, any input counts as its model's


class _Site:
    def __init__(self, function: str, site: str | None) -> None:
        self.function = function
        self.site = site
        self.calls = 0
        self.pending: list[torch.Tensor] = []   # device rows of 3 booleans, read at a flush
        self.checked = 0
        self.counts = [0, 0, 0]


def _flags(function: str, x: torch.Tensor) -> torch.Tensor:
    x = x.detach()
    inside = (x > 0).all() & (x < 1).all()
    non_negative = (x >= 0).all()
    if function == "binary_cross_entropy_with_logits" or x.dim() < 2 or x.shape[1] < 2:
        simplex = torch.zeros((), dtype=torch.bool, device=x.device)
    else:
        simplex = non_negative & ((x.float().sum(dim=1) - 1).abs() <= 1e-3).all()
    return torch.stack([inside, simplex, non_negative])


class LossInputProbe(Probe):
    name = "loss_inputs"
    codes = ("GS501",)
    record_type = LossInputsRecord
    judge = staticmethod(judge_loss_inputs)
    section = staticmethod(section_loss_inputs)
    report_order = 95

    def __init__(self) -> None:
        super().__init__()
        self.sites: dict[tuple[str, str | None], _Site] = {}
        self.outputs: list[weakref.ref[torch.Tensor]] = []
        self.observers: dict[str, Any] = {}

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.handles.append(run.wrapper.register_forward_hook(self._after_forward))
        for name, patch in PATCHES.items():
            observer = self._observer(name)
            self.observers[name] = observer
            patch.add(observer)
        _OPEN.append(self)

    def detach(self) -> None:
        super().detach()
        for name, observer in self.observers.items():
            PATCHES[name].remove(observer)
        self.observers.clear()
        if self in _OPEN:
            _OPEN.remove(self)

    def _after_forward(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            self.outputs = [weakref.ref(t) for t in grad_outputs(output)]

    def _mine(self, x: torch.Tensor) -> bool:
        if len(_OPEN) == 1:
            return True
        base = x._base if x._base is not None else x
        return any(ref() is x or ref() is base for ref in self.outputs)

    def _observer(self, function: str) -> Any:
        def observe(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            x = args[0] if args else kwargs.get("input")
            run = self.run
            if (run is None or run.locating or not isinstance(x, torch.Tensor) or not x.is_floating_point()
                    or not torch.is_grad_enabled() or torch.compiler.is_compiling()):
                return
            if not self._mine(x):
                return
            # one entry per call site: the first calls of each site are the sampled ones
            key_site = call_site()
            site = self.sites.get((function, key_site))
            if site is None:
                site = self.sites[(function, key_site)] = _Site(function, key_site)
            if site.calls in SAMPLED_CALLS and x.numel():
                site.pending.append(_flags(function, x))
            site.calls += 1
        return observe

    def flush(self, steps: list[int]) -> None:
        for site in self.sites.values():
            if site.pending:
                rows = torch.stack(site.pending).cpu().tolist()
                site.pending.clear()
                for row in rows:
                    site.checked += 1
                    for i, flag in enumerate(row):
                        site.counts[i] += int(flag)

    def record(self) -> LossInputsRecord | None:
        if not self.sites:
            return None
        return LossInputsRecord(sites=[
            LossInputSite(function=s.function, site=s.site, checked=s.checked, in_unit_interval=s.counts[0],
                          rows_sum_to_one=s.counts[1], non_negative=s.counts[2])
            for s in self.sites.values()])
