"""Per-layer histograms of log2|g| at sampled steps, with the shares of exact zeros and underflow.

Read where the gradient norms are read (the end of backward, every ``.grad`` final, pre-clip), at
steps 0, 1, 2, 4, 8, ... below ``every`` and then every ``every``-th step (100 by default), so a
short run still has several samples and a long one pays for one histogram per ``every`` steps.

The bins are octaves, counted exactly from the float32 bit pattern: ``(bits & 0x7fffffff) >> 23`` is
the exponent field of |g| (0: zero or subnormal, 255: Inf or NaN), so two integer passes and one
``bincount`` per parameter tensor give its whole histogram, with no ``log`` and no rounding at a bin
edge (``bucketize`` on |g| costs four times as much on a CPU). Exact zeros come from one
``count_nonzero``. On CUDA ``bincount`` would size its output from the data on the host (a sync), so
there ``histc`` counts the exponents, in chunks of at most 2**24 elements (float32 counts are exact
up to there). Nothing is read back in a step: the 256-entry exponent rows stay on the device until a
flush, where they are grouped into layers, shifted by the GradScaler's loss scale and folded into
the record's ``BINS`` columns.

The smallest-normal threshold follows the dtype the run computed in: float16 if a training forward
ran under float16 autocast or a gradient was float16, else bfloat16 if either was bfloat16, else
float16 (the dtype whose range is the risk when a float32 run turns on AMP).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from gradscope.distributed import all_reduce_sum, local
from gradscope.errors import GradscopeError
from gradscope.judges.histogram import judge_histogram
from gradscope.norms import group_by_device_dtype, membership_matrix
from gradscope.probes.base import Probe
from gradscope.records.histogram import (
    BELOW,
    BINS,
    NONFINITE,
    ZERO,
    HistogramRecord,
    octave_column,
)
from gradscope.reports.sections.histogram import section_histogram
from gradscope.series import DecimatedSeries

EXPONENTS = 256            # values of the float32 exponent field
BIAS = 127                 # float32 exponent bias
FLOAT16_NORMAL_FIELD = BIAS - 14  # exponent field of float16's smallest normal, 2**-14
CHUNK = 1 << 24            # elements per histc call off the CPU: float32 counts are exact up to 2**24
CELL_BUDGET = 500_000      # kept counts in all (samples x layers x bins): a few MB of JSON at most
MIN_KEPT = 4               # samples kept however many layers (unless max_kept_steps is smaller)


def log_spaced(step: int, every: int) -> bool:
    """Steps 0, 1, 2, 4, 8, ... below ``every``, then every ``every``-th step."""
    return step % every == 0 or (step < every and step & (step - 1) == 0)


def exponent_counts(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Counts of the float32 exponent field of ``grad``'s elements (256 int64 values) and the count
    of exact zeros (a 0-d int64 tensor), on ``grad``'s device and without a host sync. Half and
    double gradients are counted after an exact (half) or rounding (double) cast to float32."""
    x = grad if grad.dtype == torch.float32 else grad.float()
    key = torch.bitwise_and(x.view(torch.int32), 0x7FFFFFFF).bitwise_right_shift_(23).reshape(-1)
    if key.device.type == "cpu":
        counts = torch.bincount(key, minlength=EXPONENTS)
    else:  # bincount sizes its output on the host from the data: a sync on CUDA
        counts = torch.zeros(EXPONENTS, dtype=torch.int64, device=key.device)
        for chunk in key.split(CHUNK):
            counts += torch.histc(chunk.float(), EXPONENTS, 0, EXPONENTS).to(torch.int64)
    zeros = x.numel() - torch.count_nonzero(x)
    return counts, zeros


def fold_matrix(shift: int) -> torch.Tensor:
    """(256 x BINS) 0/1 matrix from exponent fields to the record's columns, for gradients that
    were multiplied by ``2**shift`` (a loss scale). Field 0 goes to ``BELOW``: the caller moves
    the exact zeros it also holds to ``ZERO``."""
    m = torch.zeros(EXPONENTS, BINS, dtype=torch.float64)
    m[0, BELOW] = 1.0
    for field in range(1, EXPONENTS - 1):
        m[field, octave_column(field - BIAS - shift)] = 1.0
    m[EXPONENTS - 1, NONFINITE] = 1.0
    return m


class _Group:
    """Parameters on one device, with the placeholders that stand in for a missing gradient (so
    every sample stacks one full row per parameter, whatever is missing)."""

    def __init__(self, positions: list[int], device: torch.device) -> None:
        self.positions = positions
        self.device = device
        self.none = torch.zeros(EXPONENTS, dtype=torch.int64, device=device)
        self.no_zeros = torch.zeros((), dtype=torch.int64, device=device)

    def move_to(self, device: torch.device) -> None:
        """Follow the model to another device (rare: moved after attach)."""
        self.device = device
        self.none = self.none.to(device)
        self.no_zeros = self.no_zeros.to(device)


