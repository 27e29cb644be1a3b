"""Rules that weigh a second measurement before they speak, on synthetic records (no model, no
torch): ``LossRecord.falling()``, and through it GS204's absolute-norm rule and GS401's severity;
GS206 for a loss that is non-finite while the gradients stay finite; and GS510, which needs both a
share of the step and a minimum wait."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.clipping import judge_clipping
from gradscope.judges.grad_norm import judge_grad_norm
from gradscope.judges.nonfinite import judge_nonfinite
from gradscope.judges.timing import judge_timing
from gradscope.records import (
    ClipCall,
    ClippingRecord,
    ClipSummary,
    GradNormRecord,
    LossRecord,
    ModelInfo,
    NonFiniteRecord,
    PhaseStats,
    ProbeRecord,
    RunRecord,
    Stats,
    StatsTable,
    TimingRecord,
    TimingSummary,
)
from gradscope.records.loss import MIN_STEPS_FOR_TREND
from gradscope.records.timing import PHASES
from gradscope.thresholds import Thresholds

ROOT = "Net"
NAN, INF = float("nan"), float("inf")
FALLING = list(np.linspace(2.0, 1.0, 20))
FLAT = [1.0] * 20
NOISY = list(1.0 + 0.2 * np.random.default_rng(0).standard_normal(20))


# ---- builders ------------------------------------------------------------------------------------
def loss_record(values: Sequence[float]) -> LossRecord:
    """A loss record as the probe writes it: one value per step, statistics over the finite ones."""
    arr = np.asarray(values, dtype=float)
    finite = arr[np.isfinite(arr)]
    bad = [i for i, v in enumerate(arr) if not np.isfinite(v)]
    stats = Stats(count=int(finite.size), min=float(finite.min()) if finite.size else None,
                  max=float(finite.max()) if finite.size else None,
                  mean=float(finite.mean()) if finite.size else None,
                  first_nonfinite_step=bad[0] if bad else None)
    return LossRecord(steps=list(range(arr.size)), loss=arr, stats=stats)


def run_record(*records: ProbeRecord, steps: int = 20) -> RunRecord:
    return RunRecord(model=ModelInfo(class_name=ROOT), steps=steps, backwards=steps, optimizers=["SGD"],
                     grad_scaler=False, probes={r.probe: r for r in records})


def grad_record(totals: Sequence[float]) -> GradNormRecord:
    """One parameter ``w`` owned by the root: its norm is the layer norm and the total."""
    arr = np.asarray(totals, dtype=float)
    n = arr.size
    table = StatsTable(count=[n], min=np.array([arr.min()]), max=np.array([arr.max()]),
                       mean=np.array([arr.mean()]), first_nonfinite_step=[None])
    return GradNormRecord(parameters=["w"], layers=[ROOT], parameter_layer=[0], backward_order=["w"],
                          steps=list(range(n)), total_norm=arr, layer_norms=arr.reshape(n, 1),
                          parameter_norms=arr.reshape(n, 1), parameter_stats=table, layer_stats=table,
                          total_stats=table.row(0), no_gradient=[], steps_seen=n)


def clip_record(totals: Sequence[float], threshold: float) -> ClippingRecord:
    calls = [ClipCall(step=i, kind="norm", threshold=threshold, total_norm=t, coefficient=min(1.0, threshold / t),
                      clipped_norm=min(t, threshold), acted=t > threshold) for i, t in enumerate(totals)]
    acted = sum(bool(c.acted) for c in calls)
    return ClippingRecord(calls=calls, summary=ClipSummary(calls=len(calls), norm_calls=len(calls),
                                                           clipped_fraction=acted / len(calls)),
                          misplaced=[], scaled=[], per_micro_batch=[], clip_steps=len(calls))


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


# ---- falling() -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("values", "expected"), [
    pytest.param(FALLING, True, id="a steady decrease"),
    pytest.param(list(np.linspace(2.0, 1.0, MIN_STEPS_FOR_TREND)), True, id="ten values are enough"),
    pytest.param([2.0 * 0.9 ** i + (0.05 if i % 2 else 0.0) for i in range(20)], True,
                 id="a decrease with batch-to-batch noise"),
    pytest.param(FLAT, False, id="a flat loss"),
    pytest.param(NOISY, False, id="noise around a constant"),
    pytest.param(list(np.linspace(1.0, 2.0, 20)), False, id="a rising loss"),
    pytest.param(list(np.linspace(1.0, 0.95, 20)), False, id="a fall of 5 percent is under 10 percent"),
    pytest.param([1.0] * 19 + [0.1], False, id="one lucky batch is no trend"),
    pytest.param(FALLING[:10] + [INF, NAN] + FALLING[10:], True, id="non-finite values are left out"),
])
def test_falling(values: list[float], expected: bool) -> None:
    assert loss_record(values).falling() is expected


@pytest.mark.parametrize("values", [
    pytest.param(list(np.linspace(2.0, 1.0, MIN_STEPS_FOR_TREND - 1)), id="nine values"),
    pytest.param(list(np.linspace(2.0, 1.0, 9)) + [NAN] * 5, id="nine finite values and five NaN"),
    pytest.param([], id="no value"),
])
def test_falling_cannot_say_with_fewer_than_ten_finite_values(values: list[float]) -> None:
    assert MIN_STEPS_FOR_TREND == 10
    assert loss_record(values).falling() is None


# ---- GS204: a large norm is explosion only where the loss does not fall ---------------------------
BIG = [5e3] * 20   # above exploding_norm (1e3) at every step, no growth


def test_gs204_is_quiet_for_a_large_norm_while_the_loss_falls() -> None:
    assert only(judge_grad_norm(grad_record(BIG), run_record(grad_record(BIG), loss_record(FALLING)),
                                Thresholds()), "GS204") == []


@pytest.mark.parametrize("loss", [pytest.param(FLAT, id="a flat loss"), pytest.param(NOISY, id="a noisy loss")])
def test_gs204_fires_for_a_large_norm_while_the_loss_does_not_fall(loss: list[float]) -> None:
    grads = grad_record(BIG)
    (f,) = only(judge_grad_norm(grads, run_record(grads, loss_record(loss)), Thresholds()), "GS204")
    assert (f.severity, f.where) == (Severity.WARNING, ROOT)
    assert "the total gradient norm reached 5e+03 (threshold 1000) and the loss is not falling" in f.message


@pytest.mark.parametrize("loss", [pytest.param(None, id="no loss record"),
                                  pytest.param(FALLING[:5], id="too few losses to say")])
def test_gs204_fires_for_a_large_norm_when_the_loss_cannot_say(loss: list[float] | None) -> None:
    grads = grad_record(BIG)
    run = run_record(grads) if loss is None else run_record(grads, loss_record(loss))
    (f,) = only(judge_grad_norm(grads, run, Thresholds()), "GS204")
    assert "reached 5e+03 (threshold 1000):" in f.message and "not falling" not in f.message


def test_gs204_twin_a_small_norm_is_quiet_whatever_the_loss() -> None:
    grads = grad_record([5.0] * 20)
    assert only(judge_grad_norm(grads, run_record(grads, loss_record(FLAT)), Thresholds()), "GS204") == []


def test_gs204_growth_still_fires_while_the_loss_falls() -> None:
    # the falling loss excuses a large norm, not one that grows 500-fold: that is divergence
    grads = grad_record(list(np.geomspace(10.0, 5e3, 20)))
    (f,) = only(judge_grad_norm(grads, run_record(grads, loss_record(FALLING)), Thresholds()), "GS204")
    assert "grew from" in f.message and "training is diverging" in f.message


# ---- GS401: info by design, warning with evidence of harm -----------------------------------------
ABOVE = [2.0] * 20   # every pre-clip norm above max_norm: clipping acts on 100% of steps


def _gs401(clip: ClippingRecord, loss: list[float], th: Thresholds | None = None) -> Finding:
    (f,) = only(judge_clipping(clip, run_record(clip, loss_record(loss)), th or Thresholds()), "GS401")
    return f


def test_gs401_is_info_when_the_loss_falls_and_max_norm_is_not_tiny() -> None:
    f = _gs401(clip_record(ABOVE, threshold=1.0), FALLING)
    assert (f.severity, f.where) == (Severity.INFO, "clip_grad_norm_")
    assert "the loss is falling, so this may be by design" in f.message


@pytest.mark.parametrize("loss", [pytest.param(FLAT, id="a flat loss"), pytest.param(NOISY, id="a noisy loss")])
def test_gs401_is_a_warning_when_the_loss_does_not_fall(loss: list[float]) -> None:
    f = _gs401(clip_record(ABOVE, threshold=1.0), loss)
    assert f.severity is Severity.WARNING and "; the loss is not falling" in f.message


def test_gs401_is_a_warning_when_max_norm_is_far_below_the_median_norm_even_if_the_loss_falls() -> None:
    f = _gs401(clip_record(ABOVE, threshold=0.001), FALLING)   # 0.001 / 2.0 is under clip_harm_factor (0.01)
    assert f.severity is Severity.WARNING
    assert "it divides the gradient by about 2000" in f.message


@pytest.mark.parametrize(("threshold", "severity"), [
    pytest.param(0.02, Severity.INFO, id="max_norm at exactly clip_harm_factor times the median"),
    pytest.param(0.0198, Severity.WARNING, id="max_norm just under it"),
])
def test_gs401_edge_at_the_harm_factor(threshold: float, severity: Severity) -> None:
    assert Thresholds().clip_harm_factor == 0.01
    assert _gs401(clip_record(ABOVE, threshold=threshold), FALLING).severity is severity


def test_gs401_harm_factor_is_a_threshold() -> None:
    clip = clip_record(ABOVE, threshold=1.0)   # max_norm is half the median norm
    assert _gs401(clip, FALLING, Thresholds(clip_harm_factor=0.6)).severity is Severity.WARNING
    assert _gs401(clip, FALLING, Thresholds(clip_harm_factor=0.4)).severity is Severity.INFO


def test_gs401_twin_clipping_that_catches_rare_spikes_is_quiet_whatever_the_loss() -> None:
    clip = clip_record([0.5] * 18 + [3.0, 3.0], threshold=1.0)
    assert only(judge_clipping(clip, run_record(clip, loss_record(FLAT)), Thresholds()), "GS401") == []


# ---- GS206: a non-finite loss whose gradients stayed finite ----------------------------------------
def _nonfinite(rec: NonFiniteRecord, loss: list[float] | None) -> list[Finding]:
    run = run_record(rec) if loss is None else run_record(rec, loss_record(loss))
    return only(judge_nonfinite(rec, run, Thresholds()), "GS206")


MASKED = [1.0, 1.0, 1.0, INF, 1.0, 1.0]   # non-finite at step 3 in the loss curve


def test_gs206_a_non_finite_loss_with_finite_gradients_is_named_loss() -> None:
    (f,) = _nonfinite(NonFiniteRecord(), MASKED)
    assert (f.severity, f.where) == (Severity.ERROR, "loss")
    assert "the loss was non-finite at step 3 while the gradients reaching the model stayed finite" in f.message
    assert "reduction='none'" in f.hint


@pytest.mark.parametrize("loss", [pytest.param([1.0] * 6, id="a finite loss curve"),
                                  pytest.param(None, id="no loss record")])
def test_gs206_twin_a_finite_loss_curve_gives_nothing(loss: list[float] | None) -> None:
    assert _nonfinite(NonFiniteRecord(), loss) == []


def test_gs206_the_loss_flag_of_the_nonfinite_probe_is_reported_instead_not_as_well() -> None:
    # the gradient reaching the output was non-finite too: one finding, the loss function's
    (f,) = _nonfinite(NonFiniteRecord(first_nonfinite_loss_step=3), MASKED)
    assert f.where == "loss" and "while the model's output was finite" in f.message


@pytest.mark.parametrize(("output_step", "masked_reported"), [
    pytest.param(2, False, id="an output non-finite before the loss explains it"),
    pytest.param(3, False, id="an output non-finite at the same step explains it"),
    pytest.param(5, True, id="an output non-finite later does not"),
])
def test_gs206_a_non_finite_output_comes_first(output_step: int, masked_reported: bool) -> None:
    found = _nonfinite(NonFiniteRecord(first_nonfinite_output_step=output_step), MASKED)
    assert [f.where for f in found] == [ROOT] + (["loss"] if masked_reported else [])


# ---- GS510: input-bound needs a share of the step and a wait of at least input_bound_min_ms ---------
def _timed(data_ms: float, step_ms: float, h2d_ms: float = 0.0) -> RunRecord:
    """A run whose median step of ``step_ms`` waited ``data_ms`` for the batch and ``h2d_ms`` to copy it."""
    phases = {p: PhaseStats(0.0, 0.0, 0.0) for p in PHASES}
    phases["data"] = PhaseStats(data_ms, data_ms, data_ms)
    phases["h2d"] = PhaseStats(h2d_ms, h2d_ms, h2d_ms)
    phases["step"] = PhaseStats(step_ms, step_ms, step_ms)
    rec = TimingRecord(steps=list(range(25)), ms=np.zeros((25, len(PHASES))),
                       summary=TimingSummary(steps_measured=20, phases=phases, steps_per_second=1000.0 / step_ms))
    return run_record(rec, steps=25)


@pytest.mark.parametrize(("data_ms", "step_ms", "h2d_ms", "flagged"), [
    pytest.param(20.0, 25.0, 0.0, True, id="a long wait that is most of the step"),
    pytest.param(2.0, 4.0, 0.0, True, id="half the step and exactly the minimum wait"),
    pytest.param(1.5, 2.0, 0.0, False, id="most of a fast step but under the minimum wait"),
    pytest.param(1.0, 4.0, 1.5, True, id="waiting and copying add up over the minimum"),
    pytest.param(20.0, 100.0, 0.0, False, id="a long wait that is a small share of a long step"),
])
def test_gs510_needs_a_share_of_the_step_and_a_minimum_wait(data_ms: float, step_ms: float, h2d_ms: float,
                                                            flagged: bool) -> None:
    assert (Thresholds().input_bound_share, Thresholds().input_bound_min_ms) == (0.3, 2.0)
    run = _timed(data_ms, step_ms, h2d_ms)
    found = judge_timing(run.probes["timing"], run, Thresholds())
    assert [(f.code, f.severity, f.where) for f in found] == (
        [("GS510", Severity.INFO, "DataLoader")] if flagged else [])


def test_gs510_minimum_wait_is_a_threshold() -> None:
    run = _timed(1.5, 2.0)
    assert judge_timing(run.probes["timing"], run, Thresholds(input_bound_min_ms=1.0))
    assert judge_timing(run.probes["timing"], run, Thresholds(input_bound_min_ms=2.0)) == []
