"""Gradients of tensors the user names: ``scope.probe`` (``Tensor.register_hook``) and
``scope.retain`` (``retain_grad``), as [L2 norm, max |g|] per step.

The tensor hooks only read the gradient and return None, so PyTorch keeps the gradient as it was.
Values stay on the device until a flush.
"""
from __future__ import annotations

import functools

import torch

from gradscope.errors import GradscopeError
from gradscope.probes.base import Probe
from gradscope.records.activation_grad import TensorGradRecord, TensorSeries
from gradscope.reports.sections.activation_grad import section_tensor_grad
from gradscope.series import DecimatedSeries, RunningStats


def grad_stats(grad: torch.Tensor) -> torch.Tensor:
    """[L2 norm, max |g|] of a gradient as a float32 device vector (no host sync)."""
    g = grad.detach()
    if g.numel() == 0:
        return torch.zeros(2, dtype=torch.float32, device=g.device)
    return torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32),
                        g.abs().amax().to(torch.float32)])


def merge_stats(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Statistics of two gradients of one name in one step: root-sum-square norm, larger max."""
    return torch.stack([torch.hypot(a[0], b[0]), torch.maximum(a[1], b[1])])


class TensorProbe(Probe):
    """Gradients of tensors named by the user with ``scope.probe`` and ``scope.retain``."""

    name = "tensor_grad"
    record_type = TensorGradRecord
    section = staticmethod(section_tensor_grad)
    report_order = 310

    def __init__(self) -> None:
        super().__init__()
        self.current: dict[str, torch.Tensor] = {}
        self.pending: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self.retained: list[tuple[str, torch.Tensor]] = []
        self.series: dict[str, DecimatedSeries] = {}
        self.stats: dict[str, RunningStats] = {}
        self.kinds: dict[str, str] = {}

    def _check(self, tensor: object, name: object, what: str) -> torch.Tensor:
        if not isinstance(name, str) or not name:
            raise GradscopeError(f"scope.{what}(tensor, name) needs a non-empty string name, got {name!r}")
        if not isinstance(tensor, torch.Tensor):
            raise GradscopeError(
                f"scope.{what}(tensor, {name!r}) expected a torch.Tensor, got {type(tensor).__name__}")
        if not tensor.requires_grad:
            raise GradscopeError(
                f"scope.{what}(tensor, {name!r}): the tensor does not require grad, so no gradient "
                "will reach it. Probe a tensor computed from trainable parameters, outside torch.no_grad().")
        return tensor

    def probe(self, tensor: torch.Tensor, name: str) -> None:
        t = self._check(tensor, name, "probe")
        self.kinds.setdefault(name, "register_hook")
        t.register_hook(functools.partial(self._on_grad, name))

    def retain(self, tensor: torch.Tensor, name: str) -> None:
        t = self._check(tensor, name, "retain")
        self.kinds.setdefault(name, "retain_grad")
        t.retain_grad()
        self.retained.append((name, t))

    def _on_grad(self, name: str, grad: torch.Tensor) -> None:
        self._add(name, grad_stats(grad))

    def _add(self, name: str, stats: torch.Tensor) -> None:
        prev = self.current.get(name)
        self.current[name] = stats if prev is None else merge_stats(prev, stats)

    def on_backward_end(self) -> None:
        for name, t in self.retained:
            if t.grad is not None:
                self._add(name, grad_stats(t.grad))
        self.retained.clear()  # drop the references so the graph's tensors can be freed

    def on_step_end(self) -> None:
        run = self._state()
        for name, stats in self.current.items():
            self.pending.setdefault(name, []).append((run.step, stats))
        self.current.clear()

    def flush(self, steps: list[int]) -> None:
        run = self._state()
        for name, items in self.pending.items():
            if not items:
                continue
            rows = torch.stack([s for _, s in items]).to("cpu", torch.float64)
            at = [step for step, _ in items]
            self.series.setdefault(name, DecimatedSeries(2, run.max_kept_steps)).append(at, rows)
            self.stats.setdefault(name, RunningStats(2)).update(at, rows)
        self.pending.clear()

    def record(self) -> TensorGradRecord | None:
        if not self.series:
            return None
        tensors = {}
        for name, series in self.series.items():
            values = series.values()
            stats = self.stats[name].table()
            tensors[name] = TensorSeries(via=self.kinds.get(name, ""), steps=list(series.steps),
                                         norm=values[:, 0].numpy(), max_abs=values[:, 1].numpy(),
                                         norm_stats=stats.row(0), max_abs_stats=stats.row(1))
        return TensorGradRecord(tensors=tensors)
