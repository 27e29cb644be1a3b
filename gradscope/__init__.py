"""gradscope: gradient inspection and training debugging for PyTorch.

``with gradscope.watch(model, optimizer) as scope:`` around a training loop captures per-layer
gradient norms and finds the mistakes in ``scope.findings``; ``gradscope.check(model)`` finds
registration mistakes from the module tree; ``gradscope.fit`` is the instrumented train/test loop.

The names below are imported on first use, so that ``import gradscope`` (and ``gradscope --help``)
does not import torch.
"""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"  # the one place the version is kept (setup.cfg reads it)

_EXPORTS = {
    "CATALOG": "gradscope.findings", "Finding": "gradscope.findings", "Severity": "gradscope.findings",
    "register_code": "gradscope.findings",
    "GradscopeError": "gradscope.errors", "ModelFileError": "gradscope.errors",
    "NonFiniteError": "gradscope.errors", "RecordError": "gradscope.errors",
    "FitOptions": "gradscope.loop", "FitResult": "gradscope.loop", "fit": "gradscope.loop",
    "freeze": "gradscope.probes.freeze", "Probe": "gradscope.probes.base",
    "ForwardPassError": "gradscope.registration", "check": "gradscope.registration",
    "Scope": "gradscope.scope", "watch": "gradscope.scope",
    "Thresholds": "gradscope.thresholds",
    "RunRecord": "gradscope.records", "load_record": "gradscope.records",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors
    from gradscope.errors import GradscopeError, ModelFileError, NonFiniteError, RecordError
    from gradscope.findings import CATALOG, Finding, Severity, register_code
    from gradscope.loop import FitOptions, FitResult, fit
    from gradscope.probes.base import Probe
    from gradscope.probes.freeze import freeze
    from gradscope.records import RunRecord, load_record
    from gradscope.registration import ForwardPassError, check
    from gradscope.scope import Scope, watch
    from gradscope.thresholds import Thresholds


def load(path: str | os.PathLike[str]) -> RunRecord:
    """Read a JSON record back (``run.json``); in a notebook it shows as its summary."""
    from pathlib import Path

    from gradscope.records import load_record

    return load_record(Path(path))


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gradscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "CATALOG", "FitOptions", "FitResult", "Finding", "ForwardPassError", "GradscopeError", "ModelFileError",
    "NonFiniteError", "Probe", "RecordError", "RunRecord", "Scope", "Severity", "Thresholds", "__version__",
    "check", "fit", "freeze", "load", "load_record", "register_code", "watch",
]
