"""Bounded host storage: exact running statistics and evenly thinned per-step rows."""
from __future__ import annotations

import math

import pytest
import torch

from gradscope.series import DecimatedSeries, RunningStats


def _rows(steps: list[int], width: int = 3) -> torch.Tensor:
    """A row per step whose values can be recomputed from the step: row[s, j] = s * 10 + j."""
    return torch.tensor([[s * 10.0 + j for j in range(width)] for s in steps], dtype=torch.float64)


def _feed(series: DecimatedSeries, stats: RunningStats | None, steps: list[int], chunk: int) -> None:
    for i in range(0, len(steps), chunk):
        part = steps[i:i + chunk]
        series.append(part, _rows(part, series.width))
        if stats is not None:
            stats.update(part, _rows(part, stats.width))
        assert len(series.steps) <= series.max_rows
        assert series.values().shape == (len(series.steps), series.width)


def test_running_stats_are_exact_over_all_rows() -> None:
    g = torch.Generator().manual_seed(0)
    data = torch.randn(37, 4, generator=g, dtype=torch.float64).abs()
    stats = RunningStats(4)
    for start in range(0, 37, 5):
        stats.update(list(range(start, min(start + 5, 37))), data[start:start + 5])
    assert stats.count.tolist() == [37] * 4
    torch.testing.assert_close(stats.mean(), data.mean(0), rtol=1e-12, atol=0)
    assert torch.equal(stats.minimum, data.amin(0))
    assert torch.equal(stats.maximum, data.amax(0))
    assert stats.first_nonfinite_step == [None] * 4


def test_running_stats_ignore_nonfinite_values_and_note_the_first_step() -> None:
    stats = RunningStats(3)
    nan, inf = float("nan"), float("inf")
    stats.update([0, 1], torch.tensor([[1.0, 2.0, 3.0], [5.0, nan, 1.0]], dtype=torch.float64))
    stats.update([2, 3], torch.tensor([[3.0, 4.0, inf], [nan, 6.0, -inf]], dtype=torch.float64))
    assert stats.count.tolist() == [3, 3, 2]
    assert stats.mean().tolist() == pytest.approx([3.0, 4.0, 2.0])
    assert stats.minimum.tolist() == [1.0, 2.0, 1.0]
    assert stats.maximum.tolist() == [5.0, 6.0, 3.0]
    assert stats.first_nonfinite_step == [3, 1, 2]


def test_running_stats_table_leaves_unseen_columns_empty() -> None:
    stats = RunningStats(2)
    stats.update([4], torch.tensor([[2.0, float("nan")]], dtype=torch.float64))
    table = stats.table()
    assert table.row(0).to_json() == {"count": 1, "min": 2.0, "max": 2.0, "mean": 2.0, "first_nonfinite_step": None}
    assert table.row(1).to_json() == {"count": 0, "min": None, "max": None, "mean": None, "first_nonfinite_step": 4}


def test_running_stats_ignore_an_empty_update() -> None:
    stats = RunningStats(2)
    stats.update([], torch.zeros(0, 2, dtype=torch.float64))
    assert stats.count.tolist() == [0, 0]


def test_series_keeps_everything_below_the_limit() -> None:
    s = DecimatedSeries(3, max_rows=100)
    _feed(s, None, list(range(60)), chunk=7)
    assert s.steps == list(range(60)) and s.stride == 1
    assert torch.equal(s.values(), _rows(list(range(60))))


@pytest.mark.parametrize("chunk", [1, 10, 100, 1000], ids=["flush-1", "flush-10", "flush-100", "flush-1000"])
def test_series_thins_evenly_and_stays_bounded(chunk: int) -> None:
    s = DecimatedSeries(3, max_rows=64)
    steps = list(range(5000))
    _feed(s, None, steps, chunk)
    assert 32 < len(s.steps) <= 64
    gaps = {b - a for a, b in zip(s.steps, s.steps[1:])}
    assert gaps == {s.stride}, "kept steps are evenly spaced"
    assert s.steps[0] == 0 and s.steps[-1] > 5000 - 2 * s.stride, "the kept steps span the whole run"
    assert torch.equal(s.values(), _rows(s.steps)), "each kept row is the row of its step"


def test_series_thins_sparse_steps_without_losing_them() -> None:
    # A tensor probed every 10th step, starting at step 5: the steps are all odd.
    s = DecimatedSeries(2, max_rows=16)
    steps = list(range(5, 2000, 10))
    _feed(s, None, steps, chunk=3)
    assert 8 < len(s.steps) <= 16
    gaps = {b - a for a, b in zip(s.steps, s.steps[1:])}
    assert len(gaps) == 1, f"kept steps are evenly spaced, got gaps {sorted(gaps)}"
    assert s.steps[0] == 5
    assert torch.equal(s.values(), _rows(s.steps, 2))


def test_running_stats_stay_exact_after_thinning() -> None:
    s = DecimatedSeries(3, max_rows=32)
    stats = RunningStats(3)
    steps = list(range(1000))
    _feed(s, stats, steps, chunk=50)
    assert len(s.steps) <= 32
    everything = _rows(steps)
    assert stats.count.tolist() == [1000] * 3
    torch.testing.assert_close(stats.mean(), everything.mean(0), rtol=1e-12, atol=0)
    assert stats.maximum.tolist() == everything.amax(0).tolist()
    assert stats.minimum.tolist() == [0.0, 1.0, 2.0]
    assert not math.isnan(float(stats.mean()[0]))


def test_empty_series_has_an_empty_table() -> None:
    s = DecimatedSeries(4)
    assert s.values().shape == (0, 4) and s.steps == []
