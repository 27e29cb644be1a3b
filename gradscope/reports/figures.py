"""Figures of a run record: one small function per figure, record in, ``Chart`` (or None) out.

matplotlib and seaborn are imported inside the functions, never when this module is imported, so
``import gradscope`` stays light. Figures are built on ``matplotlib.figure.Figure`` directly, never
through pyplot's global state: no backend is switched, nothing leaks between calls, and the SVG and
Agg canvases are picked by ``savefig`` itself.

Large runs stay readable and small: a figure never draws more than ``MAX_GROUPS`` layer rows or
bars (layers are grouped by their parent module, see ``group_layers``) nor more than
``MAX_COLUMNS`` heatmap columns or ``MAX_POINTS`` line points (steps are averaged in even buckets,
with the bucket's minimum and maximum kept as an envelope so that spikes still show).

Every value may be missing or non-finite: numbers in a record can be ``None`` or the strings
"NaN", "Infinity" and "-Infinity" (JSON has no non-finite literals); ``numbers`` and ``matrix``
turn them into NumPy floats. Names come from the user's model, so every label is passed through
``label`` (mathtext ``$`` escaped, length capped); matplotlib escapes the text it writes into SVG.
"""
from __future__ import annotations

import html
import io
import math
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

MAX_GROUPS = 48        # layer rows in a heatmap, bars in a per-layer chart
MAX_COLUMNS = 320      # step columns in a heatmap
MAX_POINTS = 600       # points of a line over steps
MAX_READ_ROWS = 4096   # per-step rows a heatmap reads (evenly spaced) before averaging into columns
MAX_POINT_TIPS = 200   # per-point hover values only on short series (epochs)
LABEL_CHARS = 44

NONFINITE_COLOUR = "#d62728"
ZERO_COLOUR = "#c8c8c8"
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")

_RC = {
    "svg.fonttype": "none",        # text stays text: searchable, escaped, small
    "svg.hashsalt": "gradscope",   # deterministic ids
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": 9,
    "axes.titlesize": 10,
    "figure.dpi": 100,
}


@dataclass
class Chart:
    """A drawn figure with what the page shows around it.

    ``tips`` maps the gid of an artist (bar, line, point, tick label) to its hover text; the SVG
    writer turns each into an SVG ``<title>``.
    """

    key: str
    title: str
    figure: Figure
    caption: str = ""
    tips: dict[str, str] = field(default_factory=dict)
    raster: bool = False

    def tip(self, artist: Any, text: str) -> None:
        """Give ``artist`` a hover text."""
        gid = f"tip{len(self.tips)}"
        artist.set_gid(gid)
        self.tips[gid] = text


# ---- reading numbers out of a record ------------------------------------------------------------
def as_float(value: Any) -> float:
    """A record number as a float: None and unreadable values are NaN; "Infinity" is inf."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def numbers(values: Any) -> np.ndarray:
    """A 1-D float array from a record list (None, "NaN", "Infinity" allowed); empty if not a list."""
    if not isinstance(values, (list, tuple)):
        return np.zeros(0)
    try:
        out = np.array(values, dtype=float)
        if out.ndim == 1:
            return out
    except (TypeError, ValueError):
        pass
    return np.array([as_float(v) for v in values], dtype=float)


def matrix(rows: Any, width: int | None = None) -> np.ndarray:
    """A 2-D float array (steps x columns) from a record's list of rows; ragged rows are padded
    with NaN, and ``width`` (when given) trims or pads every row to that many columns."""
    if not isinstance(rows, (list, tuple)) or not rows:
        return np.zeros((0, width or 0))
    out: np.ndarray | None = None
    try:
        candidate = np.array(rows, dtype=float)
        if candidate.ndim == 2:
            out = candidate
    except (TypeError, ValueError):
        pass
    if out is None:
        parsed = [numbers(r) for r in rows]
        cols = max((len(r) for r in parsed), default=0)
        out = np.full((len(parsed), cols), np.nan)
        for i, r in enumerate(parsed):
            out[i, : len(r)] = r
    if width is not None and out.shape[1] != width:
        fixed = np.full((out.shape[0], width), np.nan)
        keep = min(width, out.shape[1])
        fixed[:, :keep] = out[:, :keep]
        out = fixed
    return out


def names(values: Any) -> list[str]:
    """A list of names from a record (anything not a list gives an empty list)."""
    if not isinstance(values, (list, tuple)):
        return []
    return [str(v) for v in values]


def probe(record: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``record["probes"][name]`` when it is a non-empty object, else an empty dict."""
    probes = record.get("probes")
    if not isinstance(probes, Mapping):
        return {}
    value = probes.get(name)
    return dict(value) if isinstance(value, Mapping) and value else {}


