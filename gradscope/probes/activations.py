"""Activation gradients: module output gradients (``watch(activations=...)``) and tensors the user
names (``scope.probe`` through ``Tensor.register_hook``, ``scope.retain`` through ``retain_grad``).

The tensor hooks only read the gradient and return None, so PyTorch keeps the gradient as it was.
Values are accumulated on the device and reach the host at a flush.
"""
from __future__ import annotations

import difflib
import functools
from typing import Any, Sequence

import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.probes.base import Probe
from gradscope.series import DecimatedSeries, RunningStats


def first_grad_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor in a module output that requires grad (a dict output may start with an
    argmax or a mask that does not), or None."""
    if isinstance(output, torch.Tensor):
        return output if output.requires_grad else None
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_grad_tensor(item)
            if found is not None:
                return found
    return None


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

    def record(self) -> dict[str, Any]:
        if not self.names or self.series is None or self.stats is None:
            return {}
        return {"modules": self.names, "steps": self.series.steps,
                "norms": self.series.values().tolist(), "stats": self.stats.to_dict(self.names)}


class TensorProbe(Probe):
    """Gradients of tensors named by the user with ``scope.probe`` and ``scope.retain``."""

    name = "tensor_grad"

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

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, series in self.series.items():
            values = series.values()
            out[name] = {"via": self.kinds.get(name, ""), "steps": series.steps,
                         "norm": values[:, 0].tolist(), "max_abs": values[:, 1].tolist(),
                         "stats": self.stats[name].to_dict(["norm", "max_abs"])}
        return out
