"""The `gradscope` command line: thin click commands over the library."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from gradscope import __version__
from gradscope.errors import GradscopeError, ModelFileError
from gradscope.findings import Finding, Severity, fails, sort_findings
from gradscope.textreport import (printable, render_findings, summary_line, terminal_width,
                                  wrap_message)

CHECK_SCHEMA = "gradscope.check"
CHECK_VERSION = 1


class BadInput(click.ClickException):
    """A mistake in the user's input: shown as ``Error: ...`` on stderr, exit status 2."""

    exit_code = 2

    def __init__(self, message: str, width: int = 80) -> None:
        super().__init__(message)
        self.width = width

    def format_message(self) -> str:
        return wrap_message(self.message, self.width, first_offset=len("Error: "))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    if json_path is not None and json_path.resolve() == file.resolve():
        raise BadInput(f"--json {json_path} would overwrite the model file; choose another path",
                       width)
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
    from gradscope.probes.registration import ForwardPassError
    from gradscope.probes.registration import check as check_registration

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


def _write_json(path: Path, data: dict[str, Any], width: int) -> None:
    """Write ``data`` atomically (a temporary file in the same folder, then a rename)."""
    from gradscope.reports.record import write_text_atomic

    try:
        write_text_atomic(json.dumps(data, indent=2) + "\n", path)
    except OSError as err:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a folder" if blocker else (err.strerror or str(err))
        raise BadInput(f"cannot write --json {path}: {reason}; choose another path",
                       width) from None


if __name__ == "__main__":  # pragma: no cover
    main()
