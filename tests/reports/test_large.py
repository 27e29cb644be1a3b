"""The report of a 10,000-tensor model: a page under 15 MB that shows the worst layers first,
from a record in memory or read back from its JSON and side file (``gradscope report``,
``compare``). Speed is measured in ``benchmarks/bench_record.py``, not here."""
from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from gradscope.cli import main
from gradscope.findings import Finding, Severity
from gradscope.records import GradNormRecord, ModelInfo, RunRecord, Stats, StatsTable, load_record, write_record
from gradscope.records.io import side_path
from gradscope.reports.html import (
    EMBED_MAX_FINDINGS,
    EMBED_MAX_LAYERS,
    EMBED_MAX_PARAMETERS,
    PAGE_MAX_FINDINGS,
    render_html,
)
from gradscope.reports.sections.grad_norm import SHOWN_ROWS, WORST_SHOWN

PAGE_LIMIT = 15 * 1024 * 1024
TENSORS, ROWS = 10_000, 2_048
NAN_LAYER, NAMED_LAYER, EMPTY_LAYER = "blocks.7.fc3", "blocks.12.fc40", "blocks.45.fc7"
VANISHING_LAYER, EXPLODING_LAYER = "blocks.33.fc1", "blocks.20.fc50"
WORST = [NAN_LAYER, NAMED_LAYER, EMPTY_LAYER, VANISHING_LAYER, EXPLODING_LAYER]   # in the order shown


def stats_of(values: np.ndarray, steps: list[int]) -> StatsTable:
    """Exact statistics of each column over finite values, with the first non-finite step."""
    finite = np.isfinite(values)
    count = finite.sum(axis=0)
    clean = np.where(finite, values, 0.0)
    with np.errstate(invalid="ignore"):
        mean = np.where(count > 0, clean.sum(axis=0) / np.maximum(count, 1), np.nan)
    low = np.where(count > 0, np.where(finite, values, np.inf).min(axis=0), np.nan)
    high = np.where(count > 0, np.where(finite, values, -np.inf).max(axis=0), np.nan)
    bad = ~finite
    first = [steps[int(np.argmax(bad[:, j]))] if bad[:, j].any() and count[j] else None
             for j in range(values.shape[1])]
    return StatsTable(count=count.tolist(), min=low, max=high, mean=mean, first_nonfinite_step=first)


