"""TensorBoard: the exporter probe and ``export_tensorboard``, read back with tensorboard's own
event reader."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("tensorboard")

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import gradscope  # noqa: E402
from gradscope.integrations import tensorboard as tb  # noqa: E402
from gradscope.integrations.tensorboard import TensorBoardExporter, export_tensorboard  # noqa: E402
from gradscope.records import RunRecord, load_record  # noqa: E402


def train(exporter: TensorBoardExporter | None, steps: int = 7, flush_every: int = 3) -> gradscope.Scope:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 8), 3 * torch.randn(32, 1)
    probes: list[Any] = ["default"] + ([exporter] if exporter is not None else [])
    with gradscope.watch(model, optimizer, flush_every=flush_every, probes=probes) as scope:
        for _ in range(steps):
            loss = nn.functional.mse_loss(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
    return scope


def read(path: Path) -> EventAccumulator:
    events = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    return events


def values(events: EventAccumulator, tag: str) -> tuple[list[int], np.ndarray]:
    items = events.Scalars(tag)
    return [e.step for e in items], np.array([e.value for e in items], dtype=np.float32)


def assert_holds_the_record(events: EventAccumulator, record: RunRecord) -> None:
    """Every per-layer and total norm of the record, at its steps, equal in float32 (TensorBoard
    stores float32), and the clip rate at each clip call."""
    grad = record.probes["grad_norm"]
    for j, layer in enumerate(grad.layers):
        steps, got = values(events, f"gradscope/grad_norm/{layer}")
        assert steps == list(grad.steps)
        np.testing.assert_array_equal(got, grad.layer_norms[:, j].astype(np.float32))
    steps, got = values(events, "gradscope/grad_norm/total")
    assert steps == list(grad.steps)
    np.testing.assert_array_equal(got, grad.total_norm.astype(np.float32))
    clip = record.probes["clipping"]
    steps, got = values(events, "gradscope/clip_rate")
    assert steps == [c.step for c in clip.calls]
    np.testing.assert_array_equal(got, clip.summary.rolling_clipped_fraction.astype(np.float32))


def test_the_live_exporter_writes_the_records_norms_into_one_event_file(tmp_path: Path) -> None:
    exporter = TensorBoardExporter(tmp_path / "runs")
    scope = train(exporter)
    record = scope.to_record()
    assert exporter.path is not None
    assert list((tmp_path / "runs").iterdir()) == [exporter.path]     # one event file for the run
    events = read(exporter.path)
    assert_holds_the_record(events, record)
    assert record.probes["grad_norm"].layers == ["0", "2", "4"]
    counts = {s: values(events, f"gradscope/findings/{s}")[1][-1] for s in ("error", "warning", "info")}
    assert counts == {s: sum(f.severity.value == s for f in record.findings) for s in counts}
    text = events.Tensors("gradscope/findings/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert all(f.code in text for f in record.findings)


def test_writes_happen_at_flushes_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing per step: every write happens inside a flush (steps 3 and 6 of 3, and the close)."""
    exporter = TensorBoardExporter(tmp_path)
    at: list[int] = []
    original = tb.EventWriter.scalars

    def spy(self: tb.EventWriter, step: int, vals: dict[str, float]) -> None:
        assert exporter.run is not None
        at.append(exporter.run.step)
        original(self, step, vals)

    monkeypatch.setattr(tb.EventWriter, "scalars", spy)
    train(exporter, steps=7, flush_every=3)
    assert sorted(set(at)) == [3, 6, 7]


def test_export_of_a_finished_record_equals_it(tmp_path: Path) -> None:
    scope = train(None)
    saved = scope.report(tmp_path / "run.json")
    record = load_record(saved)
    path = export_tensorboard(saved, tmp_path / "export")
    assert list((tmp_path / "export").iterdir()) == [path]
    assert_holds_the_record(read(path), record)
    again = export_tensorboard(record, tmp_path / "export")          # a second export: its own file
    assert again != path and len(list((tmp_path / "export").iterdir())) == 2


def test_the_exporter_says_when_it_is_not_last(tmp_path: Path) -> None:
    # watch() puts the built-in probes first and probe instances after them, in the order given
    from gradscope.probes import Probe

    class After(Probe):
        name = "tensorboard_test_after"

    model = nn.Linear(2, 1)
    with pytest.warns(RuntimeWarning, match="not the last probe"):
        with gradscope.watch(model, probes=["grad_norm", TensorBoardExporter(tmp_path), After()]):
            model(torch.randn(3, 2)).sum().backward()


def test_findings_text_is_a_markdown_table_with_cells_escaped() -> None:
    from gradscope.findings import finding

    text = tb.findings_markdown([finding("GS101", "Net.a|b", "a | b\nc")])
    assert "Net.a\\|b" in text and "a \\| b c" in text
    assert tb.findings_markdown([]).startswith("No findings")


def test_the_export_command(tmp_path: Path) -> None:
    """``gradscope export RUN.json --tensorboard DIR``: 0 written, 2 bad record, 74 not written."""
    from click.testing import CliRunner

    from gradscope.cli import main

    saved = train(None).report(tmp_path / "run.json")
    result = CliRunner().invoke(main, ["export", str(saved), "--tensorboard", str(tmp_path / "tb")])
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "tb").iterdir()
    assert f"wrote {written}" in result.output
    assert_holds_the_record(read(written), load_record(saved))
    missing = CliRunner().invoke(main, ["export", str(tmp_path / "nope.json"), "--tensorboard", str(tmp_path)])
    assert missing.exit_code == 2 and "nope.json" in missing.output
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder", encoding="utf-8")
    unwritable = CliRunner().invoke(main, ["export", str(saved), "--tensorboard", str(blocked / "tb")])
    assert unwritable.exit_code == 74 and "was not written" in unwritable.output, unwritable.output