def label(text: Any, limit: int = LABEL_CHARS) -> str:
    """A user-supplied name made safe for a matplotlib label: ``$`` does not start mathtext,
    control characters show as spaces, and long names are shortened in the middle."""
    s = re.sub(r"[\x00-\x1f\x7f]", " ", str(text))
    if len(s) > limit:
        s = s[: limit // 2 - 1] + "…" + s[-(limit - limit // 2):]
    return s.replace("\\", "\\\\").replace("$", r"\$")


def fmt(value: float) -> str:
    """A number for hover texts and captions."""
    if value is None or not isinstance(value, (int, float)):
        return "n/a"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Inf" if value > 0 else "-Inf"
    if value == 0:
        return "0"
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.4g}"
    return f"{value:.3e}"


# ---- aggregation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class LayerGroups:
    """Layers gathered into at most a few display rows: ``labels[i]`` shows ``members[i]``."""

    labels: list[str]
    members: list[list[int]]

    @property
    def grouped(self) -> bool:
        return any(len(m) > 1 for m in self.members)


def group_layers(layers: Sequence[str], max_groups: int = MAX_GROUPS) -> LayerGroups:
    """Group dotted layer names by parent module so that at most ``max_groups`` rows remain.

    The finest prefix depth that fits is used (``encoder.layers.3`` before ``encoder``); where
    even the top level has too many names (a flat ``Sequential`` of thousands of layers), runs of
    consecutive layers are gathered instead. Order follows the first member of each group.
    """
    n = len(layers)
    if n <= max_groups:
        return LayerGroups([str(x) for x in layers], [[i] for i in range(n)])
    parts = [str(x).split(".") for x in layers]
    deepest = max(len(p) for p in parts)
    for depth in range(deepest - 1, 0, -1):
        order: dict[str, list[int]] = {}
        for i, p in enumerate(parts):
            order.setdefault(".".join(p[:depth]), []).append(i)
        if len(order) <= max_groups:
            labels = [f"{k} ({len(v)} layers)" if len(v) > 1 else str(layers[v[0]])
                      for k, v in order.items()]
            return LayerGroups(labels, list(order.values()))
    edges = np.linspace(0, n, max_groups + 1).astype(int)
    members = [list(range(a, b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]
    labels = [f"{layers[m[0]]} … {layers[m[-1]]} ({len(m)} layers)" if len(m) > 1 else str(layers[m[0]])
              for m in members]
    return LayerGroups(labels, members)


def group_norms(values: np.ndarray, groups: LayerGroups) -> np.ndarray:
    """Per-step norms of each group: the root of the summed squares of its members' norms
    (the norm of all the group's gradients together). NaN/Inf propagate."""
    if not groups.grouped:
        return values[:, [m[0] for m in groups.members]]
    order = [i for m in groups.members for i in m]
    starts = np.cumsum([0] + [len(m) for m in groups.members[:-1]])
    with np.errstate(invalid="ignore", over="ignore"):
        return np.sqrt(np.add.reduceat(np.square(values[:, order]), starts, axis=1))


def bucket_starts(n: int, max_buckets: int) -> np.ndarray:
    """Start indices of at most ``max_buckets`` even, contiguous buckets over ``n`` rows."""
    if n <= max_buckets:
        return np.arange(n)
    return np.unique(np.linspace(0, n, max_buckets, endpoint=False).astype(int))


def bucket_mean(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Mean of each bucket along axis 0 (a NaN or Inf in a bucket makes the bucket NaN/Inf)."""
    if len(starts) == len(values):
        return values
    counts = np.diff(np.append(starts, len(values))).astype(float)
    shape = (-1,) + (1,) * (values.ndim - 1)
    with np.errstate(invalid="ignore", over="ignore"):
        return np.add.reduceat(values, starts, axis=0) / counts.reshape(shape)


@dataclass(frozen=True)
class Envelope:
    """A long series reduced to bucket means with the min/max of each bucket."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    reduced: bool


def envelope(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS) -> Envelope:
    """Bucket ``y`` over ``x`` into at most ``max_points`` points (means, with min/max)."""
    starts = bucket_starts(len(y), max_points)
    if len(starts) == len(y):
        return Envelope(x, y, y, y, False)
    return Envelope(x[starts], bucket_mean(y, starts), np.minimum.reduceat(y, starts),
                    np.maximum.reduceat(y, starts), True)


def steps_for(p: Mapping[str, Any], rows: int) -> np.ndarray:
    """The step numbers of a probe's rows (0..rows-1 when the record has none that fit)."""
    steps = numbers(p.get("steps"))
    if len(steps) != rows or not np.all(np.isfinite(steps)):
        return np.arange(rows, dtype=float)
    return steps


def _positive(y: np.ndarray) -> np.ndarray:
    """``y`` with zeros, negatives and non-finite values hidden (NaN) for a log axis."""
    out = y.astype(float).copy()
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


def stat_columns(stats: Any, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Per-name statistics (``{name: {mean, max, ...}}``) as arrays ordered like ``keys``."""
    table = stats if isinstance(stats, Mapping) else {}
    out: dict[str, np.ndarray] = {}
    for column in ("mean", "max", "min", "count"):
        out[column] = np.array([as_float((table.get(k) or {}).get(column) if isinstance(table.get(k), Mapping)
                                         else None) for k in keys], dtype=float)
    out["first_nonfinite_step"] = np.array(
        [as_float(table[k].get("first_nonfinite_step")) if isinstance(table.get(k), Mapping) else math.nan
         for k in keys], dtype=float)
    return out


# ---- drawing -------------------------------------------------------------------------------------
@contextmanager
def _style(ggplot: bool = True) -> Iterator[None]:
    import matplotlib
    import matplotlib.style

    with warnings.catch_warnings():
        # Unusual glyphs in user names only warn; the browser draws the text (svg.fonttype none).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        with matplotlib.style.context("ggplot" if ggplot else "default"), matplotlib.rc_context(_RC):
            yield


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _log_scale(ax: Axes, axis: str = "y") -> None:
    """A log axis with plain-text tick labels such as 0.001 and 1e-06 (matplotlib's default
    labels are mathtext, slow to lay out and bulky in SVG)."""
    from matplotlib.ticker import LogFormatter

    class PlainLog(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            shown = super().__call__(x, pos)
            return f"{x:.3g}" if shown else ""

    getattr(ax, f"set_{axis}scale")("log")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(PlainLog())
    target.set_minor_formatter(PlainLog(labelOnlyBase=False, minor_thresholds=(1.5, 0.6)))


def _step_ticks(ax: Axes, steps: np.ndarray, starts: np.ndarray, columns: int) -> None:
    count = min(8, columns)
    if count <= 0:
        return
    positions = np.unique(np.linspace(0, columns - 1, count).astype(int))
    ax.set_xticks(positions + 0.5)
    ax.set_xticklabels([str(int(steps[starts[p]])) for p in positions], rotation=0)


def sampled_rows(p: Mapping[str, Any], key: str, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Steps and rows of ``p[key]``, reading at most ``MAX_READ_ROWS`` evenly spaced rows (the
    engine already keeps at most ``max_kept_steps`` rows; this bounds records built otherwise).
    Returns (steps, values, number of rows in the record)."""
    rows = p.get(key)
    if not isinstance(rows, (list, tuple)) or not rows:
        return np.zeros(0), np.zeros((0, width)), 0
    steps = steps_for(p, len(rows))
    if len(rows) > MAX_READ_ROWS:
        idx = np.unique(np.linspace(0, len(rows) - 1, MAX_READ_ROWS).astype(int))
        return steps[idx], matrix([rows[i] for i in idx], width), len(rows)
    return steps, matrix(rows, width), len(rows)


def _heatmap(key: str, title: str, row_names: list[str], steps: np.ndarray, values: np.ndarray,
             what: str, total_rows: int | None = None) -> Chart | None:
    """log10 norms over steps, one row per layer (or group of layers)."""
    if values.size == 0 or not row_names:
        return None
    import seaborn as sns
    from matplotlib.colors import ListedColormap

    groups = group_layers(row_names)
    grouped = group_norms(values, groups)
    starts = bucket_starts(len(grouped), MAX_COLUMNS)
    cells = bucket_mean(grouped, starts).T                      # rows: groups, columns: buckets
    nonfinite = ~np.isfinite(cells)
    zero = cells == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log10(np.where(nonfinite | zero, 1.0, np.abs(cells)))
    shown = logs[~(nonfinite | zero)]
    vmin, vmax = (float(shown.min()), float(shown.max())) if shown.size else (0.0, 1.0)
    if vmax - vmin < 1e-9:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    rows = len(groups.labels)
    with _style(ggplot=False):
        fig = _figure(10, max(2.4, 1.0 + 0.2 * rows))
        ax = fig.add_subplot()
        ax.set_facecolor(NONFINITE_COLOUR)  # masked non-finite cells show the background
        sns.heatmap(logs, mask=nonfinite | zero, ax=ax, cmap="viridis", vmin=vmin, vmax=vmax,
                    cbar_kws={"label": "log10 gradient norm", "pad": 0.01}, xticklabels=False,
                    yticklabels=[label(x) for x in groups.labels], rasterized=True)
        if zero.any():
            ax.pcolormesh(np.arange(cells.shape[1] + 1), np.arange(rows + 1),
                          np.ma.masked_where(~zero, np.ones_like(cells)),
                          cmap=ListedColormap([ZERO_COLOUR]), rasterized=True)
        _step_ticks(ax, steps, starts, cells.shape[1])
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.tick_params(axis="y", labelsize=7)
        chart = Chart(key, title, fig, raster=True)
        mean_log = np.array([np.mean(r[np.isfinite(r)]) if np.isfinite(r).any() else math.nan
                             for r in np.where(nonfinite | zero, np.nan, logs)])
        for tick, name, members, m in zip(ax.get_yticklabels(), groups.labels, groups.members, mean_log):
            chart.tip(tick, f"{name}: mean log10 norm {fmt(float(m))}"
                      + (f" over {len(members)} layers combined" if len(members) > 1 else ""))
    notes = [f"{len(row_names)} {what}s" + (f" shown as {rows} groups (norm of each group's "
                                            "gradients together)" if groups.grouped else "")]
    if total_rows and total_rows > len(grouped):
        notes.append(f"{len(grouped):,} of {total_rows:,} recorded steps read, evenly spaced")
    if len(starts) < len(grouped):
        notes.append(f"{len(grouped):,} steps averaged into {len(starts)} columns")
    if nonfinite.any():
        notes.append("red cells: NaN/Inf")
    if zero.any():
        notes.append("grey cells: exactly zero")
    chart.caption = "; ".join(notes) + "."
    return chart


def grad_norm_heatmap(record: Mapping[str, Any]) -> Chart | None:
    """Heatmap of log10 per-layer gradient norms over the recorded steps."""
    p = probe(record, "grad_norm")
    layers = names(p.get("layers"))
    steps, values, read = sampled_rows(p, "layer_norms", len(layers))
    return _heatmap("grad-heatmap", "Per-layer gradient norm over steps", layers, steps, values,
                    "layer", read)


def _threshold_lines(record: Mapping[str, Any]) -> list[float]:
    calls = probe(record, "clipping").get("calls")
    if not isinstance(calls, list):
        return []
    found = sorted({as_float(c.get("threshold")) for c in calls
                    if isinstance(c, Mapping) and c.get("kind") in ("norm", "with_norm")})
    return [t for t in found if math.isfinite(t)][:4]


def _line_with_envelope(chart: Chart, ax: Axes, x: np.ndarray, y: np.ndarray, name: str,
                        colour: str, log: bool) -> Envelope:
    env = envelope(x, y)
    show = _positive if log else (lambda v: v)
    if env.reduced:
        ax.fill_between(env.x, show(env.low), show(env.high), color=colour, alpha=0.2, linewidth=0)
    (line,) = ax.plot(env.x, show(env.mean), color=colour, linewidth=1.2, label=label(name))
    finite = y[np.isfinite(y)]
    if finite.size:
        chart.tip(line, f"{name}: min {fmt(float(finite.min()))}, median {fmt(float(np.median(finite)))}, "
                        f"max {fmt(float(finite.max()))}, last {fmt(float(y[-1]))}")
    return env


def _mark_nonfinite(ax: Axes, x: np.ndarray, y: np.ndarray) -> int:
    bad = np.flatnonzero(~np.isfinite(y))
    for xi in x[bad[:20]]:
        ax.axvline(float(xi), color=NONFINITE_COLOUR, linewidth=0.8, alpha=0.7)
    return len(bad)


def total_norm_figure(record: Mapping[str, Any]) -> Chart | None:
    """Total gradient norm over steps, with the clipping threshold when clipping ran."""
    p = probe(record, "grad_norm")
    y = numbers(p.get("total_norm"))
    if y.size == 0:
        return None
    x = steps_for(p, len(y))
    log = bool(np.any(np.isfinite(y) & (y > 0)))
    with _style():
        fig = _figure(10, 3.2)
        ax = fig.add_subplot()
        chart = Chart("total-norm", "Total gradient norm (before clipping)", fig)
        env = _line_with_envelope(chart, ax, x, y, "total norm", COLOURS[0], log)
        for i, t in enumerate(_threshold_lines(record)):
            line = ax.axhline(t, color="black", linestyle="--", linewidth=1,
                              label="clip max_norm" if i == 0 else None)
            chart.tip(line, f"clip_grad_norm_ max_norm = {fmt(t)}")
        bad = _mark_nonfinite(ax, x, y)
        if log:
            _log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("L2 norm of all gradients")
        ax.legend(loc="upper right", fontsize=8)
    notes = [f"{len(y)} recorded steps"]
    if env.reduced:
        notes.append(f"averaged into {len(env.x)} points, shaded band: min to max in each bucket")
    if bad:
        notes.append(f"red lines: {bad} step(s) with a non-finite norm")
    chart.caption = "; ".join(notes) + "."
    return chart


def _flow(key: str, title: str, row_names: list[str], stats: Any, what: str) -> Chart | None:
    """Mean and max norm per layer (bars, log scale), in model order."""
    if not row_names or not isinstance(stats, Mapping) or not stats:
        return None
    cols = stat_columns(stats, row_names)
    groups = group_layers(row_names)
    means, maxes, mins, counts, bad = [], [], [], [], []
    for members in groups.members:
        m = cols["mean"][members]
        means.append(float(np.mean(m[np.isfinite(m)])) if np.isfinite(m).any() else math.nan)
        mx = cols["max"][members]
        maxes.append(float(np.max(mx[np.isfinite(mx)])) if np.isfinite(mx).any() else math.nan)
        mn = cols["min"][members]
        mins.append(float(np.min(mn[np.isfinite(mn)])) if np.isfinite(mn).any() else math.nan)
        counts.append(float(np.nansum(cols["count"][members])))
        bad.append(bool(np.isfinite(cols["first_nonfinite_step"][members]).any()))
    mean_a, max_a = np.array(means), np.array(maxes)
    log = bool(np.any(np.isfinite(max_a) & (max_a > 0)))
    x = np.arange(len(groups.labels))
    with _style():
        fig = _figure(10, 3.6 + 0.05 * min(LABEL_CHARS, max(len(label(s)) for s in groups.labels)))
        ax = fig.add_subplot()
        chart = Chart(key, title, fig)
        show = _positive if log else np.nan_to_num
        top = ax.bar(x, show(max_a), color="#9ecae1", width=0.8, label="max over steps")
        ax.bar(x, show(mean_a), color=COLOURS[0], width=0.5, label="mean over steps")
        for rect, name, mean, mx, mn, n, b in zip(top, groups.labels, means, maxes, mins, counts, bad):
            chart.tip(rect, f"{name}: mean {fmt(mean)}, max {fmt(mx)}, min {fmt(mn)} over {int(n)} values"
                            + ("; NaN/Inf seen" if b else ""))
        floor = np.nanmin(_positive(np.concatenate([mean_a, max_a]))) if log and np.isfinite(
            _positive(np.concatenate([mean_a, max_a]))).any() else 0.0
        missing = [i for i, n in enumerate(counts) if n == 0]
        if missing:
            ax.plot(x[missing], [floor] * len(missing), "x", color="black", markersize=7,
                    label="no gradient recorded")
        flagged = [i for i, b in enumerate(bad) if b]
        if flagged:
            ax.plot(x[flagged], [np.nanmax(max_a) if np.isfinite(max_a).any() else 1.0] * len(flagged),
                    "v", color=NONFINITE_COLOUR, markersize=7, label="NaN/Inf seen")
        if log:
            _log_scale(ax)
        ax.set_xticks(x)
        ax.set_xticklabels([label(s) for s in groups.labels], rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_ylabel("gradient norm")
        ax.legend(loc="upper left", fontsize=8)
    chart.caption = (f"{len(row_names)} {what}s in model order (input side first)"
                     + (f", shown as {len(groups.labels)} groups: bar = largest member max and mean of "
                        "member means" if groups.grouped else "") + ".")
    return chart


def gradient_flow_figure(record: Mapping[str, Any]) -> Chart | None:
    """Gradient flow: mean and max gradient norm per layer over the whole run."""
    p = probe(record, "grad_norm")
    return _flow("grad-flow", "Gradient flow: norm per layer", names(p.get("layers")),
                 p.get("layer_stats"), "layer")


def activation_flow_figure(record: Mapping[str, Any]) -> Chart | None:
    """Mean and max norm of each watched module's output gradient."""
    p = probe(record, "activation_grad")
    return _flow("activation-flow", "Output gradient norm per module", names(p.get("modules")),
                 p.get("stats"), "module")


def activation_heatmap(record: Mapping[str, Any]) -> Chart | None:
    """Heatmap of log10 module output-gradient norms over steps."""
    p = probe(record, "activation_grad")
    modules = names(p.get("modules"))
    steps, values, read = sampled_rows(p, "norms", len(modules))
    return _heatmap("activation-heatmap", "Output gradient norm per module over steps", modules,
                    steps, values, "module", read)


def tensor_grad_figure(record: Mapping[str, Any]) -> Chart | None:
    """Norm (solid) and max |g| (dotted) of each tensor named with ``scope.probe``/``retain``."""
    p = probe(record, "tensor_grad")
    series = [(str(k), v) for k, v in p.items() if isinstance(v, Mapping)][: len(COLOURS)]
    series = [(k, v) for k, v in series if numbers(v.get("norm")).size]
    if not series:
        return None
    with _style():
        fig = _figure(10, 3.2)
        ax = fig.add_subplot()
        chart = Chart("tensor-grad", "Gradients of named tensors", fig)
        log = False
        for (name, v), colour in zip(series, COLOURS):
            y = numbers(v.get("norm"))
            x = steps_for(v, len(y))
            log = log or bool(np.any(np.isfinite(y) & (y > 0)))
            _line_with_envelope(chart, ax, x, y, f"{name} norm", colour, True)
            peak = numbers(v.get("max_abs"))
            if len(peak) == len(y):
                env = envelope(x, peak)
                ax.plot(env.x, _positive(env.mean), color=colour, linestyle=":", linewidth=1)
        if log:
            _log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("gradient norm (dotted: max |g|)")
        ax.legend(loc="upper right", fontsize=8)
    shown = len([k for k, v in p.items() if isinstance(v, Mapping)])
    chart.caption = f"{shown} named tensor(s)" + (f", first {len(series)} shown" if shown > len(series) else "") + "."
    return chart


def clipping_figure(record: Mapping[str, Any]) -> Chart | None:
    """Pre- and post-clip norms against the threshold, and the rolling share of clipped steps."""
    p = probe(record, "clipping")
    calls = [c for c in p.get("calls") or [] if isinstance(c, Mapping)]
    norm_calls = [c for c in calls if "total_norm" in c]
    value_calls = [c for c in calls if "saturated" in c]
    if not norm_calls and not value_calls:
        return None
    summary = p.get("summary") if isinstance(p.get("summary"), Mapping) else {}
    rolling = numbers(summary.get("rolling_clipped_fraction"))
    panels = (1 if norm_calls else 0) + (1 if value_calls else 0) + (1 if norm_calls and rolling.size else 0)
    with _style():
        fig = _figure(10, 2.4 * panels + 0.6)
        axes = fig.subplots(panels, 1, sharex=True, squeeze=False)[:, 0]
        chart = Chart("clipping", "Gradient clipping", fig)
        i = 0
        if norm_calls:
            ax = axes[i]
            i += 1
            x = np.array([as_float(c.get("step")) for c in norm_calls])
            pre = np.array([as_float(c.get("total_norm")) for c in norm_calls])
            post = np.array([as_float(c.get("clipped_norm")) for c in norm_calls])
            threshold = np.array([as_float(c.get("threshold")) for c in norm_calls])
            log = bool(np.any(np.isfinite(pre) & (pre > 0)))
            _line_with_envelope(chart, ax, x, pre, "pre-clip norm", COLOURS[0], log)
            _line_with_envelope(chart, ax, x, post, "post-clip norm", COLOURS[1], log)
            env = envelope(x, threshold)
            (line,) = ax.plot(env.x, env.mean, color="black", linestyle="--", linewidth=1, label="max_norm")
            chart.tip(line, "threshold (max_norm): " + ", ".join(fmt(t) for t in sorted(set(threshold.tolist()))[:4]))
            _mark_nonfinite(ax, x, pre)
            if log:
                _log_scale(ax)
            ax.set_ylabel("gradient norm")
            ax.legend(loc="upper right", fontsize=8)
            if rolling.size:
                ax = axes[i]
                i += 1
                rx = x if len(rolling) == len(x) else np.arange(len(rolling), dtype=float)
                env = envelope(rx, rolling)
                (line,) = ax.plot(env.x, env.mean * 100, color=COLOURS[3], linewidth=1.2)
                frac = as_float(summary.get("clipped_fraction"))
                chart.tip(line, f"share of the last 50 calls that clipped; over the run {fmt(frac * 100)}%")
                ax.set_ylim(-3, 103)
                ax.set_ylabel("clipped (%, last 50)")
        if value_calls:
            ax = axes[i]
            x = np.array([as_float(c.get("step")) for c in value_calls])
            sat = np.array([as_float(c.get("saturated")) for c in value_calls]) * 100
            _line_with_envelope(chart, ax, x, sat, "elements clipped by clip_grad_value_ (%)", COLOURS[2], False)
            ax.set_ylabel("elements clipped (%)")
            ax.legend(loc="upper right", fontsize=8)
        axes[-1].set_xlabel("step")
    frac = as_float(summary.get("clipped_fraction"))
    chart.caption = (f"{len(calls)} clip call(s)"
                     + (f"; norm clipping acted on {fmt(frac * 100)}% of them" if math.isfinite(frac) else "")
                     + ".")
    return chart


def curves_figure(record: Mapping[str, Any]) -> Chart | None:
    """Loss and accuracy per epoch, train and test (epoch 0 is the evaluation before training)."""
    curves = record.get("curves")
    if not isinstance(curves, Mapping):
        return None
    epochs = numbers(curves.get("epoch"))
    panels = [("loss", (("train_loss", "train"), ("test_loss", "test"))),
              ("accuracy (%)", (("train_accuracy_percent", "train"), ("test_accuracy_percent", "test")))]
    present = [(title, [(key, name, numbers(curves.get(key))) for key, name in keys])
               for title, keys in panels]
    present = [(t, [s for s in ss if s[2].size and np.isfinite(s[2]).any()]) for t, ss in present]
    present = [(t, ss) for t, ss in present if ss]
    if not present:
        return None
    with _style():
        fig = _figure(10, 3.2)
        axes = fig.subplots(1, len(present), squeeze=False)[0]
        chart = Chart("curves", "Loss and accuracy", fig)
        for ax, (title, series) in zip(axes, present):
            for (key, name, y), colour in zip(series, (COLOURS[0], COLOURS[1])):
                x = epochs + 1 if len(epochs) == len(y) else np.arange(len(y), dtype=float)
                ok = np.isfinite(y)
                ax.plot(x[ok], y[ok], color=colour, marker="o", markersize=4, label=name)
                if ok.sum() <= MAX_POINT_TIPS:
                    for xi, yi in zip(x[ok], y[ok]):
                        (dot,) = ax.plot([xi], [yi], "o", color=colour, markersize=7, alpha=0)
                        chart.tip(dot, f"{name} {title} after epoch {int(xi)}: {fmt(float(yi))}"
                                  if xi > 0 else f"{name} {title} before training: {fmt(float(yi))}")
            ax.set_title(title)
            ax.set_xlabel("epochs completed (0: before training)")
            ax.legend(fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
    chart.caption = "Train values are averaged over each epoch's batches; test values are measured after it."
    return chart


def timings_figure(record: Mapping[str, Any]) -> Chart | None:
    """Median time per step phase (bars), with the 90th percentile marked."""
    timings = record.get("timings")
    phases = timings.get("phases") if isinstance(timings, Mapping) else None
    if not isinstance(phases, Mapping) or not phases:
        return None
    rows = [(str(k), as_float(v.get("median_ms")), as_float(v.get("p90_ms")))
            for k, v in phases.items() if isinstance(v, Mapping) and k != "step"]  # "step" is the whole
    rows = [r for r in rows if math.isfinite(r[1])][:MAX_GROUPS]
    if not rows:
        return None
    with _style():
        fig = _figure(10, 1.0 + 0.35 * len(rows))
        ax = fig.add_subplot()
        chart = Chart("timings", "Step timings", fig)
        y = np.arange(len(rows))
        bars = ax.barh(y, [r[1] for r in rows], color=COLOURS[0], height=0.6, label="median")
        p90 = [r[2] for r in rows]
        ax.plot(p90, y, "|", color="black", markersize=14, markeredgewidth=2, label="90th percentile")
        for bar, (name, median, high) in zip(bars, rows):
            chart.tip(bar, f"{name}: median {fmt(median)} ms, 90th percentile {fmt(high)} ms")
        ax.set_yticks(y)
        ax.set_yticklabels([label(r[0]) for r in rows])
        ax.invert_yaxis()
        ax.set_xlabel("milliseconds per step")
        ax.legend(loc="lower right", fontsize=8)
    step = phases.get("step") if isinstance(phases.get("step"), Mapping) else {}
    chart.caption = ("Median time of each phase of a training step; the tick marks the 90th percentile"
                     + (f"; a whole step takes {fmt(as_float(step.get('median_ms')))} ms (median)" if step else "")
                     + ".")
    return chart


def update_ratio_figure(record: Mapping[str, Any]) -> Chart | None:
    """Median update-to-weight ratio per layer against the healthy band around 1e-3."""
    p = probe(record, "update_ratio")
    layers = names(p.get("layers"))
    values = matrix(p.get("ratios"), len(layers))
    limits = record.get("thresholds") if isinstance(record.get("thresholds"), Mapping) else {}
    low = as_float(limits.get("update_ratio_low", 1e-5))
    high = as_float(limits.get("update_ratio_high", 1e-1))
    low, high = (low, high) if math.isfinite(low) and math.isfinite(high) and 0 < low < high else (1e-5, 1e-1)
    if values.size == 0 or not layers:
        return None
    groups = group_layers(layers)
    medians = []
    for members in groups.members:
        block = values[:, members]
        ok = block[np.isfinite(block) & (block > 0)]
        medians.append(float(np.median(ok)) if ok.size else math.nan)
    med = np.array(medians)
    x = np.arange(len(groups.labels))
    with _style():
        fig = _figure(10, 3.6 + 0.05 * min(LABEL_CHARS, max(len(label(s)) for s in groups.labels)))
        ax = fig.add_subplot()
        chart = Chart("update-ratio", "Update-to-weight ratio per layer", fig)
        ax.axhspan(low, high, color="#2ca02c", alpha=0.08, label=f"not flagged ({low:g} to {high:g})")
        ax.axhline(1e-3, color="#2ca02c", linestyle="--", linewidth=1, label="typical 1e-3")
        bars = ax.bar(x, _positive(med), color=COLOURS[1], width=0.6, label="median ||Δw||/||w||")
        for bar, name, m in zip(bars, groups.labels, medians):
            chart.tip(bar, f"{name}: median update ratio {fmt(m)}")
        _log_scale(ax)
        ax.set_xticks(x)
        ax.set_xticklabels([label(s) for s in groups.labels], rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_ylabel("update / weight")
        ax.legend(loc="upper right", fontsize=8)
    chart.caption = (f"Median over {len(values)} sampled step(s), zeros left out"
                     + (f"; {len(layers)} layers in {len(groups.labels)} groups (median over members)"
                        if groups.grouped else "") + ".")
    return chart


def report_charts(record: Mapping[str, Any]) -> dict[str, Chart]:
    """Every figure the record has data for, keyed by ``Chart.key``."""
    builders = (grad_norm_heatmap, total_norm_figure, gradient_flow_figure, activation_flow_figure,
                activation_heatmap, tensor_grad_figure, clipping_figure, curves_figure,
                timings_figure, update_ratio_figure)
    out: dict[str, Chart] = {}
    for build in builders:
        chart = build(record)
        if chart is not None:
            out[chart.key] = chart
    return out


# ---- comparing two runs --------------------------------------------------------------------------
def compare_total_norm(a: Mapping[str, Any], b: Mapping[str, Any], run_names: Sequence[str]) -> Chart | None:
    """Total gradient norm of two runs overlaid, with their clip thresholds."""
    series = []
    for record, name in zip((a, b), run_names):
        p = probe(record, "grad_norm")
        y = numbers(p.get("total_norm"))
        if y.size:
            series.append((name, steps_for(p, len(y)), y, _threshold_lines(record)))
    if not series:
        return None
    with _style():
        fig = _figure(10, 3.2)
        ax = fig.add_subplot()
        chart = Chart("compare-total-norm", "Total gradient norm", fig)
        log = any(np.any(np.isfinite(y) & (y > 0)) for _, _, y, _ in series)
        for (name, x, y, thresholds), colour in zip(series, COLOURS):
            _line_with_envelope(chart, ax, x, y, str(name), colour, log)
            for t in thresholds:
                line = ax.axhline(t, color=colour, linestyle="--", linewidth=1)
                chart.tip(line, f"{name}: clip max_norm = {fmt(t)}")
        if log:
            _log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("L2 norm of all gradients")
        ax.legend(loc="upper right", fontsize=8)
    chart.caption = "Dashed lines: each run's clipping threshold, in the run's colour."
    return chart


def compare_curves(a: Mapping[str, Any], b: Mapping[str, Any], run_names: Sequence[str]) -> Chart | None:
    """Loss and accuracy of two runs overlaid: solid test, dashed train."""
    panels = (("loss", "train_loss", "test_loss"),
              ("accuracy (%)", "train_accuracy_percent", "test_accuracy_percent"))
    used = []
    for title, train_key, test_key in panels:
        lines = []
        for record, name, colour in zip((a, b), run_names, COLOURS):
            curves = record.get("curves")
            if not isinstance(curves, Mapping):
                continue
            epochs = numbers(curves.get("epoch"))
            for key, kind, style in ((test_key, "test", "-"), (train_key, "train", "--")):
                y = numbers(curves.get(key))
                if y.size and np.isfinite(y).any():
                    x = epochs + 1 if len(epochs) == len(y) else np.arange(len(y), dtype=float)
                    lines.append((f"{name} {kind}", x, y, colour, style))
        if lines:
            used.append((title, lines))
    if not used:
        return None
    with _style():
        fig = _figure(10, 3.2)
        axes = fig.subplots(1, len(used), squeeze=False)[0]
        chart = Chart("compare-curves", "Loss and accuracy", fig)
        for ax, (title, lines) in zip(axes, used):
            for name, x, y, colour, style in lines:
                ok = np.isfinite(y)
                (line,) = ax.plot(x[ok], y[ok], color=colour, linestyle=style, marker="o", markersize=3,
                                  label=label(name))
                chart.tip(line, f"{name} {title}: " + ", ".join(fmt(float(v)) for v in y[ok][-5:])
                          + (" (last 5)" if ok.sum() > 5 else ""))
            ax.set_title(title)
            ax.set_xlabel("epochs completed (0: before training)")
            ax.legend(fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
    chart.caption = "Solid: test; dashed: train."
    return chart


# ---- SVG for an HTML page ------------------------------------------------------------------------
_ID_REF = re.compile(r'(\bid="|url\(#|href="#)([^")]+)')


def to_svg(chart: Chart, prefix: str) -> str:
    """The chart as SVG markup to inline in an HTML5 page.

    The XML prolog, DOCTYPE, comments, metadata and namespace declarations are removed (inline
    SVG in HTML needs none of them, and they hold URLs); hover texts become ``<title>`` elements;
    every id gets ``prefix`` so that several figures can share one page.
    """
    buf = io.StringIO()
    with _style(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        chart.figure.savefig(buf, format="svg", dpi=110 if chart.raster else 100,
                             metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buf.getvalue()
    text = text[text.find("<svg"):]
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    for gid, tip in chart.tips.items():
        text = text.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{html.escape(tip)}</title>', 1)
    text = _ID_REF.sub(lambda m: m.group(1) + prefix + m.group(2), text)
    text = text.replace("<svg ", f'<svg class="chart" role="img" aria-label="{html.escape(chart.title)}" ', 1)
    chart.figure.clear()
    return text.strip()
