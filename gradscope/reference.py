"""Reference runs: the envelope of known-good runs, and where a new run leaves it.

``build_envelope(references)`` turns one or more reference ``RunRecord``s into bands, per layer and
step, for the gradient norms, the update ratios, the learning rate of each param group, the clip
rate, the step time of each phase and the loss, and keeps each reference's settings (optimizers,
parameters, what was frozen, the clip threshold, its findings). ``judge_against(run, envelope)``
finds the first step (and layer) where a run leaves each band, and what else changed, as a
``ReferenceRecord``; ``departure_findings`` turns it into GS801–GS810 findings.

How a band is made, and why:

- Each reference's series is smoothed with a running median of ``SMOOTH`` kept points, centred
  (the window shrinks at both ends): one odd batch is no departure, and a step change keeps its
  step, since at the change three of the five points are already past it.
- Records thin their rows evenly (every 2nd, 4th, ... step of a long run), so two records rarely
  keep the same steps: references are aligned on the union of their kept steps by linear
  interpolation (the learning rate, a step function, takes the last value at or before a step).
- The band at a step runs from the smallest to the largest reference there, widened on each side:
  with one reference by a tolerance (``Thresholds.reference_tolerance``, a factor in log space for
  norms), with two or more by how much they differ among themselves (the 90th percentile over the
  steps of largest minus smallest, so that a crossing of two curves does not pinch the band), and
  by at least ``Thresholds.reference_margin``.
- A run is compared at its own kept steps with its own smoothed values: the step found is exact
  to within the run's stride (``GradNormRecord.stride``). A non-finite gradient norm is dated by
  the exact first step of the layer's statistics, which see every step.

Everything here is pure (records in, records out, NumPy only): no torch, no files.
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from gradscope.errors import GradscopeError
from gradscope.findings import CATALOG, Finding, Severity, finding
from gradscope.judges import plural, short
from gradscope.records import (
    ClippingRecord,
    FreezeRecord,
    GradNormRecord,
    LossRecord,
    LrRecord,
    NonFiniteRecord,
    RunRecord,
    TimingRecord,
    UpdateRatioRecord,
)
from gradscope.records.reference import Departure, ReferenceRecord
from gradscope.thresholds import Thresholds

SMOOTH = 5              # kept points in the running median (odd)
SPREAD_QUANTILE = 0.9   # how much references differ: this quantile over steps of their range
CLIP_WINDOW = 50        # clip calls in the trailing window of the clip rate (as ClipSummary's rolling share)
TIME_FLOOR_MS = 1.0     # GS810: a phase at least this many ms outside its band (0.1 ms vs 0.3 ms is noise)
MIN_TIMED_STEPS = 10    # GS810: kept steps after the warm-up before step times say anything
MAX_NAMED = 4           # names listed in a message before "and N more"
OWN_CODES = "GS8"       # departures are never "new findings" of their own

Align = Literal["linear", "previous"]


# ---- series and bands ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Series:
    """One quantity of one run at its kept steps (ascending), in the band's scale: a column of
    ``values`` per key (layer, param group, phase; one for the loss and the clip rate)."""

    steps: np.ndarray        # float, one per row
    values: np.ndarray       # steps x keys
    keys: list[str]

    def column(self, key: str) -> Series:
        return Series(self.steps, self.values[:, [self.keys.index(key)]], [key])


@dataclass(frozen=True)
class Band:
    """The references' range of one quantity at each step of ``steps``, in the quantity's scale
    (log10 for norms, ratios, times and learning rates; the loss and the clip rate as they are)."""

    steps: np.ndarray
    low: np.ndarray          # smallest (smoothed) reference value at each step; NaN where none reaches
    high: np.ndarray
    spread: float            # how much the references differ among themselves (0 with one)
    count: int               # references that hold this quantity
    log: bool = True
    align: Align = "linear"
    scale: float = 1.0       # a linear band's unit: its tolerance is a share of it

    def at(self, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(low, high) at ``steps``; NaN outside the references' steps (no verdict there)."""
        return (at_steps(self.steps, self.low, steps, self.align, np.minimum),
                at_steps(self.steps, self.high, steps, self.align, np.maximum))

    def natural(self, value: float) -> float:
        """A value of this band's scale in the quantity's own units."""
        if not self.log or math.isnan(value):
            return value
        return 0.0 if value == -math.inf else (math.inf if value == math.inf else 10.0 ** value)


def at_steps(steps: np.ndarray, values: np.ndarray, targets: np.ndarray, align: Align = "linear",
             nearer: Callable[[np.ndarray, np.ndarray], np.ndarray] = np.minimum) -> np.ndarray:
    """``values`` (rows at ascending ``steps``, one column per key or a vector) at ``targets``;
    NaN outside ``steps[0]..steps[-1]``.

    Between a finite and an infinite neighbour (a layer whose norm fell to 0, log -inf) the value
    is not interpolated: ``nearer`` picks one of the two (``np.minimum`` for a band's low edge,
    ``np.maximum`` for its high edge), so the band only ever widens there."""
    values = np.asarray(values, dtype=float)
    targets = np.asarray(targets, dtype=float)
    out = np.full((len(targets), *values.shape[1:]), np.nan)
    if not len(steps):
        return out
    inside = (targets >= steps[0]) & (targets <= steps[-1])
    t = targets[inside]
    j = np.clip(np.searchsorted(steps, t, side="right") - 1, 0, len(steps) - 1)
    if align == "previous":
        out[inside] = values[j]
        return out
    k = np.minimum(j + 1, len(steps) - 1)
    a, b = values[j], values[k]
    span = (steps[k] - steps[j]).astype(float)
    w = np.divide(t - steps[j], span, out=np.zeros_like(t), where=span > 0).reshape(-1, *[1] * (values.ndim - 1))
    with np.errstate(invalid="ignore"):
        line = np.where(w == 0, a, a + w * (b - a))
        odd = ~np.isfinite(line) & (w > 0) & ~(np.isnan(a) | np.isnan(b))
    out[inside] = np.where(odd, nearer(a, b), line)
    return out


