"""Zero-code mode: `gradscope run script.py -- ARGS` on unmodified training scripts."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from gradscope.cli import main
from gradscope.script import ScriptWatcher, looks_like_script, run_script

SCRIPTS = Path(__file__).resolve().parent / "scripts"


def run(tmp_path: Path, script: str, *args: str) -> tuple[Result, dict]:
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["run", str(SCRIPTS / script), "--out", str(out), "--", *args],
                                terminal_width=100)
    record = json.loads((out / "run.json").read_text())
    return result, record


def codes(record: dict) -> set[str]:
    return {f["code"] for f in record["findings"]}


def test_healthy_script_keeps_its_output_and_gets_no_warning(tmp_path: Path) -> None:
    result, record = run(tmp_path, "healthy.py", "--steps", "6")
    assert result.exit_code == 0, result.output
    plain = subprocess.run([sys.executable, str(SCRIPTS / "healthy.py"), "--steps", "6"],
                           capture_output=True, text=True, cwd=SCRIPTS, check=True)
    # The script's results are unchanged by gradscope: the same printed losses, to the last digit.
    assert result.stdout == plain.stdout
    assert not {f["code"] for f in record["findings"] if f["severity"] != "info"}
    assert record["run"]["mode"] == "script"
    assert record["steps"] == 6
    assert "watching Sequential" in result.stderr
    assert (tmp_path / "out" / "report.html").is_file()


@pytest.mark.parametrize(("script", "args", "code"), [
    ("no_zero_grad.py", [], "GS503"),
    ("clip_before_backward.py", [], "GS403"),
    ("hook_in_loop.py", [], "GS601"),
    ("amp_no_unscale.py", [], "GS406"),
    ("eval_train_mode.py", [], "GS504"),
], ids=["no-zero-grad", "clip-before-backward", "hook-in-loop", "amp-without-unscale", "eval-in-train-mode"])
def test_specimen_scripts_trigger_their_code(tmp_path: Path, script: str, args: list[str], code: str) -> None:
    result, record = run(tmp_path, script, *args)
    assert result.exit_code == 0, result.output  # the script's own exit code, findings or not
    assert code in codes(record), record["findings"]


@pytest.mark.parametrize(("script", "args", "code"), [
    ("amp_no_unscale.py", ["--unscale"], "GS406"),
    ("eval_train_mode.py", ["--eval"], "GS504"),
    ("healthy.py", [], "GS503"),
    ("healthy.py", [], "GS403"),
    ("healthy.py", [], "GS601"),
], ids=["amp-with-unscale", "eval-with-eval", "healthy-zeroes", "healthy-clips-after-backward",
        "healthy-no-hooks"])
def test_healthy_twins_do_not(tmp_path: Path, script: str, args: list[str], code: str) -> None:
    result, record = run(tmp_path, script, *args)
    assert result.exit_code == 0, result.output
    assert code not in codes(record), record["findings"]


def test_amp_with_unscale_is_not_called_exploding(tmp_path: Path) -> None:
    _, record = run(tmp_path, "amp_no_unscale.py", "--unscale")
    assert "GS204" not in codes(record), "norms must be read unscaled under a GradScaler"


def test_two_models_with_two_optimizers_each_get_a_section(tmp_path: Path) -> None:
    result, record = run(tmp_path, "two_models.py")
    assert result.exit_code == 0, result.output
    models = record["models"]
    assert [m["optimizers"] for m in models] == [["Adam"], ["Adam"]]
    assert [m["steps"] for m in models] == [10, 10]
    assert "GS503" not in codes(record)  # the discriminator gets zeroed before its own backward
    assert result.stderr.count("watching Sequential") == 2
    page = (tmp_path / "out" / "report.html").read_text()
    assert "Models in the script" in page
    assert "model0-total-norm" in page and "model1-total-norm" in page


def test_manual_update_without_optimizer_counts_backward_passes(tmp_path: Path) -> None:
    result, record = run(tmp_path, "manual_sgd.py")
    assert result.exit_code == 0, result.output
    grad = record["probes"]["grad_norm"]
    assert record["step_on"] == "backward"
    assert grad["steps"] == list(range(7))
    assert all(total > 0 for total in grad["total_norm"])
    assert "no optimizer" in result.stderr


def test_script_reads_its_argv_and_keeps_its_exit_code(tmp_path: Path) -> None:
    result, record = run(tmp_path, "exits_3.py", "--alpha", "1")
    assert result.exit_code == 3
    assert "argv: --alpha 1" in result.stdout
    assert record["run"]["exit_code"] == 3
    assert record["run"]["arguments"] == ["--alpha", "1"]


def test_a_crashing_script_shows_its_own_frames_and_still_writes_the_report(tmp_path: Path) -> None:
    result, record = run(tmp_path, "raises.py")
    assert result.exit_code == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "raises.py" in result.stderr and "RuntimeError: the script's own failure" in result.stderr
    assert "gradscope/script.py" not in result.stderr and "gradscope/runner.py" not in result.stderr
    assert record["run"]["status"] == "crashed"
    assert record["probes"]["grad_norm"]["steps"] == [0, 1]
    assert (tmp_path / "out" / "report.html").is_file()


def test_scripts_and_model_files_are_told_apart(tmp_path: Path) -> None:
    assert looks_like_script(SCRIPTS / "no_zero_grad.py")
    assert looks_like_script(SCRIPTS / "raises.py")  # only a __main__ block
    model_file = tmp_path / "model.py"
    model_file.write_text("from torch import nn\n\ndef build_model():\n    return nn.Linear(2, 2)\n")
    assert not looks_like_script(model_file)


def test_global_hooks_are_gone_after_the_script(tmp_path: Path) -> None:
    import torch.optim.optimizer as opt_hooks
    from torch.nn.modules import module as module_hooks

    before = (len(module_hooks._global_forward_pre_hooks), len(module_hooks._global_forward_hooks),
              len(opt_hooks._global_optimizer_pre_hooks))
    run(tmp_path, "raises.py")
    after = (len(module_hooks._global_forward_pre_hooks), len(module_hooks._global_forward_hooks),
             len(opt_hooks._global_optimizer_pre_hooks))
    assert after == before
    assert sys.modules["__main__"].__name__ == "__main__" and "raises" not in str(
        getattr(sys.modules["__main__"], "__file__", ""))


def test_a_script_that_calls_chdir_leaves_the_caller_where_it_was(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script.write_text(f"import os\nos.chdir({str(elsewhere)!r})\n", encoding="utf-8")
    before = os.getcwd()
    result = run_script(script, [], ScriptWatcher())
    assert result.status == "completed" and os.getcwd() == before
