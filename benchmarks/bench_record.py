"""How big the record and the page of a very wide model get, and how long they take.

The record: 10,000 parameter tensors in 5,000 layers with 2,048 kept steps (what the engine keeps
by default after 8,192 steps at stride 4): 20.5 million per-parameter and 10.2 million per-layer
numbers, with a NaN layer, a vanishing one and an exploding one among them. Measured:

- ``write_record``: the budgeted JSON + ``.npz`` pair, its sizes and the time to write and read it;
- ``render_html`` of the record in memory (what ``gradscope run`` renders) and of the record read
  back (what ``gradscope report`` renders): seconds and megabytes;
- the same page for 100,000 tensors (200 kept steps): the page must not grow with the model.

Targets: the page under 15 MB and 30 s, the record's arrays within ``PARAMETER_VALUES`` +
``STEP_VALUES`` numbers. Run:
``python -m pytest benchmarks/bench_record.py -o python_files="bench_*.py" --benchmark-only -s``.
"""
from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from gradscope.records import GradNormRecord, ModelInfo, RunRecord, Stats, StatsTable, load_record, write_record
from gradscope.records.budget import PARAMETER_VALUES, STEP_VALUES
from gradscope.records.io import side_path
from gradscope.reports.html import render_html

PAGE_SECONDS = 30.0
PAGE_BYTES = 15 * 1024 * 1024
BAD = ("blocks.7.fc3", "blocks.33.fc1", "blocks.20.fc50")   # NaN, vanishing, exploding


def wide_record(tensors: int = 10_000, rows: int = 2_048) -> RunRecord:
    rng = np.random.default_rng(0)
    layers = [f"blocks.{i // 100}.fc{i % 100}" for i in range(tensors // 2)]
    params = [f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")]
    steps = list(range(0, 4 * rows, 4))
    norms = (10 ** rng.normal(-2, 0.3, (rows, tensors))).astype(np.float32).astype(np.float64)
    nan, vanishing, exploding = (2 * layers.index(n) for n in BAD)
    norms[rows // 4:, nan] = np.nan
    norms[:, vanishing:vanishing + 2] = 1e-12
    norms[rows // 2, exploding] = 1e6
    layer_norms = np.sqrt(norms[:, 0::2] ** 2 + norms[:, 1::2] ** 2)
    total = np.sqrt(np.nansum(layer_norms ** 2, axis=1))

    def stats(values: np.ndarray) -> StatsTable:
        finite = np.isfinite(values)
        first = [steps[int(np.argmax(~finite[:, j]))] if not finite[:, j].all() else None
                 for j in range(values.shape[1])]
        with np.errstate(invalid="ignore"):
            return StatsTable(count=finite.sum(axis=0).tolist(), min=np.nanmin(values, axis=0),
                              max=np.nanmax(values, axis=0), mean=np.nanmean(values, axis=0),
                              first_nonfinite_step=first)

    grad = GradNormRecord(parameters=params, layers=layers, parameter_layer=[i // 2 for i in range(tensors)],
                          backward_order=params[::-1], steps=steps, stride=4, total_norm=total,
                          layer_norms=layer_norms, parameter_norms=norms, parameter_stats=stats(norms),
                          layer_stats=stats(layer_norms),
                          total_stats=Stats(rows, float(total.min()), float(total.max()), float(total.mean()), None),
                          no_gradient=[], steps_seen=4 * rows)
    return RunRecord(steps=4 * rows, backwards=4 * rows, model=ModelInfo("Wide", 10**9, 10**9, "cuda:0"),
                     probes={"grad_norm": grad})


@pytest.fixture(scope="module")
def record() -> RunRecord:
    return wide_record()


def _timed(benchmark: Any, run: Callable[[], Any]) -> tuple[float, Any]:
    out: list[tuple[float, Any]] = []

    def once() -> None:
        started = time.perf_counter()
        value = run()
        out.append((time.perf_counter() - started, value))

    benchmark.pedantic(once, rounds=1, iterations=1)
    return out[-1]


def _check_page(page: str) -> None:
    found = re.search(r'<table class="sortable" id="table-layer-stats">(.*?)</table>', page, re.S)
    assert found, "no layer table"
    first = re.findall(r"<tr[^>]*>\s*<td[^>]*>([^<]*)</td>", found.group(1))[:3]
    assert first == [BAD[0], BAD[1], BAD[2]], first   # the worst layers first
    assert "could not be drawn" not in page


def test_write_and_read_the_record(benchmark: Any, record: RunRecord, tmp_path: Path) -> None:
    seconds, path = _timed(benchmark, lambda: write_record(record, tmp_path / "run.json"))
    json_mb, npz_mb = path.stat().st_size / 1e6, side_path(path).stat().st_size / 1e6
    started = time.perf_counter()
    loaded = load_record(path)
    read = time.perf_counter() - started
    grad = loaded.probe(GradNormRecord)
    assert grad is not None and grad.parameter_norms is not None
    kept = grad.parameter_norms.size + grad.layer_norms.size + grad.total_norm.size
    assert kept <= PARAMETER_VALUES + STEP_VALUES
    benchmark.extra_info.update(write_s=round(seconds, 2), read_s=round(read, 2), json_mb=round(json_mb, 2),
                                npz_mb=round(npz_mb, 2), kept_values=kept)
    print(f"\nrecord of 10,000 tensors x 2,048 steps: written in {seconds:.2f} s, read in {read:.2f} s; "
          f"run.json {json_mb:.2f} MB + run.npz {npz_mb:.2f} MB; {kept:,} per-step values kept "
          f"(layer rows {grad.layer_norms.shape[0]:,}, parameter rows {grad.parameter_norms.shape[0]:,})")


@pytest.mark.parametrize("source", ["memory", "read back"])
def test_render_the_page(benchmark: Any, record: RunRecord, tmp_path: Path, source: str) -> None:
    run = record if source == "memory" else load_record(write_record(record, tmp_path / "run.json"))
    render_html(RunRecord(steps=1))   # imports and templates, outside the timing
    seconds, page = _timed(benchmark, lambda: render_html(run))
    _check_page(page)
    size = len(page.encode("utf-8"))
    benchmark.extra_info.update(seconds=round(seconds, 2), megabytes=round(size / 1e6, 2))
    print(f"\npage of 10,000 tensors x 2,048 steps ({source}): {seconds:.2f} s, {size / 1e6:.2f} MB "
          f"(targets {PAGE_SECONDS:.0f} s, {PAGE_BYTES / 1e6:.1f} MB)")
    assert seconds < PAGE_SECONDS and size < PAGE_BYTES


def test_render_the_page_of_100000_tensors(benchmark: Any) -> None:
    run = wide_record(tensors=100_000, rows=200)
    render_html(RunRecord(steps=1))
    seconds, page = _timed(benchmark, lambda: render_html(run))
    _check_page(page)
    size = len(page.encode("utf-8"))
    benchmark.extra_info.update(seconds=round(seconds, 2), megabytes=round(size / 1e6, 2))
    print(f"\npage of 100,000 tensors x 200 steps: {seconds:.2f} s, {size / 1e6:.2f} MB")
    assert seconds < PAGE_SECONDS and size < PAGE_BYTES
