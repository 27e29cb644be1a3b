"""GS504: the mode judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.mode import judge_mode
from gradscope.records import ModelInfo, ModeRecord, RunRecord
from gradscope.thresholds import Thresholds

ROOT = "Net"


def judge(rec: ModeRecord) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name=ROOT), steps=100, backwards=100, probes={"mode": rec})
    return judge_mode(rec, run, Thresholds())


def test_evaluating_in_eval_mode_and_training_in_train_mode_has_no_finding() -> None:
    assert judge(ModeRecord(evaluation_forwards=20)) == []


# ---- evaluation in train mode --------------------------------------------------------------------
def test_gs504_names_the_one_module_left_in_train_mode_during_evaluation() -> None:
    rec = ModeRecord(evaluation_forwards=10, evaluation_in_train_mode={"body.2": 10},
                     first_evaluation_in_train_mode_step=25)
    (f,) = judge(rec)
    assert (f.code, f.severity, f.where) == ("GS504", Severity.WARNING, "body.2")
    assert "(a forward under torch.no_grad/inference_mode, first at step 25) ran with body.2 in train mode" \
        in f.message
    assert "model.eval() before evaluating" in f.hint


def test_gs504_names_the_root_when_several_modules_were_in_train_mode() -> None:
    rec = ModeRecord(evaluation_in_train_mode={"drop": 3, "bn": 3}, first_evaluation_in_train_mode_step=4)
    (f,) = judge(rec)
    assert f.where == ROOT and "ran with bn, drop in train mode" in f.message


def test_gs504_shortens_a_long_list_of_modules() -> None:
    rec = ModeRecord(evaluation_in_train_mode={f"m{i}": 1 for i in range(6)})
    (f,) = judge(rec)
    assert "ran with m0, m1, m2, m3 and 2 more in train mode" in f.message


def test_gs504_without_the_first_step_says_at_some_step() -> None:
    (f,) = judge(ModeRecord(evaluation_in_train_mode={"drop": 1}))
    assert "inference_mode, at some step) ran with drop" in f.message


# ---- training in eval mode -----------------------------------------------------------------------
def test_gs504_names_the_root_when_training_ran_in_eval_mode() -> None:
    rec = ModeRecord(training_steps_in_eval_mode=7, first_training_in_eval_mode_step=51)
    (f,) = judge(rec)
    assert (f.code, f.severity, f.where) == ("GS504", Severity.WARNING, ROOT)
    assert "training ran with the model in eval mode (7 backward pass(es), first at step 51)" in f.message
    assert "model.train()" in f.hint


def test_gs504_training_in_eval_mode_without_the_first_step_says_at_some_step() -> None:
    (f,) = judge(ModeRecord(training_steps_in_eval_mode=1))
    assert "(1 backward pass(es), at some step)" in f.message


# ---- both directions -----------------------------------------------------------------------------
@pytest.mark.parametrize(("rec", "wheres"), [
    pytest.param(ModeRecord(evaluation_in_train_mode={"drop": 2}), ["drop"],
                 id="evaluating in train mode alone is one finding"),
    pytest.param(ModeRecord(training_steps_in_eval_mode=3), [ROOT],
                 id="training in eval mode alone is one finding"),
    pytest.param(ModeRecord(evaluation_in_train_mode={"drop": 2}, training_steps_in_eval_mode=3),
                 ["drop", ROOT], id="both mistakes in one run are two findings"),
    pytest.param(ModeRecord(evaluation_forwards=5, training_steps_in_eval_mode=0), [],
                 id="no forward in the wrong mode is no finding"),
])
def test_gs504_both_directions(rec: ModeRecord, wheres: list[str]) -> None:
    found = judge(rec)
    assert [f.where for f in found] == wheres and {f.code for f in found} <= {"GS504"}


def test_a_version_1_mode_record_is_judged_the_same() -> None:
    old = {"evaluation_forwards": 4, "evaluation_in_train_mode": {"drop": 4}, "training_steps_in_eval_mode": 2}
    rec = ModeRecord.from_json(old)
    assert rec.unjudged() == frozenset()
    assert [f.where for f in judge(rec)] == ["drop", ROOT]
    assert all("at some step" in f.message for f in judge(rec))


# ---- functional dropout and evaluations written as training ---------------------------------------
def test_gs504_for_functional_dropout_names_the_module_that_called_it() -> None:
    (f,) = judge(ModeRecord(functional_dropout_in_evaluation={"encoder": 4}, first_functional_dropout_step=7))
    assert (f.code, f.severity, f.where) == ("GS504", Severity.WARNING, "encoder")
    assert "dropout_p > 0) ran 4 time(s) during evaluation" in f.message
    assert "first at step 7" in f.message and "training=self.training" in f.hint


def test_gs504_for_functional_dropout_in_several_modules_names_the_root() -> None:
    (f,) = judge(ModeRecord(functional_dropout_in_evaluation={"a": 1, "b": 2}))
    assert f.where == ROOT and "ran 3 time(s)" in f.message


@pytest.mark.parametrize(("count", "modules", "found"), [
    pytest.param(2, ["bn", "drop"], True, id="two unbackpropagated forwards with BatchNorm and Dropout"),
    pytest.param(1, ["bn"], False, id="one (a skipped NaN batch) is no evaluation"),
    pytest.param(5, [], False, id="no mode-sensitive module in train mode: nothing wrong with the results"),
])
def test_gs504_for_forwards_that_never_reached_backward(count: int, modules: list[str], found: bool) -> None:
    rec = ModeRecord(unbackwarded_training_forwards=count, unbackwarded_in_train_mode=modules,
                     first_unbackwarded_step=3)
    out = judge(rec)
    if not found:
        assert out == []
        return
    (f,) = out
    assert (f.code, f.where) == ("GS504", ROOT)
    assert "2 forward pass(es) with gradients enabled and bn, drop in train mode never reached a backward pass " \
           "(first at step 3)" in f.message
    assert "torch.no_grad()" in f.hint
