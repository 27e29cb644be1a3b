"""GS503: the zero-grad judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.zero_grad import judge_zero_grad
from gradscope.records import ModelInfo, RunRecord, ZeroGradRecord
from gradscope.thresholds import Thresholds

ROOT = "Net"


def judge(rec: ZeroGradRecord) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name=ROOT), steps=rec.steps_checked, backwards=rec.steps_checked,
                    probes={"zero_grad": rec})
    return judge_zero_grad(rec, run, Thresholds())


@pytest.mark.parametrize("rec", [
    pytest.param(ZeroGradRecord(watched_parameter="fc.weight", steps_checked=50),
                 id="a loop that zeroes the gradients every step is quiet"),
    pytest.param(ZeroGradRecord(watched_parameter="fc.weight", steps_checked=0),
                 id="a run with no step checked is quiet"),
])
def test_no_stale_gradient_has_no_finding(rec: ZeroGradRecord) -> None:
    assert judge(rec) == []


def test_gs503_names_the_watched_parameter_and_the_first_stale_step() -> None:
    rec = ZeroGradRecord(watched_parameter="encoder.0.weight", steps_checked=50, steps_with_stale_gradients=49,
                         first_stale_step=1)
    (f,) = judge(rec)
    assert (f.code, f.severity, f.where) == ("GS503", Severity.WARNING, ROOT)
    assert "at 49 of 50 steps (first at step 1) the gradient of the previous steps was still in .grad" in f.message
    assert "(seen on encoder.0.weight)" in f.message


@pytest.mark.parametrize(("stale", "first"), [
    pytest.param(1, 37, id="a single stale step is enough"),
    pytest.param(50, 0, id="a loop that never zeroes the gradients"),
])
def test_gs503_counts_every_stale_step(stale: int, first: int) -> None:
    (f,) = judge(ZeroGradRecord(watched_parameter="w", steps_checked=50, steps_with_stale_gradients=stale,
                                first_stale_step=first))
    assert f"at {stale} of 50 steps (first at step {first})" in f.message


def test_gs503_without_the_first_stale_step_leaves_it_out() -> None:
    # a version-1 record has no first_stale_step
    rec = ZeroGradRecord.from_json({"watched_parameter": "fc.weight", "steps_checked": 10,
                                    "steps_with_stale_gradients": 9})
    # GS503 needs no more than a version-1 record holds; GS511's evidence came later
    assert rec.first_stale_step is None and rec.unjudged() == frozenset({"GS511"})
    (f,) = judge(rec)
    assert "at 9 of 10 steps the gradient" in f.message and "first at step" not in f.message
    assert "(seen on fc.weight)" in f.message


def _accumulating(steps: int, emptied: int) -> ZeroGradRecord:
    return ZeroGradRecord(watched_parameter="fc.bias", steps_checked=steps, steps_with_stale_gradients=0,
                          accumulation_steps=steps, emptied_accumulation_steps=emptied,
                          first_emptied_step=1 if emptied else None)


@pytest.mark.parametrize(("steps", "emptied", "flagged"), [
    (8, 8, True), (8, 4, True), (8, 3, False), (1, 1, False), (0, 0, False),
], ids=["every-accumulation-step-emptied", "half-of-them", "under-half", "a-single-step-is-no-pattern",
        "no-accumulation"])
def test_gs511_zero_grad_before_every_micro_batch(steps: int, emptied: int, flagged: bool) -> None:
    found = [f for f in judge(_accumulating(steps, emptied)) if f.code == "GS511"]
    assert bool(found) is flagged
    if flagged:
        assert found[0].where == ROOT and "accumulation does nothing" in found[0].message
        assert f"{emptied} of {steps} accumulation steps" in found[0].message
