"""Per-parameter gradient L2 norms at every step, taken at the end of each backward (pre-clip).

Norms are computed with one fused ``torch._foreach_norm`` per (device, dtype) group and written
into a preallocated device buffer row; the host sees them only at a flush. With gradient
accumulation the row is overwritten by every backward of the step, so it ends up holding the norm
of the accumulated gradient that the optimizer will use, before any clipping.

Under a ``torch.amp.GradScaler`` the gradients at the end of backward are still multiplied by the
loss scale. The scale in force at each backward is copied (on the device) next to the norms, and
the norms are divided by it at the flush, so the record holds true gradient norms. Overflowing
steps are normal there (the scaler skips them and lowers the scale), so GS205 then needs a
parameter's gradient to be non-finite at most of the observed steps.
"""
from __future__ import annotations

from typing import Any

import torch

from gradscope.distributed import WHOLE, Reduction, all_reduce_sum, is_dtensor, local, reduce_rows_max
from gradscope.judges.grad_norm import judge_grad_norm
from gradscope.norms import Groups, combine_norms, foreach_norms, group_by_device_dtype, total_norm
from gradscope.probes.base import Probe
from gradscope.records.grad_norm import GradNormRecord
from gradscope.reports.sections.grad_norm import section_grad_norm
from gradscope.series import DecimatedSeries, RunningStats

AUTO_TENSORS = 2000   # up to this many parameter tensors, norms are read at every step by default


