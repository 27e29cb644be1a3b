"""GS308 (a learning rate that collapsed) and GS309 (a scheduler never stepped): the learning-rate
judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.lr import MIN_STEPS, judge_lr
from gradscope.records import LrRecord, ModelInfo, RunRecord, SchedulerState
from gradscope.thresholds import Thresholds

ROOT = "Net"
PEAK = 0.1


def lr_record(*columns: Sequence[float], schedulers: Sequence[SchedulerState] = ()) -> LrRecord:
    """One param group per column (``SGD#0.0``, ``SGD#0.1``, ...), one row per step."""
    table = np.array(columns, dtype=float).T
    return LrRecord(groups=[f"SGD#0.{j}" for j in range(len(columns))], steps=list(range(table.shape[0])),
                    lr=table, schedulers=list(schedulers))


def judge(rec: LrRecord, th: Thresholds | None = None) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name=ROOT), steps=len(rec.steps), backwards=len(rec.steps),
                    optimizers=["SGD"], probes={"lr": rec})
    return judge_lr(rec, run, th or Thresholds())


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def cosine(steps: int, t_max: int) -> list[float]:
    """CosineAnnealingLR's closed form, read before each step."""
    return [PEAK * 0.5 * (1 + math.cos(math.pi * min(k, t_max) / t_max)) for k in range(steps)]


def step_decay(steps: int, every: int, gamma: float) -> list[float]:
    return [PEAK * gamma ** (k // every) for k in range(steps)]


# ---- GS308 ---------------------------------------------------------------------------------------
def test_gs308_a_step_decay_of_a_hundredth_every_step_collapses() -> None:
    (f,) = judge(lr_record(step_decay(30, every=1, gamma=0.01)))
    assert (f.code, f.severity, f.where) == ("GS308", Severity.WARNING, "SGD#0.0")
    # 0.1, 1e-3, 1e-5: below 1/1000 of the peak from the third step on
    assert "the learning rate of SGD#0.0 fell from 0.1 to" in f.message
    assert "below 1/1000 of its peak from step 2 on (93% of the recorded steps)" in f.message


@pytest.mark.parametrize("lrs", [
    pytest.param(cosine(100, 99), id="a cosine schedule that reaches zero at the last step"),
    pytest.param(cosine(100, 100), id="a cosine schedule over the whole run"),
    pytest.param(step_decay(90, every=30, gamma=0.1), id="the ResNet schedule, a tenth every 30 epochs"),
    pytest.param([PEAK * min(1.0, (k + 1) / 20) for k in range(100)], id="a linear warm-up"),
    pytest.param([PEAK * k / 4 if k < 4 else PEAK * (10 - k) / 6 for k in range(10)],
                 id="a short run: warm-up from 0, then linear decay (the HF Trainer default)"),
    pytest.param([0.0, 0.0, 0.0, PEAK, PEAK, PEAK, PEAK, PEAK, PEAK, PEAK],
                 id="a learning rate held at 0 before training starts"),
    pytest.param([PEAK] * 50, id="a constant learning rate"),
])
def test_gs308_twin_ordinary_schedules_do_not_collapse(lrs: list[float]) -> None:
    assert judge(lr_record(lrs)) == []


@pytest.mark.parametrize(("low_steps", "flagged"), [
    pytest.param(10, False, id="exactly 10 percent of the steps low is not more than 10 percent"),
    pytest.param(11, True, id="11 percent of the steps low is"),
])
def test_gs308_edge_at_the_collapse_share(low_steps: int, flagged: bool) -> None:
    lrs = [PEAK] * (100 - low_steps) + [PEAK / 2000] * low_steps
    assert codes(judge(lr_record(lrs))) == (["GS308"] if flagged else [])


def test_gs308_a_value_exactly_at_the_limit_is_not_below_it() -> None:
    assert judge(lr_record([PEAK] * 50 + [PEAK / 1000] * 50)) == []


def test_gs308_thresholds_are_settable() -> None:
    lrs = [PEAK] * 50 + [PEAK / 50] * 50   # a fiftieth: no collapse by default
    assert judge(lr_record(lrs)) == []
    assert codes(judge(lr_record(lrs), Thresholds(lr_collapse=10.0))) == ["GS308"]
    collapsed = [PEAK] * 70 + [PEAK / 2000] * 30
    assert judge(lr_record(collapsed), Thresholds(lr_collapse_share=0.5)) == []


def test_gs308_names_the_group_that_collapsed() -> None:
    found = judge(lr_record([PEAK] * 30, step_decay(30, every=1, gamma=0.01)))
    assert [(f.code, f.where) for f in found] == [("GS308", "SGD#0.1")]


@pytest.mark.parametrize("lrs", [
    pytest.param([0.0] * 30, id="a learning rate of 0 throughout has no peak to fall from"),
    pytest.param([PEAK], id="one recorded step"),
    pytest.param([math.nan] * 29 + [PEAK / 1e6], id="a group added at the last step"),
])
def test_gs308_needs_a_peak_and_two_finite_values(lrs: list[float]) -> None:
    assert judge(lr_record(lrs)) == []


def test_gs308_a_group_added_late_counts_its_own_steps_only() -> None:
    # NaN before the group existed; after that it collapses on most of its own steps
    lrs = [math.nan] * 20 + [PEAK] + [PEAK / 1e4] * 9
    (f,) = judge(lr_record([PEAK] * 30, lrs))
    assert f.where == "SGD#0.1" and "from step 21 on (90% of the recorded steps)" in f.message


# ---- GS309 ---------------------------------------------------------------------------------------
def scheduler(stepped: bool, watched: int) -> SchedulerState:
    return SchedulerState(name="CosineAnnealingLR", optimizer="SGD#0", stepped=stepped, steps_watched=watched)


def test_gs309_a_scheduler_never_stepped_in_ten_steps() -> None:
    (f,) = judge(lr_record([PEAK] * 10, schedulers=[scheduler(False, MIN_STEPS)]))
    assert MIN_STEPS == 10
    assert (f.code, f.severity, f.where) == ("GS309", Severity.WARNING, "SGD#0")
    assert "a CosineAnnealingLR was built for SGD#0 but its step() was never called in 10 training steps" \
        in f.message


@pytest.mark.parametrize("state", [
    pytest.param(scheduler(True, 100), id="a stepped scheduler"),
    pytest.param(scheduler(False, MIN_STEPS - 1), id="nine steps are too few to say never"),
])
def test_gs309_twin(state: SchedulerState) -> None:
    assert judge(lr_record([PEAK] * 10, schedulers=[state])) == []


def test_gs309_one_finding_per_scheduler_never_stepped() -> None:
    states = [scheduler(False, 20), scheduler(True, 20),
              SchedulerState(name="StepLR", optimizer="Adam#1", stepped=False, steps_watched=12)]
    found = judge(lr_record([PEAK] * 20, schedulers=states))
    assert [(f.code, f.where) for f in found] == [("GS309", "SGD#0"), ("GS309", "Adam#1")]
    assert "a StepLR was built for Adam#1" in found[1].message
