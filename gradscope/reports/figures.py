"""The report's figures: one function per figure, typed records in, ``Chart`` (or None) out.

The records are already typed and numeric (``gradscope.records``): a figure never parses JSON.
Values may still be NaN or infinite (that is what a diverging run records); the drawing kit in
``charts`` shows them as red cells and marks rather than dropping them.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from gradscope.reports.charts import (
    COLOURS,
    LABEL_CHARS,
    MAX_GROUPS,
    MAX_POINT_TIPS,
    NONFINITE_COLOUR,
    ZERO_COLOUR,
    Chart,
    Envelope,
    bucket_mean,
    bucket_starts,
    envelope,
    flow_chart,
    group_layers,
    heatmap,
    label,
    line_with_envelope,
    log_scale,
    mark_nonfinite,
    new_figure,
    positive,
    style,
)
from gradscope.reports.page import fmt_number

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gradscope.records import (
        ActivationGradRecord,
        ClippingRecord,
        Curves,
        GradNormRecord,
        HistogramRecord,
        RunRecord,
        TensorGradRecord,
        TimingSummary,
        UpdateRatioRecord,
    )
    from gradscope.records.loss import LossRecord
    from gradscope.records.lr import LrRecord
    from gradscope.thresholds import Thresholds

MAX_READ_ROWS = 4096   # per-step rows a heatmap reads (evenly spaced) before averaging into columns
MAX_HISTOGRAM_LAYERS = 24  # layer bands in the histogram figure (the worst; the table lists them all)
HISTOGRAM_ROWS = 8         # sampled steps per band, averaged evenly beyond it


def sampled_rows(steps: Sequence[int], values: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """At most ``MAX_READ_ROWS`` evenly spaced rows of ``values`` with their steps (the engine
    keeps at most ``max_kept_steps`` rows; this bounds records built otherwise)."""
    n = values.shape[0]
    x = np.asarray(steps, dtype=float) if len(steps) == n else np.arange(n, dtype=float)
    if n > MAX_READ_ROWS:
        idx = np.unique(np.linspace(0, n - 1, MAX_READ_ROWS).astype(int))
        return x[idx], values[idx], n
    return x, values, n


def grad_norm_heatmap(grad: GradNormRecord) -> Chart | None:
    """Heatmap of log10 per-layer gradient norms over the recorded steps."""
    if grad.layer_norms.size == 0:
        return None
    steps, values, read = sampled_rows(grad.steps, grad.layer_norms)
    return heatmap("grad-heatmap", "Per-layer gradient norm over steps", grad.layers, steps, values,
                   "layer", read)


def worst_layers_heatmap(grad: GradNormRecord, worst: Sequence[int]) -> Chart | None:
    """Heatmap of the ``worst`` layers alone (indices, worst first, top row first), for a model
    whose full heatmap shows groups of layers, where one bad layer among many is averaged away."""
    if grad.layer_norms.size == 0 or not worst:
        return None
    rows = [i for i in worst if 0 <= i < grad.layer_norms.shape[1]][:MAX_GROUPS]
    steps, values, read = sampled_rows(grad.steps, grad.layer_norms[:, rows])
    chart = heatmap("grad-worst-heatmap", f"The {len(rows)} worst layers: gradient norm over steps",
                    [grad.layers[i] for i in rows], steps, values, "layer", read)
    if chart is not None:
        chart.caption = (f"The {len(rows)} worst of {len(grad.layers):,} layers, worst at the top, in the order "
                         "of the per-layer table below. " + chart.caption)
    return chart


def clip_thresholds(clip: ClippingRecord | None) -> list[float]:
    """The distinct norm-clipping thresholds of a run (at most four)."""
    if clip is None:
        return []
    found = sorted({c.threshold for c in clip.calls if c.kind in ("norm", "with_norm")})
    return [t for t in found if math.isfinite(t)][:4]


def total_norm_figure(grad: GradNormRecord, clip: ClippingRecord | None = None) -> Chart | None:
    """Total gradient norm over steps, with the clipping threshold when clipping ran."""
    y = grad.total_norm
    if y.size == 0:
        return None
    x = np.asarray(grad.steps, dtype=float) if len(grad.steps) == len(y) else np.arange(len(y), dtype=float)
    log = bool(np.any(np.isfinite(y) & (y > 0)))
    with style():
        fig = new_figure(10, 3.2)
        ax = fig.add_subplot()
        chart = Chart("total-norm", "Total gradient norm (before clipping)", fig)
        env = line_with_envelope(chart, ax, x, y, "total norm", COLOURS[0], log)
        for i, t in enumerate(clip_thresholds(clip)):
            line = ax.axhline(t, color="black", linestyle="--", linewidth=1,
                              label="clip max_norm" if i == 0 else None)
            chart.tip(line, f"clip_grad_norm_ max_norm = {fmt_number(t)}")
        bad = mark_nonfinite(ax, x, y)
        if log:
            log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("L2 norm of all gradients")
        ax.legend(loc="upper right", fontsize=8)
    chart.caption = _series_caption(len(y), env, bad, "norm")
    return chart


def _series_caption(steps: int, env: Envelope, bad: int, what: str) -> str:
    """The caption of a per-step line: how many steps, how they were averaged, the non-finite ones."""
    notes = [f"{steps} recorded steps"]
    if env.reduced:
        notes.append(f"averaged into {len(env.x)} points, shaded band: min to max in each bucket")
    if bad:
        notes.append(f"red lines: {bad} step(s) with a non-finite {what}")
    return "; ".join(notes) + "."


def gradient_flow_figure(grad: GradNormRecord) -> Chart | None:
    """Gradient flow: mean and max gradient norm per layer over the whole run."""
    return flow_chart("grad-flow", "Gradient flow: norm per layer", grad.layers, grad.layer_stats, "layer")


def activation_flow_figure(act: ActivationGradRecord) -> Chart | None:
    """Mean and max norm of each watched module's output gradient."""
    return flow_chart("activation-flow", "Output gradient norm per module", act.modules, act.stats, "module")


