"""Update-to-weight ratio (GS208), ``||w_after - w_before|| / ||w_before||``, sampled.

At steps 0, 1, 2, 4, 8, ... and then every ``every`` steps the trainable weights are copied
right before ``optimizer.step()`` (one
fused ``_foreach_mul``; memory is the model size, for that step only) and compared right after.
Ratios stay on the device until a flush. Parameters that did not move at all are left to the
freeze and optimizer checks; a layer whose weights are all zero has no ratio (NaN).
"""
from __future__ import annotations

from typing import Any

import torch

from gradscope.distributed import all_reduce_sum, local
from gradscope.judges.update_ratio import judge_update_ratio
from gradscope.norms import Groups, combine_norms, foreach_norms, group_by_device_dtype, update_ratio
from gradscope.probes.base import Probe, WatchOptions
from gradscope.records.update_ratio import UpdateRatioRecord
from gradscope.reports.sections.update_ratio import section_update_ratio
from gradscope.series import DecimatedSeries


class UpdateRatioProbe(Probe):
    """Sampled relative update size per layer."""

    name = "update_ratio"
    codes = ("GS208",)
    record_type = UpdateRatioRecord
    judge = staticmethod(judge_update_ratio)
    section = staticmethod(section_update_ratio)
    report_order = 600

    @classmethod
    def build(cls, options: WatchOptions, has_optimizer: bool) -> UpdateRatioProbe | None:
        return cls(options.update_ratio_every) if options.update_ratio_every > 0 and has_optimizer else None

    def __init__(self, every: int) -> None:
        super().__init__()
        self.every = every
        self.snapshot: list[torch.Tensor] | None = None
        self.pending: list[tuple[int, torch.Tensor]] = []
        # per sample: [||dw|| of each parameter, ||w|| of each parameter], thinned evenly
        self.series: DecimatedSeries | None = None
        self._inverse_cache: tuple[tuple[tuple[int, ...], torch.device], torch.Tensor] | None = None

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.series = DecimatedSeries(2 * len(run.params), run.max_kept_steps)

    def samples(self, step: int) -> bool:
        """Sampled steps: 0, 1, 2, 4, 8, ... below ``every``, then every ``every``-th: a short run
        still has several samples, a long one pays for one copy every ``every`` steps."""
        return step % self.every == 0 or (step < self.every and step & (step - 1) == 0)

    @property
    def steps(self) -> list[int]:
        return self.series.steps if self.series else []

    def on_step_begin(self) -> None:
        run = self._state()
        if self.samples(run.step) and run.params:
            self.snapshot = list(torch._foreach_mul([local(p).detach() for p in run.params], 1.0))

    def on_step_end(self) -> None:
        if self.snapshot is None:
            return
        run = self._state()
        now = [local(p).detach() for p in run.params]  # a DTensor (FSDP2): this rank's shard
        delta = torch._foreach_sub(now, self.snapshot)
        parts_d: list[torch.Tensor] = []
        parts_w: list[torch.Tensor] = []
        order: list[int] = []
        for positions in group_by_device_dtype(now).values():
            parts_d.append(foreach_norms([delta[i] for i in positions]))
            parts_w.append(foreach_norms([self.snapshot[i] for i in positions]))  # ||w|| before the step
            order += positions
        d = torch.cat([t.to(parts_d[0].device) for t in parts_d])
        w = torch.cat([t.to(parts_w[0].device) for t in parts_w])
        self.snapshot = None
        self.pending.append((run.step, torch.stack([d, w])[:, self._inverse(order, d.device)]))

    def _inverse(self, order: list[int], device: torch.device) -> torch.Tensor:
        """Index putting group order back into parameter order; built once per layout, on the
        device, because a fresh host-to-device copy every sample would be a sync on CUDA."""
        key = (tuple(order), device)
        if self._inverse_cache is None or self._inverse_cache[0] != key:
            inverse = torch.empty(len(order), dtype=torch.long)
            inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
            self._inverse_cache = (key, inverse.to(device))
        return self._inverse_cache[1]

    def flush(self, steps: list[int]) -> None:
        if not self.pending:
            return
        assert self.series is not None
        run = self._state()
        rows = torch.stack([t for _, t in self.pending])  # samples x 2 x parameters, local norms
        sharded: dict[tuple[int, ...], list[int]] = {}
        for i, red in enumerate(run.reductions):
            if red.sharded:
                sharded.setdefault(red.key(), []).append(i)
        for columns in sharded.values():
            cols = torch.tensor(columns, dtype=torch.long, device=rows.device)
            if run.collective:  # the norm of the whole: root of the summed squares over the shards
                whole = all_reduce_sum(rows[:, :, cols].square(), run.reductions[columns[0]]).sqrt()
            else:
                whole = torch.full_like(rows[:, :, cols], float("nan"))
            rows[:, :, cols] = whole
        host = rows.to("cpu", torch.float64)
        # bounded memory, and the kept samples stay evenly spaced however many flushes come
        self.series.append([s for s, _ in self.pending], host.reshape(host.shape[0], -1))
        self.pending.clear()

    def layer_ratios(self) -> torch.Tensor:
        """Samples x layers of ``||dW|| / ||W||`` over each layer's parameters."""
        run = self._state()
        if not self.steps or self.series is None:
            return torch.zeros(0, len(run.layer_names), dtype=torch.float64)
        m = Groups(run.param_layer, len(run.layer_names))
        stacked = self.series.values().reshape(-1, 2, len(run.params))  # samples x 2 x params
        d = combine_norms(stacked[:, 0], m)
        w = combine_norms(stacked[:, 1], m)
        return update_ratio(d, w)

    def record(self) -> UpdateRatioRecord | None:
        if not self.steps:
            return None
        return UpdateRatioRecord(layers=list(self._state().layer_names), steps=list(self.steps),
                                 ratios=self.layer_ratios().numpy())
