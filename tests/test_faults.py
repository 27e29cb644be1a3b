"""Never lose a run, never clobber a file: signals, output paths and option values (issue 16).

Every case goes through the real command line: a subprocess where a signal is involved (sent to
the process the test started, by its pid, once it has printed that it is training), click's test
runner otherwise. Each checks the exit status, that the JSON record and the HTML report exist,
parse and agree, and that no traceback from gradscope's own frames is printed. Nothing here
decides by wall-clock time: timeouts only turn a hang into a failure.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import stat
import subprocess
import sys
import threading
import time
import types
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Sequence

import pytest
from click.testing import CliRunner, Result

import gradscope.records.io as record_io
from gradscope.cli import main
from gradscope.records.io import (
    keep_previous,
    read_json,
    same_file,
    unwritable_reason,
    write_record,
    write_text_atomic,
)
from gradscope.textreport import printable

TESTS = Path(__file__).resolve().parent
MODELS = TESTS / "models"
SCRIPTS = TESTS / "scripts"
HEALTHY = MODELS / "healthy_mlp.py"
SMALL = ["--train-size", "256", "--test-size", "64", "--batch-size", "32"]
HANG = 180        # seconds after which a process that should have ended counts as hung

# The real command line in a fresh interpreter. SIGINT is set back to Python's default first: a
# shell that starts a job in the background hands it SIGINT ignored, and gradscope (rightly)
# leaves an ignored signal ignored. With GRADSCOPE_TEST_CTRL_C_WHILE_WRITING set, every atomic
# write sends this process a SIGINT just before its rename: a Ctrl-C in the middle of each file.
DRIVER = """
import os, signal, sys, types
signal.signal(signal.SIGINT, signal.default_int_handler)
if os.environ.get("GRADSCOPE_TEST_CTRL_C_WHILE_WRITING"):
    import gradscope.records.io as record_io
    real_replace = os.replace
    def replace(src, dst):
        os.kill(os.getpid(), signal.SIGINT)
        return real_replace(src, dst)
    record_io.os = types.SimpleNamespace(**{**vars(os), "replace": replace})
from gradscope.cli import main
main(sys.argv[1:], prog_name="gradscope")
"""


# ---- helpers -------------------------------------------------------------------------------------
class Started:
    """A ``gradscope`` process with its output read line by line as it comes."""

    def __init__(self, args: Sequence[str | Path], cwd: Path, env: dict[str, str] | None = None) -> None:
        environ = {**os.environ, "NO_COLOR": "1", **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-c", DRIVER, *map(os.fsdecode, args)], cwd=cwd,
                                     env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="backslashreplace")
        self.lines: list[str] = []
        self._wanted: tuple[str, threading.Event] | None = None
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.lines.append(line)
                if self._wanted is not None and self._wanted[0] in line:
                    self._wanted[1].set()

    def wait_for(self, text: str) -> None:
        """Wait until a line containing ``text`` is printed (fail if the process ends first)."""
        event = threading.Event()
        with self._lock:
            self._wanted = (text, event)
            if any(text in line for line in self.lines):
                event.set()
        deadline = time.monotonic() + HANG      # only to fail instead of hanging
        while not event.wait(0.1):
            if self.proc.poll() is not None and not self._reader.is_alive():
                pytest.fail(f"the process ended before printing {text!r}:\n{self.output}")
            if time.monotonic() > deadline:
                self.proc.kill()
                pytest.fail(f"no {text!r} after {HANG} s:\n{self.output}")

    def send(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def finish(self) -> int:
        try:
            code = self.proc.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail(f"the process did not end after its signal:\n{self.output}")
        self._reader.join(timeout=HANG)
        return code

    @property
    def output(self) -> str:
        with self._lock:
            return "".join(self.lines)


def gradscope(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Run the command to its end in a fresh interpreter: (exit status, stdout and stderr)."""
    started = Started(args, cwd, env)
    return started.finish(), started.output


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [os.fspath(a) for a in args], terminal_width=100)


