"""`gradscope check` through click's test runner, and the terminal table it prints."""
from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

from gradscope import __version__
from gradscope.cli import main
from gradscope.findings import Finding, Severity, finding
from gradscope.textreport import printable, render_findings, summary_line, wrap_message

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HEALTHY = EXAMPLES / "healthy_cnn.py"
LIST_PITFALL = EXAMPLES / "list_not_modulelist.py"


def write(folder: Path, name: str, *parts: str) -> Path:
    """Write the parts, each dedented on its own, one after the other."""
    path = folder / name
    path.write_text("".join(textwrap.dedent(part) for part in parts), encoding="utf-8")
    return path


def flat(text: str) -> str:
    """``text`` with line breaks and runs of spaces as single spaces: wrapping does not matter."""
    return " ".join(text.split())


def run(*args: str | Path) -> Result:
    return CliRunner().invoke(main, ["check", *map(str, args)], terminal_width=80)


def codes(result: Result) -> set[str]:
    return set(re.findall(r"\bGS\d{3}\b", result.stdout))


def assert_fits_80_columns(text: str) -> None:
    for line in text.splitlines():
        assert len(line) <= 80, line


def assert_prose_fits_80_columns(text: str) -> None:
    """Prose wraps at 80 columns; indented lines (traceback frames, quoted code) are kept whole."""
    for line in text.splitlines():
        assert len(line) <= 80 or line.startswith(" "), line


# Specimens that each raise exactly one kind of finding (and their healthy twin is the CNN example).
WARNING_ONLY = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.scale = torch.ones(2)      # a plain tensor attribute: GS103 (warning)

        def forward(self, x):
            return self.fc(x) * self.scale

    input_shape = (4,)
"""

INFO_ONLY = """
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 4)
            self.b = nn.Linear(4, 4)
            self.b.weight = self.a.weight   # tied weights: GS106 (info)

        def forward(self, x):
            return self.b(self.a(x))

    input_shape = (4,)
"""

BUILT_IN_FORWARD = """
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            head = nn.Linear(4, 2)          # built in forward: GS104, seen only by a forward pass
            return head(self.fc(x))

    input_shape = (4,)
"""

LATE_SUPER = """
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(4, 2)
            super().__init__()

        def forward(self, x):
            return self.fc(x)