def _median5(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, e: np.ndarray) -> np.ndarray:
    """The element-wise median of five arrays with a sorting network of 7 compare-swaps: no copy
    of the windows (a 2,048-step x 2,000-layer record is judged at every flush) and no arithmetic,
    so 0 and infinite norms stay exact."""
    def swap(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.minimum(x, y), np.maximum(x, y)

    a, b = swap(a, b)
    d, e = swap(d, e)
    a, d = swap(a, d)
    b, e = swap(b, e)
    b, c = swap(b, c)
    c, d = swap(c, d)
    b, c = swap(b, c)
    return c


def running_median(values: np.ndarray) -> np.ndarray:
    """The centred running median of ``SMOOTH`` (5) points along axis 0, the window shrinking at
    both ends (a single odd first or last point is smoothed away, not kept)."""
    values = np.asarray(values, dtype=float)
    n, half = values.shape[0], SMOOTH // 2
    if n < 3:
        return values.copy()
    out = np.empty_like(values)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)   # inf - inf in a shrunk window of 4
        if n >= SMOOTH:
            out[half:n - half] = _median5(*(values[k:n - SMOOTH + 1 + k] for k in range(SMOOTH)))
        for i in [*range(min(half, n)), *range(max(n - half, half), n)]:
            out[i] = np.median(values[max(0, i - half):i + half + 1], axis=0)
    return out


