"""GS401-GS407: the clipping judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.clipping import MIN_CALLS_FOR_RATE, judge_clipping, persistent
from gradscope.records import ClipCall, ClipEvent, ClippingRecord, ClipSummary, ModelInfo, RunRecord, load_record
from gradscope.thresholds import Thresholds

ROOT = "Net"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records_v1"
NAN, INF = float("nan"), float("inf")


# ---- builders ------------------------------------------------------------------------------------
def norm_call(step: int, total: float, threshold: float = 1.0) -> ClipCall:
    """A clip_grad_norm_ call as the probe records it (``acted``: the norm was over the limit)."""
    coefficient = min(1.0, threshold / (total + 1e-6))
    return ClipCall(step=step, kind="norm", threshold=threshold, total_norm=total, coefficient=coefficient,
                    clipped_norm=total * coefficient, acted=total > threshold)


def norm_calls(totals: Sequence[float], threshold: float = 1.0) -> list[ClipCall]:
    return [norm_call(i, t, threshold) for i, t in enumerate(totals)]


def value_call(step: int, saturated: float, threshold: float = 0.01) -> ClipCall:
    return ClipCall(step=step, kind="value", threshold=threshold, saturated=saturated)


def acting(acted: int, calls: int, threshold: float = 1.0) -> list[ClipCall]:
    """``calls`` norm calls of which the first ``acted`` were over the limit."""
    return norm_calls([2.0] * acted + [0.5] * (calls - acted), threshold)


def clip_record(calls: Sequence[ClipCall] = (), *, misplaced: Sequence[ClipEvent] = (),
                scaled: Sequence[ClipEvent] = (), micro: Sequence[ClipEvent] = (),
                clip_steps: int | None = None) -> ClippingRecord:
    calls = list(calls)
    norm = [c for c in calls if c.acted is not None]
    summary = ClipSummary(calls=len(calls), norm_calls=len(norm),
                          clipped_fraction=sum(bool(c.acted) for c in norm) / len(norm) if norm else None)
    steps = clip_steps if clip_steps is not None else len({c.step for c in calls})
    return ClippingRecord(calls=calls, summary=summary, misplaced=list(misplaced), scaled=list(scaled),
                          per_micro_batch=list(micro), clip_steps=steps)


def judge(rec: ClippingRecord, th: Thresholds | None = None, *, grad_scaler: bool | None = False) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name=ROOT), steps=20, backwards=20, optimizers=["SGD"],
                    grad_scaler=grad_scaler, probes={"clipping": rec})
    return judge_clipping(rec, run, th or Thresholds())


def codes(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def test_clipping_that_catches_a_few_spikes_has_no_finding() -> None:
    assert judge(clip_record(acting(5, 20))) == []


def test_a_run_that_never_clipped_has_no_finding() -> None:
    assert judge(ClippingRecord(misplaced=[], scaled=[], per_micro_batch=[], clip_steps=0)) == []


# ---- GS403 ---------------------------------------------------------------------------------------
BEFORE = "before this step's backward() (the gradients were just zeroed)"


def test_gs403_names_the_function_the_first_step_and_how_often() -> None:
    events = [ClipEvent(3, "clip_grad_norm_", BEFORE), ClipEvent(4, "clip_grad_norm_", BEFORE)]
    (f,) = judge(clip_record(acting(0, 2), misplaced=events))
    assert (f.code, f.severity, f.where) == ("GS403", Severity.ERROR, "clip_grad_norm_")
    assert f"clip_grad_norm_ ran {BEFORE} at step 3 (2 time(s) in all)" in f.message


def test_gs403_is_quiet_when_every_clip_had_fresh_gradients() -> None:
    assert codes(judge(clip_record(acting(1, 4), misplaced=[])), "GS403") == []


# ---- GS406 ---------------------------------------------------------------------------------------
def test_gs406_names_the_function_the_first_step_and_how_often() -> None:
    events = [ClipEvent(s, "clip_grad_value_", "before scaler.unscale_(optimizer)") for s in (2, 3, 4)]
    (f,) = judge(clip_record(misplaced=[], scaled=events), grad_scaler=True)
    assert (f.code, f.severity, f.where) == ("GS406", Severity.ERROR, "clip_grad_value_")
    assert "still multiplied by the GradScaler's scale at step 2 (3 time(s))" in f.message


def test_gs406_is_quiet_when_the_gradients_were_unscaled_first() -> None:
    assert codes(judge(clip_record(acting(1, 4), scaled=[]), grad_scaler=True), "GS406") == []


# ---- GS407 ---------------------------------------------------------------------------------------
def micro_events(n: int, first: int = 4) -> list[ClipEvent]:
    return [ClipEvent(first + 4 * i, "clip_grad_norm_", "between backward passes") for i in range(n)]


@pytest.mark.parametrize(("events", "clip_steps", "expected"), [
    pytest.param(5, 10, True, id="clipping between backwards at half the clip steps is per micro-batch"),
    pytest.param(4, 10, False, id="at just under half the clip steps it is a GradScaler's skipped step"),
    pytest.param(2, 2, True, id="two repeats are enough on a short run"),
    pytest.param(1, 2, False, id="a single repeat is never enough"),
    pytest.param(1, 0, False, id="a single repeat is not enough even with no other clip step"),
])
def test_gs407_needs_repeats_at_half_the_steps_that_clip(events: int, clip_steps: int, expected: bool) -> None:
    rec = clip_record(acting(0, 5), micro=micro_events(events), clip_steps=clip_steps)
    assert bool(codes(judge(rec), "GS407")) is expected


def test_gs407_names_the_function_the_count_and_the_first_step() -> None:
    (f,) = judge(clip_record(micro=micro_events(3, first=7), clip_steps=4))
    assert (f.code, f.severity, f.where) == ("GS407", Severity.WARNING, "clip_grad_norm_")
    assert "after each micro-batch of 3 accumulation step(s) (first at step 7)" in f.message


def test_gs407_needs_the_clip_steps_evidence() -> None:
    rec = dataclasses.replace(clip_record(micro=micro_events(3)), clip_steps=None)
    assert "GS407" in rec.unjudged()
    assert codes(judge(rec), "GS407") == []


# ---- GS404 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [pytest.param(NAN, id="a NaN total norm"), pytest.param(INF, id="an Inf total norm")])
def test_gs404_names_the_first_step_with_a_nonfinite_total_norm(bad: float) -> None:
    (f,) = codes(judge(clip_record(norm_calls([0.5] * 7 + [bad, bad, 0.5]))), "GS404")
    assert (f.severity, f.where) == (Severity.ERROR, "clip_grad_norm_")
    assert "non-finite at clipping time at step 7 (2 call(s))" in f.message


def test_gs404_is_quiet_for_finite_norms_and_for_value_clipping() -> None:
    calls = norm_calls([0.5, 3.0, 1e30]) + [value_call(3, 0.01)]
    assert codes(judge(clip_record(calls)), "GS404") == []


@pytest.mark.parametrize(("totals", "expected"), [
    pytest.param([INF] * 3 + [0.5] * 17, False, id="early overflows under a GradScaler lower its scale"),
    pytest.param([0.5] * 10 + [INF] * 10, True, id="overflow in every late call is a fault"),
    pytest.param([0.5] * 10 + [0.5] + [INF] * 9, True, id="overflow in 90 percent of the late calls is a fault"),
    pytest.param([0.5] * 10 + [0.5] * 2 + [INF] * 8, False, id="overflow in 80 percent of the late calls is not"),
    pytest.param([INF] * 10 + [0.5] * 10, False, id="overflow only in the first half is not"),
])
def test_gs404_under_a_grad_scaler_needs_the_overflow_to_persist(totals: list[float], expected: bool) -> None:
    rec = clip_record(norm_calls(totals))
    assert bool(codes(judge(rec, grad_scaler=True), "GS404")) is expected
    assert codes(judge(rec, grad_scaler=False), "GS404"), "without a GradScaler any non-finite norm counts"


def test_persistent_is_about_the_last_half_of_the_calls() -> None:
    calls = norm_calls([0.5] * 5 + [INF] * 5)
    bad = [c for c in calls if c.total_norm == INF]
    assert persistent(calls, bad)
    assert not persistent(calls, bad[1:])
    assert not persistent([], [])


# ---- GS401 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("acted", "expected"), [
    pytest.param(19, True, id="acting on 95 percent of steps is just over 90 percent"),
    pytest.param(18, False, id="acting on exactly 90 percent of steps is not more than 90 percent"),
    pytest.param(17, False, id="acting on 85 percent of steps is under 90 percent"),
])
def test_gs401_edge_at_the_clip_rate(acted: int, expected: bool) -> None:
    assert bool(codes(judge(clip_record(acting(acted, 20))), "GS401")) is expected


def test_gs401_edge_moves_with_the_threshold() -> None:
    assert codes(judge(clip_record(acting(19, 20)), Thresholds(clip_rate=0.95)), "GS401") == []
    assert codes(judge(clip_record(acting(18, 20)), Thresholds(clip_rate=0.85)), "GS401")


def test_gs401_names_the_share_the_limit_and_the_median_norm() -> None:
    (f,) = judge(clip_record(norm_calls([0.1, 0.2, 0.3, 0.4, 0.5], threshold=0.05)))
    assert f.code == "GS401"
    assert "norm clipping acted on 100% of 5 steps (max_norm 0.05; median pre-clip norm 0.3)" in f.message


@pytest.mark.parametrize(("calls", "expected"), [
    pytest.param(acting(MIN_CALLS_FOR_RATE, MIN_CALLS_FOR_RATE), True, id="five calls that all acted are a rate"),
    pytest.param(acting(4, 4), False, id="four calls are too few to speak of a rate"),
    pytest.param(acting(4, 4) + [norm_call(4, NAN)], False, id="a non-finite call does not count towards five"),
])
def test_gs401_needs_five_finite_calls(calls: list[ClipCall], expected: bool) -> None:
    assert MIN_CALLS_FOR_RATE == 5
    assert bool(codes(judge(clip_record(calls)), "GS401")) is expected


def test_gs401_ignores_value_clipping_calls() -> None:
    calls = acting(4, 4) + [value_call(i, 0.01) for i in range(5)]
    assert codes(judge(clip_record(calls)), "GS401") == []


# ---- GS402 ---------------------------------------------------------------------------------------
def test_gs402_names_the_limit_and_the_largest_norm() -> None:
    (f,) = judge(clip_record(norm_calls([0.5, 1.5, 3.0, 0.1, 0.2], threshold=100.0)))
    assert (f.code, f.severity, f.where) == ("GS402", Severity.INFO, "clip_grad_norm_")
    assert "clipping never acted in 5 steps: max_norm 100 is above every observed pre-clip norm " \
           "(largest 3)" in f.message


@pytest.mark.parametrize("calls", [
    pytest.param(acting(0, 4), id="four calls that never acted are too few"),
    pytest.param(acting(0, 4) + [norm_call(4, NAN)], id="a non-finite call does not count towards five"),
    pytest.param(acting(1, 20), id="one call in twenty that acted means clipping acted"),
])
def test_gs402_is_quiet(calls: list[ClipCall]) -> None:
    assert codes(judge(clip_record(calls)), "GS402") == []


def test_gs402_reports_the_threshold_of_the_last_finite_call() -> None:
    calls = norm_calls([0.1] * 5, threshold=10.0) + norm_calls([0.2], threshold=50.0) + [norm_call(9, NAN, 70.0)]
    (f,) = codes(judge(clip_record(calls)), "GS402")
    assert "max_norm 50 is above" in f.message and "in 6 steps" in f.message


# ---- GS405 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("saturated", "expected"), [
    pytest.param([0.11, 0.11, 0.11], True, id="saturating 11 percent on average is just over 10 percent"),
    pytest.param([0.1, 0.1], False, id="saturating exactly 10 percent is not more"),
    pytest.param([0.09, 0.09, 0.09], False, id="saturating 9 percent is under"),
    pytest.param([0.2, 0.0], False, id="one bad call among calm ones averages to 10 percent"),
])
def test_gs405_edge_at_the_mean_saturation(saturated: list[float], expected: bool) -> None:
    calls = [value_call(i, s) for i, s in enumerate(saturated)]
    assert bool(codes(judge(clip_record(calls)), "GS405")) is expected


def test_gs405_names_the_mean_share_and_the_number_of_calls() -> None:
    calls = [value_call(i, s) for i, s in enumerate([0.2, 0.4, 0.6])] + acting(1, 4)
    (f,) = codes(judge(clip_record(calls)), "GS405")
    assert (f.severity, f.where) == (Severity.WARNING, "clip_grad_value_")
    assert "saturated 40% of gradient elements on average over 3 calls" in f.message


def test_gs405_edge_moves_with_the_threshold() -> None:
    rec = clip_record([value_call(i, 0.15) for i in range(3)])
    assert codes(judge(rec), "GS405")
    assert codes(judge(rec, Thresholds(value_saturation=0.2)), "GS405") == []
    assert codes(judge(clip_record([value_call(0, 0.06)]), Thresholds(value_saturation=0.05)), "GS405")


# ---- records from an older gradscope -------------------------------------------------------------
def everything_wrong() -> ClippingRecord:
    return clip_record(acting(5, 5) + [norm_call(5, NAN)] + [value_call(6, 0.5)],
                       misplaced=[ClipEvent(1, "clip_grad_norm_", BEFORE)],
                       scaled=[ClipEvent(2, "clip_grad_norm_", "before scaler.unscale_(optimizer)")],
                       micro=micro_events(3), clip_steps=6)


def older(rec: ClippingRecord) -> ClippingRecord:
    data = rec.to_json()
    for fields in ClippingRecord.evidence.values():
        for name in fields:
            data.pop(name, None)
    return ClippingRecord.from_json(data)


def test_a_specimen_with_every_problem_finds_every_code_once() -> None:
    found = [f.code for f in judge(everything_wrong())]
    assert sorted(found) == ["GS401", "GS403", "GS404", "GS405", "GS406", "GS407"]


def test_an_older_record_lists_the_codes_it_cannot_judge() -> None:
    assert everything_wrong().unjudged() == frozenset()
    rec = older(everything_wrong())
    assert (rec.misplaced, rec.scaled, rec.per_micro_batch, rec.clip_steps) == (None, None, None, None)
    assert rec.unjudged() == {"GS403", "GS406", "GS407"}


def test_an_older_record_yields_none_of_those_codes_and_still_judges_the_calls() -> None:
    found = sorted(f.code for f in judge(older(everything_wrong())))
    assert found == ["GS401", "GS404", "GS405"]


def test_a_version_1_file_is_judged_from_its_calls_as_it_was_then() -> None:
    run = load_record(FIXTURES / "watch_full.json")
    rec = run.probe(ClippingRecord)
    assert rec is not None and rec.unjudged() == {"GS403", "GS406", "GS407"}
    recorded = [(f.code, f.where) for f in run.findings if f.code.startswith("GS4")]
    assert recorded == [("GS401", "clip_grad_norm_")]
    assert [(f.code, f.where) for f in judge_clipping(rec, run, run.judged_with())] == recorded
