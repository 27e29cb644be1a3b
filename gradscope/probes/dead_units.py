"""Dead units (GS207): ReLU-family units that never activate over the observed training batches.

A forward hook on every ``nn.ReLU``/``nn.ReLU6`` module ORs "was this unit ever positive" into a
small device mask. Units are the channel dimension for image-shaped outputs (N, C, H, W[, D]),
the features for (N, F), and the last dimension for (N, T, F) sequences. Functional
``F.relu`` calls are not modules and are not seen. Evaluation forwards (``no_grad`` or eval mode)
do not count. A module called at several places with different widths keeps one mask per width.

The check costs one reduction per ReLU call, a few percent of a step on a CPU, so it samples: it
looks at the forwards of every ``every``-th step (10 by default). A unit that fires on any sampled
batch is alive; one that never fires on any of them is dead.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from gradscope.distributed import clean_name
from gradscope.judges.dead_units import judge_dead_units
from gradscope.probes.base import Probe, WatchOptions
from gradscope.records.dead_units import DeadUnits, DeadUnitsRecord
from gradscope.reports.sections.dead_units import section_dead_units

RELU_FAMILY: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6)


def unit_dim(ndim: int) -> int:
    """Which dimension holds the units of an activation with ``ndim`` dimensions."""
    if ndim <= 1:
        return 0
    if ndim == 3:
        return 2
    return 1


def alive_units(output: torch.Tensor) -> torch.Tensor:
    """A bool vector: which units are positive anywhere in this batch."""
    dim = unit_dim(output.dim())
    others = [d for d in range(output.dim()) if d != dim]
    x = output.detach()
    return (x.amax(dim=others) if others else x) > 0


class DeadUnitProbe(Probe):
    """Share of units of each ReLU-family module that never activated."""

    name = "dead_units"
    codes = ("GS207",)
    record_type = DeadUnitsRecord
    judge = staticmethod(judge_dead_units)
    section = staticmethod(section_dead_units)
    report_order = 700

    @classmethod
    def build(cls, options: WatchOptions, has_optimizer: bool) -> DeadUnitProbe | None:
        return cls(options.dead_units_every) if options.dead_units_every > 0 else None

    def __init__(self, every: int = 10) -> None:
        super().__init__()
        self.every = every
        self.alive: dict[tuple[str, int], torch.Tensor] = {}
        self.batches: dict[tuple[str, int], int] = {}
        # Set by the step clock, outside any compiled region: the hook reads one bool, so a
        # torch.compile'd model gets two graphs (sampling or not) instead of one per step.
        self.active = True
        self.seen: list[tuple[str, torch.Tensor]] = []  # this step's (module, units alive), folded at its end
        self.fired = False

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.relus = 0
        for name, module in run.model.named_modules():
            if isinstance(module, RELU_FAMILY):
                self.relus += 1
                self.handles.append(module.register_forward_hook(
                    functools.partial(self._on_forward, clean_name(name) or run.root_name)))

    def _on_forward(self, name: str, module: nn.Module, _args: Any, output: Any) -> None:
        # Inside a compiled model this hook is traced: it reads no changing Python value but the
        # bool above, and only appends (a side effect dynamo replays); the folding is eager.
        if not self.active:
            return
        if not (module.training and torch.is_grad_enabled()) or not isinstance(output, torch.Tensor):
            return
        if output.dim() == 0 or output.numel() == 0:
            return
        self.seen.append((name, alive_units(output)))

    def on_step_end(self) -> None:
        for name, seen in self.seen:
            key = (name, seen.numel())
            mask = self.alive.get(key)
            if mask is None:
                self.alive[key] = seen
            else:
                mask.logical_or_(seen)
            self.batches[key] = self.batches.get(key, 0) + 1
        self.fired = self.fired or bool(self.seen)
        self.seen.clear()
        run = self._state()
        self.active = (run.step + 1) % self.every == 0  # the next step's forwards
        if run.step == 0 and not self.fired and run.backwards and self.relus and run.compiled:
            run.notes.append(
                "The model was compiled and ran before watch() began: hooks added to a compiled model "
                "afterwards never run, so the dead-unit check saw no forward. Enter watch() before the "
                "first call of the compiled model.")

    def dead_fractions(self) -> dict[tuple[str, int], float]:
        """Share of never-active units per (module, width); reads the masks (end of run only)."""
        return {key: 1.0 - float(mask.float().mean()) for key, mask in self.alive.items()}

    def record(self) -> DeadUnitsRecord | None:
        if not self.alive:
            return None
        return DeadUnitsRecord(layers=[
            DeadUnits(module=name, units=width, batches=self.batches[(name, width)], dead_fraction=frac)
            for (name, width), frac in self.dead_fractions().items()])
