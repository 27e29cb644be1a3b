"""Whole training scripts: the mistakes of a real set of notes, and the same script fixed."""
from __future__ import annotations

from pathlib import Path

from gradscope.lint import lint_paths

SPECIMENS = Path(__file__).resolve().parent / "specimens"


def test_the_notes_script_shows_each_of_its_mistakes_once() -> None:
    result = lint_paths([SPECIMENS / "notes_training.py"])
    assert result.errors == []
    found = sorted((f.code, int(f.where.split(":")[1])) for f in result.findings)
    text = (SPECIMENS / "notes_training.py").read_text(encoding="utf-8").splitlines()
    marked = sorted((line.split("# expect: ")[1].strip(), i + 1)
                    for i, line in enumerate(text) if "# expect: " in line)
    assert found == marked


def test_the_fixed_twin_is_clean() -> None:
    result = lint_paths([SPECIMENS / "healthy_training.py"])
    assert result.errors == []
    assert result.findings == []
