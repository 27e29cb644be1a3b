"""GS501 from sampled loss inputs: the loss-input judge on synthetic records."""
from __future__ import annotations

import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.loss_inputs import judge_loss_inputs
from gradscope.records import LossInputSite, LossInputsRecord, ModelInfo, RunInfo, RunRecord
from gradscope.thresholds import Thresholds

ROOT = "Net"


def judge(*sites: LossInputSite, mode: str = "script") -> list[Finding]:
    rec = LossInputsRecord(sites=list(sites))
    run = RunRecord(model=ModelInfo(class_name=ROOT), steps=10, backwards=10, probes={"loss_inputs": rec},
                    run=RunInfo(mode=mode))  # type: ignore[arg-type]
    return judge_loss_inputs(rec, run, Thresholds())


def site(function: str, checked: int = 4, unit: int = 0, simplex: int = 0, non_negative: int = 0) -> LossInputSite:
    return LossInputSite(function=function, site="train.py:12", checked=checked, in_unit_interval=unit,
                         rows_sum_to_one=simplex, non_negative=non_negative)


@pytest.mark.parametrize(("given", "words"), [
    pytest.param(site("cross_entropy", unit=4, simplex=4, non_negative=4), "got probabilities", id="softmax into CE"),
    pytest.param(site("cross_entropy", unit=4, non_negative=4), "strictly between 0 and 1", id="sigmoid into CE"),
    pytest.param(site("nll_loss", unit=4, simplex=4, non_negative=4), "NLLLoss expects log-probabilities",
                 id="softmax into NLL"),
    pytest.param(site("binary_cross_entropy_with_logits", unit=4, non_negative=4), "applies the sigmoid itself",
                 id="sigmoid into BCEWithLogits"),
])
def test_gs501_when_every_sampled_call_had_probabilities(given: LossInputSite, words: str) -> None:
    (f,) = judge(given)
    assert (f.code, f.severity, f.where) == ("GS501", Severity.WARNING, ROOT)
    assert words in f.message and "(called at train.py:12)" in f.message and "in all 4 sampled call(s)" in f.message


@pytest.mark.parametrize("given", [
    pytest.param(site("cross_entropy", unit=3, non_negative=3), id="one call of four had logits"),
    pytest.param(site("cross_entropy", non_negative=4), id="ReLU outputs (zeros): not a sigmoid"),
    pytest.param(site("nll_loss", non_negative=3), id="log-probabilities in one call"),
    pytest.param(site("binary_cross_entropy_with_logits", unit=0, non_negative=4), id="non-negative logits"),
    pytest.param(site("cross_entropy", checked=0), id="nothing sampled yet"),
])
def test_no_gs501_unless_every_sampled_call_agrees(given: LossInputSite) -> None:
    assert judge(given) == []


def test_a_model_file_run_leaves_cross_entropy_to_its_own_loop_check() -> None:
    probs = site("cross_entropy", unit=4, simplex=4, non_negative=4)
    bce = site("binary_cross_entropy_with_logits", unit=4, non_negative=4)
    assert [f.code for f in judge(probs, bce, mode="model")] == ["GS501"]   # BCE only: the loop does not check it
