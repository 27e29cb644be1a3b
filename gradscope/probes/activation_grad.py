"""Activation gradients of modules (``watch(activations=...)``): output-gradient norms per step.

A forward hook on each chosen module puts a read-only ``register_hook`` on its output; the hook
adds the squared norm of the gradient into a device accumulator, returns None (PyTorch keeps the
gradient as it was), and the step's row is the root of the sum over the module's calls. Values
reach the host at a flush.
"""
from __future__ import annotations

import difflib
import functools
from typing import Any, Sequence

import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.probes.base import Probe, WatchOptions
from gradscope.probes.outputs import first_grad_tensor
from gradscope.records.activation_grad import ActivationGradRecord
from gradscope.reports.sections.activation_grad import section_activation_grad
from gradscope.series import DecimatedSeries, RunningStats


def select_modules(model: nn.Module, spec: Any) -> list[tuple[str, nn.Module]]:
    """Resolve ``activations=``: "all" (every leaf module), or names and module classes."""
    named = [(n, m) for n, m in model.named_modules() if n]
    if spec == "all":
        return [(n, m) for n, m in named if not any(True for _ in m.children())]
    if isinstance(spec, (str, type)):
        spec = [spec]
    if not isinstance(spec, Sequence):
        raise GradscopeError(
            f"activations= expected 'all' or a list of module names and classes, got {spec!r}")
    by_name = dict(named)
    chosen: dict[str, nn.Module] = {}
    for item in spec:
        if isinstance(item, type) and issubclass(item, nn.Module):
            chosen.update((n, m) for n, m in named if isinstance(m, item))
        elif isinstance(item, str):
            if item not in by_name:
                close = difflib.get_close_matches(item, list(by_name), n=3)
                hint = f" Did you mean {', '.join(close)}?" if close else ""
                raise GradscopeError(
                    f"activations= names {item!r}, which is not a submodule of "
                    f"{type(model).__name__}.{hint} Names are those of model.named_modules().")
            chosen[item] = by_name[item]
        else:
            raise GradscopeError(
                f"activations= items must be module names or nn.Module classes, got {item!r}")
    order = {n: i for i, (n, _) in enumerate(named)}
    return sorted(chosen.items(), key=lambda kv: order[kv[0]])


class ActivationProbe(Probe):
    """Norm of each chosen module's output gradient, per step (root-sum-square over its calls)."""

    name = "activation_grad"
    record_type = ActivationGradRecord
    section = staticmethod(section_activation_grad)
    report_order = 300

    @classmethod
    def build(cls, options: WatchOptions, has_optimizer: bool) -> ActivationProbe | None:
        return None if options.activations is None else cls(options.activations)

    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.spec = spec
        self.names: list[str] = []
        self.acc: torch.Tensor | None = None
        self.buffer: torch.Tensor | None = None
        self.rows_written: set[int] = set()
        self.stats: RunningStats | None = None
        self.series: DecimatedSeries | None = None

    def attach(self, run: Any) -> None:
        super().attach(run)
        modules = select_modules(run.model, self.spec)
        self.names = [n for n, _ in modules]
        self.stats = RunningStats(len(self.names))
        self.series = DecimatedSeries(len(self.names), run.max_kept_steps)
        for i, (_, module) in enumerate(modules):
            self.handles.append(module.register_forward_hook(functools.partial(self._on_forward, i)))

    def _on_forward(self, index: int, _module: nn.Module, _args: Any, output: Any) -> None:
        t = first_grad_tensor(output)
        if t is not None and torch.is_grad_enabled():
            t.register_hook(functools.partial(self._on_grad, index))

    def _buffers(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if self.acc is None or self.buffer is None or self.acc.device != device:
            run = self._state()
            self.acc = torch.zeros(len(self.names), dtype=torch.float32, device=device)
            old = self.buffer
            self.buffer = torch.zeros(run.flush_every, len(self.names), dtype=torch.float32,
                                      device=device)
            if old is not None:
                self.buffer.copy_(old.to(device))
        return self.acc, self.buffer

    def _on_grad(self, index: int, grad: torch.Tensor) -> None:
        acc, _ = self._buffers(grad.device)
        acc[index].add_(torch.linalg.vector_norm(grad.detach(), dtype=torch.float32).square())

    def on_step_end(self) -> None:
        if self.acc is None or self.buffer is None:
            return
        run = self._state()
        self.buffer[run.row].copy_(self.acc.sqrt())
        self.acc.zero_()
        self.rows_written.add(run.row)

    def flush(self, steps: list[int]) -> None:
        if self.buffer is None or not steps:
            return
        assert self.stats and self.series
        rows = self.buffer[: len(steps)].to("cpu", torch.float64)
        self.buffer.zero_()
        keep = [i for i in range(len(steps)) if i in self.rows_written]
        self.rows_written.clear()
        if keep:
            kept_steps = [steps[i] for i in keep]
            self.stats.update(kept_steps, rows[keep])
            self.series.append(kept_steps, rows[keep])

    def record(self) -> ActivationGradRecord | None:
        if not self.names or self.series is None or self.stats is None:
            return None
        return ActivationGradRecord(modules=list(self.names), steps=list(self.series.steps),
                                    norms=self.series.values().numpy(), stats=self.stats.table())
