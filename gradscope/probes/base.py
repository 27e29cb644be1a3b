"""The probe base class and the run state every probe reads: one place owns hooks and the clock.

A probe only schedules and stores; the maths lives in ``gradscope.norms``. The scope calls the
``on_*`` methods from PyTorch hooks, so none of them may synchronise with the device: values stay
in device buffers indexed by ``run.row`` and reach the host in ``flush``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradscope.findings import Finding
from gradscope.thresholds import Thresholds


@dataclass
class RunState:
    """What the scope knows about the run, shared read-only by its probes."""

    model: nn.Module
    optimizers: list[torch.optim.Optimizer]
    flush_every: int
    max_kept_steps: int
    thresholds: Thresholds
    strict: bool
    root_name: str
    module_names: dict[int, str]                 # id(module) -> dotted path ("" for the root)
    param_names: list[str]                       # trainable parameters at attach, tied ones once
    params: list[nn.Parameter]
    param_layer: list[int]                       # index into layer_names for each parameter
    layer_names: list[str]                       # owning module path of each parameter group
    step: int = 0                                # the step being built (completed steps so far)
    flushed_until: int = 0                       # steps below this have reached the host
    backward_order: list[int] = field(default_factory=list)  # parameters, first backward's order
    backwards: int = 0                           # backward passes in the whole run
    backwards_in_step: int = 0
    own_hook_ids: set[int] = field(default_factory=set)  # gradscope's hook handles, left out of counts
    listeners: list[Callable[[str], None]] = field(default_factory=list)  # phase events, e.g. timing
    overhead_ns: int = 0                         # host time spent in gradscope's own callbacks
    scalers: list[Any] = field(default_factory=list)  # torch.amp.GradScaler objects seen scaling a loss
    locating: bool = False                       # the non-finite probe's re-run is in progress

    def emit(self, event: str) -> None:
        """Tell listeners a phase begins or ends ("clip_begin", "data_end", ...)."""
        for listener in self.listeners:
            listener(event)

    @property
    def row(self) -> int:
        """The device-buffer row of the step being built."""
        return self.step - self.flushed_until

    def where(self, module: nn.Module) -> str:
        """A module's dotted path, or the root's class name for the root itself."""
        name = self.module_names.get(id(module))
        if name is None:
            return type(module).__name__
        return name or self.root_name


class Probe:
    """One kind of evidence. Subclasses override the ``on_*`` methods they need."""

    name: ClassVar[str] = "probe"

    def __init__(self) -> None:
        self.handles: list[RemovableHandle] = []
        self.run: RunState | None = None

    def attach(self, run: RunState) -> None:
        self.run = run

    def detach(self) -> None:
        """Remove every hook this probe registered; safe to call twice."""
        while self.handles:
            self.handles.pop().remove()

    def on_backward_end(self) -> None:
        """After each backward pass, once every ``.grad`` is final for it."""

    def on_step_begin(self) -> None:
        """Right before ``optimizer.step()`` (after any clipping)."""

    def on_step_end(self) -> None:
        """When a step is complete, before ``run.step`` advances."""

    def flush(self, steps: list[int]) -> None:
        """Move the device rows of ``steps`` (rows 0..len-1) to the host and reset them."""

    def findings(self) -> list[Finding]:
        return []

    def record(self) -> dict[str, Any]:
        """JSON-ready summary of what this probe saw."""
        return {}

    def _state(self) -> RunState:
        if self.run is None:
            raise RuntimeError(f"probe {self.name!r} used before attach()")
        return self.run
