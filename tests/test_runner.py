"""`gradscope run` end to end on model-file specimens: codes in the JSON, status and exit code."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gradscope.cli import main

MODELS = Path(__file__).resolve().parent / "models"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SMALL = ["--train-size", "256", "--test-size", "64", "--batch-size", "32"]


def run(tmp_path: Path, file: Path | None, *extra: str) -> tuple[Result, dict]:
    out = tmp_path / "out"
    args = ["run", *([str(file)] if file else []), "--out", str(out), *extra]
    result = CliRunner().invoke(main, args, terminal_width=100)
    assert (out / "run.json").is_file(), result.output
    return result, json.loads((out / "run.json").read_text())


def codes(record: dict) -> set[str]:
    return {f["code"] for f in record["findings"]}


def test_healthy_model_file_trains_and_reports(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "healthy_mlp.py", *SMALL, "--epochs", "2")
    assert result.exit_code == 0, result.output
    assert not {f["code"] for f in record["findings"] if f["severity"] in ("warning", "error")}
    curves = record["curves"]
    assert curves["epoch"] == [-1, 0, 1]
    assert curves["test_accuracy_percent"][-1] > curves["test_accuracy_percent"][0]
    assert set(curves) >= {"train_loss", "train_accuracy_percent", "test_loss", "test_accuracy_percent"}
    assert record["run"]["status"] == "completed"
    assert record["run"]["options"]["epochs"] == 2
    assert record["probes"]["grad_norm"]["steps"] == list(range(record["steps"]))
    assert (tmp_path / "out" / "report.html").is_file()
    assert "test accuracy" in result.output and "report:" in result.output


def test_list_instead_of_modulelist_is_reported_not_crashed(tmp_path: Path) -> None:
    result, record = run(tmp_path, EXAMPLES / "list_not_modulelist.py", *SMALL)
    assert result.exit_code == 1
    assert "GS101" in codes(record)
    assert record["run"]["status"] == "crashed"
    assert "no trainable parameters" in record["run"]["error"]
    assert "Traceback" not in result.output


def test_head_replaced_after_optimizer(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "head_after_optimizer.py", *SMALL, "--max-steps", "4")
    assert {"GS303", "GS301"} <= codes(record)
    assert result.exit_code == 1  # GS303 is an error


def test_softmax_before_cross_entropy(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "softmax_before_ce.py", *SMALL, "--max-steps", "4",
                         "--fail-on", "warning")
    assert "GS501" in codes(record)
    assert result.exit_code == 1


def test_one_output_with_cross_entropy(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "one_output_ce.py", *SMALL)
    assert "GS502" in codes(record)
    assert record["run"]["status"] == "crashed"
    assert result.exit_code == 1
    assert "IndexError" not in result.output


def test_nan_model_is_traced_to_its_module(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "nan_model.py", *SMALL, "--max-steps", "5")
    assert result.exit_code == 1
    assert record["run"]["status"] == "nonfinite"
    gs206 = [f for f in record["findings"] if f["code"] == "GS206"]
    assert gs206 and gs206[0]["where"] == "1"  # the Log layer, first to produce NaN
    assert (tmp_path / "out" / "report.html").is_file()


def test_crash_in_forward_names_module_and_shapes(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "shape_mismatch.py", *SMALL)
    assert result.exit_code == 1
    assert record["run"]["status"] == "crashed"
    error = record["run"]["error"]
    assert "2" in error and "64" in error and "32" in error
    assert "Traceback" not in result.output


def test_interrupted_run_still_writes_its_report(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "interrupted.py", *SMALL)
    assert result.exit_code == 130
    assert record["run"]["status"] == "interrupted"
    assert record["steps"] == 4
    assert (tmp_path / "out" / "report.html").is_file()


def test_notes_finetuning_recipe_runs_as_a_model_file(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "resnet18_finetune.py", "--train-size", "32",
                         "--test-size", "16", "--batch-size", "8", "--max-steps", "3")
    assert result.exit_code == 0, result.output
    found = codes(record)
    assert "GS306" in found and "GS304" in found
    assert not {"GS301", "GS303"} & found
    assert record["probes"]["freeze"]["trainable"] == 512 * 10 + 10


def test_checkpoints_are_saved_when_asked(tmp_path: Path) -> None:
    result, record = run(tmp_path, MODELS / "healthy_mlp.py", *SMALL, "--max-steps", "2", "--save")
    assert result.exit_code == 0, result.output
    assert sorted(Path(p).name for p in record["run"]["checkpoints"]) == ["model.pth", "optimizer.pth"]
    assert all(Path(p).is_file() for p in record["run"]["checkpoints"])


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    _, a = run(tmp_path / "a", MODELS / "healthy_mlp.py", *SMALL, "--max-steps", "6")
    _, b = run(tmp_path / "b", MODELS / "healthy_mlp.py", *SMALL, "--max-steps", "6")
    assert a["curves"] == b["curves"]
    assert a["probes"]["grad_norm"]["total_norm"] == b["probes"]["grad_norm"]["total_norm"]


def test_missing_file_is_bad_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", str(tmp_path / "nope.py"), "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_default_run_reaches_90_percent(tmp_path: Path) -> None:
    """The README's main command: the notes' CNN on the embedded data, one epoch."""
    result, record = run(tmp_path, None)
    assert result.exit_code == 0, result.output
    assert record["curves"]["test_accuracy_percent"][-1] >= 90.0
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