def activation_heatmap(act: ActivationGradRecord) -> Chart | None:
    """Heatmap of log10 module output-gradient norms over steps."""
    if act.norms.size == 0:
        return None
    steps, values, read = sampled_rows(act.steps, act.norms)
    return heatmap("activation-heatmap", "Output gradient norm per module over steps", act.modules,
                   steps, values, "module", read)


def tensor_grad_figure(rec: TensorGradRecord) -> Chart | None:
    """Norm (solid) and max |g| (dotted) of each tensor named with ``scope.probe``/``retain``."""
    series = [(k, v) for k, v in rec.tensors.items() if v.norm.size][: len(COLOURS)]
    if not series:
        return None
    with style():
        fig = new_figure(10, 3.2)
        ax = fig.add_subplot()
        chart = Chart("tensor-grad", "Gradients of named tensors", fig)
        log = False
        for (name, v), colour in zip(series, COLOURS):
            y = v.norm
            x = np.asarray(v.steps, dtype=float)
            log = log or bool(np.any(np.isfinite(y) & (y > 0)))
            line_with_envelope(chart, ax, x, y, f"{name} norm", colour, True)
            env = envelope(x, v.max_abs)
            ax.plot(env.x, positive(env.mean), color=colour, linestyle=":", linewidth=1)
        if log:
            log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("gradient norm (dotted: max |g|)")
        ax.legend(loc="upper right", fontsize=8)
    shown = len(rec.tensors)
    chart.caption = f"{shown} named tensor(s)" + (f", first {len(series)} shown" if shown > len(series) else "") + "."
    return chart


