"""The JSON record: strict JSON (NaN as strings), atomic writes, and safe, explained loading."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from gradscope.errors import RecordError
from gradscope.reports import record as record_module
from gradscope.reports.record import SCHEMA, VERSION, load_record, write_record, write_text_atomic
from gradscope.scope import watch


def _only(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_and_load_round_trip(tmp_path: Path) -> None:
    body = {"steps": 3, "values": [1.5, 2.0], "nested": {"a": [1, {"b": None}]}}
    path = write_record(body, tmp_path / "run.json")
    assert path == tmp_path / "run.json"
    data = load_record(path)
    assert data["schema"] == SCHEMA and data["version"] == VERSION
    assert data["steps"] == 3 and data["values"] == [1.5, 2.0] and data["nested"] == {"a": [1, {"b": None}]}


def test_nonfinite_values_become_strings(tmp_path: Path) -> None:
    path = write_record({"x": [float("nan"), float("inf"), -float("inf"), 1.0], "y": {"z": float("nan")}},
                        tmp_path / "r.json")
    text = path.read_text(encoding="utf-8")
    json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in the JSON"))
    data = load_record(path)
    assert data["x"] == ["NaN", "Infinity", "-Infinity", 1.0]
    assert data["y"] == {"z": "NaN"}


def test_write_leaves_no_temporary_file_and_creates_folders(tmp_path: Path) -> None:
    target = tmp_path / "deep" / "er" / "run.json"
    write_record({"a": 1}, target)
    assert _only(target.parent) == ["run.json"]


def test_write_replaces_an_existing_file_whole(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    target.write_text("x" * 100_000, encoding="utf-8")
    write_record({"a": 1}, target)
    assert load_record(target)["a"] == 1
    assert "x" not in target.read_text(encoding="utf-8")
    assert _only(tmp_path) == ["run.json"]


def test_a_failed_write_keeps_the_old_file_and_cleans_up(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "run.json"
    write_record({"a": 1}, target)
    before = target.read_bytes()

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(record_module.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic("new text", target)
    assert target.read_bytes() == before
    assert _only(tmp_path) == ["run.json"]


def test_load_rejects_malformed_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"schema": "gradscope.record",\n "version": 1,,}', encoding="utf-8")
    with pytest.raises(RecordError) as info:
        load_record(path)
    assert "bad.json:2" in str(info.value) and "not valid JSON" in str(info.value)


@pytest.mark.parametrize("body", [[1, 2], {"steps": 3}, {"schema": "other.tool", "version": 1}],
                         ids=["a-list", "no-schema", "other-schema"])
def test_load_rejects_json_that_is_not_a_gradscope_record(tmp_path: Path, body: object) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    with pytest.raises(RecordError, match="not a gradscope record"):
        load_record(path)


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
    assert data["steps"] == 4 and data["step_on"] == "optimizer"
    assert data["model"]["class"] == "Sequential" and data["model"]["parameters"] == 3 * 4 + 4 + 4 + 1
    grad = data["probes"]["grad_norm"]
    assert grad["steps"] == [0, 1, 2, 3]
    assert grad["total_norm"][2] == "NaN" and isinstance(grad["total_norm"][0], float)
    assert {f["code"] for f in data["findings"]} >= {"GS205", "GS206"}
    assert data["findings"] == [f.to_dict() for f in scope.findings]
