"""``gradscope run`` as a library call: model file in, JSON record and HTML report out.

The steps: lint the file, load it, build the model, check its registration, make the data,
train and evaluate under ``watch()`` (``gradscope.loop.fit``), then write the record and the page.
Every failure after the file loaded (a model that cannot be built, a crash in forward, a NaN, a
Ctrl-C or a SIGTERM) still ends with both files on disk and a status saying what happened. The
output paths are fixed against the folder the command started in, a second signal while the files
are written waits until they are on disk, and a file that still cannot be written is named in one
line and in the exit status (``EXIT_NOT_WRITTEN``), never lost in silence.
"""
from __future__ import annotations

import dataclasses
import math
import os
import platform
import random
import signal
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from gradscope import __version__
from gradscope.errors import GradscopeError, ModelFileError
from gradscope.findings import Finding, fails, sort_findings
from gradscope.loop import FitOptions, fit, pick_device
from gradscope.modelfile import ModelFindingError, ModelSpec, build, load_model_file
from gradscope.records import Curves, Environment, Registration, RunInfo, RunRecord, WatchedModel, write_record
from gradscope.records.io import EXIT_NOT_WRITTEN, keep_previous, write_error_reason

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gradscope.script import ScriptResult

NOTES_INPUT_SHAPE = (1, 28, 28)
NOTES_CLASSES = 10
EXIT_INTERRUPTED = 130      # SIGINT (Ctrl-C): 128 + 2, as a shell reports a process a signal stopped
EXIT_TERMINATED = 143       # SIGTERM (SLURM, Kubernetes, docker stop): 128 + 15


def notes_cnn() -> nn.Module:
    """The notes' "Full Loop" model: two convolutions and two linear layers for 1x28x28 inputs."""
    return nn.Sequential(
        nn.Conv2d(1, 10, 5),
        nn.ReLU(),
        nn.Conv2d(10, 20, 5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8000, 200),
        nn.ReLU(),
        nn.Linear(200, 10))


def default_spec() -> ModelSpec:
    """What ``gradscope run`` trains with no FILE: the notes' CNN, Adam 1e-3, CrossEntropyLoss."""
    return ModelSpec(path=Path("<notes: Full Loop CNN>"), build_model=notes_cnn, source="build_model",
                     input_shape=NOTES_INPUT_SHAPE, num_classes=NOTES_CLASSES, loss_fn=None,
                     build_optimizer=None, build_loaders=None, clip=None)


@dataclass
class RunOptions:
    """Everything ``gradscope run`` takes; the CLI fills it from its options."""

    file: Path | None = None
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 64
    lr: float = 1e-3
    device: str | None = None
    seed: int = 0
    data: str = "glyphs"
    train_size: int | None = None       # samples of generated data (None: the data's default)
    test_size: int | None = None
    clip_norm: float | None = None
    clip_value: float | None = None
    out: Path = Path("reports")
    json_path: Path | None = None
    html_path: Path | None = None
    save: bool = False
    fail_on: str = "error"
    progress: bool = False
    per_rank: bool = False              # distributed scripts: every rank writes its own files
    reference: tuple[Path, ...] = ()    # known-good runs' records: the run is judged against them (GS8xx)
    command: str = "gradscope run"

    def paths(self) -> tuple[Path, Path]:
        return (self.json_path or self.out / "run.json", self.html_path or self.out / "report.html")


@dataclass
class RunOutcome:
    """What a run left behind and how the command should exit."""

    record: RunRecord
    json_path: Path | None              # None: another rank writes the record
    html_path: Path | None
    findings: list[Finding]
    status: str
    exit_code: int
    messages: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)   # one line per file that could not be written
    previous: Path | None = None        # where the record found at json_path was kept
    base: Path | None = None            # the folder the command started in: paths are shown from it


def _cleanup_codes() -> frozenset[CodeType]:
    """The functions during which a signal must not raise: closing a scope (its last flush and
    the removal of every hook) and stopping a script's watcher."""
    from gradscope.scope import Scope
    from gradscope.script import ScriptWatcher

    return frozenset({Scope.close.__code__, ScriptWatcher.stop.__code__, ScriptWatcher.close_scopes.__code__})


_CLEANUP: list[frozenset[CodeType]] = []


def _cleaning_up(frame: FrameType | None) -> bool:
    if not _CLEANUP:
        _CLEANUP.append(_cleanup_codes())
    while frame is not None:
        if frame.f_code in _CLEANUP[0]:
            return True
        frame = frame.f_back
    return False


