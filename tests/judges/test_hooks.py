"""GS601 and GS602: the hook judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.hooks import judge_hooks
from gradscope.records import HookChange, HookSample, HooksRecord, ModelInfo, RunRecord, load_record
from gradscope.thresholds import Thresholds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records_v1"


def sampled(counts: dict[str, Sequence[int]], every: int = 100) -> HooksRecord:
    """Samples after every ``every``-th step of the hook counts of each place."""
    n = len(next(iter(counts.values())))
    samples = [HookSample(step=every * (i + 1), counts={w: c[i] for w, c in counts.items()}) for i in range(n)]
    return HooksRecord(hook_counts=dict(samples[-1].counts) if samples else {}, samples=samples)


def judge(rec: HooksRecord, th: Thresholds | None = None) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name="Net"), steps=500, backwards=500, probes={"hooks": rec})
    return judge_hooks(rec, run, th or Thresholds())


def test_a_steady_number_of_hooks_has_no_finding() -> None:
    assert judge(sampled({"module fc": [2, 2, 2, 2, 2], "parameter fc.weight": [1, 1, 1, 1, 1]})) == []


def test_an_empty_record_has_no_finding() -> None:
    assert judge(HooksRecord(samples=[])) == []


# ---- GS601 ---------------------------------------------------------------------------------------
def test_gs601_names_the_place_and_the_counts_at_the_first_and_last_sample() -> None:
    (f,) = judge(sampled({"module encoder.0": [1, 2, 3, 4, 5]}))
    assert (f.code, f.severity, f.where) == ("GS601", Severity.WARNING, "encoder.0")
    assert "the module encoder.0 had 1 hook(s) after step 100 and 5 after step 500" in f.message


def test_gs601_names_a_tensor_place_by_its_name() -> None:
    (f,) = judge(sampled({"parameter fc.weight": [0, 1, 2, 3]}))
    assert f.where == "fc.weight" and "the parameter fc.weight had 0 hook(s)" in f.message


@pytest.mark.parametrize(("counts", "expected"), [
    pytest.param([1, 2, 3, 4], True, id="three consecutive growing samples are hooks piling up"),
    pytest.param([1, 2, 3], False, id="two growing samples are not enough"),
    pytest.param([1, 2, 3, 3, 4, 5], False, id="growth interrupted by a steady sample starts again"),
    pytest.param([1, 2, 3, 2, 3, 4, 5], True, id="three growing samples after a drop are enough"),
    pytest.param([5, 4, 3, 2, 1], False, id="hooks being removed are not piling up"),
    pytest.param([4], False, id="a single sample cannot grow"),
])
def test_gs601_needs_consecutive_growing_samples(counts: list[int], expected: bool) -> None:
    assert Thresholds().hooks_growth_samples == 3
    assert bool(judge(sampled({"module fc": counts}))) is expected


def test_gs601_edge_moves_with_the_threshold() -> None:
    rec = sampled({"module fc": [1, 2, 3]})
    assert judge(rec) == []
    assert judge(rec, Thresholds(hooks_growth_samples=2))
    assert judge(sampled({"module fc": [1, 2, 3, 4]}), Thresholds(hooks_growth_samples=4)) == []


def test_gs601_a_place_missing_from_a_sample_counts_as_no_hooks() -> None:
    samples = [HookSample(step=1, counts={}), HookSample(step=2, counts={"module fc": 1}),
               HookSample(step=3, counts={"module fc": 2}), HookSample(step=4, counts={"module fc": 3})]
    (f,) = judge(HooksRecord(samples=samples))
    assert "had 0 hook(s) after step 1 and 3 after step 4" in f.message


def test_gs601_one_finding_per_growing_place_sorted_by_place() -> None:
    rec = sampled({"parameter b.weight": [0, 1, 2, 3], "module z": [1, 2, 3, 4], "module a": [1, 1, 1, 1]})
    assert [f.where for f in judge(rec)] == ["z", "b.weight"]


# ---- GS602 ---------------------------------------------------------------------------------------
def test_gs602_names_the_place_the_kind_of_hook_and_how_often() -> None:
    rec = HooksRecord(gradient_changed_by=[HookChange(where="fc.weight", kind="tensor", times=12)], samples=[])
    (f,) = judge(rec)
    assert (f.code, f.severity, f.where) == ("GS602", Severity.INFO, "fc.weight")
    assert "a tensor hook on fc.weight returned a different gradient 12 time(s)" in f.message


def test_gs602_names_a_module_hook_by_its_kind() -> None:
    rec = HooksRecord(gradient_changed_by=[HookChange(where="encoder", kind="module backward hook", times=1)],
                      samples=[])
    (f,) = judge(rec)
    assert f.where == "encoder" and f.message.startswith("a module backward hook on encoder returned")


def test_gs602_one_finding_per_change() -> None:
    changes = [HookChange(where="a", kind="tensor", times=1), HookChange(where="b", kind="tensor", times=2)]
    assert [f.where for f in judge(HooksRecord(gradient_changed_by=changes, samples=[]))] == ["a", "b"]


# ---- records from an older gradscope -------------------------------------------------------------
def test_an_older_record_without_samples_yields_no_gs601_and_lists_it() -> None:
    rec = sampled({"module fc": [1, 2, 3, 4, 5]})
    assert rec.unjudged() == frozenset() and judge(rec)
    data = rec.to_json()
    del data["samples"]
    older = HooksRecord.from_json(data)
    assert older.samples is None and older.hook_counts == {"module fc": 5}
    assert older.unjudged() == {"GS601"}
    assert judge(older) == []


def test_an_older_record_is_still_judged_for_gs602() -> None:
    older = HooksRecord(gradient_changed_by=[HookChange(where="fc.weight", kind="tensor", times=3)])
    assert older.samples is None and older.unjudged() == {"GS601"}
    assert [f.code for f in judge(older)] == ["GS602"]


def test_a_version_1_file_lists_gs601_as_unjudged() -> None:
    run = load_record(FIXTURES / "watch_full.json")
    rec = run.probe(HooksRecord)
    assert rec is not None and rec.unjudged() == {"GS601"}
    assert judge_hooks(rec, run, Thresholds()) == []
