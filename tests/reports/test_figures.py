"""Figures: the aggregation maths against plain NumPy, each figure showing the record's numbers,
and SVG that is safe to inline (no URLs, escaped names, unique ids, hover titles)."""
from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest

from gradscope.reports import figures as F

HOSTILE = "<script>alert(1)</script>"


def _stats(mean: float, high: float, count: int = 4) -> dict[str, object]:
    return {"count": count, "min": mean / 2, "max": high, "mean": mean, "first_nonfinite_step": None}


def small_record() -> dict[str, object]:
    layers = ["enc.0", HOSTILE, "head"]
    norms = [[0.1, 1.0, 10.0], [0.2, 2.0, 20.0], [0.0, "NaN", 30.0], [0.4, 4.0, "Infinity"]]
    return {
        "schema": "gradscope.record", "version": 1,
        "probes": {
            "grad_norm": {"layers": layers, "steps": [0, 1, 2, 3], "total_norm": [1.0, 2.0, "NaN", 4.0],
                          "layer_norms": norms,
                          "layer_stats": {n: _stats(m, h) for n, m, h in zip(layers, (0.2, 2.0, 20.0),
                                                                                (0.4, 4.0, 30.0))}},
            "clipping": {"calls": [{"step": s, "kind": "norm", "threshold": 1.5, "total_norm": t,
                                    "clipped_norm": min(t, 1.5), "acted": t > 1.5}
                                   for s, t in enumerate([1.0, 2.0, 3.0, 4.0])],
                         "summary": {"clipped_fraction": 0.75, "rolling_clipped_fraction": [0, 0.5, 0.67, 0.75]}},
        },
        "curves": {"epoch": [-1, 0, 1], "train_loss": [None, 1.0, 0.5], "train_accuracy_percent": [None, 60, 80],
                   "test_loss": [2.0, 1.1, 0.6], "test_accuracy_percent": [10, 55, 75]},
        "timings": {"phases": {"forward": {"median_ms": 2.0, "p90_ms": 3.0},
                               HOSTILE: {"median_ms": 1.0, "p90_ms": 1.5}}},
    }


# ---- reading numbers -------------------------------------------------------------------------------
def test_numbers_read_json_nonfinite_strings_and_missing_values() -> None:
    got = F.numbers([1, None, "NaN", "Infinity", "-Infinity", "junk", 2.5])
    assert got[0] == 1 and got[-1] == 2.5
    assert math.isnan(got[1]) and math.isnan(got[2]) and math.isnan(got[5])
    assert got[3] == math.inf and got[4] == -math.inf
    assert F.numbers("not a list").size == 0


def test_matrix_pads_ragged_rows_and_fixes_the_width() -> None:
    got = F.matrix([[1, 2, 3], [4, "NaN"], [5]], width=3)
    assert got.shape == (3, 3)
    assert got[0].tolist() == [1, 2, 3] and got[1, 0] == 4
    assert np.isnan(got[1, 1]) and np.isnan(got[1, 2]) and np.isnan(got[2, 1:]).all()
    assert F.matrix([[1, 2, 3, 4]], width=2).tolist() == [[1, 2]]


def test_label_escapes_mathtext_and_shortens_long_names() -> None:
    assert F.label("cost $x$") == r"cost \$x\$"
    long = "a" * 30 + "MIDDLE" + "b" * 30
    short = F.label(long, limit=20)
    assert len(short) <= 21 and short.startswith("a") and short.endswith("b") and "…" in short
    assert "\n" not in F.label("two\nlines")


# ---- aggregation -------------------------------------------------------------------------------
def test_group_layers_keeps_small_models_as_they_are() -> None:
    groups = F.group_layers(["a", "b.c", "d"], max_groups=5)
    assert groups.labels == ["a", "b.c", "d"] and groups.members == [[0], [1], [2]]
    assert not groups.grouped


