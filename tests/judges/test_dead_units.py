"""GS207: the dead-unit judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.dead_units import judge_dead_units
from gradscope.records import DeadUnits, DeadUnitsRecord, ModelInfo, RunRecord
from gradscope.thresholds import Thresholds


def judge(rec: DeadUnitsRecord, th: Thresholds | None = None) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name="Net"), steps=100, backwards=100, probes={"dead_units": rec})
    return judge_dead_units(rec, run, th or Thresholds())


def layer(module: str, dead_fraction: float, units: int = 64, batches: int = 10) -> DeadUnits:
    return DeadUnits(module=module, units=units, batches=batches, dead_fraction=dead_fraction)


def test_a_layer_with_few_dead_units_has_no_finding() -> None:
    assert judge(DeadUnitsRecord(layers=[layer("body.1", 0.05), layer("body.3", 0.0)])) == []


def test_an_empty_record_has_no_finding() -> None:
    assert judge(DeadUnitsRecord()) == []


def test_gs207_names_the_layer_and_how_many_units_died() -> None:
    (f,) = judge(DeadUnitsRecord(layers=[layer("body.1", 0.75, units=64, batches=12)]))
    assert (f.code, f.severity, f.where) == ("GS207", Severity.WARNING, "body.1")
    assert "48 of 64 units (75%) after body.1 never activated over 12 training batches" in f.message


@pytest.mark.parametrize(("fraction", "expected"), [
    pytest.param(33 / 64, True, id="just over half the units dead is a finding"),
    pytest.param(0.5, False, id="exactly half the units dead is not more than half"),
    pytest.param(31 / 64, False, id="just under half the units dead is not"),
    pytest.param(1.0, True, id="every unit dead is a finding"),
])
def test_gs207_edge_at_half_the_units(fraction: float, expected: bool) -> None:
    assert bool(judge(DeadUnitsRecord(layers=[layer("body.1", fraction)]))) is expected


def test_gs207_edge_moves_with_the_threshold() -> None:
    rec = DeadUnitsRecord(layers=[layer("body.1", 0.6)])
    assert judge(rec)
    assert judge(rec, Thresholds(dead_fraction=0.7)) == []
    assert judge(DeadUnitsRecord(layers=[layer("body.1", 0.3)]), Thresholds(dead_fraction=0.25))


def test_gs207_one_finding_per_layer_over_the_threshold() -> None:
    rec = DeadUnitsRecord(layers=[layer("body.1", 0.9), layer("body.3", 0.1), layer("body.5", 0.6, units=10)])
    found = judge(rec)
    assert [f.where for f in found] == ["body.1", "body.5"]
    assert "6 of 10 units (60%)" in found[1].message


def test_a_version_1_layout_is_read_and_judged_the_same() -> None:
    old = {"body.1[64]": {"module": "body.1", "units": 64, "batches": 12, "dead_fraction": 0.75}}
    rec = DeadUnitsRecord.from_json(old)
    assert rec.layers == [layer("body.1", 0.75, batches=12)]
    assert [f.where for f in judge(rec)] == ["body.1"]
    assert rec.unjudged() == frozenset()
