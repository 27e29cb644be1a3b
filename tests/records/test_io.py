"""The JSON record: strict JSON (NaN as strings), atomic writes, and safe, explained loading."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import gradscope.records.io as record_io
from gradscope.errors import RecordError
from gradscope.records import (
    SCHEMA,
    VERSION,
    GradNormRecord,
    ModelInfo,
    RunRecord,
    Stats,
    StatsTable,
    load_record,
    write_record,
    write_text_atomic,
)
from gradscope.scope import watch


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _record(**fields: Any) -> dict[str, Any]:
    """A complete record as JSON: the schema, the current version, and ``fields``."""
    return {"schema": SCHEMA, "version": VERSION, **fields}


def _grad_norm(total: list[float]) -> GradNormRecord:
    """A consistent grad-norm record: one layer with one parameter over ``len(total)`` steps."""
    n = len(total)
    column = StatsTable(count=[n], min=np.array([min(total)]), max=np.array([max(total)]),
                        mean=np.array([sum(total) / n]), first_nonfinite_step=[None])
    return GradNormRecord(parameters=["fc.weight"], layers=["fc"], parameter_layer=[0],
                          backward_order=["fc.weight"], steps=list(range(n)), total_norm=np.array(total),
                          layer_norms=np.array(total).reshape(n, 1), parameter_norms=np.array(total).reshape(n, 1),
                          parameter_stats=column, layer_stats=column,
                          total_stats=Stats(n, min(total), max(total), sum(total) / n, None),
                          no_gradient=[], steps_seen=n)


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    body = _record(steps=3, model={"class_name": "Net", "parameters": 10, "trainable": 4, "device": "cpu"},
                   values=[1.5, 2.0], nested={"a": [1, {"b": None}]})
    path = write_record(body, tmp_path / "run.json")
    assert path == tmp_path / "run.json"
    data = load_record(path)
    assert data.schema == SCHEMA and data.version == VERSION
    assert data.steps == 3 and data.model == ModelInfo("Net", 10, 4, "cpu")
    # keys this version does not know are kept as they were
    assert data.extra == {"values": [1.5, 2.0], "nested": {"a": [1, {"b": None}]}}
    assert json.loads(path.read_text(encoding="utf-8")) == data.to_json()


def test_typed_records_round_trip(tmp_path: Path) -> None:
    run = RunRecord(steps=3, model=ModelInfo("Net", 10, 10, "cpu"), probes={"grad_norm": _grad_norm([1.0, 2.0, 4.0])})
    loaded = load_record(write_record(run, tmp_path / "run.json"))
    assert loaded.to_json() == run.to_json()
    grad = loaded.probe(GradNormRecord)
    assert grad is not None and grad.total_norm.tolist() == [1.0, 2.0, 4.0]
    assert grad.parameter_stats.row(grad.parameters.index("fc.weight")).max == 4.0


def test_nonfinite_values_become_strings(tmp_path: Path) -> None:
    run = RunRecord(steps=4, probes={"grad_norm": _grad_norm([float("nan"), float("inf"), -float("inf"), 1.0])},
                    extra={"y": {"z": float("nan")}})
    path = write_record(run, tmp_path / "r.json")
    text = path.read_text(encoding="utf-8")
    raw = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    assert raw["probes"]["grad_norm"]["total_norm"] == ["NaN", "Infinity", "-Infinity", 1.0]
    assert raw["probes"]["grad_norm"]["layer_norms"] == [["NaN"], ["Infinity"], ["-Infinity"], [1.0]]
    assert raw["y"] == {"z": "NaN"}
    data = load_record(path)                       # and they read back as the numbers they were
    total = data.probe(GradNormRecord).total_norm  # type: ignore[union-attr]
    assert math.isnan(total[0]) and total[1] == math.inf and total[2] == -math.inf and total[3] == 1.0
    assert data.extra["y"] == {"z": "NaN"}


def test_write_leaves_no_temporary_file_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "run.json"
    write_record(_record(steps=1), target)
    assert _only(target.parent) == ["run.json"]


def test_write_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("x" * 100_000, encoding="utf-8")
    write_record(_record(steps=1), target)
    assert load_record(target).steps == 1
    assert "x" not in target.read_text(encoding="utf-8")
    assert _only(tmp_path) == ["run.json"]


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run.json"
    write_record(_record(steps=1), target)
    before = target.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(record_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic("new text", target)
    assert target.read_bytes() == before
    assert _only(tmp_path) == ["run.json"]


def test_load_rejects_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"schema": "gradscope.record",\n "version": 2,,}', encoding="utf-8")
    with pytest.raises(RecordError) as info:
        load_record(path)
    assert "bad.json:2" in str(info.value) and "not valid JSON" in str(info.value)


@pytest.mark.parametrize("body", [[1, 2], {"steps": 3}, {"schema": "other.tool", "version": 1}],
                         ids=["a-list", "no-schema", "other-schema"])
def test_load_rejects_json_that_is_not_a_gradscope_record(tmp_path: Path, body: object) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(RecordError, match="not a gradscope record") as info:
        load_record(path)
    assert "other.json" in str(info.value)


def test_load_rejects_a_future_version(tmp_path: Path) -> None:
    path = tmp_path / "future.json"
    path.write_text(json.dumps({"schema": SCHEMA, "version": VERSION + 1}), encoding="utf-8")
    with pytest.raises(RecordError) as info:
        load_record(path)
    assert f"version {VERSION + 1}" in str(info.value) and "upgrade gradscope" in str(info.value)


@pytest.mark.parametrize("version", [0, "1", None], ids=["zero", "string", "missing"])
def test_load_rejects_a_bad_version(tmp_path: Path, version: object) -> None:
    path = tmp_path / "v.json"
    path.write_text(json.dumps({"schema": SCHEMA, "version": version}), encoding="utf-8")
    with pytest.raises(RecordError, match="positive integer"):
        load_record(path)


def test_load_explains_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no such file"):
        load_record(tmp_path / "nothing.json")


def test_load_names_the_file_and_the_field_of_a_bad_value(tmp_path: Path) -> None:
    body = RunRecord(steps=4, probes={"grad_norm": _grad_norm([1.0, 2.0, 3.0, 4.0])}).to_json()
    body["probes"]["grad_norm"]["total_norm"][3] = "abc"
    path = tmp_path / "hand.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(RecordError) as info:
        load_record(path)
    message = str(info.value)
    assert "hand.json" in message
    assert "probes.grad_norm.total_norm[3] should be a number, got the string 'abc'" in message


def test_scope_report_writes_a_record_load_record_reads(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt) as scope:
        for step in range(4):
            if step == 2:
                with torch.no_grad():
                    model[2].weight[0, 0] = float("nan")
            opt.zero_grad()
            model(torch.randn(5, 3)).pow(2).mean().backward()
            opt.step()
    path = scope.report(tmp_path / "out" / "run.json")
    assert _only(path.parent) == ["run.json"]
    data = load_record(path)
    assert data.steps == 4 and data.step_on == "optimizer"
    assert data.model is not None
    assert data.model.class_name == "Sequential" and data.model.parameters == 3 * 4 + 4 + 4 + 1
    grad = data.probe(GradNormRecord)
    assert grad is not None and grad.steps == [0, 1, 2, 3]
    assert math.isnan(grad.total_norm[2]) and math.isfinite(grad.total_norm[0])
    raw = json.loads(path.read_text(encoding="utf-8"))["probes"]["grad_norm"]
    assert raw["total_norm"][2] == "NaN" and isinstance(raw["total_norm"][0], float)
    assert {f.code for f in data.findings} >= {"GS205", "GS206"}
    assert data.findings == scope.findings
    assert [f.to_json() for f in data.findings] == [f.to_dict() for f in scope.findings]
