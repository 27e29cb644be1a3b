"""``gradscope run`` as a library call: model file in, JSON record and HTML report out.

The steps: lint the file, load it, build the model, check its registration, make the data,
train and evaluate under ``watch()`` (``gradscope.loop.fit``), then write the record and the page.
Every failure after the file loaded (a model that cannot be built, a crash in forward, a NaN, a
Ctrl-C) still ends with both files on disk and a status saying what happened.
"""
from __future__ import annotations

import dataclasses
import os
import platform
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader

from gradscope import __version__
from gradscope.errors import ModelFileError
from gradscope.findings import Finding, fails, sort_findings
from gradscope.loop import FitOptions, fit, pick_device
from gradscope.modelfile import ModelFindingError, ModelSpec, build, load_model_file
from gradscope.records import Environment, Registration, RunInfo, RunRecord, WatchedModel, write_record

NOTES_INPUT_SHAPE = (1, 28, 28)
NOTES_CLASSES = 10
EXIT_INTERRUPTED = 130


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

    train_set, test_set = load_data(options.data, spec.input_shape, spec.num_classes or NOTES_CLASSES,
                                    seed=options.seed, train_size=options.train_size,
                                    test_size=options.test_size)
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


def run(options: RunOptions, *, say: Callable[[str], None] = lambda _m: None) -> RunOutcome:
    """Run a model file (or the notes' CNN) end to end and write its record and report.

    Raises:
        ModelFileError: the file cannot be loaded (the CLI turns this into exit code 2).
        GradscopeError: an option is unusable (a device that does not exist, bad data spec).
    """
    json_path, html_path = options.paths()
    spec = load_model_file(options.file) if options.file is not None else default_spec()
    lint_findings = _lint(options.file)
    device = pick_device(options.device)
    generator = seed_everything(options.seed)
    info = RunInfo(command=options.command, file=str(spec.path), mode="model",
                   options=_jsonable(asdict(options)), device=str(device))
    record = RunRecord(gradscope_version=__version__, torch_version=torch.__version__, run=info,
                       environment=environment(), lint=lint_findings)
    findings: list[Finding] = list(lint_findings)

    def crashed(error: str) -> RunOutcome:
        done = dataclasses.replace(record, run=dataclasses.replace(record.run or info, status="crashed",
                                                                   error=error))
        return _finish(done, findings, options, json_path, html_path, say)

    try:
        model = build(spec)
    except ModelFindingError as exc:
        findings.append(exc.finding)
        return crashed(str(exc))
    reg_findings, tree, forward_error = _registration(model, spec)
    findings += reg_findings
    record = dataclasses.replace(record, registration=tree)
    if forward_error is not None:
        return crashed(forward_error)
    train, test, data_text = _loaders(spec, options, device, generator)
    info = dataclasses.replace(info, data=data_text)
    record = dataclasses.replace(record, run=info)
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
    say(f"training {type(model).__name__} on {source} ({device}), {options.epochs} epoch(s)"
        + (f", at most {options.max_steps} steps" if options.max_steps else ""))
    result = fit(model, train, test, optimizer=optimizer, loss_fn=spec.loss_fn, device=device,
                 options=fit_options)
    scoped = result.scope.to_record()
    findings += result.findings + scoped.findings
    info = dataclasses.replace(info, status=result.status, steps=result.steps, checkpoints=result.checkpoints,
                               error=result.error)
    record = dataclasses.replace(scoped, run=info, environment=record.environment, lint=lint_findings,
                                 registration=tree, curves=result.curves)
    return _finish(record, findings, options, json_path, html_path, say)


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