class _Embedded(HTMLParser):
    """The HTML's structure, enough to find the embedded record and to see that the page parses."""

    def __init__(self) -> None:
        super().__init__()
        self.record: str | None = None
        self._inside = False
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._inside = tag == "script" and dict(attrs).get("id") == "gradscope-record"
        if self._inside:
            self.record = ""

    def handle_endtag(self, tag: str) -> None:
        self._inside = False

    def handle_data(self, data: str) -> None:
        if self._inside and self.record is not None:
            self.record += data


def embedded_record(html_path: Path) -> dict[str, Any]:
    text = html_path.read_text(encoding="utf-8")
    assert text.lstrip().lower().startswith("<!doctype html")
    parser = _Embedded()
    parser.feed(text)
    parser.close()
    assert {"html", "body", "script"} <= set(parser.tags)
    assert parser.record is not None, "the page embeds no record"
    return json.loads(parser.record)


def artifacts(json_path: Path, html_path: Path) -> dict[str, Any]:
    """Both files exist and parse, and the page shows the run the record holds."""
    assert json_path.is_file(), f"no record at {json_path}"
    assert html_path.is_file(), f"no report at {html_path}"
    record = json.loads(json_path.read_text(encoding="utf-8"))
    agree(record, embedded_record(html_path))
    return record


def agree(record: dict[str, Any], page: dict[str, Any]) -> None:
    for key in ("schema", "version", "steps", "model"):
        assert page.get(key) == record.get(key), key
    for key in ("status", "error", "steps", "command", "exit_code"):
        assert page["run"].get(key) == record["run"].get(key), key
    assert [(f["code"], f["where"]) for f in page["findings"]] == \
        [(f["code"], f["where"]) for f in record["findings"]]


def no_gradscope_traceback(output: str) -> None:
    assert "Traceback" not in output, output
    assert not re.search(r'File "[^"]*[/\\]gradscope[/\\]', output), output
    assert "Aborted!" not in output, output


def one_error_line(result: Result, *words: str) -> None:
    """Bad input: exit 2, one ``Error:`` message naming ``words``, no traceback, no output."""
    assert result.exit_code == 2, result.output
    assert result.stdout == "", result.stdout
    assert result.stderr.count("Error:") == 1, result.stderr
    flat = " ".join(result.stderr.split())
    for word in words:
        assert word in flat, (word, result.stderr)
    no_gradscope_traceback(result.output)


def steps_match(record: dict[str, Any], steps: int) -> None:
    assert record["steps"] == steps
    assert record["run"].get("steps") in (None, steps)
    assert record["probes"]["grad_norm"]["steps"] == list(range(steps))


