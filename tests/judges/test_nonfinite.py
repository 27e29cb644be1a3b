"""GS206: the non-finite judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.nonfinite import judge_nonfinite
from gradscope.records import ModelInfo, NonFiniteRecord, RunRecord
from gradscope.thresholds import Thresholds

ROOT = "Net"


def judge(rec: NonFiniteRecord, *, grad_scaler: bool | None = False, model: bool = True) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name=ROOT) if model else None, steps=10, backwards=10,
                    grad_scaler=grad_scaler, probes={"nonfinite": rec})
    return judge_nonfinite(rec, run, Thresholds())


def test_a_finite_run_has_no_finding() -> None:
    assert judge(NonFiniteRecord()) == []


def test_gs206_names_the_first_module_whose_output_was_nonfinite() -> None:
    (f,) = judge(NonFiniteRecord(first_nonfinite_output_step=7, located={"7": "encoder.2"}))
    assert (f.code, f.severity, f.where) == ("GS206", Severity.ERROR, "encoder.2")
    assert "non-finite at step 7; encoder.2 was the first module whose output held NaN/Inf" in f.message


def test_gs206_names_the_root_when_its_own_output_was_first() -> None:
    (f,) = judge(NonFiniteRecord(first_nonfinite_output_step=3, located={"3": ""}))
    assert f.where == ROOT and f"at step 3; {ROOT} was the first module" in f.message


def test_gs206_names_the_input_when_the_batch_already_held_nan() -> None:
    (f,) = judge(NonFiniteRecord(first_nonfinite_output_step=4, located={"4": "input"}))
    assert (f.code, f.where) == ("GS206", "input")
    assert "at step 4 because the input batch already held NaN/Inf" in f.message
    assert "data pipeline" in f.hint, "the hint points at the data, not the model"


@pytest.mark.parametrize("located", [
    pytest.param({}, id="a run that did not locate the module suggests strict mode"),
    pytest.param({"2": "fc"}, id="a module located at another step is not this step's"),
])
def test_gs206_without_a_located_module_names_the_root_and_suggests_strict_mode(located: dict[str, str]) -> None:
    (f,) = judge(NonFiniteRecord(first_nonfinite_output_step=5, located=located))
    assert f.where == ROOT
    assert "non-finite at step 5" in f.message and "strict=True" in f.message


def test_gs206_without_a_model_class_names_the_model() -> None:
    (f,) = judge(NonFiniteRecord(first_nonfinite_output_step=5), model=False)
    assert f.where == "model"


def test_gs206_names_the_loss_when_it_alone_became_nonfinite() -> None:
    (f,) = judge(NonFiniteRecord(first_nonfinite_loss_step=9))
    assert (f.code, f.severity, f.where) == ("GS206", Severity.ERROR, "loss")
    assert "the loss became non-finite at step 9 while the model's output was finite" in f.message
    assert "WithLogits" in f.hint


@pytest.mark.parametrize(("loss_step", "expected"), [
    pytest.param(4, ["encoder.2", "loss"], id="a loss non-finite before the output is its own finding"),
    pytest.param(6, ["encoder.2"], id="a loss non-finite at the same step as the output follows from it"),
    pytest.param(8, ["encoder.2"], id="a loss non-finite after the output follows from it"),
])
def test_gs206_the_loss_is_named_only_when_it_went_first(loss_step: int, expected: list[str]) -> None:
    rec = NonFiniteRecord(first_nonfinite_output_step=6, first_nonfinite_loss_step=loss_step,
                          located={"6": "encoder.2"})
    assert [f.where for f in judge(rec)] == expected


@pytest.mark.parametrize(("grad_scaler", "expected"), [
    pytest.param(True, [], id="under a GradScaler a non-finite loss is the scaler's overflow"),
    pytest.param(None, ["loss"], id="a run that does not say is judged as without one"),
])
def test_gs206_the_loss_under_a_grad_scaler(grad_scaler: bool | None, expected: list[str]) -> None:
    rec = NonFiniteRecord(first_nonfinite_loss_step=9)
    assert [f.where for f in judge(rec, grad_scaler=grad_scaler)] == expected


def test_gs206_the_output_is_named_under_a_grad_scaler_too() -> None:
    rec = NonFiniteRecord(first_nonfinite_output_step=2, located={"2": "fc"}, first_nonfinite_loss_step=1)
    assert [f.where for f in judge(rec, grad_scaler=True)] == ["fc"]


def test_a_nonfinite_record_read_back_is_judged_the_same() -> None:
    rec = NonFiniteRecord(first_nonfinite_output_step=6, first_nonfinite_loss_step=4, located={"6": "fc"})
    again = NonFiniteRecord.from_json(rec.to_json())
    assert judge(again) == judge(rec)
    assert again.unjudged() == frozenset(), "every version holds GS206's evidence"