def clipping_figure(clip: ClippingRecord) -> Chart | None:
    """Pre- and post-clip norms against the threshold, and the rolling share of clipped steps."""
    norm_calls = [c for c in clip.calls if c.total_norm is not None]
    value_calls = [c for c in clip.calls if c.saturated is not None]
    if not norm_calls and not value_calls:
        return None
    summary = clip.summary
    rolling = summary.rolling_clipped_fraction
    panels = (1 if norm_calls else 0) + (1 if value_calls else 0) + (1 if norm_calls and rolling.size else 0)

    def column(values: Sequence[float | None]) -> np.ndarray:
        return np.array([math.nan if v is None else v for v in values], dtype=float)

    with style():
        fig = new_figure(10, 2.4 * panels + 0.6)
        axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
        chart = Chart("clipping", "Gradient clipping", fig)
        i = 0
        if norm_calls:
            ax = axes[i]
            i += 1
            x = np.array([c.step for c in norm_calls], dtype=float)
            pre = column([c.total_norm for c in norm_calls])
            post = column([c.clipped_norm for c in norm_calls])
            threshold = column([c.threshold for c in norm_calls])
            log = bool(np.any(np.isfinite(pre) & (pre > 0)))
            line_with_envelope(chart, ax, x, pre, "pre-clip norm", COLOURS[0], log)
            line_with_envelope(chart, ax, x, post, "post-clip norm", COLOURS[1], log)
            env = envelope(x, threshold)
            (line,) = ax.plot(env.x, env.mean, color="black", linestyle="--", linewidth=1, label="max_norm")
            chart.tip(line, "threshold (max_norm): "
                      + ", ".join(fmt_number(t) for t in sorted(set(threshold.tolist()))[:4]))
            mark_nonfinite(ax, x, pre)
            if log:
                log_scale(ax)
            ax.set_ylabel("gradient norm")
            ax.legend(loc="upper right", fontsize=8)
            if rolling.size:
                ax = axes[i]
                i += 1
                rx = x if len(rolling) == len(x) else np.arange(len(rolling), dtype=float)
                env = envelope(rx, rolling)
                (line,) = ax.plot(env.x, env.mean * 100, color=COLOURS[3], linewidth=1.2)
                frac = summary.clipped_fraction
                chart.tip(line, "share of the last 50 calls that clipped"
                          + (f"; over the run {fmt_number(frac * 100)}%" if frac is not None else ""))
                ax.set_ylim(-3, 103)
                ax.set_ylabel("clipped (%, last 50)")
        if value_calls:
            ax = axes[i]
            x = np.array([c.step for c in value_calls], dtype=float)
            sat = column([c.saturated for c in value_calls]) * 100
            line_with_envelope(chart, ax, x, sat, "elements clipped by clip_grad_value_ (%)", COLOURS[2], False)
            ax.set_ylabel("elements clipped (%)")
            ax.legend(loc="upper right", fontsize=8)
        axes[-1].set_xlabel("step")
    frac = summary.clipped_fraction
    chart.caption = (f"{len(clip.calls)} clip call(s)"
                     + (f"; norm clipping acted on {fmt_number(frac * 100)}% of them"
                        if frac is not None and math.isfinite(frac) else "") + ".")
    return chart


def loss_figure(rec: LossRecord) -> Chart | None:
    """The loss each step backpropagated (a log axis when it spans orders of magnitude)."""
    y = rec.loss
    if y.size == 0:
        return None
    x = np.asarray(rec.steps, dtype=float)
    finite = y[np.isfinite(y)]
    log = bool(finite.size and (finite > 0).all() and finite.max() / max(finite.min(), 1e-300) > 100)
    with style():
        fig = new_figure(10, 3.0)
        ax = fig.add_subplot()
        chart = Chart("loss", "Loss per step", fig)
        env = line_with_envelope(chart, ax, x, y, "loss", COLOURS[0], log)
        bad = mark_nonfinite(ax, x, y)
        if log:
            log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
    chart.caption = _series_caption(len(y), env, bad, "loss")
    return chart


def lr_figure(rec: LrRecord) -> Chart | None:
    """Each param group's learning rate over the steps."""
    if rec.lr.size == 0:
        return None
    x = np.asarray(rec.steps, dtype=float)
    with style():
        fig = new_figure(10, 2.8)
        ax = fig.add_subplot()
        chart = Chart("lr", "Learning rate per param group", fig)
        positive_values = rec.lr[np.isfinite(rec.lr) & (rec.lr > 0)]
        log = bool(positive_values.size and positive_values.max() / positive_values.min() > 100)
        for j, (group, colour) in enumerate(zip(rec.groups[: len(COLOURS)], COLOURS)):
            line_with_envelope(chart, ax, x, rec.lr[:, j], group, colour, log)
        if log:
            log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("learning rate")
        ax.legend(loc="upper right", fontsize=8)
    chart.caption = f"{len(rec.groups)} param group(s), read right before each optimizer.step()."
    return chart


def _curve(values: Sequence[float | None]) -> np.ndarray:
    return np.array([math.nan if v is None else v for v in values], dtype=float)