class StopSignals:
    """SIGINT and SIGTERM during ``gradscope run``: one clean stop, whichever arrives.

    While the model or the script runs, either signal raises KeyboardInterrupt in the main thread,
    so SIGTERM (what SLURM, Kubernetes and ``docker stop`` send) takes Ctrl-C's path: the loop and
    the script runner end with status "interrupted" and keep what was captured. While gradscope
    closes a scope, and from ``defer()`` on (the record and report are being written), a signal
    is only remembered: a second Ctrl-C cannot cut a file in half or leave hooks behind. The
    first signal decides the exit status (128 + its number: 130, 143). A signal already ignored
    (``nohup``) stays ignored; the previous handlers are back when the block ends. Outside the
    main thread nothing is installed (Python runs signal handlers only there).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.first: int | None = None       # the first signal that arrived
        self.late: int | None = None        # one that arrived while deferred (after the first)
        self.deferred = False
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                previous = signal.getsignal(signum)
                if previous is not signal.SIG_IGN:
                    self._saved[signum] = previous
                    signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_exc: object) -> None:
        while self._saved:
            signum, previous = self._saved.popitem()
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.first is None:
            self.first = signum
        if self.deferred or _cleaning_up(frame):
            self.late = self.late or signum
            return
        raise KeyboardInterrupt

    def defer(self) -> None:
        """From now on a signal is only remembered. The handlers are set again: a script may have
        replaced them with its own, which must not run once the script has ended."""
        self.deferred = True
        for signum in self._saved:
            signal.signal(signum, self._handle)

    def stopped(self, where: str) -> str:
        """The record's error text for a stop ``where`` ("at step 4", "while importing m.py")."""
        how = "stopped by SIGTERM" if self.first == signal.SIGTERM else "interrupted by the user"
        return f"{how} {where}".strip()

    def exit_code(self, interrupted: bool) -> int | None:
        """128 + the signal's number when a signal stopped the run or came while its files were
        written (the run then finished first); None when no signal is owed an exit status."""
        if self.first is not None and (interrupted or self.late is not None):
            return 128 + int(self.first)
        return EXIT_INTERRUPTED if interrupted else None


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a generator for the DataLoader's shuffling."""
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy comes with matplotlib
        pass
    return torch.Generator().manual_seed(seed)


def environment() -> Environment:
    """Versions and the machine, for the report's environment section."""
    import torchvision

    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return Environment(gradscope=__version__, python=platform.python_version(), torch=torch.__version__,
                       torchvision=torchvision.__version__, platform=platform.platform(), cuda=cuda,
                       threads=torch.get_num_threads())


def _loaders(spec: ModelSpec, options: RunOptions, device: torch.device,
             generator: torch.Generator) -> tuple[Iterable[Any], Iterable[Any] | None, str]:
    if spec.build_loaders is not None:
        try:
            train, test = spec.build_loaders()
        except Exception as exc:
            from gradscope.modelfile import describe_failure

            raise ModelFileError(describe_failure(f"build_loaders() in {spec.path} failed", exc)) from None
        return train, test, f"build_loaders() from {spec.path}"
    if spec.input_shape is None:
        raise ModelFileError(
            f"{spec.path}: gradscope needs the shape of one input sample to make data for the "
            "model. Add `input_shape = (1, 28, 28)` (channels, height, width; no batch dimension) "
            "to the file, or define build_loaders() returning (train_loader, test_loader).")
    from gradscope.data import describe, load_data

    try:
        train_set, test_set = load_data(options.data, spec.input_shape, spec.num_classes or NOTES_CLASSES,
                                        seed=options.seed, train_size=options.train_size,
                                        test_size=options.test_size)
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, RuntimeError) and "allocate" not in str(exc):
            raise
        sizes = ", ".join(f"{name} {value:,}" for name, value in (("--train-size", options.train_size),
                                                                   ("--test-size", options.test_size)) if value)
        raise GradscopeError(f"the generated data ({sizes or 'its default size'}) does not fit in memory; "
                             "ask for fewer samples") from None
    pin = device.type == "cuda"
    train = DataLoader(train_set, batch_size=options.batch_size, shuffle=True, generator=generator,
                       pin_memory=pin)
    test = DataLoader(test_set, batch_size=max(options.batch_size, 256), pin_memory=pin)
    return train, test, describe(options.data, spec.input_shape)


