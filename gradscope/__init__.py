"""gradscope: gradient inspection and training debugging for PyTorch."""
from __future__ import annotations

from gradscope.errors import GradscopeError, ModelFileError, NonFiniteError, RecordError
from gradscope.findings import CATALOG, Finding, Severity

__version__ = "0.1.0"

__all__ = [
    "CATALOG",
    "Finding",
    "GradscopeError",
    "ModelFileError",
    "NonFiniteError",
    "RecordError",
    "Severity",
    "__version__",
]
