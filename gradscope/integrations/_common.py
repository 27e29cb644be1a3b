"""What the trainer integrations share: importing a framework that may be missing, and one watched
fit (``WatchSession``) from the trainer's start hook to its end or its exception.

A trainer owns the loop, so a callback cannot wrap it in ``with watch(...)``. The session enters the
scope itself, ends steps when the trainer says a step ended (``step_on="manual"``: accumulation,
skipped AMP steps and several optimizers all follow the trainer's own count), and closes the scope
exactly once: after the last step, or with the exception that stopped training, so a crashed fit
still leaves its record and report behind.
"""
from __future__ import annotations

import dataclasses
import importlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from gradscope.errors import GradscopeError, NonFiniteError
from gradscope.findings import Finding, sort_findings

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import nn

    from gradscope.records import Registration, RunRecord, RunStatus
    from gradscope.scope import Scope

EXTRA_INSTALL = "pip install 'gradscope[integrations]'"

# watch() options a callback passes through unchanged
WATCH_OPTIONS = ("activations", "flush_every", "max_kept_steps", "strict", "dead_units_every",
                 "update_ratio_every", "thresholds", "probes", "grad_norm_every")
# watch() options a callback cannot take, and why
OWNED_OPTIONS = {
    "step_on": "the callback owns the step clock: it ends each step when the trainer's own step ends "
               "(gradient accumulation, skipped AMP steps and several optimizers included)",
}


class MissingIntegrationError(GradscopeError, ModuleNotFoundError):
    """An integration's framework is not installed: the message names it and the extra to install."""


def require(names: Sequence[str], feature: str) -> ModuleType:
    """Import the first of ``names`` that is installed, or say what to install.

    Only a missing package itself is turned into the message: a package that is installed but
    fails on import (a broken dependency of its own) raises its own error, which is the real story.
    """
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if not (name == missing or name.startswith(missing + ".")):
                raise
    wanted = " or ".join(f"`{n.partition('.')[0]}`" for n in names)
    raise MissingIntegrationError(
        f"{feature} needs {wanted}, which is not installed: {EXTRA_INSTALL} installs it "
        f"(or pip install {names[0].partition('.')[0]})", name=names[0].partition(".")[0])


