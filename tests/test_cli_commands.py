"""The commands besides `check` and `run`: bench, lint, report, compare."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from gradscope.cli import main

MODELS = Path(__file__).resolve().parent / "models"
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), terminal_width=100)


def test_bench_prints_the_phase_table_and_the_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = invoke("bench", str(MODELS / "healthy_mlp.py"), "--steps", "10", "--batch-size", "16",
                    "--json", str(out))
    assert result.exit_code == 0, result.output
    for phase in ("forward", "backward", "optimizer", "gradscope", "step"):
        assert phase in result.output
    assert "overhead ratio" in result.output and "samples/s" in result.output
    data = json.loads(out.read_text())
    assert data["overhead_ratio"] > 0
    assert data["baseline"]["steps_measured"] == data["watched"]["steps_measured"] == 5


def test_bench_refuses_too_few_steps() -> None:
    result = invoke("bench", "--steps", "3")
    assert result.exit_code == 2
    assert "Traceback" not in result.output


def test_lint_prints_editor_lines_and_fails_on_warnings(tmp_path: Path) -> None:
    bad = tmp_path / "train.py"
    bad.write_text("import torch\n\nmodel = torch.nn.Linear(2, 2)\n"
                   "torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm=1)\n")
    result = invoke("lint", str(bad), "--json", str(tmp_path / "lint.json"))
    assert result.exit_code == 1
    assert f"{bad}:4:" in result.output and "GS507" in result.output
    assert "1 finding(s) in 1 file(s)" in result.output
    data = json.loads((tmp_path / "lint.json").read_text())
    assert data["schema"] == "gradscope.lint" and data["findings"][0]["code"] == "GS507"
    assert invoke("lint", str(bad), "--ignore", "GS507").exit_code == 0


def test_lint_of_a_clean_file_passes() -> None:
    result = invoke("lint", str(SCRIPTS / "healthy.py"))
    assert result.exit_code == 0, result.output
    assert "0 finding(s)" in result.output


def test_report_and_compare_render_records(tmp_path: Path) -> None:
    runs = []
    for name, extra in (("before", ["--lr", "0"]), ("after", [])):
        out = tmp_path / name
        result = invoke("run", str(MODELS / "healthy_mlp.py"), "--out", str(out), "--train-size", "128",
                        "--test-size", "32", "--max-steps", "4", "-q", *extra)
        assert result.exit_code in (0, 1), result.output
        runs.append(out / "run.json")
    page = tmp_path / "again.html"
    result = invoke("report", str(runs[0]), "-o", str(page))
    assert result.exit_code == 0, result.output
    assert page.read_text().lstrip().lower().startswith("<!doctype html")
    diff = tmp_path / "diff.html"
    result = invoke("compare", str(runs[0]), str(runs[1]), "-o", str(diff))
    assert result.exit_code == 0, result.output
    text = diff.read_text()
    assert "before" in text and "after" in text


def test_report_of_a_bad_record_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "run.json"
    bad.write_text('{"schema": "gradscope.record", "version": 99}')
    result = invoke("report", str(bad))
    assert result.exit_code == 2
    assert "newer" in result.output and "Traceback" not in result.output


def test_run_lints_the_file_first_and_keeps_it_in_the_record(tmp_path: Path) -> None:
    result = invoke("run", str(SCRIPTS / "no_zero_grad.py"), "--out", str(tmp_path), "-q")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run.json").read_text())
    assert "lint" in record  # silenced here by the specimen's noqa, so empty but present
    (tmp_path / "_common.py").write_text((SCRIPTS / "_common.py").read_text())
    script = tmp_path / "loss_acc.py"
    script.write_text((SCRIPTS / "healthy.py").read_text().replace(
        "for step in range(args.steps):", "total = 0\nfor step in range(args.steps):").replace(
        "    optimizer.step()\n", "    optimizer.step()\n    total += loss\n"))
    result = invoke("run", str(script), "--out", str(tmp_path / "b"), "-q", "--", "--steps", "2")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "b" / "run.json").read_text())
    assert "GS509" in {f["code"] for f in record["lint"]}
    assert "GS509" in {f["code"] for f in record["findings"]}


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "records_v1"


def test_report_judges_a_record_again_with_other_thresholds(tmp_path: Path) -> None:
    record = FIXTURES / "run_default.json"
    page = tmp_path / "page.html"
    as_recorded = invoke("report", str(record), "-o", str(page))
    assert as_recorded.exit_code == 0, as_recorded.output
    assert "GS401" in page.read_text(encoding="utf-8")
    relaxed = invoke("report", str(record), "-o", str(page), "--thresholds", "clip_rate=1.0, update_ratio_low=1e-9")
    assert relaxed.exit_code == 0, relaxed.output
    assert "judged again: 0 errors, 0 warnings" in relaxed.output
    text = page.read_text(encoding="utf-8")
    assert 'data-code="GS401"' not in text


def test_report_thresholds_that_are_wrong_are_bad_input(tmp_path: Path) -> None:
    record = str(FIXTURES / "run_default.json")
    for value, said in (("clip_rate", "expected key=value pairs"), ("clip_rat=0.5", "unknown threshold"),
                        ("clip_rate=high", "expected a float")):
        result = invoke("report", record, "-o", str(tmp_path / "p.html"), "--thresholds", value)
        assert result.exit_code == 2, (value, result.output)
        assert said in result.output and "Traceback" not in result.output


def test_help_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = ("import sys\nfrom gradscope.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False False"