class HistogramProbe(Probe):
    """Sampled per-layer gradient histograms, exact-zero and below-normal shares."""

    name = "histogram"
    codes = ("GS202", "GS203")
    record_type = HistogramRecord
    judge = staticmethod(judge_histogram)
    section = staticmethod(section_histogram)
    report_order = 150          # right after the gradient norms

    def __init__(self, every: int = 100) -> None:
        super().__init__()
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise GradscopeError(f"HistogramProbe(every=...) must be an integer >= 1, got {every!r}; "
                                 "for example HistogramProbe(every=100)")
        self.every = every
        self.groups: list[_Group] = []
        # per sampled step: [(exponent counts, zero counts) per group], and the loss scale (or None)
        self.pending: list[tuple[int, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor | None]] = []
        self.series: DecimatedSeries | None = None
        self.low_precision: set[str] = set()   # "float16"/"bfloat16": autocast seen, or half gradients
        self.samples_seen = 0
        self._folds: dict[int, torch.Tensor] = {}

    def attach(self, run: Any) -> None:
        super().attach(run)
        layers = len(run.layer_names)
        kept = min(run.max_kept_steps, max(MIN_KEPT, CELL_BUDGET // max(1, layers * BINS)))
        # per sample: the record's bins of every layer, the below-normal counts for float16 and
        # bfloat16 of every layer, and the loss scale
        self.series = DecimatedSeries(layers * BINS + 2 * layers + 1, kept)
        self._membership = membership_matrix(run.param_layer, layers)
        by_device: dict[torch.device, list[int]] = {}
        for (device, _), positions in group_by_device_dtype([local(p) for p in run.params]).items():
            by_device.setdefault(device, []).extend(positions)
        self.groups = [_Group(sorted(pos), device) for device, pos in by_device.items()]
        self._device_type = run.params[0].device.type if run.params else "cpu"
        self.handles.append(run.wrapper.register_forward_pre_hook(self._on_forward))

    def samples(self, step: int) -> bool:
        return log_spaced(step, self.every)

    def _on_forward(self, _module: Any, _args: Any) -> None:
        # Host flags only: which dtype autocast would compute this forward in.
        if torch.is_autocast_enabled(self._device_type):
            self.low_precision.add(str(torch.get_autocast_dtype(self._device_type)).removeprefix("torch."))

    # ---- per step (no host sync) -------------------------------------------------------------
    def on_backward_end(self) -> None:
        run = self._state()
        if not self.samples(run.step) or not run.params:
            return
        parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        for group in self.groups:
            counts: list[torch.Tensor] = []
            zeros: list[torch.Tensor] = []
            for pos in group.positions:
                g = run.params[pos].grad
                if g is None:
                    counts.append(group.none)
                    zeros.append(group.no_zeros)
                    continue
                g = local(g)  # a DTensor (FSDP2): this rank's shard
                if g.device != group.device and all(c is group.none for c in counts):
                    group.move_to(g.device)  # the model moved after attach
                    counts = [group.none] * len(counts)
                    zeros = [group.no_zeros] * len(zeros)
                if g.dtype in (torch.float16, torch.bfloat16):
                    self.low_precision.add(str(g.dtype).removeprefix("torch."))
                c, z = self._sparse_counts(g) if g.is_sparse else exponent_counts(g)
                if c.device != group.device:  # some of its parameters moved elsewhere: bring the counts
                    c, z = c.to(group.device), z.to(group.device)
                counts.append(c)
                zeros.append(z)
            parts.append((torch.stack(counts), torch.stack(zeros)))
        # With gradient accumulation each backward of the step overwrites its sample: the last one
        # holds the accumulated gradient that the optimizer uses.
        if self.pending and self.pending[-1][0] == run.step:
            self.pending.pop()
        self.pending.append((run.step, parts, self._loss_scale(run)))

    @staticmethod
    def _sparse_counts(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # nn.Embedding(sparse=True): duplicates must be summed first (as for the norms); the
        # elements the sparse tensor leaves out are exact zeros
        values = g.coalesce()._values()
        counts, zeros = exponent_counts(values)
        implicit = g.numel() - values.numel()
        counts[0] += implicit
        return counts, zeros + implicit

    @staticmethod
    def _loss_scale(run: Any) -> torch.Tensor | None:
        if not run.scalers:
            return None
        scaler = run.scalers[0]
        current = getattr(scaler, "_scale", None)
        if not scaler.is_enabled() or current is None:
            return None
        return current.detach().reshape(()).clone()

    # ---- flush (one host transfer per group) ---------------------------------------------------
    def flush(self, steps: list[int]) -> None:
        done = set(steps)
        ready = [p for p in self.pending if p[0] in done]
        if not ready:
            return
        assert self.series is not None
        run = self._state()
        self.pending = [p for p in self.pending if p[0] not in done]  # a step in progress stays
        n, params = len(ready), len(run.params)
        exps = torch.zeros(n, params, EXPONENTS, dtype=torch.float64)
        zeros = torch.zeros(n, params, dtype=torch.float64)
        for g, group in enumerate(self.groups):
            # (.to: a sample taken before the model moved to another device)
            counts = torch.stack([parts[g][0].to(group.device) for _, parts, _ in ready])
            nulls = torch.stack([parts[g][1].to(group.device) for _, parts, _ in ready])
            unknown = self._reduce_shards(run, group, counts, nulls)
            cols = torch.tensor(group.positions, dtype=torch.long)
            exps[:, cols] = counts.cpu().double()
            zeros[:, cols] = nulls.cpu().double()
            if unknown:
                exps[:, cols[unknown]] = float("nan")
                zeros[:, cols[unknown]] = float("nan")
        scale = torch.tensor([1.0 if s is None else float(s) for _, _, s in ready], dtype=torch.float64)
        m = self._membership
        layer_exps = torch.einsum("spe,pl->sle", exps, m)        # samples x layers x 256
        layer_zeros = zeros @ m                                   # samples x layers
        rows = []
        for i in range(n):
            # a GradScaler's scale is a power of two: the shift is exact (else the nearest octave)
            value = float(scale[i])
            shift = round(math.log2(value)) if math.isfinite(value) and value > 0 else 0
            bins = layer_exps[i] @ self._fold(shift)
            bins[:, ZERO] = layer_zeros[i]
            bins[:, BELOW] -= layer_zeros[i]   # field 0 held the zeros too
            below16 = layer_exps[i, :, :FLOAT16_NORMAL_FIELD].sum(dim=1) - layer_zeros[i]
            below_bf16 = layer_exps[i, :, 0] - layer_zeros[i]
            rows.append(torch.cat([bins.reshape(-1), below16, below_bf16, scale[i].reshape(1)]))
        self.samples_seen += n
        self.series.append([s for s, _, _ in ready], torch.stack(rows))

    @staticmethod
    def _reduce_shards(run: Any, group: _Group, counts: torch.Tensor, nulls: torch.Tensor) -> list[int]:
        """Counts of sharded parameters (FSDP) summed over the shard ranks, in place: the whole
        gradient's. Only at a flush every rank makes; elsewhere they are unknown: their positions
        in the group are returned."""
        keyed: dict[tuple[int, ...], list[int]] = {}
        for j, pos in enumerate(group.positions):
            red = run.reductions[pos] if run.reductions else None
            if red is not None and red.sharded:
                keyed.setdefault(red.key(), []).append(j)
        if not run.collective:
            return [j for columns in keyed.values() for j in columns]
        for columns in keyed.values():
            cols = torch.tensor(columns, dtype=torch.long, device=counts.device)
            red = run.reductions[group.positions[columns[0]]]
            counts[:, cols] = all_reduce_sum(counts[:, cols].contiguous(), red)
            nulls[:, cols] = all_reduce_sum(nulls[:, cols].contiguous(), red)
        return []

    def _fold(self, shift: int) -> torch.Tensor:
        if shift not in self._folds:
            self._folds[shift] = fold_matrix(shift)
        return self._folds[shift]

    # ---- results -----------------------------------------------------------------------------
    @property
    def steps(self) -> list[int]:
        return self.series.steps if self.series else []

    def threshold_dtype(self) -> str:
        """The dtype whose smallest normal the below-normal shares use."""
        return "bfloat16" if self.low_precision == {"bfloat16"} else "float16"

    def record(self) -> HistogramRecord | None:
        if not self.steps or self.series is None:
            return None
        run = self._state()
        layers = len(run.layer_names)
        values = self.series.values().numpy()
        width = layers * BINS
        counts = values[:, :width]
        start = width if self.threshold_dtype() == "float16" else width + layers
        below = values[:, start:start + layers]
        per_layer = counts.reshape(len(values), layers, BINS)
        total = per_layer.sum(axis=2)
        nulls = per_layer[:, :, ZERO]
        nonzero = total - nulls
        with np.errstate(invalid="ignore", divide="ignore"):  # a layer without a gradient: NaN
            zero_fraction = np.where(total > 0, nulls / total, np.nan)
            below_normal = np.where(nonzero > 0, below / nonzero, np.nan)
        low = self.low_precision
        return HistogramRecord(
            layers=list(run.layer_names), modules=self._module_classes(), every=self.every,
            steps=list(self.steps), stride=self.series.stride, samples_seen=self.samples_seen,
            counts=counts.copy(), zero_fraction=zero_fraction, below_normal=below_normal,
            dtype=self.threshold_dtype(),
            low_precision="float16" if "float16" in low else ("bfloat16" if low else None),
            loss_scale=values[:, -1].copy())

    def _module_classes(self) -> list[str]:
        """The class of the module owning each layer's parameters."""
        run = self._state()
        by_path: dict[str, str] = {}
        for module in run.model.modules():
            name = run.module_names.get(id(module))
            if name is not None:
                by_path.setdefault(name or run.root_name, type(module).__name__)
        return [by_path.get(layer, "") for layer in run.layer_names]