def _lint(path: Path | None) -> list[Finding]:
    if path is None:
        return []
    try:
        from gradscope.lint import lint_paths
    except ImportError:  # pragma: no cover - lint ships with the package
        return []
    return list(lint_paths([path]).findings)


def _registration(model: nn.Module, spec: ModelSpec) -> tuple[list[Finding], Registration, str | None]:
    """Registration findings, the module tree, and the error when the check's forward failed."""
    from gradscope.registration import ForwardPassError, check, registration_tree

    tree = Registration(tree=registration_tree(model))
    try:
        return check(model, input_shape=spec.input_shape), tree, None
    except ForwardPassError as err:
        cause = err.__cause__
        failed = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
        return err.findings, tree, (f"the model's forward failed in {err.module} on an input "
                                    f"{err.input_description}: {failed}. Check input_shape in "
                                    f"{spec.path} (one sample, without the batch dimension).")


def _anchored(options: RunOptions) -> tuple[RunOptions, Path]:
    """``options`` with its output paths made absolute against the folder the command started
    in, and that folder: a script that calls ``os.chdir()`` must not move the report away from
    where it is announced."""
    try:
        base = Path.cwd()
    except OSError:
        raise GradscopeError("the current folder no longer exists (it was removed or renamed); "
                             "cd into an existing folder and run the command again") from None

    def fix(path: Path | None) -> Path | None:
        return None if path is None else base / path

    out = base / options.out
    return dataclasses.replace(options, out=out, json_path=fix(options.json_path),
                               html_path=fix(options.html_path)), base


@dataclass
class _Progress:
    """What a model run holds so far: enough to write its record whenever it stops."""

    record: RunRecord
    findings: list[Finding]
    doing: str = "before training"      # where a stop before the training loop happened


def load_references(paths: Iterable[Path]) -> list[RunRecord]:
    """The records of ``--reference``; a missing or broken one raises ``GradscopeError`` naming it."""
    from gradscope.records import load_record

    out = []
    for path in paths:
        try:
            out.append(load_record(path))
        except GradscopeError as err:
            raise GradscopeError(f"--reference {err}") from None
    return out


def _judge_references(record: RunRecord, findings: list[Finding], references: list[RunRecord],
                      options: RunOptions) -> tuple[RunRecord, list[Finding]]:
    """The run's departures from its ``--reference`` runs: a ``reference`` probe record and findings."""
    if not references:
        return record, findings
    # the probe declares the record's report section (and its judge, for gradscope report --thresholds)
    from gradscope.probes.reference import ReferenceProbe  # noqa: F401
    from gradscope.reference import compare_to_references, departure_findings, file_labels

    judged = compare_to_references(record, references, file_labels(options.reference),
                                   record.judged_with(), findings)
    return (dataclasses.replace(record, probes={**record.probes, judged.probe: judged}),
            findings + departure_findings(judged))


def run(options: RunOptions, *, say: Callable[[str], None] = lambda _m: None,
        references: list[RunRecord] | None = None) -> RunOutcome:
    """Run a model file (or the notes' CNN) end to end and write its record and report.

    ``references``: the records of ``options.reference`` when already read (the CLI reads them
    before anything else, to refuse a broken one at once).

    Raises:
        ModelFileError: the file cannot be loaded (the CLI turns this into exit code 2).
        GradscopeError: an option is unusable (a device that does not exist, bad data spec, a
            reference record that cannot be read).
    """
    given = options
    refs = references if references is not None else load_references(options.reference)
    options, base = _anchored(options)
    json_path, html_path = options.paths()
    with StopSignals() as signals:
        info = RunInfo(command=given.command, file=str(given.file or default_spec().path), mode="model",
                       options=_jsonable(asdict(given)))
        progress = _Progress(RunRecord(gradscope_version=__version__, torch_version=torch.__version__,
                                       run=info), [])
        try:
            _train(options, progress, signals, say)
        except KeyboardInterrupt:
            signals.defer()
            run_info = progress.record.run or info
            progress.record = dataclasses.replace(progress.record, run=dataclasses.replace(
                run_info, status="interrupted", error=signals.stopped(progress.doing)))
        signals.defer()
        progress.record, progress.findings = _judge_references(progress.record, progress.findings, refs, given)
        outcome = _finish(progress.record, progress.findings, options, json_path, html_path, say, base)
    outcome.exit_code = _exit_code(outcome, options, signals)
    return outcome