def test_group_layers_uses_the_finest_parent_that_fits() -> None:
    layers = [f"enc.blocks.{b}.layers.{i}" for b in range(6) for i in range(10)]
    groups = F.group_layers(layers, max_groups=10)
    assert len(groups.labels) == 6
    assert groups.labels[0] == "enc.blocks.0.layers (10 layers)"
    assert sorted(i for m in groups.members for i in m) == list(range(60))


def test_group_layers_gathers_runs_of_a_flat_model() -> None:
    layers = [str(i) for i in range(1000)]
    groups = F.group_layers(layers, max_groups=40)
    assert len(groups.labels) <= 40
    flat = [i for m in groups.members for i in m]
    assert flat == list(range(1000))          # every layer once, in order
    assert groups.labels[0].startswith("0 … ")


def test_group_norms_is_the_norm_of_the_groups_gradients() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((5, 60))
    layers = [f"b.{j // 10}.l{j % 10}" for j in range(60)]
    groups = F.group_layers(layers, max_groups=8)
    got = F.group_norms(values, groups)
    expected = np.stack([np.sqrt((values[:, m] ** 2).sum(axis=1)) for m in groups.members], axis=1)
    np.testing.assert_allclose(got, expected)
    values[2, 5] = np.nan
    assert np.isnan(F.group_norms(values, groups)[2, 0])


def test_bucket_mean_and_envelope_match_plain_numpy() -> None:
    y = np.arange(1000, dtype=float) ** 0.5
    y[500] = 999.0
    env = F.envelope(np.arange(1000.0), y, max_points=100)
    assert env.reduced and len(env.x) == 100
    np.testing.assert_allclose(env.mean, y.reshape(100, 10).mean(axis=1))
    np.testing.assert_allclose(env.high, y.reshape(100, 10).max(axis=1))
    np.testing.assert_allclose(env.low, y.reshape(100, 10).min(axis=1))
    assert env.high.max() == 999.0            # a spike survives the averaging
    short = F.envelope(np.arange(5.0), y[:5], max_points=100)
    assert not short.reduced and short.mean.tolist() == y[:5].tolist()


# ---- figures show the record ----------------------------------------------------------------------
def test_heatmap_cells_are_log10_norms_with_nonfinite_masked() -> None:
    chart = F.grad_norm_heatmap(small_record())
    assert chart is not None
    mesh = chart.figure.axes[0].collections[0]
    cells = mesh.get_array().reshape(3, 4)       # rows: layers, columns: steps
    expected = np.log10(np.array([[0.1, 0.2, 1, 0.4], [1.0, 2.0, 1, 4.0], [10, 20, 30, 1]]))
    mask = np.ma.getmaskarray(cells)
    assert mask[0, 2] and mask[1, 2] and mask[2, 3]          # zero, NaN, Inf
    np.testing.assert_allclose(cells.filled(np.nan)[~mask], expected[~mask])
    assert "NaN/Inf" in chart.caption and "zero" in chart.caption


def test_total_norm_figure_plots_the_norms_and_the_clip_threshold() -> None:
    chart = F.total_norm_figure(small_record())
    assert chart is not None
    ax = chart.figure.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    y = np.asarray(lines["total norm"].get_ydata(), dtype=float)
    assert y[0] == 1.0 and y[1] == 2.0 and np.isnan(y[2]) and y[3] == 4.0
    assert list(lines["clip max_norm"].get_ydata()) == [1.5, 1.5]
    assert "1 step(s) with a non-finite norm" in chart.caption