# ---- 1. SIGTERM is a clean stop, like Ctrl-C --------------------------------------------------------
@pytest.mark.parametrize(("signum", "code", "said"), [
    (signal.SIGTERM, 143, "stopped by SIGTERM at step 4"),
    (signal.SIGINT, 130, "interrupted by the user at step 4"),
], ids=["sigterm-exits-143", "sigint-exits-130"])
def test_a_signal_in_mid_epoch_keeps_the_steps_trained(tmp_path: Path, signum: int, code: int,
                                                       said: str) -> None:
    run = Started(["run", MODELS / "blocks_at_step5.py", *SMALL, "--out", "out"], tmp_path)
    run.wait_for("blocked after 4 steps")      # 4 of the epoch's 8 steps are done
    run.send(signum)
    assert run.finish() == code, run.output
    record = artifacts(tmp_path / "out" / "run.json", tmp_path / "out" / "report.html")
    assert record["run"]["status"] == "interrupted"
    assert record["run"]["error"] == said
    steps_match(record, 4)
    assert f"run interrupted: {said}" in run.output
    no_gradscope_traceback(run.output)


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (a zombie has: only its entry is left)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[0] not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads worker states from /proc")
def test_sigterm_with_dataloader_workers_leaves_no_process_behind(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()
    run = Started(["run", MODELS / "blocks_at_step5.py", "--out", "out"], tmp_path,
                  env={"GRADSCOPE_TEST_WORKERS": "2", "GRADSCOPE_TEST_PIDS": str(pids)})
    run.wait_for("blocked after 4 steps")
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2 and all(_running(pid) for pid in workers)
    run.send(signal.SIGTERM)
    assert run.finish() == 143, run.output
    record = artifacts(tmp_path / "out" / "run.json", tmp_path / "out" / "report.html")
    assert record["run"]["status"] == "interrupted" and "SIGTERM" in record["run"]["error"]
    steps_match(record, 4)
    # gradscope has exited: its workers were shut down and reaped with it, not left to time out
    assert not [pid for pid in workers if _running(pid)]
    no_gradscope_traceback(run.output)


def test_sigterm_stops_a_script_with_its_record(tmp_path: Path) -> None:
    run = Started(["run", SCRIPTS / "blocks_at_step5.py", "--out", "out"], tmp_path)
    run.wait_for("blocked after 4 steps")
    run.send(signal.SIGTERM)
    assert run.finish() == 143, run.output
    record = artifacts(tmp_path / "out" / "run.json", tmp_path / "out" / "report.html")
    assert record["run"]["mode"] == "script" and record["run"]["status"] == "interrupted"
    assert record["run"]["error"] == "stopped by SIGTERM at step 4"
    assert record["run"]["exit_code"] == 143
    steps_match(record, 4)
    no_gradscope_traceback(run.output)


def test_the_handlers_are_given_back_after_a_run(tmp_path: Path) -> None:
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    result = invoke("run", HEALTHY, *SMALL, "--max-steps", "2", "--out", tmp_path / "out", "-q")
    assert result.exit_code == 0, result.output
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


# ---- 5. a second Ctrl-C waits for the files; Ctrl-C while importing -----------------------------------
def test_a_second_ctrl_c_while_the_files_are_written_waits_for_them(tmp_path: Path) -> None:
    run = Started(["run", MODELS / "blocks_at_step5.py", *SMALL, "--out", "out"], tmp_path,
                  env={"GRADSCOPE_TEST_CTRL_C_WHILE_WRITING": "1"})
    run.wait_for("blocked after 4 steps")
    run.send(signal.SIGINT)                     # the first: stop training
    assert run.finish() == 130, run.output       # the others came in the middle of each write
    record = artifacts(tmp_path / "out" / "run.json", tmp_path / "out" / "report.html")
    assert record["run"]["status"] == "interrupted"
    steps_match(record, 4)
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
    no_gradscope_traceback(run.output)


def test_ctrl_c_while_a_finished_run_is_written_keeps_it_and_exits_130(tmp_path: Path) -> None:
    code, output = gradscope("run", HEALTHY, *SMALL, "--max-steps", "3", "--out", "out", cwd=tmp_path,
                             env={"GRADSCOPE_TEST_CTRL_C_WHILE_WRITING": "1"})
    assert code == 130, output
    record = artifacts(tmp_path / "out" / "run.json", tmp_path / "out" / "report.html")
    assert record["run"]["status"] == "completed"    # training finished; the exit says Ctrl-C came
    steps_match(record, 3)
    no_gradscope_traceback(output)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)],
                         ids=["ctrl-c", "sigterm"])
def test_a_signal_while_the_model_file_imports(tmp_path: Path, signum: int, code: int) -> None:
    run = Started(["run", MODELS / "blocks_while_importing.py", "--out", "out"], tmp_path)
    run.wait_for("importing")
    run.send(signum)
    assert run.finish() == code, run.output
    record = artifacts(tmp_path / "out" / "run.json", tmp_path / "out" / "report.html")
    assert record["run"]["status"] == "interrupted"
    assert "while importing" in record["run"]["error"] and "before training" in record["run"]["error"]
    no_gradscope_traceback(run.output)


def test_ctrl_c_in_the_other_commands_exits_130_not_1(tmp_path: Path) -> None:
    run = Started(["bench", MODELS / "blocks_while_importing.py", "--steps", "10"], tmp_path)
    run.wait_for("importing")
    run.send(signal.SIGINT)
    assert run.finish() == 130, run.output
    assert "gradscope: interrupted" in run.output
    no_gradscope_traceback(run.output)


