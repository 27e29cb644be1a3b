"""GS208: the update-ratio judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.update_ratio import judge_update_ratio
from gradscope.records import ModelInfo, RunRecord, UpdateRatioRecord
from gradscope.thresholds import Thresholds

NAN, INF = float("nan"), float("inf")


def ratio_record(columns: dict[str, Sequence[float]]) -> UpdateRatioRecord:
    """Sampled ratios per layer (every 50th step, as the probe samples by default)."""
    layers = list(columns)
    n = len(next(iter(columns.values()))) if columns else 0
    ratios = np.array([list(columns[layer]) for layer in layers], dtype=float).T.reshape(n, len(layers))
    return UpdateRatioRecord(layers=layers, steps=[50 * i for i in range(n)], ratios=ratios)


def judge(rec: UpdateRatioRecord, th: Thresholds | None = None) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name="Net"), steps=500, backwards=500, optimizers=["SGD"],
                    probes={"update_ratio": rec})
    return judge_update_ratio(rec, run, th or Thresholds())


def test_healthy_ratios_about_1e_3_have_no_finding() -> None:
    assert judge(ratio_record({"fc1": [1e-3, 2e-3, 8e-4], "fc2": [5e-4, 1e-3, 3e-3]})) == []


def test_an_empty_record_has_no_finding() -> None:
    assert judge(UpdateRatioRecord()) == []


@pytest.mark.parametrize(("median", "expected"), [
    pytest.param(0.99e-5, "small", id="a median just under 1e-5 is small"),
    pytest.param(1e-5, None, id="a median of exactly 1e-5 is healthy"),
    pytest.param(1.01e-5, None, id="a median just over 1e-5 is healthy"),
    pytest.param(0.099, None, id="a median just under 1e-1 is healthy"),
    pytest.param(0.1, None, id="a median of exactly 1e-1 is healthy"),
    pytest.param(0.101, "large", id="a median just over 1e-1 is large"),
])
def test_gs208_edges_of_the_healthy_band(median: float, expected: str | None) -> None:
    found = judge(ratio_record({"fc1": [1e-3] * 3, "fc2": [median / 2, median, median * 2]}))
    if expected is None:
        assert found == []
    else:
        (f,) = found
        assert (f.code, f.severity, f.where) == ("GS208", Severity.INFO, "fc2")
        assert f"this is {expected}, outside 1e-05..0.1" in f.message


def test_gs208_small_names_the_layer_the_median_and_the_samples() -> None:
    (f,) = judge(ratio_record({"fc1": [1e-3] * 4, "fc2": [1e-7, 2e-7, 3e-7, 1e-2]}))
    assert f.where == "fc2"
    assert "the median update-to-weight ratio of fc2 is 2e-07 over 4 sampled steps" in f.message
    assert f.message.endswith("it barely learns.")


@pytest.mark.parametrize(("column", "expected"), [
    pytest.param([1e-6, 1e-4], True, id="of an even number of samples the lower middle one is the median"),
    pytest.param([1e-4, 1e-6, 1e-3, 1e-7], True, id="the samples are sorted before the lower middle one is taken"),
    pytest.param([1e-4, 1e-6, 1e-3], False, id="of an odd number of samples the middle one is the median"),
])
def test_gs208_takes_the_lower_median_as_torch_median_does(column: list[float], expected: bool) -> None:
    assert bool(judge(ratio_record({"fc1": column}))) is expected


def test_gs208_large_says_each_step_rewrites_the_weights() -> None:
    (f,) = judge(ratio_record({"fc1": [0.5, 0.6, 0.7]}))
    assert "the median update-to-weight ratio of fc1 is 0.6 over 3 sampled steps" in f.message
    assert f.message.endswith("each step rewrites a large share of the weights.")


def test_gs208_one_finding_per_layer_outside_the_band() -> None:
    found = judge(ratio_record({"fc1": [1e-7] * 3, "fc2": [1e-3] * 3, "fc3": [0.9] * 3}))
    assert [(f.where, "small" in f.message) for f in found] == [("fc1", True), ("fc3", False)]


def test_gs208_edges_move_with_the_thresholds() -> None:
    rec = ratio_record({"fc1": [1e-4] * 3, "fc2": [0.05] * 3})
    assert judge(rec) == []
    assert [f.where for f in judge(rec, Thresholds(update_ratio_low=1e-3))] == ["fc1"]
    assert [f.where for f in judge(rec, Thresholds(update_ratio_high=0.01))] == ["fc2"]
    (f,) = judge(rec, Thresholds(update_ratio_low=1e-3))
    assert "outside 0.001..0.1" in f.message


@pytest.mark.parametrize("column", [
    pytest.param([0.0, 0.0, 0.0, 1e-3], id="zero ratios of a layer that did not move are not counted"),
    pytest.param([NAN, NAN, 1e-3], id="NaN ratios of a layer with zero weights are not counted"),
    pytest.param([0.0, NAN, 1e-3, 2e-3, 1e-3], id="zeros and NaN together are not counted"),
])
def test_gs208_ignores_zero_and_nan_ratios(column: list[float]) -> None:
    assert judge(ratio_record({"fc1": column})) == []


@pytest.mark.parametrize("column", [
    pytest.param([0.0, 0.0, 0.0], id="a layer that never moved belongs to GS305 or GS302"),
    pytest.param([NAN, NAN], id="a layer whose weights stayed zero has no ratio"),
    pytest.param([0.0, NAN, INF], id="no finite non-zero ratio at all"),
])
def test_gs208_is_quiet_for_a_layer_without_any_usable_ratio(column: list[float]) -> None:
    assert judge(ratio_record({"fc1": column})) == []


def test_gs208_the_median_is_over_the_usable_ratios_only() -> None:
    # mostly zeros: counted, the median would be 0; without them it is 1e-7, which is small
    (f,) = judge(ratio_record({"fc1": [0.0] * 5 + [NAN] + [1e-7] * 3}))
    assert "is 1e-07 over 3 sampled steps" in f.message


def test_an_update_ratio_record_read_back_is_judged_the_same() -> None:
    rec = ratio_record({"fc1": [1e-7, NAN, 0.0], "fc2": [1e-3] * 3})
    again = UpdateRatioRecord.from_json(rec.to_json())
    assert judge(again) == judge(rec) != []
    assert again.unjudged() == frozenset()
