"""Figures: the aggregation maths against plain NumPy, each figure showing the record's numbers,
and SVG that is safe to inline (no URLs, escaped names, unique ids, hover titles)."""
from __future__ import annotations

import math
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from gradscope.errors import RecordError
from gradscope.records import (
    ActivationGradRecord,
    ClippingRecord,
    Curves,
    GradNormRecord,
    RunRecord,
    TensorGradRecord,
    TimingRecord,
    TimingSummary,
    UpdateRatioRecord,
)
from gradscope.reports import charts as C
from gradscope.reports import figures as F
from gradscope.thresholds import Thresholds

HOSTILE = "<script>alert(1)</script>"


def _stats(rows: list[tuple[float, float]], count: int = 4) -> dict[str, list[Any]]:
    """Columnar statistics (one entry per layer) from (mean, max) pairs."""
    return {"count": [count] * len(rows), "min": [m / 2 for m, _ in rows], "max": [h for _, h in rows],
            "mean": [m for m, _ in rows], "first_nonfinite_step": [None] * len(rows)}


def small_json() -> dict[str, Any]:
    """A complete record as JSON: three layers (one hostile name) over four steps, with a zero, a
    NaN and an Inf among the layer norms, clipping, curves and timings."""
    layers = ["enc.0", HOSTILE, "head"]
    norms = [[0.1, 1.0, 10.0], [0.2, 2.0, 20.0], [0.0, "NaN", 30.0], [0.4, 4.0, "Infinity"]]
    return {
        "schema": "gradscope.record", "version": 2, "steps": 4,
        "probes": {
            "grad_norm": {"layers": layers, "steps": [0, 1, 2, 3], "total_norm": [1.0, 2.0, "NaN", 4.0],
                          "layer_norms": norms, "layer_stats": _stats([(0.2, 0.4), (2.0, 4.0), (20.0, 30.0)]),
                          "total_stats": {"count": 3, "min": 1.0, "max": 4.0, "mean": 7 / 3,
                                          "first_nonfinite_step": 2}},
            "clipping": {"calls": [{"step": s, "kind": "norm", "threshold": 1.5, "total_norm": t,
                                    "coefficient": min(1.0, 1.5 / t), "clipped_norm": min(t, 1.5), "acted": t > 1.5}
                                   for s, t in enumerate([1.0, 2.0, 3.0, 4.0])],
                         "summary": {"calls": 4, "norm_calls": 4, "clipped_fraction": 0.75,
                                     "rolling_clipped_fraction": [0, 0.5, 0.67, 0.75]}},
            "timing": {"columns": [], "steps": [], "ms": [], "summary": {
                "steps_measured": 10, "phases": {"forward": {"median_ms": 2.0, "p90_ms": 3.0, "mean_ms": 2.1},
                                                 HOSTILE: {"median_ms": 1.0, "p90_ms": 1.5, "mean_ms": 1.1}}}},
        },
        "curves": {"epoch": [-1, 0, 1], "train_loss": [None, 1.0, 0.5], "train_accuracy_percent": [None, 60, 80],
                   "test_loss": [2.0, 1.1, 0.6], "test_accuracy_percent": [10, 55, 75]},
    }


def small_record() -> RunRecord:
    return RunRecord.from_json(small_json())


def grad_of(run: RunRecord) -> GradNormRecord:
    grad = run.probe(GradNormRecord)
    assert grad is not None
    return grad


def timing_summary(run: RunRecord) -> TimingSummary:
    timing = run.probe(TimingRecord)
    assert timing is not None and timing.summary is not None
    return timing.summary


# ---- reading numbers (the typed reader) ---------------------------------------------------------
def _one_layer(total: Any, rows: Any = None, steps: Any = None) -> dict[str, Any]:
    n = len(total) if isinstance(total, list) else 1
    return {"schema": "gradscope.record", "version": 2, "probes": {"grad_norm": {
        "layers": ["fc"], "steps": list(range(n)) if steps is None else steps, "total_norm": total,
        "layer_norms": [[1.0]] * n if rows is None else rows}}}