def watch_options(options: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """The ``watch()`` keyword arguments a callback got, checked up front (at construction, not at
    the first step of a long job)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if key in OWNED_OPTIONS:
            raise GradscopeError(f"{owner}({key}=...) is not available: {OWNED_OPTIONS[key]}.")
        if key not in WATCH_OPTIONS:
            raise GradscopeError(f"{owner}() got an unknown option {key!r}; it takes the watch() options "
                                 f"{', '.join(WATCH_OPTIONS)} (see gradscope.watch)")
        out[key] = value
    return out


@dataclass(frozen=True)
class ReportFiles:
    """Where a callback writes the record and the report: ``folder`` (None: the trainer's own output
    folder, ``<that>/gradscope``) and the two file names (None: that file is not written)."""

    folder: Path | None = None
    json_name: str | None = "run.json"
    html_name: str | None = "report.html"

    def paths(self, default_folder: Path) -> tuple[Path | None, Path | None]:
        folder = self.folder if self.folder is not None else default_folder
        return (folder / self.json_name if self.json_name else None,
                folder / self.html_name if self.html_name else None)


def run_status(error: BaseException | None) -> RunStatus:
    """The record's ``run.status`` for how a fit ended."""
    if error is None:
        return "completed"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    if isinstance(error, NonFiniteError):
        return "nonfinite"
    return "crashed"


class SessionResults:
    """What a callback shows of its session: the scope while it runs, the record and its
    findings once training ended (registration findings included)."""

    session: WatchSession

    @property
    def scope(self) -> Scope | None:
        return self.session.scope

    @property
    def record(self) -> RunRecord | None:
        return self.session.record

    @property
    def findings(self) -> list[Finding]:
        return list(self.session.record.findings) if self.session.record is not None else []


class WatchSession:
    """One watched fit, shared by the trainer callbacks.

    Args:
        options: the ``watch()`` options (already checked by ``watch_options``).
        integration: the framework's name, kept in the record (``run.options``).
    """

    def __init__(self, options: Mapping[str, Any], integration: str) -> None:
        self.options = dict(options)
        self.integration = integration
        self.scope: Scope | None = None
        self.record: RunRecord | None = None
        self.registration: list[Finding] = []
        self.tree: Registration | None = None
        self.notes: list[str] = []
        self.facts: dict[str, Any] = {"integration": integration}
        self.scalars: dict[str, float] = {}   # host values from the last flush, for the trainer's logger
        self._flushed_until = 0

    @property
    def active(self) -> bool:
        return self.scope is not None and self.record is None

    def check(self, model: nn.Module, example_input: Any = None) -> None:
        """Registration findings (GS101-GS106) of ``model``: the static scan, plus one forward pass
        when ``example_input`` is given. A failure of the check is a note, never a failed fit."""
        from gradscope.records import Registration
        from gradscope.registration import ForwardPassError, check, registration_tree

        try:
            self.registration = check(model, example_input)
        except ForwardPassError as exc:
            self.registration = list(exc.findings)
            self.notes.append(f"the registration check's forward pass on example_input failed ({exc}); "
                              "only the static checks ran")
        except Exception as exc:  # a model the scan cannot read must not stop the user's training
            self.notes.append(f"the registration check failed ({type(exc).__name__}: {exc})")
            return
        try:
            self.tree = Registration(tree=registration_tree(model))
        except Exception as exc:
            self.notes.append(f"the module tree could not be read ({type(exc).__name__}: {exc})")

    def start(self, model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> Scope:
        """Watch ``model`` and ``optimizers`` with the trainer's clock (``step_on="manual"``)."""
        from gradscope.scope import watch

        if self.scope is not None:
            raise GradscopeError("this gradscope callback is already watching a run; use one callback "
                                 "per Trainer")
        scope = watch(model, list(optimizers), step_on="manual", **self.options)
        scope.__enter__()
        self.scope = scope
        self._flushed_until = 0
        return scope

    def begin_step(self) -> None:
        """The trainer is about to update the weights (after clipping): the update ratios' "before"."""
        if self.scope is not None and self.record is None:
            self.scope.begin_step()

    def step(self) -> bool:
        """End the step the trainer just finished. True when that made the scope flush: then
        ``scalars`` holds new host values (the flush is the only sync; nothing else is read)."""
        scope = self.scope
        if scope is None or self.record is not None:
            return False
        scope.step()
        flushed = scope.run.flushed_until
        if flushed == self._flushed_until:
            return False
        self._flushed_until = flushed
        self.scalars = host_scalars(scope)
        return True

    def finish(self, error: BaseException | None = None) -> RunRecord | None:
        """Close the scope (with ``error`` when training raised) and build the record once."""
        scope = self.scope
        if scope is None:
            return None
        if self.record is not None:
            return self.record
        if error is None:
            scope.close()
        else:
            # the scope's own exit path: keeps the cut-short step, and warns instead of hiding the
            # user's error if closing fails
            scope.__exit__(type(error), error, error.__traceback__)
        record = scope.to_record()
        record = dataclasses.replace(
            record, findings=sort_findings([*self.registration, *record.findings]),
            registration=self.tree if self.tree is not None else record.registration,
            notes=[*record.notes, *self.notes], run=self._run_info(scope, error),
            environment=self._environment())
        self.record = record
        return record

    def finish_quietly(self, error: BaseException) -> RunRecord | None:
        """``finish`` from an exception hook: a failure to build the record warns, so that it
        cannot replace the user's own exception."""
        try:
            return self.finish(error)
        except Exception as exc:
            warnings.warn(f"gradscope could not finish its record after the error in training "
                          f"({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=3)
            return None

    def _run_info(self, scope: Scope, error: BaseException | None) -> Any:
        from gradscope.records import RunInfo

        device = str(scope.run.params[0].device) if scope.run.params else None
        return RunInfo(status=run_status(error),
                       error=None if error is None else f"{type(error).__name__}: {error}",
                       steps=scope.steps, device=device, options=dict(self.facts))

    def _environment(self) -> Any:
        try:
            from gradscope.runner import environment

            env = environment()
        except Exception:  # the versions are context, not evidence: never lose the record over them
            return None
        return dataclasses.replace(env, extra={**env.extra, **framework_versions()})

    def write(self, files: ReportFiles, default_folder: Path) -> tuple[Path | None, Path | None]:
        """Write the record and the report (call on the main process only)."""
        from gradscope.records import write_record
        from gradscope.reports.html import write_html

        if self.record is None:
            return None, None
        json_path, html_path = files.paths(default_folder)
        written_json = write_record(self.record, json_path) if json_path else None
        written_html = write_html(self.record, html_path) if html_path else None
        return written_json, written_html

    def write_quietly(self, files: ReportFiles, default_folder: Path) -> tuple[Path | None, Path | None]:
        """``write`` after the trainer raised: a failure to write warns, so it cannot replace the
        user's exception."""
        try:
            return self.write(files, default_folder)
        except Exception as exc:
            warnings.warn(f"gradscope could not write its record after the error in training "
                          f"({type(exc).__name__}: {exc})", RuntimeWarning, stacklevel=3)
            return None, None


def unwrap_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimizer inside a wrapper that holds it as ``.optimizer`` (accelerate's
    ``AcceleratedOptimizer``, used by the HF Trainer too). Its step runs once per real update, so
    its step hooks are the ones to use; the wrapper's ``step`` runs on every micro-batch."""
    import torch

    inner = getattr(optimizer, "optimizer", None)
    while isinstance(inner, torch.optim.Optimizer):  # AcceleratedOptimizer is an Optimizer subclass itself
        optimizer, inner = inner, getattr(inner, "optimizer", None)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise GradscopeError(f"expected a torch.optim.Optimizer, or a wrapper holding one as `.optimizer` "
                             f"(accelerate's AcceleratedOptimizer), got {type(optimizer).__name__}")
    return optimizer


def host_scalars(scope: Scope) -> dict[str, float]:
    """A few numbers from what the last flush brought to the host: the total gradient norm of the
    last flushed step (pre-clip), its largest value so far, and the share of norm-clipping calls
    that clipped. Reads host memory only; never a device tensor."""
    from gradscope.probes.clipping import ClipProbe
    from gradscope.probes.grad_norm import GradNormProbe

    out: dict[str, float] = {}
    grad = scope.get_probe(GradNormProbe.name)
    if isinstance(grad, GradNormProbe) and grad.total_series is not None and grad.total_series.steps:
        out["grad_norm"] = float(grad.total_series.values()[-1, 0])
        top = grad.total_stats.maximum[0]
        if bool(top.isfinite()):   # a CPU tensor: no device involved
            out["grad_norm_max"] = float(top)
    clip = scope.get_probe(ClipProbe.name)
    if isinstance(clip, ClipProbe):
        acted = [c.acted for c in clip.done if c.acted is not None]
        if acted:
            out["clip_rate"] = sum(acted) / len(acted)
    return out


def framework_versions() -> dict[str, str]:
    """Versions of the integrations' frameworks that are already imported (none is imported here)."""
    import sys

    out = {}
    for name in ("lightning", "pytorch_lightning", "transformers", "accelerate", "tensorboard"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if isinstance(version, str):
            out[name] = version
    return out