def test_gradient_flow_bars_are_the_layer_statistics() -> None:
    chart = F.gradient_flow_figure(small_record())
    assert chart is not None
    ax = chart.figure.axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches if p.get_width() > 0]
    assert heights[:3] == [0.4, 4.0, 30.0] and heights[3:6] == [0.2, 2.0, 20.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["enc.0", HOSTILE, "head"]


def test_curves_figure_plots_train_and_test_per_epoch() -> None:
    chart = F.curves_figure(small_record())
    assert chart is not None
    loss_ax, acc_ax = chart.figure.axes
    lines = {line.get_label(): line for line in loss_ax.get_lines() if not line.get_label().startswith("_")}
    assert list(lines["test"].get_xdata()) == [0, 1, 2] and list(lines["test"].get_ydata()) == [2.0, 1.1, 0.6]
    assert list(lines["train"].get_xdata()) == [1, 2]        # no train loss before training
    assert acc_ax.get_title() == "accuracy (%)"


def test_figures_without_data_are_none() -> None:
    minimal = {"schema": "gradscope.record", "version": 1}
    builders = (F.grad_norm_heatmap, F.total_norm_figure, F.gradient_flow_figure, F.activation_flow_figure,
                F.activation_heatmap, F.tensor_grad_figure, F.clipping_figure, F.curves_figure,
                F.timings_figure, F.update_ratio_figure)
    assert [b(minimal) for b in builders] == [None] * len(builders)
    assert F.report_charts(minimal) == {}
    assert F.compare_curves(minimal, minimal, ("a", "b")) is None


def test_large_heatmaps_stay_bounded() -> None:
    layers = [f"m.{i // 50}.l{i}" for i in range(2000)]
    rows = [[1.0 + (j % 7)] * len(layers) for j in range(20)]
    record = {"probes": {"grad_norm": {"layers": layers, "steps": list(range(10_000)),
                                       "layer_norms": [rows[s % 20] for s in range(10_000)]}}}
    chart = F.grad_norm_heatmap(record)
    assert chart is not None
    cells = chart.figure.axes[0].collections[0].get_array()
    assert cells.size <= F.MAX_GROUPS * F.MAX_COLUMNS
    assert "2000 layers shown as 40 groups" in chart.caption and "of 10,000 recorded steps" in chart.caption


# ---- SVG for the page ------------------------------------------------------------------------------
def test_svg_is_inline_ready_with_escaped_names_and_titles() -> None:
    charts = F.report_charts(small_record())
    assert set(charts) >= {"grad-heatmap", "total-norm", "grad-flow", "clipping", "curves", "timings"}
    for key, chart in charts.items():
        tips = dict(chart.tips)
        svg = F.to_svg(chart, f"{key}-")
        assert svg.startswith("<svg ") and svg.endswith("</svg>")
        assert "http" not in svg and "xmlns" not in svg and "<!--" not in svg and "<?xml" not in svg
        assert HOSTILE not in svg and "<script" not in svg
        assert svg.count("<title>") == len(tips)
        ids = set(re.findall(r'\bid="([^"]+)"', svg))
        assert all(i.startswith(f"{key}-") for i in ids)
        refs = re.findall(r'url\(#([^)]+)\)|href="#([^"]+)"', svg)
        assert all((a or b) in ids for a, b in refs)    # every reference stays inside the figure
    flow = F.to_svg(F.gradient_flow_figure(small_record()), "f-")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in flow        # the hostile name, as text


def test_importing_gradscope_reports_does_not_import_matplotlib() -> None:
    code = ("import sys, gradscope, gradscope.reports.html, gradscope.reports.figures, "
            "gradscope.reports.compare; bad = [m for m in ('matplotlib', 'seaborn') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("rows", [[["x", None]], "garbage", [[1.0, 2.0]] * 3], ids=["junk", "string", "short"])
def test_malformed_probe_data_gives_a_figure_or_none_never_a_crash(rows: object) -> None:
    record = {"probes": {"grad_norm": {"layers": ["a", "b"], "steps": "nope", "layer_norms": rows,
                                       "total_norm": rows if isinstance(rows, str) else [1, "x"]}}}
    for build in (F.grad_norm_heatmap, F.total_norm_figure, F.gradient_flow_figure):
        chart = build(record)
        if chart is not None:
            F.to_svg(chart, "x-")