def _finish(record: RunRecord, findings: list[Finding], options: RunOptions, json_path: Path,
            html_path: Path, say: Callable[[str], None]) -> RunOutcome:
    ordered = sort_findings(findings)
    record = dataclasses.replace(record, findings=ordered)
    status = record.status
    rank = _rank(record)
    if rank != 0 and not options.per_rank:
        # one report for the run: rank 0's, which holds what every rank saw (norms are reduced,
        # NaN flags carry their rank)
        return RunOutcome(record=record, json_path=None, html_path=None, findings=ordered, status=status,
                          exit_code=_exit_code(status, ordered, options),
                          messages=[f"rank {rank}: the record and report are written by rank 0 "
                                    "(--per-rank writes one per rank)"])
    if options.per_rank and (rank or record.distributed is not None):
        json_path, html_path = _ranked(json_path, rank), _ranked(html_path, rank)
    write_record(record, json_path)
    written_html: Path | None = html_path
    messages: list[str] = []
    try:
        from gradscope.reports.html import write_html
    except ImportError:  # pragma: no cover - the report module ships with the package
        written_html = None
    else:
        try:
            write_html(record, html_path)
        except Exception as exc:  # the JSON is the source of truth: keep it, say what failed
            written_html = None
            messages.append(f"the HTML report could not be written ({type(exc).__name__}: {exc}); "
                            f"the JSON record is complete: gradscope report {json_path}")
    code = _exit_code(status, ordered, options)
    return RunOutcome(record=record, json_path=json_path, html_path=written_html, findings=ordered,
                      status=status, exit_code=code, messages=messages)


def _exit_code(status: str, findings: list[Finding], options: RunOptions) -> int:
    if status == "interrupted":
        return EXIT_INTERRUPTED
    if status != "completed":
        return 1
    return 1 if fails(findings, options.fail_on) else 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def summary_lines(outcome: RunOutcome, top: int = 5) -> list[str]:
    """The short text ``gradscope run`` prints: status, accuracy, top findings with hints, paths."""
    rec = outcome.record
    lines: list[str] = []
    info = rec.run
    if outcome.status != "completed":
        lines.append(f"run {outcome.status}: {info.error if info and info.error else ''}".rstrip(": "))
    curves = rec.curves
    if curves is not None:
        acc, loss = curves.last(curves.test_accuracy_percent), curves.last(curves.test_loss)
        if acc is not None:
            steps = info.steps if info and info.steps is not None else rec.steps
            lines.append(f"test accuracy {acc:.2f}%" + (f" (test loss {loss:.4g})" if loss is not None else "")
                         + f" after {steps} steps")
    counts = {s: sum(1 for f in outcome.findings if f.severity.value == s) for s in ("error", "warning", "info")}
    lines.append(f"{counts['error']} error(s), {counts['warning']} warning(s), {counts['info']} info")
    for f in outcome.findings[:top]:
        lines.append(f"  {f.severity.value:<7} {f.code} {f.where}: {f.message}")
        lines.append(f"          hint: {f.hint}")
    if len(outcome.findings) > top:
        lines.append(f"  ... and {len(outcome.findings) - top} more in the report")
    if outcome.json_path is not None:
        lines.append(f"record: {outcome.json_path}")
    if outcome.html_path is not None:
        lines.append(f"report: {outcome.html_path}")
    lines += outcome.messages
    return lines


def run_script_file(path: Path, args: list[str], options: RunOptions, *,
                    fail_on_explicit: bool = False, say: Callable[[str], None] = lambda _m: None
                    ) -> RunOutcome:
    """Zero-code mode: run an unmodified training script under gradscope and report on it.

    The exit code is the script's own; ``options.fail_on`` applies only when ``fail_on_explicit``
    (the user asked for it) and the script itself succeeded.
    """
    from gradscope.script import ScriptWatcher, run_script

    json_path, html_path = options.paths()
    lint_findings = _lint(path)
    watcher = ScriptWatcher(say=say)
    result = run_script(path, args, watcher)
    info = RunInfo(command=options.command, file=str(path), mode="script", arguments=list(args),
                   status=result.status, exit_code=result.exit_code, error=result.error)
    findings: list[Finding] = list(lint_findings)
    several = len(result.watched) > 1
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
    if not result.watched:
        say("gradscope: the script trained no model that gradscope could see (no module with "
            "trainable parameters was called)")
    record = dataclasses.replace(record, run=info, environment=environment(), lint=lint_findings,
                                 models=models if several else [])
    outcome = _finish(record, findings, options, json_path, html_path, say)
    outcome.exit_code = result.exit_code
    if result.exit_code == 0 and fail_on_explicit and fails(outcome.findings, options.fail_on):
        outcome.exit_code = 1
    return outcome