def test_the_reader_takes_json_nonfinite_strings_and_missing_values() -> None:
    got = grad_of(RunRecord.from_json(_one_layer([1, None, "NaN", "Infinity", "-Infinity", 2.5]))).total_norm
    assert got.dtype == np.float64 and len(got) == 6
    assert got[0] == 1 and got[-1] == 2.5
    assert math.isnan(got[1]) and math.isnan(got[2])
    assert got[3] == math.inf and got[4] == -math.inf
    with pytest.raises(RecordError, match=r"record\.probes\.grad_norm\.total_norm\[5\] should be a number, "
                                          r"got the string 'junk'"):
        RunRecord.from_json(_one_layer([1, None, "NaN", "Infinity", "-Infinity", "junk"]))
    with pytest.raises(RecordError, match=r"record\.probes\.grad_norm\.total_norm should be a list of numbers, "
                                          r"got the string 'not a list'"):
        RunRecord.from_json(_one_layer("not a list", steps=[0]))


def test_the_reader_names_ragged_rows_and_a_wrong_width() -> None:
    body = _one_layer([1.0, 2.0, 3.0], rows=[[1, 2, 3], [4, "NaN"], [5]])
    body["probes"]["grad_norm"]["layers"] = ["a", "b", "c"]
    with pytest.raises(RecordError, match=r"grad_norm\.layer_norms\[1\] has 2 values where the rows before it have 3"):
        RunRecord.from_json(body)
    body = _one_layer([1.0], rows=[[1, 2, 3, 4]])
    body["probes"]["grad_norm"]["layers"] = ["a", "b"]
    with pytest.raises(RecordError, match=r"grad_norm\.layer_norms should be rows of 2 values \(one per layer\)"):
        RunRecord.from_json(body)
    body = _one_layer([1.0, 2.0], rows=[[4, "NaN"], [5, None]])
    body["probes"]["grad_norm"]["layers"] = ["a", "b"]
    got = grad_of(RunRecord.from_json(body)).layer_norms
    assert got.shape == (2, 2) and got[0, 0] == 4 and got[1, 0] == 5
    assert np.isnan(got[0, 1]) and np.isnan(got[1, 1])


def test_label_escapes_mathtext_and_shortens_long_names() -> None:
    assert C.label("cost $x$") == r"cost \$x\$"
    long = "a" * 30 + "MIDDLE" + "b" * 30
    short = C.label(long, limit=20)
    assert len(short) <= 21 and short.startswith("a") and short.endswith("b") and "…" in short
    assert "\n" not in C.label("two\nlines")


# ---- aggregation -------------------------------------------------------------------------------
def test_group_layers_keeps_small_models_as_they_are() -> None:
    groups = C.group_layers(["a", "b.c", "d"], max_groups=5)
    assert groups.labels == ["a", "b.c", "d"] and groups.members == [[0], [1], [2]]
    assert not groups.grouped


def test_group_layers_uses_the_finest_parent_that_fits() -> None:
    layers = [f"enc.blocks.{b}.layers.{i}" for b in range(6) for i in range(10)]
    groups = C.group_layers(layers, max_groups=10)
    assert len(groups.labels) == 6
    assert groups.labels[0] == "enc.blocks.0.layers (10 layers)"
    assert sorted(i for m in groups.members for i in m) == list(range(60))


def test_group_layers_gathers_runs_of_a_flat_model() -> None:
    layers = [str(i) for i in range(1000)]
    groups = C.group_layers(layers, max_groups=40)
    assert len(groups.labels) <= 40
    flat = [i for m in groups.members for i in m]
    assert flat == list(range(1000))          # every layer once, in order
    assert groups.labels[0].startswith("0 … ")


def test_group_norms_is_the_norm_of_the_groups_gradients() -> None:
    rng = np.random.default_rng(0)
    values = rng.random((5, 60))
    layers = [f"b.{j // 10}.l{j % 10}" for j in range(60)]
    groups = C.group_layers(layers, max_groups=8)
    got = C.group_norms(values, groups)
    expected = np.stack([np.sqrt((values[:, m] ** 2).sum(axis=1)) for m in groups.members], axis=1)
    np.testing.assert_allclose(got, expected)
    values[2, 5] = np.nan
    assert np.isnan(C.group_norms(values, groups)[2, 0])