"""


# --- the examples --------------------------------------------------------------------------------

def test_healthy_example_has_no_findings() -> None:
    result = run(HEALTHY)
    assert result.exit_code == 0, result.output
    assert "no findings" in result.stdout
    assert "Sequential, 1,607,490 parameters (1,607,490 trainable)" in flat(result.stdout)


def test_list_example_is_flagged_and_fails() -> None:
    result = run(LIST_PITFALL)
    assert result.exit_code == 1, result.output
    assert "GS101" in codes(result)
    assert re.search(r"\b[1-9]\d* errors?\b", result.stdout)
    assert "hint: " in result.stdout
    assert "Traceback" not in result.output
    assert_fits_80_columns(result.stdout)


def test_init_order_example_is_gs107() -> None:
    result = run(EXAMPLES / "init_order.py")
    assert result.exit_code == 1, result.output
    assert codes(result) == {"GS107"}
    assert "init_order.py:15" in result.stdout
    assert "the model could not be built" in flat(result.stdout)


# --- --fail-on ------------------------------------------------------------------------------------

@pytest.mark.parametrize("source, fail_on, exit_code", [
    (WARNING_ONLY, None, 0),
    (WARNING_ONLY, "error", 0),
    (WARNING_ONLY, "warning", 1),
    (WARNING_ONLY, "info", 1),
    (WARNING_ONLY, "never", 0),
    (INFO_ONLY, None, 0),
    (INFO_ONLY, "warning", 0),
    (INFO_ONLY, "info", 1),
], ids=["warning-default", "warning-error", "warning-warning", "warning-info", "warning-never",
        "info-default", "info-warning", "info-info"])
def test_fail_on_thresholds(tmp_path: Path, source: str, fail_on: str | None, exit_code: int) -> None:
    path = write(tmp_path, "m.py", source)
    result = run(path, *(["--fail-on", fail_on] if fail_on else []))
    assert result.exit_code == exit_code, result.output
    expected = "GS103" if source is WARNING_ONLY else "GS106"
    assert codes(result) == {expected}
    summary = "0 errors, 1 warning, 0 info" if source is WARNING_ONLY else "0 errors, 0 warnings, 1 info"
    assert summary in result.stdout


def test_fail_on_never_passes_even_errors() -> None:
    assert run(LIST_PITFALL, "--fail-on", "never").exit_code == 0


def test_fail_on_rejects_unknown_levels() -> None:
    result = run(HEALTHY, "--fail-on", "fatal")
    assert result.exit_code == 2
    assert "fatal" in result.output


# --- --no-forward ----------------------------------------------------------------------------------

def test_no_forward_skips_the_checks_that_need_one(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", BUILT_IN_FORWARD)
    with_forward = run(path)
    assert "GS104" in codes(with_forward) and with_forward.exit_code == 1
    without = run(path, "--no-forward")
    assert "GS104" not in codes(without) and without.exit_code == 0, without.output


def test_no_input_shape_means_no_forward(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", BUILT_IN_FORWARD.replace("input_shape = (4,)", ""))
    result = run(path)
    assert "GS104" not in codes(result) and result.exit_code == 0, result.output


def test_a_forward_that_fails_is_bad_input_not_a_crash(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", WARNING_ONLY.replace("input_shape = (4,)", "input_shape = (5,)"))
    result = run(path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "input_shape = (5,)" in flat(result.stderr) and "--no-forward" in result.stderr
    assert str(path) in result.stderr
    assert "in forward" in result.stderr and "return self.fc(x) * self.scale" in result.stderr
    assert_prose_fits_80_columns(result.stderr)


# --- GS107 is a finding, not a crash ----------------------------------------------------------------

@pytest.mark.parametrize("tail", ["", "model = Net()\n"], ids=["class", "instance"])
def test_late_super_init_is_reported_as_gs107(tmp_path: Path, tail: str) -> None:
    path = write(tmp_path, "m.py", LATE_SUPER, tail)
    out = tmp_path / "check.json"
    result = run(path, "--json", out)
    assert result.exit_code == 1, result.output
    assert codes(result) == {"GS107"}
    assert "Traceback" not in result.output
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["model"] is None
    assert [f["code"] for f in data["findings"]] == ["GS107"]


# --- the JSON record --------------------------------------------------------------------------------

def test_json_record_fields(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    out.write_text("old contents", encoding="utf-8")
    result = run(LIST_PITFALL, "--json", out)
    assert result.exit_code == 1
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["schema"] == "gradscope.check"
    assert data["version"] == 1
    assert data["gradscope_version"] == __version__
    assert data["torch_version"] == torch.__version__
    assert data["file"] == str(LIST_PITFALL)
    assert data["model"] == {"class": "Net", "parameters": 0, "trainable": 0}
    found = [Finding.from_dict(item) for item in data["findings"]]
    assert {f.code for f in found} == codes(result)
    assert all(f.severity in Severity for f in found)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["check.json"]  # no temp file left


def test_json_counts_parameters_and_trainable(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", """
    from torch import nn

    def build_model():
        model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
        model[0].requires_grad_(False)
        return model
    """)
    out = tmp_path / "check.json"
    run(path, "--json", out)
    model = json.loads(out.read_text(encoding="utf-8"))["model"]
    assert model == {"class": "Sequential", "parameters": 15 + 8, "trainable": 8}


def test_json_into_a_new_folder_creates_it(tmp_path: Path) -> None:
    out = tmp_path / "reports" / "check.json"
    result = run(HEALTHY, "--no-forward", "--json", out)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text(encoding="utf-8"))["findings"] == []
    assert sorted(p.name for p in out.parent.iterdir()) == ["check.json"]


def test_json_that_cannot_be_written_is_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    result = run(HEALTHY, "--no-forward", "--json", blocker / "check.json")
    assert result.exit_code == 2
    assert "cannot write --json" in flat(result.stderr) and "Traceback" not in result.output
    assert f"{blocker} is a file, not a folder" in flat(result.stderr)


# --- bad input: exit 2, a clear message, no traceback -------------------------------------------------

BAD_INPUT = [
    ("missing", None, ["not found"]),
    ("syntax", "def build_model(:\n    pass\n", ["m.py:1", "def build_model(:", "^"]),
    ("import", "import torch\nvalue = 1 / 0\n", ["ZeroDivisionError", "line 2", "value = 1 / 0"]),
    ("nothing", "import torch\n", ["build_model", "model", "nn.Module subclass"]),
    ("several", "from torch import nn\nclass A(nn.Module): pass\nclass B(nn.Module): pass\n",
     ["`A`", "`B`", "def build_model():"]),
    ("ctor-args", "from torch import nn\nclass A(nn.Module):\n"
                  "    def __init__(self, width):\n        super().__init__()\n", ["`A`", "width"]),
    ("input-shape", "from torch import nn\nmodel = nn.Linear(2, 2)\ninput_shape = (0, 2)\n",
     ["input_shape", "(0, 2)"]),
    ("clip", "from torch import nn\nmodel = nn.Linear(2, 2)\nclip = {'max_norm': 0}\n", ["clip", "max_norm"]),
    ("build-raises", "def build_model():\n    raise ValueError('bad width')\n",
     ["ValueError: bad width", "line 2", "build_model"]),
]


@pytest.mark.parametrize("case, source, words", BAD_INPUT, ids=[case for case, _, _ in BAD_INPUT])
def test_bad_input_exits_2_with_a_clear_message(tmp_path: Path, case: str, source: str | None,
                                                words: list[str]) -> None:
    path = tmp_path / "m.py"
    if source is not None:
        path.write_text(source, encoding="utf-8")
    result = run(path)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    for word in words:
        assert word in flat(result.stderr) or word in result.stderr, (word, result.stderr)
    assert_prose_fits_80_columns(result.stderr)


def test_long_error_messages_wrap_at_80_columns(tmp_path: Path) -> None:
    folder = tmp_path / ("a_rather_long_folder_name_for_models" * 2)
    folder.mkdir()
    result = run(write(folder, "model.py", "import torch\n"))
    assert result.exit_code == 2
    # Prose wraps around the path; only the path itself, unbreakable, may run past 80 columns.
    long_lines = [line for line in result.stderr.splitlines() if len(line) > 80]
    assert long_lines and all(" " not in line.strip() for line in long_lines), result.stderr


# --- hostile names ---------------------------------------------------------------------------------

HOSTILE_NAME = "<script>alert(1)</script>\x1b[31mRED\x1b]0;owned\x07\r\nnext"

HOSTILE = f"""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            setattr(self, {HOSTILE_NAME!r}, [nn.Linear(2, 2)])   # GS101 under a hostile name

        def forward(self, x):
            return x

    Net.__name__ = Net.__qualname__ = {HOSTILE_NAME!r}
