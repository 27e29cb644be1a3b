"""Non-finite tracing: where NaN/Inf first appeared in the forward output, the loss or a gradient.

Every training forward of the root module adds two flags to a device buffer row: "the output was
non-finite" and, through a hook on the output, "the gradient arriving at the output was
non-finite". A finite output whose incoming gradient is not means the loss (or whatever ran after
the model) went non-finite. The host reads the flags at a flush (GS206); gradients are covered by
the per-parameter norms (GS205, in ``gradnorm``).

Finding the first module: when a flag is set and reading it costs nothing (CPU tensors), or in
strict mode (where it costs a sync on a GPU), the step's forward is run once more with a forward
hook on every module, under ``torch.no_grad()``, with the RNG state and every module buffer
(BatchNorm statistics) saved before and restored after, so the user's training is unchanged. The
first module to *finish* with a non-finite output is the innermost one that produced it. On a GPU
without strict mode the step is reported and the module is left for a strict re-run.
"""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from gradscope.distributed import gather_objects, reduce_rows_min
from gradscope.errors import NonFiniteError
from gradscope.judges.nonfinite import judge_nonfinite
from gradscope.probes.base import Probe
from gradscope.probes.grad_norm import GradNormProbe
from gradscope.probes.outputs import first_grad_tensor, floating_tensors
from gradscope.records.nonfinite import NonFiniteRecord
from gradscope.reports.sections.nonfinite import section_nonfinite


def nonfinite_flag(tensors: list[torch.Tensor]) -> torch.Tensor:
    """1.0 when any element of ``tensors`` is NaN or Inf, else 0.0 (a device scalar, no sync)."""
    flags = [torch.isfinite(t.detach()).all().logical_not() for t in tensors]
    return torch.stack(flags).any().to(torch.float32)


def locate_nonfinite(root: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                     names: dict[int, str]) -> str | None:
    """Re-run ``root(*args, **kwargs)`` and name the first module whose output is non-finite.

    Returns "input" when the inputs are already non-finite, None when the re-run stays finite.
    Leaves RNG state and module buffers exactly as they were.
    """
    if any(not bool(torch.isfinite(t).all()) for t in floating_tensors((args, kwargs))):
        return "input"
    found: list[str] = []

    def hook(module: nn.Module, _args: Any, output: Any) -> None:
        if not found and any(not bool(torch.isfinite(t).all()) for t in floating_tensors(output)):
            found.append(names.get(id(module), type(module).__name__))

    # every buffer, non-persistent ones included (state_dict() leaves those out)
    buffers = [b for _, b in root.named_buffers()]
    saved = [b.detach().clone() for b in buffers]
    devices = sorted({t.device.index or 0 for t in root.parameters() if t.is_cuda})
    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            root(*args, **kwargs)
    finally:
        handle.remove()
        with torch.no_grad():
            for b, v in zip(buffers, saved):
                b.copy_(v)
    return found[0] if found else None