def test_bucket_mean_and_envelope_match_plain_numpy() -> None:
    y = np.arange(1000, dtype=float) ** 0.5
    y[500] = 999.0
    env = C.envelope(np.arange(1000.0), y, max_points=100)
    assert env.reduced and len(env.x) == 100
    np.testing.assert_allclose(env.mean, y.reshape(100, 10).mean(axis=1))
    np.testing.assert_allclose(env.high, y.reshape(100, 10).max(axis=1))
    np.testing.assert_allclose(env.low, y.reshape(100, 10).min(axis=1))
    assert env.high.max() == 999.0            # a spike survives the averaging
    short = C.envelope(np.arange(5.0), y[:5], max_points=100)
    assert not short.reduced and short.mean.tolist() == y[:5].tolist()


# ---- figures show the record ----------------------------------------------------------------------
def test_heatmap_cells_are_log10_norms_with_nonfinite_masked() -> None:
    chart = F.grad_norm_heatmap(grad_of(small_record()))
    assert chart is not None
    mesh = chart.figure.axes[0].collections[0]
    cells = mesh.get_array().reshape(3, 4)       # rows: layers, columns: steps
    expected = np.log10(np.array([[0.1, 0.2, 1, 0.4], [1.0, 2.0, 1, 4.0], [10, 20, 30, 1]]))
    mask = np.ma.getmaskarray(cells)
    assert mask[0, 2] and mask[1, 2] and mask[2, 3]          # zero, NaN, Inf
    np.testing.assert_allclose(cells.filled(np.nan)[~mask], expected[~mask])
    assert "NaN/Inf" in chart.caption and "zero" in chart.caption


def test_total_norm_figure_plots_the_norms_and_the_clip_threshold() -> None:
    run = small_record()
    chart = F.total_norm_figure(grad_of(run), run.probe(ClippingRecord))
    assert chart is not None
    ax = chart.figure.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    y = np.asarray(lines["total norm"].get_ydata(), dtype=float)
    assert y[0] == 1.0 and y[1] == 2.0 and np.isnan(y[2]) and y[3] == 4.0
    assert list(lines["clip max_norm"].get_ydata()) == [1.5, 1.5]
    assert "1 step(s) with a non-finite norm" in chart.caption


