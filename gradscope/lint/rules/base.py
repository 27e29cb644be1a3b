"""What a rule is: a catalog code and a function from a parsed file to the places it flags."""
from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from typing import Callable, Iterator

from gradscope.lint.source import SourceFile


@dataclass(frozen=True)
class Hit:
    """One flagged place: the node (its lines are where ``# noqa`` counts), the message, a hint."""

    node: ast.AST
    message: str
    hint: str | None = None       # None: the catalog's default hint


@dataclass(frozen=True)
class Rule:
    """A static check for one catalog code. Its function's docstring says what it matches."""

    code: str
    check: Callable[[SourceFile], Iterator[Hit]]

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.check) or ""