def read_every(options: Any, tensors: int) -> int:
    """Steps between gradient-norm reads: the option, or 1 up to ``AUTO_TENSORS`` tensors and then
    as many steps as keep the per-step cost of about ``AUTO_TENSORS`` tensors (strict: every step)."""
    if options.strict:
        return 1
    if options.grad_norm_every is not None:
        return int(options.grad_norm_every)
    return max(1, -(-tensors // AUTO_TENSORS))


class _Group:
    """Parameters sharing a device, a dtype and a sharding, with their device buffer.

    A sharded group (FSDP) writes the *squared* norms of the local shards; a flush sums them over
    the shard ranks with one all-reduce and takes the root: the norm of the whole gradient."""

    def __init__(self, positions: list[int], device: torch.device, dtype: torch.dtype, rows: int,
                 reduction: Reduction = WHOLE) -> None:
        self.positions = positions
        self.device = device
        self.reduction = reduction
        self.buffer = torch.zeros(rows, len(positions), dtype=torch.float32, device=device)
        self.plain = not reduction.sharded    # dense local tensors: read .grad as it is
        self.unseen = list(range(len(positions)))   # members that have not had a gradient yet
        # Stands in for a missing gradient: its norm is 0, so the fused kernel always sees the
        # whole group and writes one full row (no index tensor per pattern of missing gradients,
        # whose host-to-device copy would be a sync on CUDA).
        self.empty = torch.zeros(0, dtype=dtype, device=device)

    def move_to(self, device: torch.device) -> None:
        """Follow the model to another device, keeping the rows written so far."""
        self.device = device
        self.buffer = self.buffer.to(device)
        self.empty = self.empty.to(device)


class GradNormProbe(Probe):
    """Gradient norm of every trainable parameter, per layer and in total, at every step."""

    name = "grad_norm"
    codes = ("GS201", "GS202", "GS203", "GS204", "GS205")
    record_type = GradNormRecord
    judge = staticmethod(judge_grad_norm)
    section = staticmethod(section_grad_norm)
    report_order = 100

    def __init__(self) -> None:
        super().__init__()
        self.groups: list[_Group] = []
        self.had_grad: list[bool] = []
        self.param_stats: RunningStats | None = None
        self.layer_stats: RunningStats | None = None
        self.total_stats = RunningStats(1)
        self.param_series: DecimatedSeries | None = None
        self.total_series: DecimatedSeries | None = None
        self.rows_written: set[int] = set()
        self.scale: torch.Tensor | None = None   # loss scale per row, when a GradScaler is in use
        self.rows_seen = 0
        self.every = 1                # steps between reads (grad_norm_every)

    def attach(self, run: Any) -> None:
        super().attach(run)
        n = len(run.params)
        self.every = read_every(run.options, n)
        self.had_grad = [False] * n
        self.param_stats = RunningStats(n)
        self.layer_stats = RunningStats(len(run.layer_names))
        self.param_series = DecimatedSeries(n, run.max_kept_steps)
        self.total_series = DecimatedSeries(1, run.max_kept_steps)
        self._membership = Groups(run.param_layer, len(run.layer_names))
        self._build_groups()

    def _build_groups(self) -> None:
        run = self._state()
        self.groups = []
        for (device, dtype), positions in group_by_device_dtype([local(p) for p in run.params]).items():
            by_sharding: dict[tuple[int, ...], list[int]] = {}
            for pos in positions:
                by_sharding.setdefault(run.reductions[pos].key() if run.reductions else (), []).append(pos)
            for members in by_sharding.values():
                red = run.reductions[members[0]] if run.reductions else WHOLE
                self.groups.append(_Group(members, device, dtype, run.flush_every, red))

    # ---- per step (no host sync) -------------------------------------------------------------
    def sampled(self, step: int) -> bool:
        return step % self.every == 0 or step < self.every

    def on_backward_end(self) -> None:
        run = self._state()
        if self.every > 1 and not self.sampled(run.step):
            return
        params = run.params
        for group in self.groups:
            empty = group.empty
            raw = [params[pos].grad for pos in group.positions]
            if group.plain and not any(g is not None and g.is_sparse for g in raw):
                # the common case in one comprehension: a Python loop per tensor is what costs
                # with thousands of tensors
                grads = [empty if g is None else g for g in raw]
                present = sum(g is not None for g in raw)
            else:
                grads, present = self._read(raw, empty)
            if group.unseen:   # costs only while some member has never had a gradient
                still = []
                for i in group.unseen:
                    if raw[i] is None:
                        still.append(i)
                    else:
                        self.had_grad[group.positions[i]] = True
                group.unseen = still
            if not present:
                continue
            device = next(g.device for g in grads if g is not group.empty)
            if device != group.device:
                group.move_to(device)  # the model moved after attach (rare)
                grads = [group.empty if g.numel() == 0 and g.device != device else g for g in grads]
            if run.scalers:
                self._note_scale(run, group.device)
            norms = foreach_norms(grads)
            group.buffer[run.row].copy_(norms.square() if group.reduction.sharded else norms)
        self.rows_written.add(run.row)

    @staticmethod
    def _read(raw: list[torch.Tensor | None], empty: torch.Tensor) -> tuple[list[torch.Tensor], int]:
        grads: list[torch.Tensor] = []
        present = 0
        for g in raw:
            if g is None:
                grads.append(empty)
                continue
            # an uncoalesced sparse gradient (nn.Embedding(sparse=True)) repeats indices: its
            # values only have the right norm once duplicates are summed (on CUDA that sizes the
            # result on the host, as SparseAdam's own coalesce does)
            g = local(g)  # a DTensor (FSDP2): this rank's shard
            grads.append(g.coalesce()._values() if g.is_sparse else g)
            present += 1
        return grads, present

    def _note_scale(self, run: Any, device: torch.device) -> None:
        scaler = run.scalers[0]
        current = getattr(scaler, "_scale", None)
        if not scaler.is_enabled() or current is None:
            return
        if self.scale is None or self.scale.device != device:
            self.scale = torch.ones(run.flush_every, dtype=torch.float32, device=device)
        self.scale[run.row].copy_(current.reshape(()), non_blocking=True)

    # ---- flush (one host transfer per group) ---------------------------------------------------
    def host_rows(self, n: int) -> torch.Tensor:
        """The first ``n`` device rows as a (n x parameters) CPU float64 tensor, original order.

        Sharded groups are reduced over their ranks first, which takes a collective: only at a
        flush that every rank makes (``run.collective``); otherwise they read NaN, unknown."""
        run = self._state()
        out = torch.zeros(n, len(run.params), dtype=torch.float64)
        for group in self.groups:
            cols = torch.tensor(group.positions, dtype=torch.long)
            rows = group.buffer[:n]
            if group.reduction.sharded:
                if run.collective:
                    rows = all_reduce_sum(rows.clone(), group.reduction).sqrt()
                else:
                    rows = torch.full_like(rows, float("nan"))
            out[:, cols] = rows.to("cpu", torch.float64)
        return out

    def flush(self, steps: list[int]) -> None:
        if not steps:
            return
        assert self.param_stats and self.layer_stats and self.param_series and self.total_series
        run = self._state()
        n = len(steps)
        rows = self.host_rows(n)
        if run.collective and any(r.sharded and not is_dtensor(p) for r, p in zip(run.reductions, run.params)):
            # FSDP1: a rank whose shard of a parameter is empty sees no gradient for it (.grad is
            # None there); another rank may. (A DTensor always has a local gradient.)
            seen = torch.tensor(self.had_grad, dtype=torch.float32, device=self.groups[0].device)
            self.had_grad = (reduce_rows_max(seen) > 0).tolist()
        if self.scale is not None:
            rows = rows / self.scale[:n].to("cpu", torch.float64).unsqueeze(1)
        written = [i for i in range(n) if i in self.rows_written]
        steps = [steps[i] for i in written]
        rows = rows[written]
        # A flush in mid-step (scope.records between backward and optimizer.step()): the step in
        # progress sits in row n; it becomes row 0 instead of being wiped.
        in_progress = n in self.rows_written
        self.rows_written = {0} if in_progress else set()
        for group in self.groups:
            if in_progress:
                group.buffer[0].copy_(group.buffer[n])
            group.buffer[int(in_progress):].zero_()
        if self.scale is not None:
            if in_progress:
                self.scale[0].copy_(self.scale[n])
            self.scale[int(in_progress):].fill_(1.0)
        if not steps:
            return
        self.rows_seen += len(steps)
        layers = combine_norms(rows, self._membership)
        totals = total_norm(rows).unsqueeze(1)
        self.param_stats.update(steps, rows)
        self.layer_stats.update(steps, layers)
        self.total_stats.update(steps, totals)
        self.param_series.append(steps, rows)
        self.total_series.append(steps, totals)

    # ---- results -----------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return self.param_series.steps if self.param_series else []

    def param_values(self) -> torch.Tensor:
        """Kept steps x parameters, float64, on the CPU."""
        assert self.param_series is not None
        return self.param_series.values()

    def layer_values(self) -> torch.Tensor:
        return combine_norms(self.param_values(), self._membership)

    def total_values(self) -> torch.Tensor:
        assert self.total_series is not None
        return self.total_series.values()[:, 0]

    def record(self) -> GradNormRecord:
        run = self._state()
        assert self.param_stats and self.layer_stats
        names = run.param_names
        return GradNormRecord(
            parameters=list(names), layers=list(run.layer_names), parameter_layer=list(run.param_layer),
            backward_order=[names[i] for i in run.backward_order], steps=list(self.steps),
            stride=self.param_series.stride if self.param_series else 1,
            total_norm=self.total_values().numpy(), layer_norms=self.layer_values().numpy(),
            parameter_norms=self.param_values().numpy(), parameter_stats=self.param_stats.table(),
            layer_stats=self.layer_stats.table(), total_stats=self.total_stats.table().row(0),
            no_gradient=[n for n, had in zip(names, self.had_grad) if not had] if run.backwards else [],
            steps_seen=self.rows_seen)