def test_gradient_flow_bars_are_the_layer_statistics() -> None:
    chart = F.gradient_flow_figure(grad_of(small_record()))
    assert chart is not None
    ax = chart.figure.axes[0]
    heights = [round(p.get_height(), 6) for p in ax.patches if p.get_width() > 0]
    assert heights[:3] == [0.4, 4.0, 30.0] and heights[3:6] == [0.2, 2.0, 20.0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["enc.0", HOSTILE, "head"]


def test_curves_figure_plots_train_and_test_per_epoch() -> None:
    curves = small_record().curves
    assert curves is not None
    chart = F.curves_figure(curves)
    assert chart is not None
    loss_ax, acc_ax = chart.figure.axes
    lines = {line.get_label(): line for line in loss_ax.get_lines() if not line.get_label().startswith("_")}
    assert list(lines["test"].get_xdata()) == [0, 1, 2] and list(lines["test"].get_ydata()) == [2.0, 1.1, 0.6]
    assert list(lines["train"].get_xdata()) == [1, 2]        # no train loss before training
    assert acc_ax.get_title() == "accuracy (%)"


def test_figures_without_data_are_none() -> None:
    empty = [F.grad_norm_heatmap(GradNormRecord()), F.total_norm_figure(GradNormRecord(), ClippingRecord()),
             F.gradient_flow_figure(GradNormRecord()), F.activation_flow_figure(ActivationGradRecord()),
             F.activation_heatmap(ActivationGradRecord()), F.tensor_grad_figure(TensorGradRecord()),
             F.clipping_figure(ClippingRecord()), F.curves_figure(Curves()), F.timings_figure(TimingSummary()),
             F.update_ratio_figure(UpdateRatioRecord(), Thresholds())]
    assert empty == [None] * len(empty)
    minimal = RunRecord.from_json({"schema": "gradscope.record", "version": 2})
    assert F.compare_curves(minimal, minimal, ("a", "b")) is None
    assert F.compare_total_norm(minimal, minimal, ("a", "b")) is None
    # report_charts (every chart of a record at once) is gone: each section draws its own figures.


def test_large_heatmaps_stay_bounded() -> None:
    layers = [f"m.{i // 50}.l{i}" for i in range(2000)]
    steps = 10_000
    per_step = np.array([1.0 + ((s % 20) % 7) for s in range(steps)])
    # every layer of a step has the same norm: a read-only view keeps the test light
    norms = np.lib.stride_tricks.as_strided(per_step, shape=(steps, len(layers)), strides=(8, 0), writeable=False)
    grad = GradNormRecord(layers=layers, steps=list(range(steps)), total_norm=per_step, layer_norms=norms)
    grad.validate("grad_norm")                                   # a consistent record
    chart = F.grad_norm_heatmap(grad)
    assert chart is not None
    cells = chart.figure.axes[0].collections[0].get_array()
    assert cells.size <= C.MAX_GROUPS * C.MAX_COLUMNS
    assert "2000 layers shown as 40 groups" in chart.caption and "of 10,000 recorded steps" in chart.caption


# ---- SVG for the page ------------------------------------------------------------------------------
def small_charts() -> dict[str, C.Chart]:
    run = small_record()
    grad, clip = grad_of(run), run.probe(ClippingRecord)
    assert clip is not None and run.curves is not None
    built = [F.grad_norm_heatmap(grad), F.total_norm_figure(grad, clip), F.gradient_flow_figure(grad),
             F.clipping_figure(clip), F.curves_figure(run.curves), F.timings_figure(timing_summary(run))]
    return {chart.key: chart for chart in built if chart is not None}


def test_svg_is_inline_ready_with_escaped_names_and_titles() -> None:
    charts = small_charts()
    assert set(charts) == {"grad-heatmap", "total-norm", "grad-flow", "clipping", "curves", "timings"}
    for key, chart in charts.items():
        tips = dict(chart.tips)
        svg = C.to_svg(chart, f"{key}-")
        assert svg.startswith("<svg ") and svg.endswith("</svg>")
        assert "http" not in svg and "xmlns" not in svg and "<!--" not in svg and "<?xml" not in svg
        assert HOSTILE not in svg and "<script" not in svg
        assert svg.count("<title>") == len(tips)
        ids = set(re.findall(r'\bid="([^"]+)"', svg))
        assert all(i.startswith(f"{key}-") for i in ids)
        refs = re.findall(r'url\(#([^)]+)\)|href="#([^"]+)"', svg)
        assert all((a or b) in ids for a, b in refs)    # every reference stays inside the figure
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    flow = F.gradient_flow_figure(grad_of(small_record()))
    assert flow is not None and escaped in C.to_svg(flow, "f-")        # the hostile name, as text
    timings = F.timings_figure(timing_summary(small_record()))
    assert timings is not None and escaped in C.to_svg(timings, "t-")  # a hostile phase name too


def test_importing_gradscope_reports_does_not_import_matplotlib() -> None:
    code = ("import sys, gradscope, gradscope.records, gradscope.reports.html, gradscope.reports.figures, "
            "gradscope.reports.charts, gradscope.reports.compare; "
            "bad = [m for m in ('matplotlib', 'seaborn') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# Malformed probe data no longer reaches a figure: the reader stops it, naming the field.
@pytest.mark.parametrize(("field", "value", "message"), [
    ("steps", "nope", r"grad_norm\.steps should be a list, got the string 'nope'"),
    ("total_norm", [1, "x"], r"grad_norm\.total_norm\[1\] should be a number, got the string 'x'"),
    ("layer_norms", [["x", None], [1.0, 2.0]],
     r"grad_norm\.layer_norms\[0\]\[0\] should be a number, got the string 'x'"),
    ("layer_norms", "garbage", r"grad_norm\.layer_norms should be a list of rows of numbers, got the string 'garbage'"),
    ("layer_norms", [[1.0, 2.0]] * 3, r"grad_norm\.layer_norms should be 2 entries \(a row per step\)"),
], ids=["steps", "total", "junk", "string", "short"])
def test_malformed_probe_data_is_a_record_error_naming_the_field(field: str, value: object, message: str) -> None:
    body = {"schema": "gradscope.record", "version": 2, "probes": {"grad_norm": {
        "layers": ["a", "b"], "steps": [0, 1], "total_norm": [1, 2], "layer_norms": [[1.0, 2.0], [3.0, 4.0]]}}}
    grad = grad_of(RunRecord.from_json(body))          # the well-formed record draws
    for build in (F.grad_norm_heatmap, F.total_norm_figure):
        chart = build(grad)
        assert chart is not None
        C.to_svg(chart, "x-")
    body["probes"]["grad_norm"][field] = value
    with pytest.raises(RecordError, match=message):
        RunRecord.from_json(body)
