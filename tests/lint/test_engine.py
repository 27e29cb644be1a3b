"""The lint engine: files and folders, noqa comments, code selection and the output format."""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from gradscope.errors import GradscopeError
from gradscope.findings import Finding
from gradscope.lint import LintResult, format_line, lint_paths, lint_source

BAD_MOVE = "for data, target in loader:\n    data.to(device){comment}\n"
TWO_CODES = textwrap.dedent("""
    for x, y in loader:
        loss = criterion(model(x), y)
        x.to(device); running += loss{comment}
    """)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


@pytest.mark.parametrize(("comment", "silenced"), [
    ("", False),
    ("  # noqa", True),
    ("  # noqa: GS505", True),
    ("  #NOQA:gs505", True),
    ("  # noqa: GS101, GS505", True),
    ("  # noqa: GS101", False),
    ("  # noqa:", True),
], ids=["none", "bare", "code", "case-and-spacing", "list", "other-code", "empty-list"])
def test_noqa_silences_the_named_codes_on_its_line(comment: str, silenced: bool) -> None:
    findings = lint_source(BAD_MOVE.format(comment=comment), "t.py")
    assert codes(findings) == ([] if silenced else ["GS505"])


def test_noqa_with_several_codes_keeps_the_unnamed_ones() -> None:
    assert codes(lint_source(TWO_CODES.format(comment=""), "t.py")) == ["GS505", "GS509"]
    assert codes(lint_source(TWO_CODES.format(comment="  # noqa: GS509"), "t.py")) == ["GS505"]
    assert codes(lint_source(TWO_CODES.format(comment="  # noqa: GS505,GS509"), "t.py")) == []


def test_noqa_inside_a_string_is_not_a_comment() -> None:
    src = 'for data, target in loader:\n    data.to("# noqa")\n'
    assert codes(lint_source(src, "t.py")) == ["GS505"]


def test_select_and_ignore_take_codes_and_prefixes() -> None:
    src = TWO_CODES.format(comment="")
    assert codes(lint_source(src, select={"GS509"})) == ["GS509"]
    assert codes(lint_source(src, select={"gs5"})) == ["GS505", "GS509"]
    assert codes(lint_source(src, ignore={"GS505"})) == ["GS509"]
    assert codes(lint_source(src, select={"GS5"}, ignore={"GS509"})) == ["GS505"]


@pytest.mark.parametrize(("selector", "expected"), [
    ("GS999", "unknown finding code 'GS999'"),
    ("GS201", "GS201 is found while training, not by lint"),
    ("XYZ", "unknown finding code 'XYZ'"),
])
def test_selecting_a_code_lint_cannot_find_is_a_clear_error(selector: str, expected: str) -> None:
    with pytest.raises(GradscopeError, match=re.escape(expected)):
        lint_source("x = 1\n", select={selector})
    with pytest.raises(GradscopeError, match=re.escape(expected)):
        lint_paths([], ignore={selector})


def test_format_line_is_file_line_col_code_message() -> None:
    (f,) = lint_source(BAD_MOVE.format(comment=""), "pkg/train.py")
    line = format_line(f)
    assert re.fullmatch(r"pkg/train\.py:2:5: GS505 .+", line), line
    assert "\n" not in line


def test_columns_count_characters_from_one() -> None:
    src = 's = "é"; x = 1\nfor data, target in loader:\n    é = 1; data.to(device)\n'
    (f,) = lint_source(src, "u.py")
    assert f.where == "u.py:3:12"


def test_lint_source_with_a_syntax_error_names_the_place() -> None:
    with pytest.raises(GradscopeError, match=r"broken\.py:2:.*could not be parsed"):
        lint_source("x = 1\ndef f(:\n", "broken.py")


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_folders_are_walked_for_python_files_skipping_environments_and_hidden(tmp_path: Path) -> None:
    bad = BAD_MOVE.format(comment="")
    _write(tmp_path / "train.py", bad)
    _write(tmp_path / "pkg" / "inner.py", bad)
    _write(tmp_path / "pkg" / "notes.txt", bad)
    _write(tmp_path / ".venv" / "lib" / "x.py", bad)
    _write(tmp_path / "env" / "pyvenv.cfg", "home = /usr\n")
    _write(tmp_path / "env" / "lib" / "y.py", bad)
    _write(tmp_path / "__pycache__" / "z.py", bad)
    _write(tmp_path / ".hidden" / "w.py", bad)
    result = lint_paths([tmp_path])
    assert isinstance(result, LintResult)
    assert result.files == 2
    assert result.errors == []
    assert sorted(Path(f.where.split(":")[0]).name for f in result.findings) == ["inner.py", "train.py"]


def test_an_explicit_file_is_linted_even_in_a_hidden_folder_and_only_once(tmp_path: Path) -> None:
    path = _write(tmp_path / ".hidden" / "w.py", BAD_MOVE.format(comment=""))
    result = lint_paths([path, str(path)])
    assert result.files == 1
    assert codes(result.findings) == ["GS505"]


def test_bad_files_are_reported_and_the_rest_is_still_linted(tmp_path: Path) -> None:
    _write(tmp_path / "a_syntax.py", "def f(:\n    pass\n")
    _write(tmp_path / "b_latin1.py", b"x = '\xe9'\n")
    _write(tmp_path / "c_null.py", b"x = 1\x00\n")
    _write(tmp_path / "d_good.py", BAD_MOVE.format(comment=""))
    result = lint_paths([tmp_path, tmp_path / "missing.py"])
    assert result.files == 1
    assert codes(result.findings) == ["GS505"]
    assert len(result.errors) == 4
    joined = "\n".join(result.errors)
    assert "a_syntax.py:1:" in joined
    assert "b_latin1.py" in joined and "c_null.py" in joined
    assert "missing.py" in joined and "no such file or directory" in joined


def test_findings_are_in_file_and_line_order(tmp_path: Path) -> None:
    bad = BAD_MOVE.format(comment="")
    _write(tmp_path / "b.py", bad + bad)
    _write(tmp_path / "a.py", bad)
    wheres = [f.where for f in lint_paths([tmp_path]).findings]
    assert [Path(w.split(":")[0]).name + ":" + w.split(":")[1] for w in wheres] == ["a.py:2", "b.py:2", "b.py:4"]


def test_result_to_dict_is_json_ready(tmp_path: Path) -> None:
    _write(tmp_path / "t.py", BAD_MOVE.format(comment=""))
    data = lint_paths([tmp_path]).to_dict()
    assert data["files"] == 1 and data["errors"] == []
    assert data["findings"][0]["code"] == "GS505"
    assert data["findings"][0]["severity"] == "warning"


def test_a_file_without_torch_is_linted_without_errors() -> None:
    assert lint_source("import os\nprint(os.getcwd())\n") == []
