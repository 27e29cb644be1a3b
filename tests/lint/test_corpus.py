"""False-alarm corpora: this project's own code and the installed torchvision package."""
from __future__ import annotations

from pathlib import Path

import pytest
import torchvision

from gradscope.findings import Severity
from gradscope.lint import format_line, lint_paths

ROOT = Path(__file__).resolve().parents[2]
SPECIMENS = Path(__file__).resolve().parent / "specimens"   # intentional mistakes, linted on purpose elsewhere


def project_paths() -> list[Path]:
    """The project's Python code, without the folder of intentionally broken specimens."""
    paths = [ROOT / name for name in ("gradscope", "examples", "benchmarks") if (ROOT / name).exists()]
    tests = ROOT / "tests"
    for entry in sorted(tests.rglob("*.py")):
        if SPECIMENS not in entry.parents:
            paths.append(entry)
    return paths


def above_info(findings: list) -> list[str]:
    return [format_line(f) for f in findings if f.severity > Severity.INFO]


def test_the_project_lints_clean() -> None:
    result = lint_paths(project_paths())
    assert result.errors == []
    assert result.files > 10
    problems = above_info(result.findings)
    assert not problems, (
        "lint finds mistakes in the project's own code; a deliberate one (a model a runtime test "
        "needs, a demo in examples/) takes `# noqa: CODE` on its line, with the reason:\n"
        + "\n".join(problems))


@pytest.mark.slow
def test_installed_torchvision_lints_clean() -> None:
    # how long this takes is measured in benchmarks/bench_speed.py, not decided here
    package = Path(torchvision.__file__).parent
    result = lint_paths([package])
    assert result.files > 100
    assert result.errors == []
    assert above_info(result.findings) == []
