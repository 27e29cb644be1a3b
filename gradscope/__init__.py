"""gradscope: gradient inspection and training debugging for PyTorch.

``with gradscope.watch(model, optimizer) as scope:`` around a training loop captures per-layer
gradient norms and finds the mistakes in ``scope.findings``; ``gradscope.check(model)`` finds
registration mistakes from the module tree; ``gradscope.fit`` is the instrumented train/test loop.
"""
from __future__ import annotations

__version__ = "0.1.0"  # before the imports: submodules read it

from gradscope.errors import GradscopeError, ModelFileError, NonFiniteError, RecordError
from gradscope.findings import CATALOG, Finding, Severity
from gradscope.loop import FitOptions, FitResult, fit
from gradscope.probes.freeze import freeze
from gradscope.probes.registration import ForwardPassError, check
from gradscope.scope import Scope, watch
from gradscope.thresholds import Thresholds

__all__ = [
    "CATALOG",
    "Finding",
    "FitOptions",
    "ForwardPassError",
    "FitResult",
    "GradscopeError",
    "ModelFileError",
    "NonFiniteError",
    "RecordError",
    "Scope",
    "Severity",
    "Thresholds",
    "__version__",
    "check",
    "fit",
    "freeze",
    "watch",
]
