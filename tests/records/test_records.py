"""Typed records: every record gradscope 0.1 wrote still loads and renders, unknown fields are
tolerated, malformed ones are refused naming the field, and a record can be judged again."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from gradscope.errors import RecordError
from gradscope.probes import rejudge
from gradscope.records import ClippingRecord, GradNormRecord, RunRecord, load_record
from gradscope.reports.html import render_html
from gradscope.scope import watch
from gradscope.thresholds import Thresholds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records_v1"
V1 = sorted(FIXTURES.glob("*.json"))
SECTIONS = {  # what each 0.1 record holds evidence for
    "run_default.json": {"run", "model", "registration", "curves", "gradients", "clipping", "freezing",
                         "update-ratio", "dead-units", "zero-grad", "timings", "environment", "record"},
    "run_nan.json": {"run", "model", "registration", "curves", "gradients", "nonfinite", "freezing",
                     "timings", "lint", "environment", "record"},
    "run_script_two_models.json": {"run", "models", "model", "gradients", "freezing", "dead-units",
                                   "timings", "lint", "environment", "record"},
    "watch_full.json": {"model", "gradients", "activations", "tensors", "clipping", "freezing", "update-ratio",
                        "dead-units", "mode", "zero-grad", "timings", "record"},
    "watch_grad_norm_only.json": {"model", "gradients", "record"},
}


def sections(page: str) -> set[str]:
    return set(re.findall(r'<details class="section" id="([^"]+)"', page))


def test_every_fixture_is_covered() -> None:
    assert {p.name for p in V1} == set(SECTIONS)


@pytest.mark.parametrize("path", V1, ids=lambda p: p.stem)
def test_a_0_1_record_loads_and_renders_every_section_it_has_evidence_for(path: Path) -> None:
    record = load_record(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert raw["version"] == 1 and record.version == 2
    assert [f.to_json() for f in record.findings] == raw["findings"]
    assert set(record.probes) == {k for k, v in raw["probes"].items() if v}
    page = render_html(record)
    assert SECTIONS[path.name] <= sections(page)
    assert "could not be drawn" not in page


@pytest.mark.parametrize("path", V1, ids=lambda p: p.stem)
def test_a_0_1_record_written_again_reads_back_the_same(path: Path, tmp_path: Path) -> None:
    first = load_record(path)
    again = tmp_path / "again.json"
    again.write_text(json.dumps(first.to_json()), encoding="utf-8")
    assert load_record(again).to_json() == first.to_json()


def test_0_1_spellings_are_mapped_onto_the_typed_fields() -> None:
    record = load_record(FIXTURES / "run_default.json")
    raw = json.loads((FIXTURES / "run_default.json").read_text(encoding="utf-8"))
    assert record.model is not None and record.model.class_name == raw["model"]["class"]
    node = record.registration.tree[1] if record.registration else None
    assert node is not None and node.class_name == raw["registration"]["tree"][1]["class"]
    assert node.own_params == raw["registration"]["tree"][1]["own_parameters"]
    grad = record.probe(GradNormRecord)
    assert grad is not None
    name = grad.parameters[0]
    assert grad.parameter_stats.row(0).max == raw["probes"]["grad_norm"]["parameter_stats"][name]["max"]
    timing = record.probes["timing"]
    assert timing.summary is not None  # type: ignore[attr-defined]
    assert timing.summary.phases["step"].median_ms == raw["probes"]["timing"]["phases"]["step"]["median_ms"]  # type: ignore[attr-defined]


def _watched() -> RunRecord:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with watch(model, opt, update_ratio_every=2) as scope:
        for _ in range(8):
            opt.zero_grad()
            nn.functional.cross_entropy(model(torch.randn(6, 3)), torch.randint(0, 2, (6,))).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.01)
            opt.step()
    return scope.to_record()


def test_a_record_round_trips_through_json_exactly() -> None:
    record = _watched()
    data = json.loads(json.dumps(record.to_json()))
    assert RunRecord.from_json(data).to_json() == data


def test_unknown_fields_and_probes_are_tolerated_and_kept() -> None:
    data = _watched().to_json()
    data["written_by_a_newer_gradscope"] = {"x": 1}
    data["probes"]["grad_norm"]["a_new_field"] = [1, 2, 3]
    data["probes"]["my_probe"] = {"steps": [0, 1], "values": [0.5, "NaN"]}
    record = RunRecord.from_json(data)
    assert record.extra == {"written_by_a_newer_gradscope": {"x": 1}}
    assert record.other_probes == {"my_probe": {"steps": [0, 1], "values": [0.5, "NaN"]}}
    out = record.to_json()
    assert out["written_by_a_newer_gradscope"] == {"x": 1} and out["probes"]["my_probe"]["values"][1] == "NaN"
    page = render_html(record)
    assert "other" in sections(page) and "my_probe" in page


@pytest.mark.parametrize(("edit", "named"), [
    (lambda d: d["probes"]["grad_norm"]["total_norm"].__setitem__(3, "abc"),
     "probes.grad_norm.total_norm[3] should be a number, got the string 'abc'"),
    (lambda d: d["probes"]["grad_norm"]["layer_norms"][2].append(1.0),
     "probes.grad_norm.layer_norms[2] has 3 values where the rows before it have 2"),
    (lambda d: d["probes"]["grad_norm"].__setitem__("steps", "0-7"),
     "probes.grad_norm.steps should be a list, got the string '0-7'"),
    (lambda d: d["findings"][0].__setitem__("severity", "fatal"),
     "findings[0].severity should be one of error, warning, info"),
    (lambda d: d.__setitem__("model", [1]), "record.model should be an object, got a list"),
    (lambda d: d["probes"]["clipping"]["calls"][0].__setitem__("kind", "elementwise"),
     "probes.clipping.calls[0].kind should be one of 'norm', 'value', 'with_norm'"),
    (lambda d: d["probes"]["grad_norm"]["layer_norms"].pop(),
     "probes.grad_norm.layer_norms should be 8 entries (a row per step)"),
    (lambda d: d["probes"]["grad_norm"]["total_norm"].__setitem__(1, "2.5"),
     "probes.grad_norm.total_norm[1] should be a number, got the string '2.5'"),
    (lambda d: d["probes"]["grad_norm"]["total_norm"].__setitem__(0, True),
     "probes.grad_norm.total_norm[0] should be a number, got the boolean true"),
    (lambda d: d["probes"]["update_ratio"].update(steps=[]),
     "probes.update_ratio.ratios should be 0 rows"),
    (lambda d: [row.append(0.0) for row in d["probes"]["grad_norm"]["parameter_norms"]],
     "probes.grad_norm.parameter_norms should be rows of 4 values (one per parameter)"),
], ids=["a-word-among-the-norms", "a-ragged-row", "steps-as-text", "an-unknown-severity",
        "a-model-that-is-a-list", "an-unknown-clip-kind", "a-row-missing", "a-number-as-text",
        "a-boolean-among-numbers", "rows-without-steps", "a-column-too-many"])
def test_a_malformed_record_is_refused_naming_the_field(edit, named: str) -> None:  # noqa: ANN001
    data = copy.deepcopy(_watched().to_json())
    assert data["findings"], "the specimen needs a finding to break"
    edit(data)
    with pytest.raises(RecordError) as info:
        RunRecord.from_json(data)
    assert named in str(info.value), str(info.value)
    assert "write it again with gradscope" in str(info.value)


def test_judging_again_with_other_thresholds_changes_the_findings() -> None:
    record = _watched()
    assert "GS401" in {f.code for f in record.findings}  # max_norm 0.01 clips every step
    clip = record.probe(ClippingRecord)
    assert clip is not None and clip.summary.clipped_fraction == 1.0
    relaxed = rejudge(record, Thresholds(clip_rate=1.0))
    assert "GS401" not in {f.code for f in relaxed.findings}
    assert relaxed.thresholds["clip_rate"] == 1.0
    assert {f.code for f in rejudge(relaxed, Thresholds()).findings} == {f.code for f in record.findings}


def test_judging_a_0_1_record_again_keeps_what_its_evidence_cannot_support() -> None:
    record = load_record(FIXTURES / "watch_full.json")
    codes = [f.code for f in record.findings]
    assert "GS201" in codes and "GS301" in codes  # evidence a 0.1 record does not hold
    assert "GS201" in record.probes["grad_norm"].unjudged()
    again = rejudge(record, Thresholds(clip_rate=1.0))
    kept = [f.code for f in again.findings]
    assert "GS201" in kept and "GS301" in kept and "GS504" in kept
    assert "GS401" not in kept  # re-judged from the clip calls the record holds


def test_judging_a_script_with_two_models_again_keeps_each_models_findings_apart() -> None:
    record = load_record(FIXTURES / "run_script_two_models.json")
    again = rejudge(record, Thresholds(update_ratio_low=0.5))  # every ratio is now "small"
    names = [m.name for m in again.models]
    assert len(names) == 2
    flagged = [f for f in again.findings if f.code == "GS208"]
    assert flagged and all(f.where.split(": ")[0] in names for f in flagged)
    assert {f.where.split(": ")[0] for f in flagged} == set(names)
    for model in again.models:
        assert any(f.code == "GS208" for f in model.findings)


def test_a_short_run_still_shows_its_step_timings() -> None:
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt, probes=["timing"]) as scope:
        for _ in range(3):  # all inside the 5 warm-up steps
            opt.zero_grad()
            model(torch.randn(4, 3)).sum().backward()
            opt.step()
    record = scope.to_record()
    assert record.probes["timing"].summary is None  # type: ignore[attr-defined]
    page = render_html(record)
    assert 'id="fig-timings"' in page and "Every recorded step was a warm-up step" in page