class NonFiniteProbe(Probe):
    """GS206 (non-finite loss or output) and strict mode for GS205/GS206."""

    name = "nonfinite"
    codes = ("GS206",)
    record_type = NonFiniteRecord
    judge = staticmethod(judge_nonfinite)
    section = staticmethod(section_nonfinite)
    report_order = 110

    def __init__(self) -> None:
        super().__init__()
        self.grad_norm: GradNormProbe | None = None  # strict mode reads its rows
        self.buffer: torch.Tensor | None = None
        self.first_output_step: int | None = None
        self.first_loss_step: int | None = None
        self.located: dict[int, str] = {}  # step -> module (or "input")
        self.located_rank: dict[int, int] = {}  # step -> the rank that located it (distributed runs)
        self.first_output_rank: int | None = None
        self.first_loss_rank: int | None = None

    def attach(self, run: Any) -> None:
        super().attach(run)
        peer = run.probes.get(GradNormProbe.name)
        self.grad_norm = peer if isinstance(peer, GradNormProbe) else None
        self.handles.append(run.wrapper.register_forward_hook(self._on_forward, with_kwargs=True))

    def _row_buffer(self, device: torch.device) -> torch.Tensor:
        if self.buffer is None or self.buffer.device != device:
            fresh = torch.zeros(self._state().flush_every, 2, dtype=torch.float32, device=device)
            if self.buffer is not None:
                fresh.copy_(self.buffer.to(device))
            self.buffer = fresh
        return self.buffer

    def _readable(self, t: torch.Tensor) -> bool:
        # On the CPU a tensor's value is already on the host: reading it is not a device sync.
        return t.device.type == "cpu" or self._state().strict

    def _on_forward(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
                    output: Any) -> None:
        if self._state().locating or not torch.is_grad_enabled():
            return
        tensors = floating_tensors(output)
        if not tensors:
            return
        run = self._state()
        flag = nonfinite_flag(tensors)
        buffer = self._row_buffer(flag.device)
        buffer[run.row, 0].add_(flag)
        out = first_grad_tensor(output)
        if out is not None:
            out.register_hook(functools.partial(self._on_output_grad, flag))
        # Only the first non-finite forward is located: after a divergence every step is
        # non-finite, and re-running each of them would double the cost of the rest of the run.
        if not self.located and self._readable(flag) and bool(flag):
            run.locating = True  # every probe ignores the re-run
            try:
                # the module itself, not its DDP or compile wrapper: a DDP forward may broadcast
                # buffers (a collective this rank alone would issue), a compiled one would recompile
                where = locate_nonfinite(run.model, args, kwargs, run.module_names)
            finally:
                run.locating = False
            self.located[run.step] = where or run.root_name
            if run.strict:
                raise NonFiniteError(
                    f"non-finite forward output at step {run.step}, first produced by "
                    f"{self._name(self.located[run.step])} (strict mode)")

    def _name(self, where: str) -> str:
        return self._state().root_name if where == "" else where

    def _on_output_grad(self, output_flag: torch.Tensor, grad: torch.Tensor) -> None:
        run = self._state()
        # A non-finite gradient arriving at a finite output: the loss was non-finite.
        bad = torch.isfinite(grad.detach()).all().logical_not().to(torch.float32) * (1 - output_flag)
        self._row_buffer(bad.device)[run.row, 1].add_(bad)
        if run.strict and bool(bad):
            raise NonFiniteError(
                f"non-finite loss at step {run.step}: the model's output was finite but the gradient "
                "arriving at it was not (strict mode)")

    def on_backward_end(self) -> None:
        run = self._state()
        if not run.strict or self.grad_norm is None:
            return
        rows = self.grad_norm.host_rows(run.row + 1)[run.row]  # one sync: strict mode's price
        if not bool(torch.isfinite(rows).all()):
            bad = set(torch.isfinite(rows).logical_not().nonzero().flatten().tolist())
            order = run.backward_order + [i for i in range(len(run.params)) if i not in run.backward_order]
            first = next(i for i in order if i in bad)
            raise NonFiniteError(
                f"non-finite gradient at step {run.step}: {run.param_names[first]} was the first "
                "in backward order (strict mode)")

    def flush(self, steps: list[int]) -> None:
        run = self._state()
        if not steps or (self.buffer is None and not run.collective):
            return
        if self.buffer is None:  # every rank takes part in the collectives below, flags or not
            self._row_buffer(run.params[0].device if run.params else torch.device("cpu"))
        assert self.buffer is not None
        n = len(steps)
        rows = self.buffer[:n].clone()
        if n < self.buffer.shape[0]:  # a flush in mid-step (scope.records): keep that step's flags
            self.buffer[0].copy_(self.buffer[n])
            self.buffer[1:].zero_()
        else:
            self.buffer.zero_()
        ranks = None
        if run.collective:
            # one collective: the first rank that saw each flag, the world size where none did
            world = run.world
            ranks = reduce_rows_min(torch.where(rows > 0, float(world.rank), float(world.world_size)))
            rows = (ranks < world.world_size).to(rows.dtype)
            ranks = ranks.to("cpu")
        rows = rows.to("cpu")
        for i, step in enumerate(steps):
            if self.first_output_step is None and rows[i, 0] > 0:
                self.first_output_step = step
                self.first_output_rank = int(ranks[i, 0]) if ranks is not None else None
            if self.first_loss_step is None and rows[i, 1] > 0:
                self.first_loss_step = step
                self.first_loss_rank = int(ranks[i, 1]) if ranks is not None else None
        if run.collective and bool(rows.any()):  # every rank sees the same reduced flags
            for rank, located in enumerate(gather_objects(self.located)):
                for step_key, where in located.items():
                    if step_key not in self.located_rank:
                        self.located.setdefault(step_key, where)
                        self.located_rank[step_key] = rank

    def record(self) -> NonFiniteRecord:
        return NonFiniteRecord(first_nonfinite_output_step=self.first_output_step,
                               first_nonfinite_loss_step=self.first_loss_step,
                               located={str(k): v for k, v in self.located.items()},
                               first_nonfinite_output_rank=self.first_output_rank,
                               first_nonfinite_loss_rank=self.first_loss_rank,
                               located_rank={str(k): v for k, v in self.located_rank.items()})
