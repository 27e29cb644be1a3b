"""The `gradscope` command line: thin click commands over the library."""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import click

from gradscope import __version__
from gradscope.errors import GradscopeError, ModelFileError
from gradscope.findings import Finding, Severity, fails, sort_findings
from gradscope.textreport import printable, render_findings, summary_line, terminal_width, wrap_message

CHECK_SCHEMA = "gradscope.check"
CHECK_VERSION = 1
EXIT_INTERRUPTED = 130
EXIT_NOT_WRITTEN = 74      # as gradscope.records.io.EXIT_NOT_WRITTEN (not imported: --help stays light)
SEED_MAX = 2**32 - 1       # NumPy's seeds are 32-bit; torch and random take these too


class BadInput(click.ClickException):
    """A mistake in the user's input: shown as ``Error: ...`` on stderr, exit status 2."""

    exit_code = 2

    def __init__(self, message: str, width: int = 80) -> None:
        super().__init__(message)
        self.width = width

    def format_message(self) -> str:
        return wrap_message(self.message, self.width, first_offset=len("Error: "))


class NotWritten(click.ClickException):
    """A file the command was asked to write could not be written: exit status 74."""

    exit_code = EXIT_NOT_WRITTEN


class _Commands(click.Group):
    """The command group: Ctrl-C outside ``gradscope run``'s own handling (while a command
    imports torch, or in lint, report, bench) exits 130 as a shell expects, not 1 with
    click's ``Aborted!``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("gradscope: interrupted", err=True)
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None


class FiniteFloat(click.ParamType):
    """A finite number at least (or, with ``above``, greater than) ``minimum``. NaN passes every
    comparison a range check makes, and infinity is no learning rate or clip bound: both are
    refused by name."""

    name = "float"

    def __init__(self, minimum: float, *, above: bool = False, example: str = "1.0") -> None:
        self.minimum, self.above, self.example = minimum, above, example

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        expected = (f"expected a finite number {'above' if self.above else 'at least'} {self.minimum:g}, "
                    f"such as {self.example}")
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number; {expected}", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value} is not a finite number; {expected}", param, ctx)
        if number < self.minimum or (self.above and number == self.minimum):
            self.fail(f"{value} is out of range; {expected}", param, ctx)
        return number


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="gradscope")
def main() -> None:
    """gradscope: find what is wrong with a PyTorch training run, and explain it."""


@main.command()
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--json", "json_path", metavar="PATH",
              type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the findings to this file as a JSON record "
                   "(schema gradscope.check).")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info", "never"]),
              default="error", show_default=True,
              help="Exit with status 1 when a finding at or above this severity exists; "
                   "'never' exits 0 whatever is found.")
@click.option("--no-forward", is_flag=True,
              help="Skip the forward pass on a small random batch of input_shape, and with it "
                   "the checks that need one (layers called but not registered, or never called).")
@click.pass_context
def check(ctx: click.Context, file: Path, json_path: Path | None, fail_on: str,
          no_forward: bool) -> None:
    """Check the structure of the model defined in FILE, without training it.

    FILE is a Python file. gradscope imports it (its `if __name__ == "__main__":` block does not
    run) and takes the model from a function `build_model()`, else a module-level instance
    `model`, else the one nn.Module subclass defined in the file whose constructor takes no
    arguments. When the file also sets `input_shape` (one sample, e.g. (1, 28, 28)), the model
    runs one forward pass on a small random batch to find layers that are called but not
    registered, or registered but never called.

    Exit status: 0 when no finding reaches --fail-on, 1 when one does, 2 when the file cannot be
    loaded or the model cannot run.
    """
    # Imported here so that `gradscope --help` does not pay for importing torch.
    from gradscope.modelfile import ModelFindingError, build, load_model_file

    width = terminal_width(ctx.terminal_width)
    shown = str(file)
    _check_outputs([("--json", json_path)], width, inputs=[("the model file", file)])
    model = None
    findings: list[Finding] = []
    try:
        spec = load_model_file(file)
        model = build(spec)
    except ModelFindingError as err:
        findings = [err.finding]
    except ModelFileError as err:
        raise BadInput(str(err), width) from None
    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    click.echo(wrap_message(_model_line(shown, model), width))
    if model is not None:
        shape = None if no_forward else spec.input_shape
        findings = _run_checks(model, shape, shown, width, color)
    findings = sort_findings(findings)
    if findings:
        click.echo()
        click.echo(render_findings(findings, width=width, color=color), color=color)
    click.echo()
    click.echo(summary_line(findings))
    if json_path is not None:
        _write_json(json_path, _record(shown, model, findings), width)
        click.echo(wrap_message(f"wrote {json_path}", width))
    ctx.exit(1 if fails(findings, fail_on) else 0)


def _run_checks(model: Any, input_shape: tuple[int, ...] | None, shown: str,
                width: int, color: bool) -> list[Finding]:
    """The registration checks. A forward pass that fails is bad input; the static findings
    found before it are still shown, since they often explain the crash."""
    from gradscope.modelfile import user_traceback
    from gradscope.registration import ForwardPassError
    from gradscope.registration import check as check_registration

    try:
        return check_registration(model, input_shape=input_shape)
    except ForwardPassError as err:
        if err.findings:
            click.echo()
            click.echo(render_findings(sort_findings(err.findings), width=width, color=color),
                       color=color)
            click.echo()
            click.echo(summary_line(err.findings) + " before the forward pass failed")
        cause = err.__cause__
        failed = f"{type(cause).__name__}: {cause}" if cause is not None else str(err)
        frames = "".join(user_traceback(cause)).rstrip() if cause is not None else ""
        message = (f"{shown}: the forward pass of `{printable(type(model).__name__)}` failed in "
                   f"`{err.module}` on an input {err.input_description}:\n{failed}")
        if frames:
            message += f"\nIn your code (most recent call last):\n{frames}"
        if any(f.severity is Severity.ERROR for f in err.findings):
            message += "\nThe errors found above may explain it."
        raise BadInput(
            f"{message}\nCheck `input_shape = {input_shape}` in {shown} (one sample, without the "
            f"batch dimension), or pass --no-forward to skip the checks that need a forward "
            f"pass.", width) from None
    except GradscopeError as err:
        raise BadInput(f"{shown}: {err}", width) from None


def _model_line(shown: str, model: Any) -> str:
    if model is None:
        return f"{shown}: the model could not be built"
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (f"{shown}: {printable(type(model).__name__)}, {total:,} parameters "
            f"({trainable:,} trainable)")


def _record(shown: str, model: Any, findings: list[Finding]) -> dict[str, Any]:
    import torch

    summary = None
    if model is not None:
        summary = {
            "class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        }
    return {
        "schema": CHECK_SCHEMA,
        "version": CHECK_VERSION,
        "gradscope_version": __version__,
        "torch_version": torch.__version__,
        "file": shown,
        "model": summary,
        "findings": [f.to_dict() for f in findings],
    }


def _write_json(path: Path, data: dict[str, Any], width: int, option: str = "--json") -> None:
    """Write ``data`` atomically (a temporary file in the same folder, then a rename); a failure
    this late (the paths were checked before the work) is one line and exit status 74."""
    _write_text(json.dumps(data, indent=2) + "\n", path, option, width)


def _write_text(text: str, path: Path, option: str, width: int) -> None:
    from gradscope.records import write_text_atomic
    from gradscope.records.io import write_error_reason

    try:
        write_text_atomic(text, path)
    except OSError as err:
        raise NotWritten(wrap_message(f"{option} {path} was not written: {write_error_reason(path, err)}",
                                      width, first_offset=len("Error: "))) from None


Inputs = Sequence[tuple[str, Path]]


def _check_outputs(outputs: Sequence[tuple[str, Path | None]], width: int, *, inputs: Inputs = (),
                   input_folders: Sequence[tuple[str, Path, Callable[[Path], bool]]] = ()) -> None:
    """Refuse, before any work, an output path that cannot be written, that is one of the
    command's inputs (or a file it reads inside an input folder), or that another output also
    names. Each refusal is one line naming the option and the path, with exit status 2."""
    from gradscope.records.io import inside, same_file, unwritable_reason

    given = [(option, path) for option, path in outputs if path is not None]
    for i, (option, path) in enumerate(given):
        for what, source in inputs:
            if same_file(path, source):
                raise BadInput(f"{option} {path} would overwrite {what}; choose another path", width)
        for what, folder, reads in input_folders:
            if os.path.exists(path) and inside(path, folder) and reads(path):
                raise BadInput(f"{option} {path} would overwrite {what}; choose another path", width)
        for other_option, other in given[:i]:
            if same_file(path, other):
                raise BadInput(f"{option} {path} and {other_option} {other} are the same file, so one "
                               "would overwrite the other; give them different paths", width)
        reason = unwritable_reason(path)
        if reason is not None:
            raise BadInput(f"cannot write {option} {path}: {reason}; choose another path", width)


def _check_device(value: str | None, width: int) -> None:
    """``--device``: a device this machine has and gradscope can train on (cpu, cuda[:N], mps)."""
    if value in (None, "", "auto"):
        return
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise BadInput(f"--device {value!r} is not a device: expected cpu, cuda or cuda:N (mps on a Mac "
                       "with Apple silicon)", width) from None
    if device.type == "cpu":
        return
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInput(f"--device {value}: no CUDA device is available here; use --device cpu", width)
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise BadInput(f"--device {value}: this machine has {count} CUDA device(s), cuda:0 to "
                           f"cuda:{count - 1}", width)
        return
    if device.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise BadInput(f"--device {value}: this PyTorch build or machine has no MPS device (Apple "
                           "silicon only); use --device cpu", width)
        return
    raise BadInput(f"--device {value}: gradscope trains on cpu, cuda or mps, got the {device.type!r} "
                   "device type" + (", whose tensors hold no data" if device.type == "meta" else "")
                   + "; use --device cpu", width)


def _command_line(ctx: click.Context, file: Path | None, script_args: tuple[str, ...]) -> str:
    """The command as the user could type it again: the file, the options they set, the args."""
    import shlex

    parts = ["gradscope", ctx.info_name or "run"]
    if file is not None:
        parts.append(str(file))
    for param in ctx.command.params:
        if not isinstance(param, click.Option) or param.name is None:
            continue
        if ctx.get_parameter_source(param.name) is click.core.ParameterSource.DEFAULT:
            continue
        value = ctx.params[param.name]
        flag = max(param.opts, key=len)
        if param.multiple:  # --reference a.json --reference b.json
            parts += [item for v in value for item in (flag, str(v))]
        else:
            parts += [flag] if param.is_flag else [flag, str(value)]
    if script_args:
        parts += ["--", *script_args]
    return " ".join(shlex.quote(p) for p in parts)


def _codes(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [c.strip().upper() for c in value.split(",") if c.strip()]


@main.command(context_settings={"ignore_unknown_options": False})
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.argument("script_args", nargs=-1, type=click.UNPROCESSED)
@click.option("--script", is_flag=True,
              help="Run FILE as an unmodified training script (with ARGS after --), even if it "
                   "also defines a model.")
@click.option("--epochs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Training epochs.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop after this many optimizer steps in total.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Training batch size.")
@click.option("--lr", type=FiniteFloat(0.0, example="1e-3"), default=1e-3, show_default=True,
              help="Learning rate of the default Adam optimizer (a file's build_optimizer wins).")
@click.option("--device", default=None, help="cpu, cuda or cuda:N; default: cuda:0 when available.")
@click.option("--seed", type=click.IntRange(0, SEED_MAX), default=0, show_default=True,
              help=f"Seed for weights, data and shuffling (0 to {SEED_MAX}).")
@click.option("--data", default="glyphs", show_default=True,
              help="glyphs (embedded), synthetic, fake, or mnist:PATH, fashionmnist:PATH, "
                   "cifar10:PATH from a local folder (never downloaded).")
@click.option("--train-size", type=click.IntRange(min=1), default=None,
              help="Samples of generated training data (default: the data's own size).")
@click.option("--test-size", type=click.IntRange(min=1), default=None,
              help="Samples of generated test data.")
@click.option("--clip-norm", type=FiniteFloat(0.0, above=True, example="1.0"), default=None,
              help="Clip gradients to this total norm before each step.")
@click.option("--clip-value", type=FiniteFloat(0.0, above=True, example="0.5"), default=None,
              help="Clip each gradient element to [-v, v] before each step.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              show_default=True, help="Folder for run.json, report.html and checkpoints.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the JSON record (default: OUT/run.json). A record already "
                   "there is kept as its name with .prev (run.prev.json), replacing an older one.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the HTML report (default: OUT/report.html).")
@click.option("--save", is_flag=True, help="Save model.pth and optimizer.pth into OUT after training.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info", "never"]), default="error",
              show_default=True, help="Exit with status 1 when a finding at or above this exists.")
@click.option("--per-rank", is_flag=True,
              help="In a distributed script (torchrun), every rank writes its own record and report "
                   "(run.rank1.json, ...); by default rank 0 writes one for the whole run.")
@click.option("--reference", "references", multiple=True, metavar="RECORD",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A known-good run's JSON record (repeat for several): the record and report then "
                   "say where this run left their envelope and what else changed (GS8xx).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar and only the summary's last lines.")
@click.pass_context
def run(ctx: click.Context, file: Path | None, script_args: tuple[str, ...], script: bool,
        epochs: int, max_steps: int | None, batch_size: int, lr: float, device: str | None,
        seed: int, data: str, train_size: int | None, test_size: int | None, clip_norm: float | None,
        clip_value: float | None, out: Path,
        json_path: Path | None, html_path: Path | None, save: bool, fail_on: str, per_rank: bool,
        references: tuple[Path, ...], quiet: bool) -> None:
    """Train and diagnose a model, then write a JSON record and an HTML report.

    With no FILE, trains the notes' CNN (Adam 1e-3, CrossEntropyLoss) on the embedded glyph
    data. FILE is either a model file (build_model(), a `model` instance or one nn.Module
    subclass; optionally input_shape, num_classes, loss_fn, build_optimizer(model),
    build_loaders(), clip), which gradscope trains with its own loop; or a training script (it
    calls .backward() or has a __main__ block, or --script is given), which runs unmodified
    with ARGS after `--` while gradscope watches every model it trains.

    Exit status: 0 when the run completed and no finding reaches --fail-on; 1 when one does or
    the run crashed or went non-finite; 2 on bad input (checked before training, output paths
    included); 74 when the record or the report could not be written; 130 when interrupted
    (Ctrl-C), 143 when stopped by SIGTERM; either way the record and report are written first.
    A script keeps its own non-zero exit status. A record already at the JSON path is kept as
    run.prev.json (its own name with .prev), so `gradscope compare` can still read it.

    Under torchrun (`torchrun --nproc_per_node 2 -m gradscope run train.py -- ARGS`) every rank
    runs the script; rank 0 writes one record and report for the run (see --per-rank).
    """
    from gradscope.runner import RunOptions, load_references, run_script_file, summary_lines
    from gradscope.runner import run as run_model
    from gradscope.script import looks_like_script

    width = terminal_width(ctx.terminal_width)
    as_script = file is not None and (script or bool(script_args) or looks_like_script(file))
    _check_run_outputs(file, as_script, data, out, json_path, html_path, save, width, references)
    _check_device(device, width)
    try:
        refs = load_references(references)
    except GradscopeError as err:
        raise BadInput(str(err), width) from None
    command = _command_line(ctx, file, script_args)
    options = RunOptions(file=file, epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
                         device=device, seed=seed, data=data, train_size=train_size, test_size=test_size,
                         clip_norm=clip_norm, clip_value=clip_value,
                         out=out, json_path=json_path, html_path=html_path, save=save, fail_on=fail_on,
                         progress=not quiet and sys.stderr.isatty(), command=command, per_rank=per_rank,
                         reference=references)
    say = (lambda m: click.echo(wrap_message(m, width), err=True)) if not quiet else (lambda _m: None)
    try:
        if as_script:
            assert file is not None
            explicit = ctx.get_parameter_source("fail_on") is not click.core.ParameterSource.DEFAULT
            outcome = run_script_file(file, list(script_args), options, fail_on_explicit=explicit,
                                      say=say, references=refs)
        else:
            outcome = run_model(options, say=say, references=refs)
    except GradscopeError as err:
        raise BadInput(str(err), width) from None
    lines = summary_lines(outcome)
    if quiet:  # a file that was not written is never hidden
        lines = [line for line in lines if line.startswith(("run ", "record:", "report:"))
                 or line in outcome.lost]
    for line in lines:
        click.echo(wrap_message(line, width), err=as_script or line in outcome.lost)
    ctx.exit(outcome.exit_code)


def _check_run_outputs(file: Path | None, as_script: bool, data: str, out: Path, json_path: Path | None,
                       html_path: Path | None, save: bool, width: int, references: Sequence[Path] = ()) -> None:
    """Every path ``gradscope run`` will write, checked before anything is imported or trained."""
    from gradscope.records.io import unwritable_reason

    uses_out = json_path is None or html_path is None or save
    if uses_out:
        reason = unwritable_reason(out, folder=True)
        if reason is not None:
            raise BadInput(f"cannot write into --out {out}: {reason}; choose another folder", width)
    outputs: list[tuple[str, Path | None]] = [
        ("--json", json_path) if json_path is not None else ("--out", out / "run.json"),
        ("--html", html_path) if html_path is not None else ("--out", out / "report.html")]
    if save:
        outputs += [("--save", out / "model.pth"), ("--save", out / "optimizer.pth")]
    inputs = [("the training script" if as_script else "the model file", file)] if file is not None else []
    inputs += [("the reference record (copy it elsewhere first, for example to good.json)", r) for r in references]
    _kind, colon, root = data.partition(":")
    folders = [(f"a file of the --data folder {root}", Path(root), lambda _p: True)] if colon and root else []
    _check_outputs(outputs, width, inputs=inputs, input_folders=folders)
    from gradscope.records.io import previous_path, same_file

    kept = previous_path(outputs[0][1] or out / "run.json")
    for r in references:
        if same_file(r, kept):  # the record now at the JSON path is moved there before the new one is written
            raise BadInput(f"--reference {r} is where this run keeps the previous record ({kept.name}), so it "
                           "would be replaced; copy the reference elsewhere first, for example to good.json", width)


@main.command()
@click.argument("file", required=False, type=click.Path(path_type=Path))
@click.option("--device", default=None, help="cpu, cuda or cuda:N; default: cuda:0 when available.")
@click.option("--steps", type=click.IntRange(min=10), default=60, show_default=True,
              help="Timed steps per variant (the first 5 are warm-up).")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
              help="Batch size of the timed steps.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the results to this file as JSON.")
@click.pass_context
def bench(ctx: click.Context, file: Path | None, device: str | None, steps: int, batch_size: int,
          json_path: Path | None) -> None:
    """Time the training step of FILE's model (the notes' CNN by default), phase by phase.

    Prints the median and 90th percentile of each phase (data, host-to-device copy, forward,
    backward, clip, optimizer, gradscope's own work) with only the timing probe and with the
    default probes, the steps and samples per second, and the overhead ratio of the two.
    """
    from gradscope.bench import bench as run_bench
    from gradscope.bench import format_table
    from gradscope.modelfile import load_model_file
    from gradscope.runner import default_spec

    width = terminal_width(ctx.terminal_width)
    _check_outputs([("--json", json_path)], width,
                   inputs=[("the model file", file)] if file is not None else [])
    _check_device(device, width)
    try:
        spec = load_model_file(file) if file is not None else default_spec()
        result = run_bench(spec, device=device, steps=steps, batch_size=batch_size)
    except GradscopeError as err:
        raise BadInput(str(err), width) from None
    click.echo(f"{result.model} on {result.device}, batch {result.batch_size}, {result.steps} steps each")
    click.echo(format_table(result))
    if json_path is not None:
        _write_json(json_path, result.to_dict(), width)
        click.echo(f"wrote {json_path}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the findings to this file as JSON.")
@click.option("--select", default=None, help="Only these codes or prefixes, comma-separated (GS5,GS101).")
@click.option("--ignore", default=None, help="Skip these codes or prefixes, comma-separated.")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info", "never"]), default="warning",
              show_default=True, help="Exit with status 1 when a finding at or above this exists.")
@click.pass_context
def lint(ctx: click.Context, paths: tuple[Path, ...], json_path: Path | None, select: str | None,
         ignore: str | None, fail_on: str) -> None:
    """Find training-code pitfalls in PATHS (files or folders) without running anything.

    Prints one line per finding as `file:line:col: GSxxx message`, then a summary. A
    `# noqa: GSxxx` comment on a line silences that code there.
    """
    from gradscope.lint import format_line, lint_paths

    width = terminal_width(ctx.terminal_width)
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:
        raise BadInput(f"no such file or folder: {', '.join(missing)}; expected Python files or folders "
                       "to lint", width)
    files = [("a file being linted", p) for p in paths if os.path.isfile(p)]
    folders = [("a Python file being linted", p, lambda q: q.suffix == ".py") for p in paths if os.path.isdir(p)]
    _check_outputs([("--json", json_path)], width, inputs=files, input_folders=folders)
    try:
        result = lint_paths(list(paths), select=_codes(select), ignore=_codes(ignore) or ())
    except GradscopeError as err:
        raise BadInput(str(err), width) from None
    for f in result.findings:
        click.echo(printable(format_line(f)))
    for error in result.errors:
        click.echo(printable(f"error: {error}"), err=True)
    click.echo(f"{len(result.findings)} finding(s) in {result.files} file(s)"
               + (f"; {len(result.errors)} file(s) could not be read" if result.errors else ""))
    if json_path is not None:
        _write_json(json_path, {"schema": "gradscope.lint", "version": 1, **result.to_dict()}, width)
    ctx.exit(1 if fails(result.findings, fail_on) or result.errors else 0)


def _thresholds(value: str | None, width: int) -> Any:
    """``--thresholds key=value,key=value`` as a ``Thresholds`` (None when not given)."""
    if value is None:
        return None
    from gradscope.thresholds import Thresholds

    pairs: dict[str, str] = {}
    for item in value.split(","):
        key, sep, raw = item.strip().partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--thresholds {value!r}: expected key=value pairs separated by commas, such "
                           f"as exploding_norm=1e4,clip_rate=0.95; got {item.strip()!r}", width)
        pairs[key.strip()] = raw.strip()
    try:
        return Thresholds.of(pairs)
    except GradscopeError as err:
        raise BadInput(f"--thresholds: {err}", width) from None


@main.command()
@click.argument("record", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to write the page (default: RECORD with .html).")
@click.option("--thresholds", default=None, metavar="KEY=VALUE,...",
              help="Judge the record again with these thresholds (for example "
                   "exploding_norm=1e4,clip_rate=0.95) before rendering it; the findings the "
                   "record's evidence cannot support are kept as recorded.")
@click.pass_context
def report(ctx: click.Context, record: Path, output: Path | None, thresholds: str | None) -> None:
    """Render the HTML report of a JSON RECORD written by `gradscope run` or `scope.report()`."""
    from gradscope.records import load_record
    from gradscope.reports.html import render_html

    width = terminal_width(ctx.terminal_width)
    page = output or record.with_suffix(".html")
    _check_outputs([("-o" if output is not None else "the page (set it with -o)",
                     page)], width, inputs=[("the record being rendered", record)])
    limits = _thresholds(thresholds, width)
    try:
        run_record = load_record(record)
        if limits is not None:
            from gradscope.probes import rejudge

            run_record = rejudge(run_record, limits)
            click.echo(f"judged again: {summary_line(run_record.findings)}")
        html = render_html(run_record)
    except GradscopeError as err:
        raise BadInput(str(err), width) from None
    _write_text(html, page, "-o", width)
    click.echo(f"wrote {page}")


@main.command()
@click.argument("a", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("b", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("compare.html"), show_default=True, help="Where to write the page.")
@click.option("--reference", "references", multiple=True, metavar="RECORD",
              type=click.Path(dir_okay=False, path_type=Path),
              help="A known-good run's JSON record (repeat for several): judge the one record given "
                   "against their envelope and say where it left it and what else changed (GS8xx).")
@click.option("--thresholds", default=None, metavar="KEY=VALUE,...",
              help="With --reference: other band widths, for example reference_tolerance=8 "
                   "(default: those the record was judged with).")
@click.option("--fail-on", type=click.Choice(["error", "warning", "info", "never"]), default="never",
              show_default=True, help="With --reference: exit with status 1 when a departure at or above "
                                      "this severity is found.")
@click.pass_context
def compare(ctx: click.Context, a: Path, b: Path | None, output: Path, references: tuple[Path, ...],
            thresholds: str | None, fail_on: str) -> None:
    """Put two runs side by side (findings, norms, curves): did the fix help?

    With --reference good.json, give one record: it is judged against the envelope of the
    reference runs (per layer and step: gradient norms, update ratios, learning rates, clip rate,
    loss, step times), and the first step and layer where it leaves it by more than the
    references differ among themselves is reported with what else changed (optimizer settings,
    parameters, frozen layers, new findings). The departures are printed and the page shows
    them next to the first reference.
    """
    from gradscope.records import load_record
    from gradscope.reports.compare import render_compare

    width = terminal_width(ctx.terminal_width)
    if references and b is not None:
        raise BadInput(f"with --reference, give the one record to judge, got two ({a} and {b}); drop one, or "
                       "drop --reference to put two runs side by side", width)
    if not references and b is None:
        raise BadInput(f"compare needs two records ({a} and the run after it), or one record and "
                       "--reference good.json to judge it against a known-good run", width)
    for option in ("thresholds", "fail_on"):
        if not references and ctx.get_parameter_source(option) is not click.core.ParameterSource.DEFAULT:
            raise BadInput(f"--{option.replace('_', '-')} judges departures from reference runs: add "
                           "--reference good.json, or drop it to put two runs side by side", width)
    inputs = [("the first record", a)] + ([("the second record", b)] if b is not None else [])
    inputs += [("a reference record", r) for r in references]
    _check_outputs([("-o", output)], width, inputs=inputs)
    if b is not None:
        try:
            html = render_compare(load_record(a), load_record(b), names=(a.stem, b.stem))
        except GradscopeError as err:
            raise BadInput(str(err), width) from None
        _write_text(html, output, "-o", width)
        click.echo(f"wrote {output}")
        return
    limits = _thresholds(thresholds, width)
    refs = []
    for path in references:
        try:
            refs.append(load_record(path))
        except GradscopeError as err:
            raise BadInput(f"--reference {err}", width) from None
    try:
        html, departures = _against_references(load_record(a), a, refs, references, limits)
    except GradscopeError as err:
        raise BadInput(str(err), width) from None
    from gradscope.reference import file_labels

    color = sys.stdout.isatty() and "NO_COLOR" not in os.environ
    names = ", ".join(file_labels(references))
    if departures:
        click.echo(wrap_message(f"{a} against {names}: {len(departures)} departure(s)", width))
        click.echo()
        click.echo(render_findings(departures, width=width, color=color), color=color)
        click.echo()
        click.echo(summary_line(departures))
    else:
        click.echo(wrap_message(f"{a} against {names}: no departure; it stays inside the reference "
                                "envelope and its settings match", width))
    _write_text(html, output, "-o", width)
    click.echo(f"wrote {output}")
    ctx.exit(1 if fails(departures, fail_on) else 0)


def _against_references(record: Any, path: Path, refs: list[Any], paths: Sequence[Path],
                        limits: Any) -> tuple[str, list[Finding]]:
    """The compare page of ``record`` against its references, and its departures as findings."""
    from gradscope.reference import build_envelope, departure_findings, file_labels, judge_against
    from gradscope.reports.compare import render_compare

    envelope = build_envelope(refs, file_labels(paths))
    judged_with = limits if limits is not None else record.judged_with()
    judged = judge_against(record, envelope, judged_with)
    first, mine = paths[0].with_suffix(""), path.with_suffix("")
    shown = (first.name, mine.name) if first.name != mine.name else (str(first), str(mine))
    html = render_compare(refs[0], record, names=shown, reference=judged, envelope=envelope, thresholds=judged_with)
    return html, sort_findings(departure_findings(judged))


@main.command()
@click.argument("record", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tensorboard", "tensorboard_dir", type=click.Path(file_okay=False, path_type=Path),
              required=True, metavar="DIR",
              help="Write the record's per-layer gradient norms, clip rate and findings into one new "
                   "TensorBoard event file in DIR (needs the tensorboard package).")
@click.pass_context
def export(ctx: click.Context, record: Path, tensorboard_dir: Path) -> None:
    """Export a JSON RECORD to other tools: `--tensorboard DIR` writes one TensorBoard event file."""
    from gradscope.records import load_record

    width = terminal_width(ctx.terminal_width)
    try:
        run_record = load_record(record)
    except GradscopeError as err:
        raise BadInput(str(err), width) from None
    try:
        from gradscope.integrations.tensorboard import export_tensorboard
    except ImportError as err:  # MissingIntegrationError: names the package and the extra
        raise click.ClickException(str(err)) from None
    try:
        path = export_tensorboard(run_record, tensorboard_dir)
    except OSError as err:
        raise NotWritten(wrap_message(f"--tensorboard {tensorboard_dir}: the event file was not written: {err}",
                                      width, first_offset=len("Error: "))) from None
    click.echo(f"wrote {path}")


if __name__ == "__main__":  # pragma: no cover
    main()