"""


def test_hostile_names_break_neither_the_table_nor_the_json(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", HOSTILE)
    out = tmp_path / "check.json"
    result = run(path, "--json", out)
    assert result.exit_code == 1, result.output
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "\x07" not in result.stdout
    assert "\\x1b[31mRED" in result.stdout
    # Every line of the table starts with a severity, the header, or indentation.
    table = result.stdout.split("\n\n")[1]
    for line in table.splitlines():
        assert re.match(r"(error|warning|info|severity) |\s", line), line
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["model"]["class"] == HOSTILE_NAME
    assert any(HOSTILE_NAME in f["where"] for f in data["findings"])


def test_printable_escapes_control_characters() -> None:
    assert printable("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert printable("line\nbreak\ttab\r") == "line\\nbreak\\ttab\\r"
    assert printable("evil\u202egnp.exe") == "evil\\u202egnp.exe"
    assert printable("Net.layers.0 (width 3×3) <ok>") == "Net.layers.0 (width 3×3) <ok>"


def test_table_keeps_hostile_messages_on_their_rows() -> None:
    hostile = finding("GS101", "Net.\x1b[2Jlayers\nrow", "first\nsecond\x1b]0;t\x07 " + "word " * 40,
                      hint="fix\r\nit")
    text = render_findings([hostile], width=80, color=False)
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text
    lines = text.splitlines()
    assert lines[0].startswith("severity")
    assert lines[1].startswith("error")
    assert all(line.startswith(" ") for line in lines[2:]), lines
    assert sum("hint: fix" in line for line in lines) == 1
    assert_fits_80_columns(text)


# --- the table -------------------------------------------------------------------------------------

def test_table_columns_wrap_and_put_the_hint_on_its_own_line() -> None:
    findings = [
        finding("GS103", "Net.scale", "a plain tensor attribute " * 6),
        finding("GS101", "Net.layers", "a list of 3 modules"),
        finding("GS106", "encoder.layers.11.attention.output.dense.weight", "shared " * 20),
    ]
    text = render_findings(findings, width=80, color=False)
    assert_fits_80_columns(text)
    lines = text.splitlines()
    # Most severe first.
    rows = [line for line in lines if not line.startswith(" ")]
    assert [row.split()[0] for row in rows] == ["severity", "error", "warning", "info"]
    message_col = lines[0].index("message")
    error_row = rows[1]
    assert error_row[message_col:].startswith("a list of 3 modules")
    hint = next(line for line in lines if "hint:" in line)
    assert hint.index("hint:") == message_col
    # A `where` longer than its column keeps the row and moves the message under it.
    info_index = lines.index(rows[3])
    assert rows[3].rstrip().endswith("encoder.layers.11.attention.output.dense.weight")
    assert lines[info_index + 1][message_col:].startswith("shared")


def test_colour_only_when_asked() -> None:
    findings = [finding("GS101", "Net.layers", "a list")]
    assert "\x1b[" not in render_findings(findings, width=80, color=False)
    coloured = render_findings(findings, width=80, color=True)
    assert "\x1b[" in coloured
    assert re.sub(r"\x1b\[[0-9;]*m", "", coloured) == render_findings(findings, width=80, color=False)


def test_cli_output_has_no_colour_when_not_a_terminal() -> None:
    result = CliRunner().invoke(main, ["check", str(HEALTHY), "--no-forward"], color=True)
    assert "\x1b[" not in result.stdout


@pytest.mark.parametrize("levels, text", [
    ([], "no findings"),
    (["error", "error", "warning"], "2 errors, 1 warning, 0 info"),
    (["warning", "warning", "info", "info"], "0 errors, 2 warnings, 2 info"),
    (["error"], "1 error, 0 warnings, 0 info"),
])
def test_summary_line(levels: list[str], text: str) -> None:
    code = {"error": "GS101", "warning": "GS103", "info": "GS106"}
    assert summary_line([finding(code[level], "x", "m") for level in levels]) == text


def test_wrap_message_keeps_indented_lines() -> None:
    message = ("a long sentence " * 10).strip() + "\n    code_line = " + "x" * 90 + "\n    ^"
    lines = wrap_message(message, width=60).splitlines()
    assert all(len(line) <= 60 for line in lines if not line.startswith("    "))
    assert "    code_line = " + "x" * 90 in lines
    assert lines[-1] == "    ^"


def test_help_text() -> None:
    result = CliRunner().invoke(main, ["check", "--help"], terminal_width=80)
    assert result.exit_code == 0
    for option in ["--json", "--fail-on", "--no-forward"]:
        assert option in result.output
    assert "build_model" in result.output
    assert_fits_80_columns(result.output)


def test_json_path_may_not_be_the_model_file(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", "from torch import nn\nmodel = nn.Linear(2, 2)\n")
    result = run(path, "--json", path)
    assert result.exit_code == 2
    assert "overwrite the model file" in flat(result.stderr)
    assert path.read_text(encoding="utf-8").startswith("from torch import nn")


def test_the_command_runs_as_a_program() -> None:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "gradscope.cli", "check", str(LIST_PITFALL)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert "GS101" in done.stdout and done.stderr == ""
