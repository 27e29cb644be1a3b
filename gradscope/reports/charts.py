"""The drawing kit behind the report's figures: charts, their style, aggregation of large runs,
and SVG made safe to inline in a page.

matplotlib and seaborn are imported inside the functions, never when this module is imported, so
``import gradscope`` stays light. Figures are built on ``matplotlib.figure.Figure`` directly, never
through pyplot's global state: no backend is switched, nothing leaks between calls, and the SVG and
Agg canvases are picked by ``savefig`` itself.

Large runs stay readable and small: a figure never draws more than ``MAX_GROUPS`` layer rows or
bars (layers are grouped by their parent module, see ``group_layers``) nor more than
``MAX_COLUMNS`` heatmap columns or ``MAX_POINTS`` line points (steps are averaged in even buckets,
with the bucket's minimum and maximum kept as an envelope so that spikes still show). Names come
from the user's model, so every label is passed through ``label`` (mathtext ``$`` escaped, length
capped); matplotlib escapes the text it writes into SVG.
"""
from __future__ import annotations

import html
import io
import math
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterator, Sequence, cast

import numpy as np

from gradscope.reports.page import fmt_number

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from gradscope.records.stats import StatsTable

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


def label(text: Any, limit: int = LABEL_CHARS) -> str:
    """A user-supplied name made safe for a matplotlib label: ``$`` does not start mathtext,
    control characters show as spaces, and long names are shortened in the middle."""
    s = re.sub(r"[\x00-\x1f\x7f]", " ", str(text))
    if len(s) > limit:
        s = s[: limit // 2 - 1] + "…" + s[-(limit - limit // 2):]
    return s.replace("\\", "\\\\").replace("$", r"\$")


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


def positive(y: np.ndarray) -> np.ndarray:
    """``y`` with zeros, negatives and non-finite values hidden (NaN) for a log axis."""
    out = y.astype(float).copy()
    out[~np.isfinite(out) | (out <= 0)] = np.nan
    return out


# ---- drawing -------------------------------------------------------------------------------------
@contextmanager
def style(ggplot: bool = True) -> Iterator[None]:
    import matplotlib
    import matplotlib.style

    with warnings.catch_warnings():
        # Unusual glyphs in user names only warn; the browser draws the text (svg.fonttype none).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        with matplotlib.style.context("ggplot" if ggplot else "default"), matplotlib.rc_context(cast(Any, _RC)):
            yield


def new_figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def log_scale(ax: Axes, axis: str = "y") -> None:
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


def step_ticks(ax: Axes, steps: np.ndarray, starts: np.ndarray, columns: int) -> None:
    count = min(8, columns)
    if count <= 0:
        return
    positions = np.unique(np.linspace(0, columns - 1, count).astype(int))
    ax.set_xticks(positions + 0.5)
    ax.set_xticklabels([str(int(steps[starts[p]])) for p in positions], rotation=0)


def heatmap(key: str, title: str, row_names: list[str], steps: np.ndarray, values: np.ndarray,
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
    with style(ggplot=False):
        fig = new_figure(10, max(2.4, 1.0 + 0.2 * rows))
        ax = fig.add_subplot()
        ax.set_facecolor(NONFINITE_COLOUR)  # masked non-finite cells show the background
        sns.heatmap(logs, mask=nonfinite | zero, ax=ax, cmap="viridis", vmin=vmin, vmax=vmax,
                    cbar_kws={"label": "log10 gradient norm", "pad": 0.01}, xticklabels=False,
                    yticklabels=[label(x) for x in groups.labels], rasterized=True)
        if zero.any():
            ax.pcolormesh(np.arange(cells.shape[1] + 1), np.arange(rows + 1),
                          np.ma.masked_where(~zero, np.ones_like(cells)),
                          cmap=ListedColormap([ZERO_COLOUR]), rasterized=True)
        step_ticks(ax, steps, starts, cells.shape[1])
        ax.set_xlabel("step")
        ax.set_ylabel(what)
        ax.tick_params(axis="y", labelsize=7)
        chart = Chart(key, title, fig, raster=True)
        mean_log = np.array([np.mean(r[np.isfinite(r)]) if np.isfinite(r).any() else math.nan
                             for r in np.where(nonfinite | zero, np.nan, logs)])
        for tick, name, members, m in zip(ax.get_yticklabels(), groups.labels, groups.members, mean_log):
            chart.tip(tick, f"{name}: mean log10 norm {fmt_number(float(m))}"
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


def line_with_envelope(chart: Chart, ax: Axes, x: np.ndarray, y: np.ndarray, name: str,
                        colour: str, log: bool) -> Envelope:
    env = envelope(x, y)
    show = positive if log else (lambda v: v)
    if env.reduced:
        ax.fill_between(env.x, show(env.low), show(env.high), color=colour, alpha=0.2, linewidth=0)
    (line,) = ax.plot(env.x, show(env.mean), color=colour, linewidth=1.2, label=label(name))
    finite = y[np.isfinite(y)]
    if finite.size:
        chart.tip(line, f"{name}: min {fmt_number(float(finite.min()))}, "
                        f"median {fmt_number(float(np.median(finite)))}, "
                        f"max {fmt_number(float(finite.max()))}, last {fmt_number(float(y[-1]))}")
    return env


def mark_nonfinite(ax: Axes, x: np.ndarray, y: np.ndarray) -> int:
    bad = np.flatnonzero(~np.isfinite(y))
    for xi in x[bad[:20]]:
        ax.axvline(float(xi), color=NONFINITE_COLOUR, linewidth=0.8, alpha=0.7)
    return len(bad)


def flow_chart(key: str, title: str, row_names: list[str], stats: StatsTable, what: str) -> Chart | None:
    """Mean and max norm per layer (bars, log scale), in model order."""
    if not row_names or len(stats) != len(row_names):
        return None
    cols = {"mean": stats.mean, "max": stats.max, "min": stats.min,
            "count": np.array(stats.count, dtype=float),
            "first_nonfinite_step": np.array([math.nan if s is None else s for s in stats.first_nonfinite_step],
                                             dtype=float)}
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
    with style():
        fig = new_figure(10, 3.6 + 0.05 * min(LABEL_CHARS, max(len(label(s)) for s in groups.labels)))
        ax = fig.add_subplot()
        chart = Chart(key, title, fig)
        show = positive if log else np.nan_to_num
        top = ax.bar(x, show(max_a), color="#9ecae1", width=0.8, label="max over steps")
        ax.bar(x, show(mean_a), color=COLOURS[0], width=0.5, label="mean over steps")
        for rect, name, mean, mx, mn, n, b in zip(top, groups.labels, means, maxes, mins, counts, bad):
            chart.tip(rect, f"{name}: mean {fmt_number(mean)}, max {fmt_number(mx)}, min {fmt_number(mn)} "
                            f"over {int(n)} values" + ("; NaN/Inf seen" if b else ""))
        floor = np.nanmin(positive(np.concatenate([mean_a, max_a]))) if log and np.isfinite(
            positive(np.concatenate([mean_a, max_a]))).any() else 0.0
        missing = [i for i, n in enumerate(counts) if n == 0]
        if missing:
            ax.plot(x[missing], [floor] * len(missing), "x", color="black", markersize=7,
                    label="no gradient recorded")
        flagged = [i for i, b in enumerate(bad) if b]
        if flagged:
            ax.plot(x[flagged], [np.nanmax(max_a) if np.isfinite(max_a).any() else 1.0] * len(flagged),
                    "v", color=NONFINITE_COLOUR, markersize=7, label="NaN/Inf seen")
        if log:
            log_scale(ax)
        ax.set_xticks(x)
        ax.set_xticklabels([label(s) for s in groups.labels], rotation=90, fontsize=7)
        ax.set_xlim(-0.6, len(x) - 0.4)
        ax.set_ylabel("gradient norm")
        ax.legend(loc="upper left", fontsize=8)
    chart.caption = (f"{len(row_names)} {what}s in model order (input side first)"
                     + (f", shown as {len(groups.labels)} groups: bar = largest member max and mean of "
                        "member means" if groups.grouped else "") + ".")
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
    with style(), warnings.catch_warnings():
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