def _train(options: RunOptions, progress: _Progress, signals: StopSignals, say: Callable[[str], None]) -> None:
    """Load, build, check and train, keeping ``progress`` up to date at every stage."""
    if options.file is not None:
        progress.doing = f"while importing {options.file}, before training"
    spec = load_model_file(options.file) if options.file is not None else default_spec()
    lint_findings = _lint(options.file)
    progress.findings += lint_findings
    device = pick_device(options.device)
    generator = seed_everything(options.seed)
    info = dataclasses.replace(progress.record.run or RunInfo(), file=str(spec.path), device=str(device))
    record = RunRecord(gradscope_version=__version__, torch_version=torch.__version__, run=info,
                       environment=environment(), lint=lint_findings)
    progress.record = record
    findings = progress.findings

    def crashed(error: str) -> None:
        progress.record = dataclasses.replace(record, run=dataclasses.replace(
            record.run or info, status="crashed", error=error))

    progress.doing = "while building the model, before training"
    try:
        model = build(spec)
    except ModelFindingError as exc:
        findings.append(exc.finding)
        return crashed(str(exc))
    reg_findings, tree, forward_error = _registration(model, spec)
    findings += reg_findings
    record = dataclasses.replace(record, registration=tree)
    progress.record = record
    if forward_error is not None:
        return crashed(forward_error)
    progress.doing = "while preparing the data, before training"
    train, test, data_text = _loaders(spec, options, device, generator)
    info = dataclasses.replace(info, data=data_text)
    record = dataclasses.replace(record, run=info)
    progress.record = record
    if not any(p.requires_grad for p in model.parameters()):
        culprit = next((f for f in findings if f.code in ("GS101", "GS102")), None)
        return crashed(
            f"{type(model).__name__} has no trainable parameters, so there is nothing to train"
            + (f": {culprit.where} holds its layers where PyTorch cannot see them ({culprit.code})."
               if culprit else ": every parameter is frozen (requires_grad=False)."))
    try:
        optimizer = (spec.build_optimizer(model.to(device)) if spec.build_optimizer is not None
                     else None)
    except Exception as exc:
        from gradscope.modelfile import describe_failure

        return crashed(describe_failure(f"build_optimizer(model) in {spec.path} failed", exc))
    clip = spec.clip or {}
    fit_options = FitOptions(
        epochs=options.epochs, max_steps=options.max_steps, lr=options.lr,
        clip_norm=options.clip_norm if options.clip_norm is not None else clip.get("max_norm"),
        clip_value=options.clip_value if options.clip_value is not None else clip.get("clip_value"),
        save_dir=options.out if options.save else None, progress=options.progress)
    source = data_text.split(" ", 1)[0].rstrip(":") if spec.build_loaders is None else "the file's loaders"
    progress.doing = "as training started"
    say(f"training {type(model).__name__} on {source} ({device}), {options.epochs} epoch(s)"
        + (f", at most {options.max_steps} steps" if options.max_steps else ""))
    result = fit(model, train, test, optimizer=optimizer, loss_fn=spec.loss_fn, device=device,
                 options=fit_options)
    signals.defer()
    scoped = result.scope.to_record()
    progress.findings = findings + result.findings + scoped.findings
    error = result.error
    if result.status == "interrupted" and signals.first is not None:
        error = signals.stopped(f"at step {result.steps}")
    info = dataclasses.replace(info, status=result.status, steps=result.steps, checkpoints=result.checkpoints,
                               error=error)
    progress.record = dataclasses.replace(scoped, run=info, environment=record.environment, lint=lint_findings,
                                          registration=tree, curves=result.curves)


def _rank(record: RunRecord) -> int:
    """This process's rank in a distributed run (0 otherwise), from the record or torchrun's env."""
    if record.distributed is not None:
        return record.distributed.rank
    try:
        return int(os.environ.get("RANK", "0"))
    except ValueError:
        return 0


