"""``gradscope lint``: find training-code pitfalls by reading the source, before anything runs.

Static analysis with the standard library's ``ast``: the user's code is never imported or run.
Only the installed ``torch``/``torchvision`` are imported, to check calls against their real
signatures and deprecation marks. See ``docs/lint.md`` for every rule, with examples.
"""
from __future__ import annotations

from gradscope.lint.engine import LintResult, format_line, lint_paths, lint_source, selected_codes
from gradscope.lint.rules import RULES, Rule

__all__ = ["RULES", "LintResult", "Rule", "format_line", "lint_paths", "lint_source", "selected_codes"]