# ---- 2. output paths are checked before anything runs --------------------------------------------------
@pytest.fixture
def blocker(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n")
    return path


@pytest.mark.parametrize(("option", "where"), [
    ("--out", "under-file"), ("--json", "under-file"), ("--html", "under-file"),
    ("--json", "is-folder"), ("--html", "proc"), ("--json", "device"),
])
def test_an_unusable_output_path_fails_before_training(tmp_path: Path, blocker: Path, option: str,
                                                       where: str) -> None:
    path = {"under-file": blocker / "sub" / "x.json", "is-folder": tmp_path,
            "proc": Path("/proc/gradscope-test/report.html"), "device": Path("/dev/null")}[where]
    if where in ("proc", "device") and not path.parent.parent.exists():
        pytest.skip(f"no {path.parent}")
    result = invoke("run", HEALTHY, *SMALL, option, path, *(["--out", tmp_path / "o"] if option != "--out" else []))
    one_error_line(result, option, str(path))
    assert "training" not in result.output
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_fails_before_training(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        result = invoke("run", HEALTHY, *SMALL, "--json", folder / "run.json", "--out", tmp_path / "o")
        one_error_line(result, "--json", str(folder / "run.json"), "cannot create files")
    finally:
        folder.chmod(stat.S_IRWXU)


def _a_record(tmp_path: Path) -> Path:
    return write_record({"steps": 0}, tmp_path / "record.json")


@pytest.mark.parametrize("command", ["bench", "lint", "report", "compare", "check"])
def test_every_command_checks_its_output_first(tmp_path: Path, blocker: Path, command: str) -> None:
    target = blocker / "out.file"
    record = _a_record(tmp_path)
    args = {"bench": ["bench", HEALTHY, "--steps", "10", "--json", target],
            "lint": ["lint", SCRIPTS / "healthy.py", "--json", target],
            "report": ["report", record, "-o", target],
            "compare": ["compare", record, record, "-o", target],
            "check": ["check", HEALTHY, "--json", target]}[command]
    result = invoke(*args)
    one_error_line(result, "--json" if "--json" in args else "-o", str(target), "is a file, not a folder")
    assert "overhead ratio" not in result.output   # bench did not run its benchmark first


def _full_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every atomic write fails as on a full disk, once the temporary file is made."""
    def fdopen(fd: int, *_args: Any, **_kwargs: Any) -> Any:
        os.close(fd)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(record_io, "os", types.SimpleNamespace(**{**vars(os), "fdopen": fdopen}))


@pytest.mark.parametrize("command", ["bench", "lint", "report", "compare", "check"])
def test_a_full_disk_late_is_one_line_and_exit_74(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  command: str) -> None:
    record = _a_record(tmp_path)
    target = tmp_path / "out.file"
    args = {"bench": ["bench", HEALTHY, "--steps", "10", "--json", target],
            "lint": ["lint", SCRIPTS / "healthy.py", "--json", target],
            "report": ["report", record, "-o", target],
            "compare": ["compare", record, record, "-o", target],
            "check": ["check", HEALTHY, "--json", target]}[command]
    _full_disk(monkeypatch)
    result = invoke(*args)
    assert result.exit_code == 74, result.output
    flat = " ".join(result.stderr.split())
    assert result.stderr.count("Error:") == 1 and "No space left on device" in flat
    assert f"{target} was not written" in flat
    assert not target.exists() and not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    no_gradscope_traceback(result.output)


def test_a_full_disk_loses_both_files_of_a_run_and_says_so(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    _full_disk(monkeypatch)
    result = invoke("run", HEALTHY, *SMALL, "--max-steps", "2", "--out", tmp_path / "out", "-q")
    assert result.exit_code == 74, result.output
    assert " ".join(result.stderr.split()).count("No space left on device") == 2, result.stderr
    assert "record:" not in result.stdout and "report:" not in result.stdout
    no_gradscope_traceback(result.output)


@pytest.mark.parametrize(("lost", "quiet"), [("html", True), ("json", False)],
                         ids=["html-lost-under-quiet", "json-lost"])
def test_a_file_that_fails_late_is_named_and_the_other_is_written(tmp_path: Path, lost: str,
                                                                   quiet: bool) -> None:
    doomed = tmp_path / "doomed"
    doomed.mkdir()
    kept = tmp_path / "kept"
    paths = {"json": kept / "run.json", "html": kept / "report.html"}
    paths[lost] = doomed / ("run.json" if lost == "json" else "report.html")
    code, output = gradscope("run", MODELS / "sabotages_outputs.py", *SMALL, "--max-steps", "3",
                             "--json", paths["json"], "--html", paths["html"], *(["-q"] if quiet else []),
                             cwd=tmp_path, env={"GRADSCOPE_TEST_SABOTAGE": str(doomed)})
    assert code == 74, output
    what = "HTML report" if lost == "html" else "JSON record"
    lines = [line for line in output.splitlines() if f"the {what} was not written" in line]
    assert len(lines) == 1, output
    assert f"{doomed} is a file, not a folder" in " ".join(output.split())
    if lost == "html":
        record = json.loads(paths["json"].read_text())
        assert record["run"]["status"] == "completed" and "report:" not in output
    else:
        record = embedded_record(paths["html"])
        assert record["run"]["status"] == "completed" and "record:" not in output
    steps_match(record, 3)
    no_gradscope_traceback(output)


# ---- 3. no output is ever an input ------------------------------------------------------------------
def _victim(tmp_path: Path, name: str = "victim.py") -> Path:
    victim = tmp_path / name
    victim.write_bytes(HEALTHY.read_bytes())
    return victim


@pytest.mark.parametrize("option", ["--json", "--html"])
@pytest.mark.parametrize("how", ["same-path", "relative-dots", "symlink", "hard-link"])
def test_run_never_writes_over_its_model_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              option: str, how: str) -> None:
    victim = _victim(tmp_path)
    before = victim.read_bytes()
    monkeypatch.chdir(tmp_path)
    target: Path
    if how == "same-path":
        target = victim
    elif how == "relative-dots":
        (tmp_path / "sub").mkdir()
        target = Path("sub") / ".." / "victim.py"
    elif how == "symlink":
        target = tmp_path / "link.json"
        target.symlink_to(victim)
    else:
        target = tmp_path / "hard.json"
        os.link(victim, target)
    result = invoke("run", victim, *SMALL, option, target, "--out", tmp_path / "o")
    one_error_line(result, option, "would overwrite the model file")
    assert victim.read_bytes() == before


def test_run_never_writes_over_its_script(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_bytes((SCRIPTS / "healthy.py").read_bytes())
    before = script.read_bytes()
    result = invoke("run", script, "--json", script)
    one_error_line(result, "--json", "would overwrite the training script")
    assert script.read_bytes() == before


@pytest.mark.parametrize("pair", [("--json", "--html"), ("--json", "--save"), ("--html", "--save")])
def test_two_outputs_naming_one_file_are_refused(tmp_path: Path, pair: tuple[str, str]) -> None:
    out = tmp_path / "o"
    same = out / "model.pth" if "--save" in pair else tmp_path / "x"
    args = ["--out", out] + [a for option in pair if option != "--save" for a in (option, same)]
    result = invoke("run", HEALTHY, *SMALL, *args, *(["--save"] if "--save" in pair else []))
    one_error_line(result, "are the same file")
    assert not same.exists()


def test_an_output_inside_the_data_folder_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "mnist"
    data.mkdir()
    images = data / "train-images-idx3-ubyte"
    images.write_bytes(b"\x00\x00\x08\x03")
    result = invoke("run", "--data", f"mnist:{data}", "--json", images, "--out", tmp_path / "o")
    one_error_line(result, "--json", "would overwrite a file of the --data folder")
    assert images.read_bytes() == b"\x00\x00\x08\x03"


def test_report_and_compare_never_write_over_a_record(tmp_path: Path) -> None:
    good = _a_record(tmp_path)
    other = write_record({"steps": 1}, tmp_path / "other.json")
    before = good.read_bytes(), other.read_bytes()
    one_error_line(invoke("report", good, "-o", good), "-o", "would overwrite the record being rendered")
    misnamed = write_record({"steps": 0}, tmp_path / "run.html")   # its default page is itself
    one_error_line(invoke("report", misnamed), "the page", "would overwrite the record being rendered")
    one_error_line(invoke("compare", good, good, "-o", good), "-o", "would overwrite the first record")
    one_error_line(invoke("compare", good, other, "-o", other), "-o", "would overwrite the second record")
    assert (good.read_bytes(), other.read_bytes()) == before
    assert json.loads(misnamed.read_text())["schema"] == "gradscope.record"


def test_lint_and_bench_never_write_over_what_they_read(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    module = src / "train.py"
    module.write_bytes((SCRIPTS / "healthy.py").read_bytes())
    before = module.read_bytes()
    one_error_line(invoke("lint", src, "--json", module), "--json", "would overwrite a Python file being linted")
    one_error_line(invoke("lint", module, "--json", module), "--json", "would overwrite a file being linted")
    victim = _victim(tmp_path)
    one_error_line(invoke("bench", victim, "--json", victim), "--json", "would overwrite the model file")
    assert module.read_bytes() == before and victim.read_bytes() == HEALTHY.read_bytes()
    result = invoke("lint", src, "--json", src / "lint.json")   # a new file in the folder is fine
    assert result.exit_code == 0, result.output
    assert json.loads((src / "lint.json").read_text())["schema"] == "gradscope.lint"


# ---- 4. a script that changes folder ---------------------------------------------------------------
def test_a_script_that_calls_chdir_writes_where_it_was_told(tmp_path: Path) -> None:
    (tmp_path / "_common.py").write_bytes((SCRIPTS / "_common.py").read_bytes())
    script = tmp_path / "chdir_away.py"
    script.write_bytes((SCRIPTS / "chdir_away.py").read_bytes())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, output = gradscope("run", "chdir_away.py", "--out", "out", "--script", "--", str(elsewhere),
                             cwd=tmp_path)
    assert code == 0, output
    assert "trained in" in output and str(elsewhere) in output
    record = artifacts(tmp_path / "out" / "run.json", tmp_path / "out" / "report.html")
    assert record["steps"] == 3
    assert not (elsewhere / "out").exists()
    assert "record: out/run.json" in output and "report: out/report.html" in output
    no_gradscope_traceback(output)


# ---- 6. an undecodable file name --------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "darwin", reason="macOS refuses file names that are not UTF-8")
def test_a_file_name_that_is_not_utf8_loses_nothing(tmp_path: Path) -> None:
    name = os.fsdecode(b"m\xff.py")        # 'm\udcff.py': a lone surrogate stands for the byte
    (tmp_path / name).write_bytes(HEALTHY.read_bytes())
    code, output = gradscope("run", name, *SMALL, "--max-steps", "2", "--out", "out", "-q", cwd=tmp_path)
    assert code == 0, output
    record = artifacts(tmp_path / "out" / "run.json", tmp_path / "out" / "report.html")
    assert record["run"]["file"] == name            # the record keeps the name exactly
    page = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "m\\udcff.py" in page                     # shown as a visible code
    no_gradscope_traceback(output)
    again = invoke("report", tmp_path / "out" / "run.json", "-o", tmp_path / "again.html")
    assert again.exit_code == 0, again.output
    agree(record, embedded_record(tmp_path / "again.html"))
    no_gradscope_traceback(again.output)


def test_the_atomic_writer_replaces_what_utf8_cannot_hold(tmp_path: Path) -> None:
    path = write_text_atomic("a\udcffb", tmp_path / "t.txt")
    assert path.read_text(encoding="utf-8") == "a\ufffdb"
    long = tmp_path / ("n" * 250 + ".html")        # its temporary file's name must stay legal too
    write_text_atomic("x", long)
    assert long.read_text() == "x"


# ---- 7. option values ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("option", "value"), [
    ("--seed", "-1"), ("--seed", str(2**32)), ("--seed", str(10**30)),
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "-1"),
    ("--clip-norm", "nan"), ("--clip-norm", "inf"), ("--clip-norm", "0"), ("--clip-value", "nan"),
    ("--device", "meta"), ("--device", "banana"), ("--device", "cuda:99"),
])
def test_a_bad_option_value_is_refused_by_name(tmp_path: Path, option: str, value: str) -> None:
    result = invoke("run", HEALTHY, *SMALL, option, value, "--out", tmp_path / "o")
    one_error_line(result, option)
    assert not (tmp_path / "o").exists()


def test_more_generated_data_than_memory_is_bad_input(tmp_path: Path) -> None:
    result = invoke("run", HEALTHY, "--train-size", str(10**14), "--out", tmp_path / "o")
    one_error_line(result, "--train-size 100,000,000,000,000", "does not fit in memory")


def test_a_device_this_machine_lacks_is_refused() -> None:
    import torch

    missing = [d for d, there in (("mps", torch.backends.mps.is_available()),
                                  ("cuda", torch.cuda.is_available())) if not there]
    if not missing:
        pytest.skip("this machine has both CUDA and MPS")
    for device in missing:
        one_error_line(invoke("run", HEALTHY, "--device", device), "--device", device)
        one_error_line(invoke("bench", HEALTHY, "--device", device), "--device", device)
    one_error_line(invoke("bench", HEALTHY, "--device", "meta"), "--device", "meta")


def test_report_refuses_a_nan_threshold(tmp_path: Path) -> None:
    result = invoke("report", _a_record(tmp_path), "-o", tmp_path / "p.html", "--thresholds", "clip_rate=nan")
    one_error_line(result, "--thresholds", "clip_rate=nan", "never fire")


# ---- 8. the smaller ones -----------------------------------------------------------------------------
def test_lint_reports_a_symlink_loop_and_a_pipe_and_lints_the_rest(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "loop.py").symlink_to(src / "loop.py")
    (src / "dangling.py").symlink_to(src / "nowhere.py")
    os.mkfifo(src / "pipe.py")
    bad = src / "train.py"
    bad.write_text("import torch\n\nmodel = torch.nn.Linear(2, 2)\n"
                   "torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm=1)\n")
    result = invoke("lint", src)
    assert result.exit_code == 1, result.output
    assert f"{bad}:4:" in result.output and "GS507" in result.output
    assert "loop.py: could not be read: a symbolic link that loops back on itself" in result.stderr
    assert "dangling.py: could not be read: a symbolic link to a file that does not exist" in result.stderr
    assert "pipe.py: could not be read: not a regular file" in result.stderr
    assert "1 finding(s) in 1 file(s); 3 file(s) could not be read" in result.stdout
    no_gradscope_traceback(result.output)
    result = invoke("lint", src / "loop.py", bad)          # named on the command line
    assert result.exit_code == 1 and "symbolic link that loops" in result.stderr, result.output
    no_gradscope_traceback(result.output)


def test_lint_of_a_missing_path_is_bad_input(tmp_path: Path) -> None:
    result = invoke("lint", tmp_path / "nope.py", SCRIPTS / "healthy.py")
    one_error_line(result, "no such file or folder", str(tmp_path / "nope.py"))


@pytest.mark.parametrize("where", ["top", "extra"])
def test_a_deeply_nested_record_is_a_clear_error(tmp_path: Path, where: str) -> None:
    record = tmp_path / "deep.json"
    if where == "top":
        record.write_text("[" * 100_000 + "]" * 100_000)
    else:  # parses, and would overflow the stack only while the page is rendered
        record.write_text('{"schema": "gradscope.record", "version": 2, "extra": '
                          + "[" * 700 + "]" * 700 + "}")
    for args in (["report", record, "-o", tmp_path / "p.html"],
                 ["compare", record, record, "-o", tmp_path / "c.html"]):
        one_error_line(invoke(*args), str(record), "nested more than 100 levels")
    assert not (tmp_path / "p.html").exists()


def test_control_characters_in_a_class_name_never_reach_the_page_raw(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("run", MODELS / "hostile_class_name.py", *SMALL, "--max-steps", "2", "--out", out,
                    "--fail-on", "never")
    assert result.exit_code == 0, result.output
    record = artifacts(out / "run.json", out / "report.html")
    hostile = "Evil\x1b[31mRed\x07\x85\u202eesreveR"
    assert record["model"]["class_name"] == hostile                 # the record keeps the truth
    assert embedded_record(out / "report.html")["model"]["class_name"] == hostile
    page = (out / "report.html").read_text(encoding="utf-8")
    for raw in ("\x1b", "\x07", "\x85", "\u202e"):
        assert raw not in page, repr(raw)
    assert printable(hostile) in page                                # shown as visible codes
    assert "\x1b" not in result.output
    no_gradscope_traceback(result.output)


def test_compare_pages_escape_control_characters_too(tmp_path: Path) -> None:
    hostile = write_record({"steps": 0, "model": {"class_name": "Net\x1b[2J\u202e", "parameters": 1,
                                                  "trainable": 1, "device": "cpu"}}, tmp_path / "a.json")
    result = invoke("compare", hostile, hostile, "-o", tmp_path / "c.html")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "c.html").read_text(encoding="utf-8")
    assert "\x1b" not in page and "\u202e" not in page


def test_an_accuracy_measured_before_training_says_so(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = invoke("run", MODELS / "crash_at_step5.py", *SMALL, "--out", out)
    assert result.exit_code == 1, result.output
    record = artifacts(out / "run.json", out / "report.html")
    assert record["run"]["status"] == "crashed" and record["curves"]["epoch"] == [-1]
    text = " ".join(result.stdout.split())
    assert "before training (the run stopped at step 4, before its first evaluation after training)" in text
    assert "after 4 steps" not in text
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "test accuracy before training" in page     # the highlights under the verdict
    compared = invoke("compare", out / "run.json", out / "run.json", "-o", tmp_path / "c.html")
    assert compared.exit_code == 0, compared.output
    assert "final test accuracy" not in (tmp_path / "c.html").read_text(encoding="utf-8")
    no_gradscope_traceback(result.output)


# ---- 9. the previous run is kept ------------------------------------------------------------------
def test_reusing_out_keeps_the_previous_record_for_compare(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = invoke("run", HEALTHY, *SMALL, "--max-steps", "2", "--lr", "0", "--out", out)
    assert first.exit_code in (0, 1), first.output
    assert "previous" not in first.output
    before = (out / "run.json").read_bytes()
    second = invoke("run", HEALTHY, *SMALL, "--max-steps", "3", "--out", out)
    assert second.exit_code == 0, second.output
    assert f"the previous run's record is now {out / 'run.prev.json'}" in " ".join(second.stdout.split())
    assert (out / "run.prev.json").read_bytes() == before
    artifacts(out / "run.json", out / "report.html")
    compared = invoke("compare", out / "run.prev.json", out / "run.json", "-o", tmp_path / "c.html")
    assert compared.exit_code == 0, compared.output
    third_input = (out / "run.json").read_bytes()
    third = invoke("run", HEALTHY, *SMALL, "--max-steps", "2", "--out", out, "-q")
    assert third.exit_code == 0 and "run.prev.json" in third.stdout    # said even under -q
    assert (out / "run.prev.json").read_bytes() == third_input         # one generation is kept


def test_only_gradscope_records_are_moved_aside(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"             # made by mktemp for gradscope to fill
    empty.write_text("")
    assert keep_previous(empty) is None and empty.exists()
    record = write_record({"steps": 1}, tmp_path / "run.json")
    foreign = tmp_path / "run.prev.json"         # not ours: never replaced
    foreign.write_text("my notes\n")
    assert keep_previous(record) is None
    assert foreign.read_text() == "my notes\n" and record.exists()
    foreign.unlink()
    assert keep_previous(record) == foreign and not record.exists()
    assert read_json(foreign)["steps"] == 1


def test_output_path_checks(tmp_path: Path, blocker: Path) -> None:
    assert unwritable_reason(tmp_path / "new" / "deeper" / "run.json") is None
    assert unwritable_reason(tmp_path / "new", folder=True) is None
    assert not (tmp_path / "new").exists()                       # checking creates nothing
    assert unwritable_reason(blocker / "x.json") == f"{blocker} is a file, not a folder"
    assert unwritable_reason(blocker, folder=True) == f"{blocker} is a file, not a folder"
    assert "is a folder" in (unwritable_reason(tmp_path) or "")
    assert "longer than" in (unwritable_reason(tmp_path / ("n" * 300)) or "")
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    assert "symbolic link" in (unwritable_reason(loop) or "")
    assert same_file(blocker, tmp_path / "." / "a-file") and not same_file(blocker, loop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "loop.json"]