def _ranked(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def shown(path: Path, base: Path | None) -> str:
    """``path`` as the user reads it: relative to the folder the command started in when inside it."""
    if base is not None:
        try:
            return str(path.relative_to(base))
        except ValueError:
            pass
    return str(path)


def _finish(record: RunRecord, findings: list[Finding], options: RunOptions, json_path: Path,
            html_path: Path, say: Callable[[str], None], base: Path | None = None) -> RunOutcome:
    """Write the record and the report (each attempted whatever became of the other) and say
    what could not be written; the exit code is the caller's to settle."""
    ordered = sort_findings(findings)
    record = dataclasses.replace(record, findings=ordered)
    status = record.status
    rank = _rank(record)
    if rank != 0 and not options.per_rank:
        # one report for the run: rank 0's, which holds what every rank saw (norms are reduced,
        # NaN flags carry their rank)
        return RunOutcome(record=record, json_path=None, html_path=None, findings=ordered, status=status,
                          exit_code=0, base=base,
                          messages=[f"rank {rank}: the record and report are written by rank 0 "
                                    "(--per-rank writes one per rank)"])
    if options.per_rank and (rank or record.distributed is not None):
        json_path, html_path = _ranked(json_path, rank), _ranked(html_path, rank)
    messages: list[str] = []
    previous: Path | None = None
    try:
        previous = keep_previous(json_path)
    except OSError as exc:  # the write below will say more if the folder is the problem
        messages.append(f"the previous record at {shown(json_path, base)} could not be kept "
                        f"({write_error_reason(json_path, exc)}); it is replaced")
    json_error = html_error = None
    try:
        write_record(record, json_path)
    except Exception as exc:  # the report may still be written: say what failed, go on
        json_error = write_error_reason(json_path, exc)
    try:
        from gradscope.reports.html import write_html

        write_html(record, html_path)
    except Exception as exc:  # the JSON is the source of truth: keep it, say what failed
        html_error = write_error_reason(html_path, exc)
    lost: list[str] = []
    if json_error is not None:
        lost.append(f"error: the JSON record was not written: cannot write {shown(json_path, base)}: "
                    f"{json_error}" + ("; the HTML report was written" if html_error is None else ""))
    if html_error is not None:
        lost.append(f"error: the HTML report was not written: cannot write {shown(html_path, base)}: "
                    f"{html_error}" + (f"; the JSON record is complete: gradscope report "
                                       f"{shown(json_path, base)}" if json_error is None else ""))
    return RunOutcome(record=record, json_path=None if json_error else json_path,
                      html_path=None if html_error else html_path, findings=ordered, status=status,
                      exit_code=0, messages=messages, lost=lost,
                      previous=previous if json_error is None else None, base=base)


def _exit_code(outcome: RunOutcome, options: RunOptions, signals: StopSignals) -> int:
    """Model mode: a signal (130, 143), else a file not written (74), else a failed run or a
    finding at --fail-on (1), else 0."""
    by_signal = signals.exit_code(outcome.status == "interrupted")
    if by_signal is not None:
        return by_signal
    if outcome.lost:
        return EXIT_NOT_WRITTEN
    if outcome.status != "completed":
        return 1
    return 1 if fails(outcome.findings, options.fail_on) else 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):  # --reference paths
        return [_jsonable(v) for v in value]
    return value


def _last_evaluation(curves: Curves) -> tuple[int, float, float | None] | None:
    """(epoch, test accuracy, test loss) of the last evaluation that measured an accuracy."""
    for epoch, acc, loss in reversed(list(zip(curves.epoch, curves.test_accuracy_percent, curves.test_loss))):
        if acc is not None and math.isfinite(acc):
            return epoch, acc, loss if loss is not None and math.isfinite(loss) else None
    return None


