"""Judges: pure functions from a probe's record, the run record and the thresholds to findings.

A judge never touches a model or a tensor: it reads numbers that a probe already moved to the
host, so every rule can be tested on synthetic records in milliseconds, and an old record can be
judged again with other thresholds (``gradscope report run.json --thresholds ...``). Each probe
declares its judge (``Probe.judge``); ``gradscope.probes.judge_run`` runs them all.
"""
from __future__ import annotations

from typing import Sequence

from gradscope.findings import Finding, finding

MAX_PLACES = 3  # more places than this become one finding naming the first few


def short(names: Sequence[str], limit: int = 4) -> str:
    """``a, b, c, d and 3 more``."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def grouped(code: str, groups: dict[str, list[str]], template: str) -> list[Finding]:
    """One finding per place, or one for all when many places share the problem.

    ``template`` is formatted with ``where`` and ``names`` and follows the count of names."""
    if not groups:
        return []
    if len(groups) <= MAX_PLACES:
        return [finding(code, where, f"{len(names)} " + template.format(where=where, names=short(names)))
                for where, names in groups.items()]
    places = list(groups)
    where = ", ".join(places[:MAX_PLACES]) + f" and {len(places) - MAX_PLACES} more"
    names = [n for group in groups.values() for n in group]
    return [finding(code, where, f"{len(names)} " + template.format(
        where=f"{len(places)} modules ({short(places)})", names=short(names)))]


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 step``, ``2 steps``."""
    return f"{n} {word if n == 1 else (many or word + 's')}"