def curves_figure(curves: Curves) -> Chart | None:
    """Loss and accuracy per epoch, train and test (epoch 0 is the evaluation before training)."""
    epochs = np.asarray(curves.epoch, dtype=float)
    panels = [("loss", (("train", curves.train_loss), ("test", curves.test_loss))),
              ("accuracy (%)", (("train", curves.train_accuracy_percent), ("test", curves.test_accuracy_percent)))]
    present = [(title, [(name, _curve(values)) for name, values in series]) for title, series in panels]
    present = [(t, [s for s in ss if s[1].size and np.isfinite(s[1]).any()]) for t, ss in present]
    present = [(t, ss) for t, ss in present if ss]
    if not present:
        return None
    with style():
        fig = new_figure(10, 3.2)
        axes = fig.subplots(1, len(present), squeeze=False)[0]
        chart = Chart("curves", "Loss and accuracy", fig)
        for ax, (title, series) in zip(axes, present):
            for (name, y), colour in zip(series, (COLOURS[0], COLOURS[1])):
                x = epochs + 1 if len(epochs) == len(y) else np.arange(len(y), dtype=float)
                ok = np.isfinite(y)
                ax.plot(x[ok], y[ok], color=colour, marker="o", markersize=4, label=name)
                if ok.sum() <= MAX_POINT_TIPS:
                    for xi, yi in zip(x[ok], y[ok]):
                        (dot,) = ax.plot([xi], [yi], "o", color=colour, markersize=7, alpha=0)
                        chart.tip(dot, f"{name} {title} after epoch {int(xi)}: {fmt_number(float(yi))}"
                                  if xi > 0 else f"{name} {title} before training: {fmt_number(float(yi))}")
            ax.set_title(title)
            ax.set_xlabel("epochs completed (0: before training)")
            ax.legend(fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
    chart.caption = "Train values are averaged over each epoch's batches; test values are measured after it."
    return chart


def timings_figure(summary: TimingSummary) -> Chart | None:
    """Median time per step phase (bars), with the 90th percentile marked."""
    rows = [(k, v.median_ms, v.p90_ms) for k, v in summary.phases.items() if k != "step"]  # "step": the whole
    rows = [r for r in rows if math.isfinite(r[1])][:MAX_GROUPS]
    if not rows:
        return None
    with style():
        fig = new_figure(10, 1.0 + 0.35 * len(rows))
        ax = fig.add_subplot()
        chart = Chart("timings", "Step timings", fig)
        y = np.arange(len(rows))
        bars = ax.barh(y, [r[1] for r in rows], color=COLOURS[0], height=0.6, label="median")
        ax.plot([r[2] for r in rows], y, "|", color="black", markersize=14, markeredgewidth=2,
                label="90th percentile")
        for bar, (name, median, high) in zip(bars, rows):
            chart.tip(bar, f"{name}: median {fmt_number(median)} ms, 90th percentile {fmt_number(high)} ms")
        ax.set_yticks(y)
        ax.set_yticklabels([label(r[0]) for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("milliseconds per step")
        ax.legend(loc="lower right", fontsize=8)
    step = summary.phases.get("step")
    chart.caption = ("Median time of each phase of a training step; the tick marks the 90th percentile"
                     + (f"; a whole step takes {fmt_number(step.median_ms)} ms (median)" if step else "") + ".")
    return chart


def update_ratio_figure(rec: UpdateRatioRecord, thresholds: Thresholds) -> Chart | None:
    """Median update-to-weight ratio per layer against the band the findings were judged with."""
    values = rec.ratios
    if values.size == 0 or not rec.layers:
        return None
    low, high = thresholds.update_ratio_low, thresholds.update_ratio_high
    groups = group_layers(rec.layers)
    medians = []
    for members in groups.members:
        block = values[:, members]
        ok = block[np.isfinite(block) & (block > 0)]
        medians.append(float(np.median(ok)) if ok.size else math.nan)
    x = np.arange(len(groups.labels))
    with style():
        fig = new_figure(10, 3.6 + 0.05 * min(LABEL_CHARS, max(len(label(s)) for s in groups.labels)))
        ax = fig.add_subplot()
        chart = Chart("update-ratio", "Update-to-weight ratio per layer", fig)
        ax.axhspan(low, high, color="#2ca02c", alpha=0.08, label=f"not flagged ({low:g} to {high:g})")
        ax.axhline(1e-3, color="#2ca02c", linestyle="--", linewidth=1, label="typical 1e-3")
        bars = ax.bar(x, positive(np.array(medians)), color=COLOURS[1], width=0.6, label="median ||Δw||/||w||")
        for bar, name, m in zip(bars, groups.labels, medians):
            chart.tip(bar, f"{name}: median update ratio {fmt_number(m)}")
        log_scale(ax)
        ax.set_xticks(x)
        ax.set_xticklabels([label(s) for s in groups.labels], rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_ylabel("update / weight")
        ax.legend(loc="upper right", fontsize=8)
    chart.caption = (f"Median over {len(values)} sampled step(s), zeros and undefined ratios left out"
                     + (f"; {len(rec.layers)} layers in {len(groups.labels)} groups (median over members)"
                        if groups.grouped else "") + ".")
    return chart


def histogram_figure(rec: HistogramRecord) -> Chart | None:
    """Per-layer gradient histograms over the sampled steps, worst layers first.

    One band per layer; in a band, one row per sampled step (first at the top), one column per
    bin of |g|; the colour is log10 of the share of the layer's elements in the bin."""
    from gradscope.records.histogram import ABOVE, BELOW, FIRST_OCTAVE, LOW, NONFINITE, finite_medians

    if not rec.steps or not rec.layers:
        return None
    import seaborn as sns
    from matplotlib.colors import ListedColormap

    counts = rec.layer_counts()                                   # samples x layers x bins
    total = counts.sum(axis=2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        shares = np.where(total > 0, counts / np.maximum(total, 1), np.nan)
    shown = rec.worst_first()[:MAX_HISTOGRAM_LAYERS]
    starts = bucket_starts(len(rec.steps), HISTOGRAM_ROWS)
    height = len(starts)
    bins = counts.shape[2]
    cells = np.full(((height + 1) * len(shown), bins), np.nan)   # a blank row under each band
    for band, j in enumerate(shown):
        cells[band * (height + 1):band * (height + 1) + height] = bucket_mean(shares[:, j, :], starts)
    missing = np.isnan(cells)
    empty = ~missing & (cells == 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(missing | empty, 1.0, cells))
    gaps = np.zeros_like(missing)
    gaps[height::height + 1] = True
    zeros, samples = finite_medians(rec.zero_fraction)
    below, _ = finite_medians(rec.below_normal)
    with style(ggplot=False):
        fig = new_figure(10, 1.4 + 0.42 * len(shown))
        ax = fig.add_subplot()
        sns.heatmap(logs, mask=missing | empty, ax=ax, cmap="viridis", vmin=-6.0, vmax=0.0,
                    cbar_kws={"label": "log10 share of the layer's elements", "pad": 0.01},
                    xticklabels=False, yticklabels=False, rasterized=True)
        no_grad = missing & ~gaps
        if no_grad.any():
            ax.pcolormesh(np.arange(bins + 1), np.arange(cells.shape[0] + 1),
                          np.ma.masked_where(~no_grad, np.ones_like(cells)),
                          cmap=ListedColormap([ZERO_COLOUR]), rasterized=True)
        bad = np.zeros_like(missing)
        bad[:, NONFINITE] = ~missing[:, NONFINITE] & (np.nan_to_num(cells[:, NONFINITE]) > 0)
        if bad.any():
            ax.pcolormesh(np.arange(bins + 1), np.arange(cells.shape[0] + 1),
                          np.ma.masked_where(~bad, np.ones_like(cells)),
                          cmap=ListedColormap([NONFINITE_COLOUR]), rasterized=True)
        for x in (BELOW, FIRST_OCTAVE, ABOVE, NONFINITE):          # special columns stand apart
            ax.axvline(x, color="white", linewidth=1.5)
        edge = FIRST_OCTAVE + (-14 - LOW)                           # float16's smallest normal, 2**-14
        ax.axvline(edge, color=NONFINITE_COLOUR, linestyle="--", linewidth=1)
        ax.text(edge, -0.3, "float16 normal", color=NONFINITE_COLOUR, fontsize=7, ha="center", va="bottom")
        decades = [(-9, "1e-9"), (-6, "1e-6"), (-3, "0.001"), (0, "1"), (3, "1000")]
        ticks = [0.5] + [FIRST_OCTAVE + d * math.log2(10) - LOW for d, _ in decades] + [NONFINITE + 0.5]
        ax.set_xticks(ticks)
        ax.set_xticklabels(["0"] + [t for _, t in decades] + ["Inf/NaN"], rotation=0)
        ax.set_yticks([band * (height + 1) + height / 2 for band in range(len(shown))])
        ax.set_yticklabels([label(rec.layers[j]) for j in shown])
        ax.tick_params(axis="y", labelsize=7)
        ax.set_xlabel("|g| (octave bins; exact zeros left, NaN/Inf right)")
        chart = Chart("grad-histogram", "Gradient histograms per layer, worst first", fig, raster=True)
        for tick, j in zip(ax.get_yticklabels(), shown):
            kind = f" ({rec.modules[j]})" if j < len(rec.modules) and rec.modules[j] else ""
            chart.tip(tick, f"{rec.layers[j]}{kind}: median {fmt_number(_percent(zeros[j]))}% exact zeros, "
                            f"{fmt_number(_percent(below[j]))}% of the nonzero below {rec.dtype}'s smallest "
                            f"normal, over {int(samples[j])} sampled steps")
    notes = [f"{len(shown)} of {len(rec.layers)} layers, worst first (NaN/Inf, then the most exact zeros or "
             "values below the smallest normal)" if len(shown) < len(rec.layers) else
             f"{len(rec.layers)} layers, worst first"]
    notes.append(f"in each band the sampled steps run downward from step {rec.steps[0]} to {rec.steps[-1]}"
                 + (f", averaged into {height} rows" if height < len(rec.steps) else ""))
    notes.append("columns: exact zeros, below 9.1e-13, one per octave up to 16384, above, NaN/Inf; dashed "
                 "line: float16's smallest normal (6.1e-05; bfloat16's, 1.2e-38, is in the column below 9.1e-13)")
    if no_grad.any():
        notes.append("grey rows: no gradient at those steps")
    if bad.any():
        notes.append("red: NaN/Inf present")
    chart.caption = "; ".join(notes) + "."
    return chart


def _percent(share: float) -> float:
    return float(share) * 100 if math.isfinite(share) else math.nan


# ---- comparing two runs --------------------------------------------------------------------------
def compare_total_norm(a: RunRecord, b: RunRecord, run_names: Sequence[str]) -> Chart | None:
    """Total gradient norm of two runs overlaid, with their clip thresholds."""
    from gradscope.records import ClippingRecord, GradNormRecord

    series = []
    for record, name in zip((a, b), run_names):
        grad = record.probe(GradNormRecord)
        if grad is not None and grad.total_norm.size:
            y = grad.total_norm
            x = np.asarray(grad.steps, dtype=float) if len(grad.steps) == len(y) else np.arange(len(y), dtype=float)
            series.append((name, x, y, clip_thresholds(record.probe(ClippingRecord))))
    if not series:
        return None
    with style():
        fig = new_figure(10, 3.2)
        ax = fig.add_subplot()
        chart = Chart("compare-total-norm", "Total gradient norm", fig)
        log = any(np.any(np.isfinite(y) & (y > 0)) for _, _, y, _ in series)
        for (name, x, y, thresholds), colour in zip(series, COLOURS):
            line_with_envelope(chart, ax, x, y, str(name), colour, log)
            for t in thresholds:
                line = ax.axhline(t, color=colour, linestyle="--", linewidth=1)
                chart.tip(line, f"{name}: clip max_norm = {fmt_number(t)}")
        if log:
            log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("L2 norm of all gradients")
        ax.legend(loc="upper right", fontsize=8)
    chart.caption = "Dashed lines: each run's clipping threshold, in the run's colour."
    return chart


def compare_curves(a: RunRecord, b: RunRecord, run_names: Sequence[str]) -> Chart | None:
    """Loss and accuracy of two runs overlaid: solid test, dashed train."""
    panels = (("loss", "train_loss", "test_loss"),
              ("accuracy (%)", "train_accuracy_percent", "test_accuracy_percent"))
    used = []
    for title, train_key, test_key in panels:
        lines = []
        for record, name, colour in zip((a, b), run_names, COLOURS):
            curves = record.curves
            if curves is None:
                continue
            epochs = np.asarray(curves.epoch, dtype=float)
            for key, kind, dash in ((test_key, "test", "-"), (train_key, "train", "--")):
                y = _curve(getattr(curves, key))
                if y.size and np.isfinite(y).any():
                    x = epochs + 1 if len(epochs) == len(y) else np.arange(len(y), dtype=float)
                    lines.append((f"{name} {kind}", x, y, colour, dash))
        if lines:
            used.append((title, lines))
    if not used:
        return None
    with style():
        fig = new_figure(10, 3.2)
        axes = fig.subplots(1, len(used), squeeze=False)[0]
        chart = Chart("compare-curves", "Loss and accuracy", fig)
        for ax, (title, lines) in zip(axes, used):
            for name, x, y, colour, dash in lines:
                ok = np.isfinite(y)
                (line,) = ax.plot(x[ok], y[ok], color=colour, linestyle=dash, marker="o", markersize=3,
                                  label=label(name))
                chart.tip(line, f"{name} {title}: " + ", ".join(fmt_number(float(v)) for v in y[ok][-5:])
                          + (" (last 5)" if ok.sum() > 5 else ""))
            ax.set_title(title)
            ax.set_xlabel("epochs completed (0: before training)")
            ax.legend(fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
    chart.caption = "Solid: test; dashed: train."
    return chart