def summary_lines(outcome: RunOutcome, top: int = 5) -> list[str]:
    """The short text ``gradscope run`` prints: status, accuracy, top findings with hints, paths,
    and a line for every file that could not be written."""
    rec = outcome.record
    lines: list[str] = []
    info = rec.run
    if outcome.status != "completed":
        lines.append(f"run {outcome.status}: {info.error if info and info.error else ''}".rstrip(": "))
    last = _last_evaluation(rec.curves) if rec.curves is not None else None
    if last is not None:
        epoch, acc, loss = last
        steps = info.steps if info and info.steps is not None else rec.steps
        measured = f"test accuracy {acc:.2f}%" + (f" (test loss {loss:.4g})" if loss is not None else "")
        if epoch == -1:
            # the evaluation before training: the run stopped before the one after its first epoch
            lines.append(f"{measured} before training (the run stopped at step {steps}, before its "
                         "first evaluation after training)" if outcome.status != "completed"
                         else f"{measured} before training")
        elif outcome.status != "completed":
            lines.append(f"{measured} after epoch {epoch + 1}, measured before the run stopped at "
                         f"step {steps}")
        else:
            lines.append(f"{measured} after {steps} steps")
    counts = {s: sum(1 for f in outcome.findings if f.severity.value == s) for s in ("error", "warning", "info")}
    lines.append(f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info")
    for f in outcome.findings[:top]:
        lines.append(f"  {f.severity.value:<7} {f.code} {f.where}: {f.message}")
        lines.append(f"          hint: {f.hint}")
    if len(outcome.findings) > top:
        lines.append(f"  ... and {len(outcome.findings) - top} more in the report")
    if outcome.json_path is not None:
        lines.append(f"record: {shown(outcome.json_path, outcome.base)}"
                     + (f" (the previous run's record is now {shown(outcome.previous, outcome.base)})"
                        if outcome.previous is not None else ""))
    if outcome.html_path is not None:
        lines.append(f"report: {shown(outcome.html_path, outcome.base)}")
    lines += outcome.messages
    lines += outcome.lost
    return lines


def run_script_file(path: Path, args: list[str], options: RunOptions, *,
                    fail_on_explicit: bool = False, say: Callable[[str], None] = lambda _m: None,
                    references: list[RunRecord] | None = None) -> RunOutcome:
    """Zero-code mode: run an unmodified training script under gradscope and report on it.

    The exit code is the script's own, except that a signal gives 128 + its number, and a record
    or report that could not be written after a successful script gives ``EXIT_NOT_WRITTEN``;
    ``options.fail_on`` applies only when ``fail_on_explicit`` (the user asked for it) and the
    script itself succeeded. ``references``: as for ``run`` (a script with several models is
    judged on its first).
    """
    from gradscope.script import ScriptResult, ScriptWatcher, run_script

    given = options
    refs = references if references is not None else load_references(options.reference)
    options, base = _anchored(options)
    json_path, html_path = options.paths()
    with StopSignals() as signals:
        lint_findings: list[Finding] = []
        watcher = ScriptWatcher(say=say)
        try:
            lint_findings = _lint(path)
            result = run_script(path, args, watcher)
        except KeyboardInterrupt:  # before the script ran, or after it, outside its own frames
            signals.defer()
            watcher.stop(failed=True)  # safe twice: no hook may outlive the run
            error = ("interrupted by the user" if watcher.watched  # made precise with the steps below
                     else signals.stopped("before the script started"))
            result = ScriptResult(exit_code=EXIT_INTERRUPTED, status="interrupted", error=error,
                                  watched=watcher.watched)
        signals.defer()
        record, findings = _script_record(path, args, given, result, lint_findings, signals, say)
        record, findings = _judge_references(record, findings, refs, given)
        outcome = _finish(record, findings, options, json_path, html_path, say, base)
    code = signals.exit_code(result.status == "interrupted")
    if code is None:
        code = result.exit_code
        if code == 0 and outcome.lost:
            code = EXIT_NOT_WRITTEN
        elif code == 0 and fail_on_explicit and fails(outcome.findings, options.fail_on):
            code = 1
    outcome.exit_code = code
    return outcome


def _script_record(path: Path, args: list[str], options: RunOptions, result: ScriptResult,
                   lint_findings: list[Finding], signals: StopSignals,
                   say: Callable[[str], None]) -> tuple[RunRecord, list[Finding]]:
    """The record of a script run (one scope's record, or one per model) and all its findings."""
    several = len(result.watched) > 1
    findings: list[Finding] = list(lint_findings)
    models: list[WatchedModel] = []
    record = RunRecord(gradscope_version=__version__, torch_version=torch.__version__)
    for i, w in enumerate(result.watched):
        scoped = w.scope.to_record()
        if i == 0:
            record = scoped
        for f in scoped.findings:
            findings.append(dataclasses.replace(f, where=f"{w.label}: {f.where}") if several else f)
        if scoped.model is not None:
            models.append(WatchedModel(name=w.label, model=scoped.model, optimizers=w.optimizers + w.late_optimizers,
                                       steps=scoped.steps, findings=scoped.findings, probes=scoped.probes))
    if not result.watched and result.status != "interrupted":
        say("gradscope: the script trained no model that gradscope could see (no module with "
            "trainable parameters was called)")
    error, exit_code = result.error, result.exit_code
    if result.status == "interrupted":
        exit_code = signals.exit_code(True) or exit_code
        if error == "interrupted by the user":  # run_script's words: say which signal, and when
            steps = max((m.steps for m in models), default=record.steps)
            error = signals.stopped(f"at step {steps}")
    info = RunInfo(command=options.command, file=str(path), mode="script", arguments=list(args),
                   status=result.status, exit_code=exit_code, error=error)
    record = dataclasses.replace(record, run=info, environment=environment(), lint=lint_findings,
                                 models=models if several else [])
    return record, findings
