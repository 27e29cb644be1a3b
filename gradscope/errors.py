"""The one exception family gradscope raises for user mistakes: each says expected, got and fix."""
from __future__ import annotations


class GradscopeError(Exception):
    """A mistake in how gradscope was called or in the user's files, explained for a person."""


class ModelFileError(GradscopeError):
    """A model file could not be loaded: missing, syntax error, import failure, nothing found."""


class RecordError(GradscopeError):
    """A JSON record could not be read: malformed, not a gradscope record, or a future version."""


class NonFiniteError(GradscopeError):
    """Raised in strict mode at the first step with a non-finite gradient, loss or output."""