def _log(values: np.ndarray, nonfinite: float = math.inf) -> np.ndarray:
    """log10 of norms: 0 is -inf, NaN/Inf is ``nonfinite`` (above every band)."""
    values = np.asarray(values, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(np.abs(values))
    out[~np.isfinite(values)] = nonfinite
    return out


def build_bands(series: Sequence[Series], *, log: bool = True, align: Align = "linear",
                scale: float = 1.0) -> dict[str, Band]:
    """One band per key that any reference holds, from the (smoothed) series of those that hold
    it. The references are folded in one at a time: memory is a few (steps x keys) arrays."""
    keys = list(dict.fromkeys(k for s in series for k in s.keys))
    index = {k: j for j, k in enumerate(keys)}
    grid = np.unique(np.concatenate([s.steps for s in series])).astype(float)
    shape = (len(grid), len(keys))
    low, high = np.full(shape, np.nan), np.full(shape, np.nan)
    finite_low, finite_high = np.full(shape, np.nan), np.full(shape, np.nan)
    finite = np.zeros(shape, dtype=int)
    for s in series:
        v = np.full(shape, np.nan)
        v[:, [index[k] for k in s.keys]] = at_steps(s.steps, s.values, grid, align)
        low, high = np.fmin(low, v), np.fmax(high, v)
        ok = np.isfinite(v)
        finite += ok
        only = np.where(ok, v, np.nan)   # the spread is between finite values (0 and NaN norms aside)
        finite_low, finite_high = np.fmin(finite_low, only), np.fmax(finite_high, only)
    width = np.where(finite >= 2, finite_high - finite_low, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a key no two references share: no spread
        spread = np.nanquantile(width, SPREAD_QUANTILE, axis=0) if len(grid) else np.zeros(len(keys))
    counts = {k: sum(k in s.keys for s in series) for k in keys}
    return {k: Band(grid, low[:, j], high[:, j], float(spread[j]) if np.isfinite(spread[j]) else 0.0, counts[k],
                    log, align, scale) for j, k in enumerate(keys)}


def _bands(series: Sequence[Series | None], **how: Any) -> dict[str, Band]:
    found = [s for s in series if s is not None]
    return build_bands(found, **how) if found else {}


# ---- what a record holds, as series ---------------------------------------------------------------
def _steps(values: Sequence[int]) -> np.ndarray:
    return np.asarray(values, dtype=float)


def grad_norm_series(run: RunRecord) -> Series | None:
    """Per layer: log10 of the gradient norm, smoothed (0 is -inf, NaN/Inf +inf)."""
    grad = run.probe(GradNormRecord)
    if grad is None or not grad.steps or grad.layer_norms.shape[1] != len(grad.layers):
        return None
    return Series(_steps(grad.steps), running_median(_log(grad.layer_norms)), list(grad.layers))


def update_ratio_series(run: RunRecord) -> Series | None:
    """Per layer: log10 of ``||dw||/||w||`` (undefined ratios stay NaN: no verdict there)."""
    rec = run.probe(UpdateRatioRecord)
    if rec is None or not rec.steps:
        return None
    return Series(_steps(rec.steps), running_median(_log(rec.ratios, nonfinite=math.nan)), list(rec.layers))


def loss_series(run: RunRecord) -> Series | None:
    rec = run.probe(LossRecord)
    if rec is None or not rec.steps:
        return None
    values = np.where(np.isfinite(rec.loss), rec.loss, math.inf)  # a NaN loss is above every band
    return Series(_steps(rec.steps), running_median(values.reshape(-1, 1)), ["loss"])


def group_key(label: str) -> str:
    """A param group by its position (``#0.1`` of ``SGD#0.1``): a run that swapped SGD for Adam
    still compares its first group with the reference's first group."""
    name, sep, position = label.rpartition("#")
    return f"#{position}" if sep else label


def lr_series(run: RunRecord) -> Series | None:
    """Per param group (by position): log10 of the learning rate at each kept step."""
    rec = run.probe(LrRecord)
    if rec is None or not rec.steps:
        return None
    return Series(_steps(rec.steps), _log(rec.lr, nonfinite=math.nan), [group_key(g) for g in rec.groups])


def lr_shape(series: Series) -> Series:
    """The schedule alone: log10 of each learning rate over its first positive value."""
    values = series.values.copy()
    for j in range(values.shape[1]):
        finite = values[:, j][np.isfinite(values[:, j])]
        values[:, j] -= float(finite[0]) if finite.size else 0.0
    return Series(series.steps, values, list(series.keys))


def clip_series(run: RunRecord) -> Series | None:
    """The clip rate of norm clipping: the share of the last ``CLIP_WINDOW`` calls that acted,
    from the first full window on (the share of a few calls is 0 or 1 by chance)."""
    rec = run.probe(ClippingRecord)
    calls = [c for c in rec.calls if c.acted is not None] if rec is not None else []
    if len(calls) < CLIP_WINDOW:
        return None
    acted = np.array([1.0 if c.acted else 0.0 for c in calls])
    sums = np.r_[0.0, np.cumsum(acted)]
    trailing = (sums[CLIP_WINDOW:] - sums[:-CLIP_WINDOW]) / CLIP_WINDOW
    steps = np.array([c.step for c in calls[CLIP_WINDOW - 1:]], dtype=float)
    last = np.r_[steps[1:] != steps[:-1], True]   # one value per step (several calls: the last)
    return Series(steps[last], trailing[last].reshape(-1, 1), ["clip"])


def timing_series(run: RunRecord) -> Series | None:
    """Per phase: log10 of its milliseconds, after the warm-up, smoothed."""
    rec = run.probe(TimingRecord)
    if rec is None or not rec.steps:
        return None
    keep = np.asarray(rec.steps) >= rec.warmup_steps
    if keep.sum() < MIN_TIMED_STEPS:
        return None
    return Series(_steps([s for s, k in zip(rec.steps, keep) if k]),
                  running_median(_log(rec.ms[keep], nonfinite=math.nan)), list(rec.columns))


# ---- settings -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClipSetting:
    """A clip function and threshold in force from ``step`` on."""

    step: int
    function: str
    threshold: float


@dataclass(frozen=True)
class RunFacts:
    """What a run was set up with, as its record tells it."""

    name: str
    steps: int
    root: str
    optimizers: list[str] | None
    groups: dict[str, str]                    # position key -> label (``#0.0`` -> ``SGD#0.0``)
    first_lr: dict[str, float]                # position key -> learning rate at the first kept step
    numel: dict[str, int] | None              # every parameter -> values (None without a freeze record)
    trainable: dict[str, bool]                # parameter -> requires_grad at the start
    requires_grad: dict[str, bool]            # parameter -> requires_grad at the end
    weight_decay: dict[str, float]            # parameter -> its param group's weight decay
    clip: list[ClipSetting]                   # each change of the clip setting
    last_clip_step: int | None
    findings: list[Finding]
    layer_nonfinite: dict[str, int]           # layer -> first step with a non-finite gradient norm
    loss_nonfinite: int | None = None         # first step with a non-finite loss (of every step, kept or not)


_CLIP_FUNCTION = {"norm": "clip_grad_norm_", "value": "clip_grad_value_", "with_norm": "clip_grads_with_norm_"}


def run_facts(run: RunRecord, name: str = "", findings: Sequence[Finding] | None = None) -> RunFacts:
    """The settings of ``run`` (``findings``: its findings when the record does not hold them yet)."""
    lrs = run.probe(LrRecord)
    groups = {group_key(g): g for g in lrs.groups} if lrs is not None else {}
    first: dict[str, float] = {}
    if lrs is not None and lrs.steps:
        for j, g in enumerate(lrs.groups):
            column = lrs.lr[:, j]
            finite = column[np.isfinite(column)]
            if finite.size:
                first[group_key(g)] = float(finite[0])
    freeze = run.probe(FreezeRecord)
    grad = run.probe(GradNormRecord)
    numel: dict[str, int] | None = None
    trainable: dict[str, bool] = {}
    requires_grad: dict[str, bool] = {}
    decay: dict[str, float] = {}
    if freeze is not None and freeze.tensors is not None:
        tensors = [t for t in freeze.tensors if t.in_model]
        numel = {t.name: t.numel for t in tensors}
        trainable = {t.name: t.trainable for t in tensors}
        requires_grad = {t.name: t.requires_grad for t in tensors}
        decay = {t.name: t.weight_decay for t in tensors if t.weight_decay is not None}
    elif grad is not None:
        trainable = {p: True for p in grad.parameters}
        requires_grad = dict(trainable)
    clip: list[ClipSetting] = []
    clips = run.probe(ClippingRecord)
    for c in clips.calls if clips is not None else []:
        function = _CLIP_FUNCTION.get(c.kind, c.kind)
        if not clip or (clip[-1].function, clip[-1].threshold) != (function, c.threshold):
            clip.append(ClipSetting(c.step, function, c.threshold))
    losses = run.probe(LossRecord)
    nonfinite: dict[str, int] = {}
    if grad is not None and len(grad.layer_stats) == len(grad.layers):
        nonfinite = {layer: s for layer, s in zip(grad.layers, grad.layer_stats.first_nonfinite_step)
                     if s is not None}
    return RunFacts(name=name, steps=run.run.steps if run.run and run.run.steps is not None else run.steps,
                    root=run.root_name, optimizers=run.optimizers, groups=groups, first_lr=first, numel=numel,
                    trainable=trainable, requires_grad=requires_grad, weight_decay=decay, clip=clip,
                    last_clip_step=clips.calls[-1].step if clips is not None and clips.calls else None,
                    findings=list(run.findings if findings is None else findings), layer_nonfinite=nonfinite,
                    loss_nonfinite=losses.stats.first_nonfinite_step if losses is not None else None)


# ---- the envelope ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Envelope:
    """What the reference runs did: bands per quantity, and each reference's settings."""

    names: list[str]
    facts: list[RunFacts]
    grad_norm: dict[str, Band] = field(default_factory=dict)        # per layer
    update_ratio: dict[str, Band] = field(default_factory=dict)     # per layer
    lr: dict[str, Band] = field(default_factory=dict)               # per param group (position key)
    lr_shape: dict[str, Band] = field(default_factory=dict)         # the same over its first value
    step_ms: dict[str, Band] = field(default_factory=dict)          # per timing phase
    loss: Band | None = None
    clip_rate: Band | None = None

    @property
    def last_step(self) -> int:
        return max((f.steps for f in self.facts), default=0) - 1


def file_labels(paths: Sequence[str | os.PathLike[str]]) -> list[str]:
    """How to call reference files: their names, or their paths as given where two names are the
    same (``a/run.json`` and ``b/run.json``)."""
    names = [Path(p).name for p in paths]
    return [n if names.count(n) == 1 else str(p) for n, p in zip(names, paths)]


def reference_names(count: int, names: Sequence[str] | None) -> list[str]:
    given = [str(n) for n in names] if names is not None else []
    return given + [f"reference {i + 1}" for i in range(len(given), count)]


def build_envelope(references: Sequence[RunRecord], names: Sequence[str] | None = None) -> Envelope:
    """The envelope of one or more reference runs (``names``: how to call them, their files)."""
    refs = list(references)
    if not refs:
        raise GradscopeError("build_envelope() needs at least one reference record (a RunRecord, as "
                             "gradscope.load_record('good.json') returns it)")
    labels = reference_names(len(refs), names)
    losses = [s for s in (loss_series(r) for r in refs) if s is not None]
    lrs = [lr_series(r) for r in refs]
    scale = 1.0
    starts = [float(np.median(first[np.isfinite(first)])) for first in (s.values[:SMOOTH, 0] for s in losses)
              if np.isfinite(first).any()]
    if starts:
        scale = max(abs(float(np.median(starts))), 1e-12)
    return Envelope(
        names=labels, facts=[run_facts(r, n) for r, n in zip(refs, labels)],
        grad_norm=_bands([grad_norm_series(r) for r in refs]),
        update_ratio=_bands([update_ratio_series(r) for r in refs]),
        lr=_bands(lrs, align="previous"),
        lr_shape=_bands([lr_shape(s) if s is not None else None for s in lrs], align="previous"),
        step_ms=_bands([timing_series(r) for r in refs]),
        loss=_bands(losses, log=False, scale=scale).get("loss"),
        clip_rate=_bands([clip_series(r) for r in refs], log=False).get("clip"))


# ---- judging a run --------------------------------------------------------------------------------
_LEVEL: dict[Severity, Literal["error", "warning", "info"]] = {
    Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "info"}


def _departure(code: str, severity: Severity | None = None, **values: Any) -> Departure:
    """A departure with its code's severity from the catalog (GS809 passes the new finding's)."""
    return Departure(code=code, severity=_LEVEL[severity or CATALOG[code].severity], **values)


@dataclass(frozen=True)
class Exit:
    """Where a series first left its band: the step, its value and the (widened) band there."""

    key: str
    step: int
    value: float
    low: float
    high: float
    excess: float      # how far outside, in the band's scale (inf: zero or non-finite)


def exits(series: Series, bands: dict[str, Band], widen: Callable[[Band], float]) -> list[Exit]:
    """Where each key of ``series`` first left its band widened by ``widen(band)`` on each side,
    earliest first. Bands built together share their steps and are evaluated in one go."""
    together: dict[int, list[tuple[int, str]]] = {}
    for j, key in enumerate(series.keys):
        if key in bands:
            together.setdefault(id(bands[key].steps), []).append((j, key))
    out: list[Exit] = []
    for members in together.values():
        first = bands[members[0][1]]
        ext = np.array([widen(bands[k]) for _, k in members])
        low = at_steps(first.steps, np.stack([bands[k].low for _, k in members], axis=1), series.steps,
                       first.align, np.minimum) - ext
        high = at_steps(first.steps, np.stack([bands[k].high for _, k in members], axis=1), series.steps,
                        first.align, np.maximum) + ext
        v = series.values[:, [j for j, _ in members]]
        with np.errstate(invalid="ignore"):
            below, above = v < low, v > high
        outside = below | above
        rows = outside.argmax(axis=0)
        for c in np.flatnonzero(outside.any(axis=0)):
            i, band = int(rows[c]), bands[members[c][1]]
            excess = float(low[i, c] - v[i, c]) if below[i, c] else float(v[i, c] - high[i, c])
            out.append(Exit(members[c][1], int(series.steps[i]), band.natural(float(v[i, c])),
                            band.natural(float(low[i, c])), band.natural(float(high[i, c])), excess))
    return sorted(out, key=lambda e: e.step)


def first_exit(series: Series, band: Band, ext: float) -> Exit | None:
    """Where the one key of ``series`` first left ``band`` widened by ``ext``."""
    found = exits(series, {series.keys[0]: band}, lambda _b: ext)
    return found[0] if found else None


Quantity = Literal["grad_norm", "update_ratio", "loss", "lr", "clip_rate", "step_ms"]


def widening(band: Band, quantity: Quantity, th: Thresholds) -> float:
    """How far ``band`` is widened on each side, in its scale: around a single reference by the
    quantity's tolerance; around two or more by their spread, and at least a floor."""
    if quantity == "loss":
        one = floor = th.reference_loss_share * band.scale
    elif quantity == "lr":
        one = floor = math.log10(th.reference_lr_factor)
    elif quantity == "clip_rate":
        one = floor = th.reference_clip_rate
    elif quantity == "step_ms":
        one, floor = math.log10(th.reference_time_factor), math.log10(th.reference_margin)
    else:
        one, floor = math.log10(th.reference_tolerance), math.log10(th.reference_margin)
    return one if band.count < 2 else max(band.spread, floor)


def band_edges(band: Band, quantity: Quantity, th: Thresholds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, low, high) of the widened band in the quantity's own units, as the judge uses it."""
    ext = widening(band, quantity, th)
    low, high = band.low - ext, band.high + ext
    if band.log:
        with np.errstate(over="ignore"):
            low, high = 10.0 ** low, 10.0 ** high
    return band.steps, low, high


def _fmt(x: float | None) -> str:
    if x is None or math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "Inf" if x > 0 else "-Inf"
    return f"{x:.3g}"


def _refs(envelope: Envelope) -> str:
    n = len(envelope.names)
    return f"the reference run ({envelope.names[0]})" if n == 1 else f"the {n} reference runs"


def _stride_note(run: RunRecord) -> str:
    grad = run.probe(GradNormRecord)
    stride = grad.stride if grad is not None else 1
    return f" (this run's record keeps one step in {stride}, so within {stride} steps)" if stride > 1 else ""


def _pick(exits: list[Exit], prefer: str | None = None) -> Exit:
    """The first exit; among exits at the same step, ``prefer`` (the module that produced a NaN),
    else the one furthest outside."""
    step = exits[0].step
    same = [e for e in exits if e.step == step]
    for e in same:
        if e.key == prefer:
            return e
    return max(same, key=lambda e: e.excess)


def _grad_departures(run: RunRecord, series: Series | None, env: Envelope, th: Thresholds,
                     facts: RunFacts) -> list[Departure]:
    if series is None or not env.grad_norm:
        return []
    found = exits(series, env.grad_norm, lambda b: widening(b, "grad_norm", th))
    nonfinite = run.probe(NonFiniteRecord)
    # a non-finite norm is dated exactly by the layer's statistics, which see every step
    for layer, step in facts.layer_nonfinite.items():
        if layer not in env.grad_norm:
            continue
        before = [f.layer_nonfinite.get(layer) for f in env.facts]
        if any(s is not None and s <= step for s in before):
            continue   # a reference went non-finite there too
        found = [e for e in found if e.key != layer] + [Exit(layer, step, math.nan, math.nan, math.nan, math.inf)]
    if not found:
        return []
    found.sort(key=lambda e: e.step)
    located = nonfinite.located.get(str(found[0].step)) if nonfinite is not None else None
    first = _pick(found, located)
    band = env.grad_norm[first.key]
    others = [e.key for e in found if e.key != first.key]
    if math.isnan(first.value):
        what = (f"the gradient norm of {first.key} became non-finite (NaN/Inf) at step {first.step}, where "
                f"{_refs(env)} stayed finite")
        if located:
            what += f"; the first module whose forward output was non-finite then was {located}"
    else:
        low, high = band.at(np.array([float(first.step)]))
        refs = f"{_fmt(band.natural(float(low[0])))} to {_fmt(band.natural(float(high[0])))}"
        moved = ("fell to 0 (no gradient reached it: frozen or detached)" if first.value == 0 else
                 f"was {_fmt(first.value)}")
        what = (f"the gradient norm of {first.key} left the envelope of {_refs(env)} at step {first.step}"
                f"{_stride_note(run)}: it {moved}, outside the band {_fmt(first.low)} to {_fmt(first.high)} "
                f"(the references: {refs})")
    if others:
        later = sorted({e.step for e in found if e.key != first.key})
        what += (f"; {plural(len(others), 'other layer')} left it too, from step {later[0]} "
                 f"({short(others, MAX_NAMED)})")
    else:
        what += f"; the other {plural(len(series.keys) - 1, 'layer')} stayed inside"
    return [_departure(code="GS801", where=first.key, quantity="grad_norm", step=first.step,
                      value=first.value, low=first.low, high=first.high, message=what + ".")]


def _update_departures(series: Series | None, env: Envelope, th: Thresholds) -> list[Departure]:
    found = exits(series, env.update_ratio, lambda b: widening(b, "update_ratio", th)) if series is not None else []
    if not found:
        return []
    first = _pick(found)
    others = [e.key for e in found if e.key != first.key]
    moved = "0: the weights did not move" if first.value == 0 else _fmt(first.value)
    message = (f"the update ratio ||dw||/||w|| of {first.key} left the envelope of {_refs(env)} at sampled "
               f"step {first.step}: {moved}, outside the band {_fmt(first.low)} to {_fmt(first.high)}"
               + (f"; {plural(len(others), 'other layer')} left it too ({short(others, MAX_NAMED)})"
                  if others else ""))
    return [_departure(code="GS803", where=first.key, quantity="update_ratio", step=first.step,
                      value=first.value, low=first.low, high=first.high, message=message + ".")]


def _loss_departures(series: Series | None, env: Envelope, th: Thresholds, facts: RunFacts) -> list[Departure]:
    band = env.loss
    if series is None or band is None:
        return []
    exit_ = first_exit(series, band, widening(band, "loss", th))
    bad = facts.loss_nonfinite   # dated exactly by the statistics, which see every step
    if bad is not None and not any(f.loss_nonfinite is not None and f.loss_nonfinite <= bad for f in env.facts) \
            and (exit_ is None or bad <= exit_.step):
        exit_ = Exit("loss", bad, math.inf, math.nan, math.nan, math.inf)
    if exit_ is None:
        return []
    if math.isinf(exit_.value):
        said = f"the loss became non-finite at step {exit_.step}, where {_refs(env)} stayed finite"
    else:
        said = (f"the loss left the envelope of {_refs(env)} at step {exit_.step}: {_fmt(exit_.value)}, "
                f"outside the band {_fmt(exit_.low)} to {_fmt(exit_.high)}")
    return [_departure(code="GS802", where="loss", quantity="loss", step=exit_.step, value=exit_.value,
                      low=exit_.low, high=exit_.high, message=said + ".")]


def _close(a: float, b: float, factor: float) -> bool:
    if a == b:
        return True
    if a <= 0 or b <= 0 or not (math.isfinite(a) and math.isfinite(b)):
        return False
    return abs(math.log(a / b)) <= math.log(factor)


def _lr_departures(series: Series | None, env: Envelope, th: Thresholds, facts: RunFacts) -> list[Departure]:
    """GS805 for the learning rates at the start, GS806 for the schedule after it."""
    out: list[Departure] = []
    factor = th.reference_lr_factor
    for key, label in facts.groups.items():
        starts = [f.first_lr[key] for f in env.facts if key in f.first_lr]
        mine = facts.first_lr.get(key)
        same_start = True
        if starts and mine is not None and not any(_close(mine, s, factor) for s in starts):
            same_start = False
            out.append(_departure(
                code="GS805", where=label, quantity="lr", step=None, value=mine, low=min(starts), high=max(starts),
                message=f"the learning rate of {label} starts at {_fmt(mine)} where {_refs(env)} started at "
                        f"{_fmt_range(starts)}."))
        if series is None or key not in series.keys or key not in env.lr:
            continue
        # a different start is said above; the schedule is then compared by its shape alone
        band = env.lr[key] if same_start else env.lr_shape.get(key)
        mine_now = series.column(key) if same_start else lr_shape(series.column(key))
        if band is None:
            continue
        exit_ = first_exit(mine_now, band, widening(band, "lr", th))
        if exit_ is None:
            continue
        now = exit_.value
        lows, highs = band.at(np.array([float(exit_.step)]))
        refs = [band.natural(float(lows[0])), band.natural(float(highs[0]))]
        if same_start:
            change = (f"the learning rate of {label} left the schedule of {_refs(env)} at step {exit_.step}: "
                      f"{_fmt(now)} where the {'reference had' if len(env.names) == 1 else 'references had'} "
                      f"{_fmt_range(refs)}")
            ref = refs[0] if now < refs[0] else refs[1]
            if ref > 0 and now > 0:
                change += f" ({_ratio(now / ref)} {'the reference' if len(env.names) == 1 else 'theirs'})"
        else:
            change = (f"the learning-rate schedule of {label} differs from {_refs(env)} from step {exit_.step}: "
                      f"{_fmt(now)} times its starting value where the references were at {_fmt_range(refs)} "
                      "times theirs")
        out.append(_departure(code="GS806", where=label, quantity="lr", step=exit_.step, value=now,
                             low=exit_.low, high=exit_.high, message=change + "."))
    return out


def _ratio(r: float) -> str:
    return f"{r:.3g}x" if r >= 1 else f"1/{1 / r:.3g} of"  # "100x the reference", "1/10 of the reference"


def _fmt_range(values: Sequence[float]) -> str:
    lo, hi = min(values), max(values)
    return _fmt(lo) if _close(lo, hi, 1.000001) else f"{_fmt(lo)} to {_fmt(hi)}"


def _optimizer_departures(env: Envelope, facts: RunFacts) -> list[Departure]:
    out: list[Departure] = []
    theirs = [f.optimizers for f in env.facts if f.optimizers]
    if facts.optimizers and theirs and all(t != facts.optimizers for t in theirs):
        out.append(_departure(
            code="GS805", where=", ".join(facts.optimizers), quantity="optimizer",
            message=f"this run trains with {', '.join(facts.optimizers)} where {_refs(env)} used "
                    f"{' or '.join(sorted({', '.join(t) for t in theirs}))}."))
    counts = {len(f.groups) for f in env.facts if f.groups}
    if facts.groups and counts and len(facts.groups) not in counts:
        out.append(_departure(
            code="GS805", where=", ".join(facts.optimizers or []) or facts.root, quantity="param_groups",
            message=f"this run's optimizers have {plural(len(facts.groups), 'param group')} where {_refs(env)} "
                    f"had {' or '.join(str(c) for c in sorted(counts))}."))
    changed: dict[tuple[float, str], list[str]] = {}
    for name, mine in facts.weight_decay.items():
        known = [f.weight_decay[name] for f in env.facts if name in f.weight_decay]
        if known and not any(abs(mine - k) <= 1e-12 * max(abs(mine), abs(k), 1.0) for k in known):
            changed.setdefault((mine, _fmt_range(known)), []).append(name)
    for (mine, theirs_wd), names in changed.items():
        out.append(_departure(
            code="GS805", where=_owner(names[0], facts.root), quantity="weight_decay", value=mine,
            message=f"weight decay {_fmt(mine)} where {_refs(env)} had {theirs_wd}, for "
                    f"{plural(len(names), 'parameter tensor')} ({short(names, MAX_NAMED)})."))
    return out


def _owner(parameter: str, root: str) -> str:
    return parameter.rpartition(".")[0] or root


def _parameter_departures(env: Envelope, facts: RunFacts) -> list[Departure]:
    known = [f.numel for f in env.facts if f.numel is not None]
    if facts.numel is None or not known:
        return []
    everywhere = set.intersection(*(set(k) for k in known))
    anywhere = set().union(*(set(k) for k in known))
    added = [n for n in facts.numel if n not in anywhere]
    removed = sorted(everywhere - set(facts.numel))
    resized = [n for n in facts.numel if n in anywhere
               and all(k[n] != facts.numel[n] for k in known if n in k)]
    if not (added or removed or resized):
        return []
    parts = []
    if added:
        parts.append(f"{plural(len(added), 'parameter tensor')} no reference has ({short(added, MAX_NAMED)})")
    if removed:
        parts.append(f"{plural(len(removed), 'parameter tensor')} of every reference missing "
                     f"({short(removed, MAX_NAMED)})")
    if resized:
        first = resized[0]
        theirs = sorted({k[first] for k in known if first in k})
        parts.append(f"{plural(len(resized), 'parameter tensor')} of another size ({first}: "
                     f"{facts.numel[first]:,} values where {_refs(env)} had "
                     f"{' or '.join(f'{t:,}' for t in theirs)}"
                     + (f"; also {short(resized[1:], MAX_NAMED)}" if len(resized) > 1 else "") + ")")
    total = sum(facts.numel.values())
    ref_totals = sorted({sum(k.values()) for k in known})
    where = _owner((added or removed or resized)[0], facts.root)
    return [_departure(code="GS807", where=where, quantity="parameters", value=float(total),
                      message=f"the model's parameters differ from {_refs(env)}: " + "; ".join(parts)
                              + f" ({total:,} values in all where the reference had "
                                f"{' or '.join(f'{t:,}' for t in ref_totals)}).")]


def _frozen_since(run: RunRecord, layer: str) -> int | None:
    """The first kept step from which ``layer``'s gradient norm stays exactly 0 to the end."""
    grad = run.probe(GradNormRecord)
    if grad is None or layer not in grad.layers or not grad.steps:
        return None
    zero = grad.layer_norms[:, grad.layers.index(layer)] == 0
    if not zero[-1]:
        return None
    tail = len(zero) - int(np.argmin(zero[::-1])) if not zero.all() else 0
    return grad.steps[tail]


def _frozen_departures(run: RunRecord, env: Envelope, facts: RunFacts) -> list[Departure]:
    """GS808: layers frozen here and trainable in every reference, and the other way round."""
    kinds: dict[str, dict[str, list[str]]] = {"from the start": {}, "during the run": {}, "trainable": {}}
    for name, start in facts.trainable.items():
        ref_start = [f.trainable[name] for f in env.facts if name in f.trainable]
        ref_end = [f.requires_grad[name] for f in env.facts if name in f.requires_grad]
        end = facts.requires_grad.get(name, start)
        if not ref_start:
            continue
        module = _owner(name, facts.root)
        if not start and all(ref_start):
            kinds["from the start"].setdefault(module, []).append(name)
        elif start and not end and all(ref_end):
            kinds["during the run"].setdefault(module, []).append(name)
        elif start and end and not any(ref_start) and not any(ref_end):
            kinds["trainable"].setdefault(module, []).append(name)
    out: list[Departure] = []
    for kind, modules in kinds.items():
        if not modules:
            continue
        names = [n for group in modules.values() for n in group]
        layers = list(modules)
        if kind == "trainable":
            said = (f"{short(layers, MAX_NAMED)} {'is' if len(layers) == 1 else 'are'} trained here but "
                    f"frozen in {_refs(env)} ({plural(len(names), 'parameter tensor')})")
        else:
            said = (f"{short(layers, MAX_NAMED)} {'was' if len(layers) == 1 else 'were'} frozen {kind} "
                    f"(requires_grad False, {plural(len(names), 'parameter tensor')}) but trained in {_refs(env)}")
            since = _frozen_since(run, layers[0]) if kind == "during the run" else None
            if since is not None:
                said += f"; {layers[0]} has had no gradient since step {since}"
        out.append(_departure(code="GS808", where=layers[0], quantity="frozen", step=None, message=said + "."))
    return out


def _clip_departures(run: RunRecord, env: Envelope, th: Thresholds, facts: RunFacts) -> list[Departure]:
    theirs = [f for f in env.facts if f.clip]
    if not facts.clip and not theirs:
        return []
    if not facts.clip:
        setting = theirs[0].clip[0]
        return [_departure(code="GS804", where=setting.function, quantity="clip",
                          message=f"this run never clipped, where {_refs(env)} called {setting.function} "
                                  f"with a threshold of {_fmt(setting.threshold)}.")]
    if not theirs:
        first = facts.clip[0]
        return [_departure(code="GS804", where=first.function, quantity="clip", step=first.step,
                          value=first.threshold,
                          message=f"this run clips with {first.function} (threshold {_fmt(first.threshold)}) "
                                  f"from step {first.step}, where {_refs(env)} never clipped.")]
    for setting in facts.clip:
        in_force = [_setting_at(f.clip, setting.step) for f in theirs]
        known = [s for s in in_force if s is not None]
        if not known or any(s.function == setting.function and _close(s.threshold, setting.threshold, 1.000001)
                            for s in known):
            continue
        ref = known[0]
        what = (f"{setting.function} with threshold {_fmt(setting.threshold)}" if ref.function != setting.function
                else f"threshold {_fmt(setting.threshold)}")
        return [_departure(code="GS804", where=setting.function, quantity="clip", step=setting.step,
                          value=setting.threshold, low=ref.threshold, high=ref.threshold,
                          message=f"clipping changed at step {setting.step}: {what} where {_refs(env)} clipped "
                                  f"with {ref.function} at {_fmt_range([s.threshold for s in known])} then.")]
    last, theirs_last = facts.last_clip_step, max(f.last_clip_step or 0 for f in theirs)
    if last is not None and last < min(facts.steps, theirs_last + 1) - max(10, facts.steps // 20):
        return [_departure(code="GS804", where=facts.clip[-1].function, quantity="clip", step=last + 1,
                          message=f"clipping stopped after step {last}, where {_refs(env)} clipped until step "
                                  f"{theirs_last}.")]
    series, band = clip_series(run), env.clip_rate
    if series is None or band is None:
        return []
    exit_ = first_exit(series, band, widening(band, "clip_rate", th))
    if exit_ is None:
        return []
    return [_departure(code="GS804", where=facts.clip[0].function, quantity="clip_rate", step=exit_.step,
                      value=exit_.value, low=exit_.low, high=exit_.high,
                      message=f"the clip rate left the envelope of {_refs(env)} at step {exit_.step}: "
                              f"{exit_.value:.0%} of the last {CLIP_WINDOW} calls clipped, outside "
                              f"{max(exit_.low, 0):.0%} to {min(exit_.high, 1):.0%}.")]


def _setting_at(settings: list[ClipSetting], step: int) -> ClipSetting | None:
    found = [s for s in settings if s.step <= step]
    return found[-1] if found else None


def _timing_departures(series: Series | None, env: Envelope, th: Thresholds) -> list[Departure]:
    out: list[Departure] = []
    for phase in series.keys if series is not None else []:
        band = env.step_ms.get(phase)
        if band is None or series is None:
            continue
        s = series.column(phase)
        ext = widening(band, "step_ms", th)
        low, high = band.at(s.steps)
        with np.errstate(invalid="ignore"):
            lo, hi = 10 ** (low - ext), 10 ** (high + ext)
            ms = 10 ** s.values[:, 0]
            out_ = np.flatnonzero(((ms < lo) & (lo - ms >= TIME_FLOOR_MS)) | ((ms > hi) & (ms - hi >= TIME_FLOOR_MS)))
        if not out_.size:
            continue
        i = int(out_[0])
        step = int(s.steps[i])
        ref = f"{_fmt_range([float(10 ** low[i]), float(10 ** high[i])])} ms"
        out.append(_departure(
            code="GS810", where=phase, quantity="step_ms", step=step, value=float(ms[i]), low=float(lo[i]),
            high=float(hi[i]),
            message=f"the {phase} phase took {_fmt(float(ms[i]))} ms per step from step {step} (median of "
                    f"{SMOOTH} steps), outside the band {_fmt(float(lo[i]))} to {_fmt(float(hi[i]))} ms of "
                    f"{_refs(env)} (the references: {ref})."))
    return out


def _new_findings(env: Envelope, facts: RunFacts) -> list[Departure]:
    """GS809: codes present here and absent from every reference run."""
    known = {f.code for ref in env.facts for f in ref.findings}
    by_code: dict[str, list[Finding]] = {}
    for f in facts.findings:
        if f.code not in known and not f.code.startswith(OWN_CODES):
            by_code.setdefault(f.code, []).append(f)
    out: list[Departure] = []
    for code, found in sorted(by_code.items()):
        first = max(found, key=lambda f: f.severity.rank)
        entry = CATALOG.get(code)
        title = f" ({entry.title})" if entry else ""
        places = [f.where for f in found]
        out.append(_departure(
            code="GS809", severity=first.severity, where=first.where, quantity="finding",
            message=f"{code}{title} is new: no reference run had it; here at {short(places, MAX_NAMED)}: "
                    f"{first.message}"))
    return out


def judge_against(run: RunRecord, envelope: Envelope, thresholds: Thresholds | None = None,
                  findings: Sequence[Finding] | None = None) -> ReferenceRecord:
    """Where ``run`` leaves ``envelope``, and what else changed.

    Args:
        run: the run to judge (a finished record, or one built at a flush).
        envelope: from ``build_envelope``.
        thresholds: the band widths (``reference_*`` fields); the defaults when None.
        findings: the run's findings, when ``run.findings`` does not hold them yet (a live scope).
    """
    th = thresholds if thresholds is not None else Thresholds()
    facts = run_facts(run, findings=findings)
    grads, updates, losses = grad_norm_series(run), update_ratio_series(run), loss_series(run)
    lrs, times = lr_series(run), timing_series(run)
    departures = [*_grad_departures(run, grads, envelope, th, facts), *_loss_departures(losses, envelope, th, facts),
                  *_update_departures(updates, envelope, th),
                  *(_clip_departures(run, envelope, th, facts) if facts.steps else []),
                  *_optimizer_departures(envelope, facts), *_lr_departures(lrs, envelope, th, facts),
                  *_parameter_departures(envelope, facts), *_frozen_departures(run, envelope, facts),
                  *_new_findings(envelope, facts), *_timing_departures(times, envelope, th)]
    notes = _notes(facts, envelope, (("gradient norms", grads, envelope.grad_norm),
                                     ("learning rates", lrs, envelope.lr),
                                     ("update ratios", updates, envelope.update_ratio),
                                     ("step times", times, envelope.step_ms)), losses)
    return ReferenceRecord(references=list(envelope.names), reference_steps=[f.steps for f in envelope.facts],
                           compared_until=min(facts.steps, envelope.last_step + 1) - 1 if facts.steps else None,
                           departures=departures, notes=notes)


def _notes(facts: RunFacts, env: Envelope, quantities: Sequence[tuple[str, Series | None, dict[str, Band]]],
           losses: Series | None) -> list[str]:
    notes = []
    last = env.last_step
    if facts.steps - 1 > last:
        notes.append(f"this run has {facts.steps:,} steps and the references {last + 1:,}: steps after {last:,} "
                     "were not compared")
    for what, mine, theirs in quantities:
        if mine is not None and not theirs:
            notes.append(f"the references have no {what}: not compared")
        elif theirs and mine is None:
            notes.append(f"this run has no {what}: not compared")
        elif mine is not None:
            missing = [k for k in mine.keys if k not in theirs]
            if missing:
                notes.append(f"{what} of {short(missing, MAX_NAMED)} have no reference: not compared")
    if (losses is None) != (env.loss is None):
        notes.append("the loss is recorded in only one of this run and the references: not compared")
    return notes


def departure_findings(record: ReferenceRecord) -> list[Finding]:
    """The findings a reference record supports, one per departure."""
    return [finding(d.code, d.where, d.message, severity=Severity(d.severity)) for d in record.departures]


def judge_reference(record: ReferenceRecord, run: RunRecord, thresholds: Thresholds) -> list[Finding]:
    """The reference probe's judge: the departures recorded (they need the references to compute)."""
    return departure_findings(record)


def compare_to_references(run: RunRecord, references: Sequence[RunRecord], names: Sequence[str] | None = None,
                          thresholds: Thresholds | None = None,
                          findings: Sequence[Finding] | None = None) -> ReferenceRecord:
    """``judge_against(run, build_envelope(references, names))`` in one call."""
    return judge_against(run, build_envelope(references, names), thresholds, findings)
