"""docs/lint.md shows, for every lint rule, an example that must match and one that must not; run them."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradscope.lint import RULES, lint_source

DOCS = Path(__file__).resolve().parents[2] / "docs" / "lint.md"


def examples() -> list[tuple[str, str, str]]:
    """(code, "must match" | "must not match", source) for every example block in the docs."""
    text = DOCS.read_text(encoding="utf-8")
    found = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        code = section.split()[0]
        for kind, source in re.findall(r"\*\*(Must match|Must not match):\*\*\s*```python\n(.*?)```",
                                       section, flags=re.S):
            found.append((code, kind.lower(), source))
    return found


def test_every_rule_has_documented_examples_both_ways() -> None:
    kinds = {(code, kind) for code, kind, _ in examples()}
    for code in RULES:
        assert (code, "must match") in kinds, code
        assert (code, "must not match") in kinds, code


@pytest.mark.parametrize(("code", "kind", "source"), examples(),
                         ids=[f"{c}-{k.replace(' ', '-')}" for c, k, _ in examples()])
def test_documented_example_behaves_as_documented(code: str, kind: str, source: str) -> None:
    found = [f.code for f in lint_source(source, "example.py")]
    if kind == "must match":
        assert code in found
    else:
        assert code not in found


def test_every_rule_states_what_it_matches_and_what_it_does_not() -> None:
    for code, rule in RULES.items():
        doc = rule.doc
        assert "Matches" in doc and "Does not match" in doc, code