def large_run(tensors: int = TENSORS, rows: int = ROWS, findings: list[Finding] | None = None) -> RunRecord:
    """A 10,000-tensor model (5,000 layers of weight and bias) with five bad layers among healthy
    ones: NaN from step 400, one named by a finding, one that never got a value, one vanishing
    (1e-12) and one exploding (1e6). A smaller model has those of them it has layers for."""
    rng = np.random.default_rng(0)
    layers = [f"blocks.{i // 100}.fc{i % 100}" for i in range(tensors // 2)]
    params = [f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")]
    steps = list(range(0, 4 * rows, 4))
    norms = (10 ** rng.normal(-2, 0.3, (rows, tensors))).astype(np.float32).astype(np.float64)
    at = {name: 2 * layers.index(name) for name in WORST if name in layers}
    if NAN_LAYER in at:
        norms[min(100, rows - 1):, at[NAN_LAYER]] = np.nan
    if EMPTY_LAYER in at:
        norms[:, at[EMPTY_LAYER]: at[EMPTY_LAYER] + 2] = np.nan
    if VANISHING_LAYER in at:
        norms[:, at[VANISHING_LAYER]: at[VANISHING_LAYER] + 2] = 1e-12
    if EXPLODING_LAYER in at:
        norms[rows // 2, at[EXPLODING_LAYER]] = 1e6
    layer_norms = np.sqrt(norms[:, 0::2] ** 2 + norms[:, 1::2] ** 2)
    with np.errstate(invalid="ignore"):
        total = np.sqrt((layer_norms ** 2).sum(axis=1))
    total_stats = stats_of(total[:, None], steps).row(0)
    layer_stats = stats_of(layer_norms, steps)
    if EMPTY_LAYER in at:   # never a value: no count and no first non-finite step
        layer_stats.first_nonfinite_step[layers.index(EMPTY_LAYER)] = None
    grad = GradNormRecord(parameters=params, layers=layers, parameter_layer=[i // 2 for i in range(tensors)],
                          backward_order=params[::-1], steps=steps, stride=4, total_norm=total,
                          layer_norms=layer_norms, parameter_norms=norms, parameter_stats=stats_of(norms, steps),
                          layer_stats=layer_stats,
                          total_stats=Stats(total_stats.count, total_stats.min, total_stats.max, total_stats.mean,
                                            total_stats.first_nonfinite_step),
                          no_gradient=[], steps_seen=4 * rows)
    named = [Finding("GS203", Severity.WARNING, NAMED_LAYER, "its gradient norm falls away", "look at it")]
    return RunRecord(steps=4 * rows, backwards=4 * rows, model=ModelInfo("Wide", 10**9, 10**9, "cuda:0"),
                     findings=named + (findings or []), probes={"grad_norm": grad})


@pytest.fixture(scope="module")
def run() -> RunRecord:
    return large_run()


@pytest.fixture(scope="module")
def page(run: RunRecord) -> str:
    return render_html(run)


def table_names(page: str, table_id: str) -> list[str]:
    """The first cell of each row of a table, in page order."""
    found = re.search(rf'<table class="sortable" id="table-{table_id}">(.*?)</table>', page, re.S)
    assert found, f"no table {table_id}"
    return [unescape(m) for m in re.findall(r"<tr[^>]*>\s*<td[^>]*>([^<]*)</td>", found.group(1))]


def embedded(page: str) -> Any:
    found = re.search(r'<script type="application/json" id="gradscope-record">(.*?)</script>', page, re.S)
    assert found
    return json.loads(found.group(1))


def test_the_page_of_a_10000_tensor_model_stays_small(page: str) -> None:
    assert len(page.encode("utf-8")) < PAGE_LIMIT
    assert "could not be drawn" not in page


def test_the_worst_layers_come_first_in_the_layer_table(page: str) -> None:
    names = table_names(page, "layer-stats")
    assert names[: len(WORST)] == WORST
    assert len(names) == SHOWN_ROWS and "worst of 5,000 layers" in page


def test_the_worst_parameters_come_first_in_the_parameter_table(page: str) -> None:
    names = table_names(page, "parameter-stats")
    assert names[0] == f"{NAN_LAYER}.weight"
    assert {f"{NAMED_LAYER}.weight", f"{NAMED_LAYER}.bias", f"{EMPTY_LAYER}.weight",
            f"{VANISHING_LAYER}.bias", f"{EXPLODING_LAYER}.weight"} <= set(names[:8])
    assert len(names) == SHOWN_ROWS


def test_the_worst_layers_have_their_own_heatmap(page: str) -> None:
    figure = re.search(r'<figure id="fig-grad-worst-heatmap">(.*?)</figure>', page, re.S)
    assert figure and f"The {WORST_SHOWN} worst of 5,000 layers" in figure.group(1)
    labels = [unescape(t) for t in re.findall(r"<title>([^<:]*): mean log10 norm", figure.group(1))]
    assert labels[: len(WORST)] == WORST


def test_the_embedded_record_is_trimmed_to_the_worst_columns(page: str) -> None:
    data = embedded(page)
    grad = data["probes"]["grad_norm"]
    assert len(grad["layers"]) <= EMBED_MAX_LAYERS and len(grad["parameters"]) <= EMBED_MAX_PARAMETERS
    assert set(WORST) <= set(grad["layers"]) and grad.get("parameter_norms") is None
    trimmed = RunRecord.from_json(data)                       # still a consistent record
    assert trimmed.probe(GradNormRecord) is not None
    assert any("layers and" in note for note in data["report_trimmed"])


def test_the_written_pair_renders_the_same_page_through_the_command_line(run: RunRecord, page: str,
                                                                         tmp_path: Path) -> None:
    path = write_record(run, tmp_path / "run.json")
    assert side_path(path).is_file()
    result = CliRunner().invoke(main, ["report", str(path), "-o", str(tmp_path / "report.html")],
                                terminal_width=100)
    assert result.exit_code == 0, result.output
    again = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert len(again.encode("utf-8")) < PAGE_LIMIT
    assert table_names(again, "layer-stats")[: len(WORST)] == WORST
    # compare reads both forms: the large pair against a small single JSON
    small = write_record(large_run(tensors=20, rows=30), tmp_path / "small.json")
    assert not side_path(small).exists()
    result = CliRunner().invoke(main, ["compare", str(small), str(path), "-o", str(tmp_path / "c.html")],
                                terminal_width=100)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "c.html").stat().st_size < 2 * PAGE_LIMIT


def test_a_missing_side_file_is_one_line_from_the_command_line(tmp_path: Path) -> None:
    path = write_record(large_run(tensors=2_000, rows=300), tmp_path / "run.json")
    side_path(path).unlink()
    result = CliRunner().invoke(main, ["report", str(path)], terminal_width=100)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "run.npz, which is missing" in " ".join(result.output.split())


def test_thousands_of_findings_of_one_code_are_counted_not_listed(tmp_path: Path) -> None:
    many = [Finding("GS202", Severity.WARNING, f"blocks.{i // 100}.fc{i % 100}.bias",
                    "the gradient was exactly zero at all observed steps", "check for dead activations")
            for i in range(3_000)]
    record = large_run(tensors=6_000, rows=8, findings=many)
    page = render_html(record)
    listed = re.findall(r'<li class="warning" data-code="GS202">', page)
    # the verdict and the gradient section each list at most PAGE_MAX_FINDINGS and one line for the rest
    assert 0 < len(listed) <= 2 * (PAGE_MAX_FINDINGS + 1)
    assert "2,980 more GS202 findings like these, 3,000 in all" in page
    assert re.search(r'<span class="count warning">3001 warnings</span>', page)
    data = embedded(page)
    assert sum(f["code"] == "GS202" for f in data["findings"]) == EMBED_MAX_FINDINGS
    assert load_record(write_record(record, tmp_path / "run.json")).findings == record.findings  # all on disk
