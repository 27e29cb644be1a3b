"""The "Against the reference runs" section: where this run left the envelope of known-good runs,
and what else changed. Shared with the compare page (``reports/compare.py``), which adds the bands."""
from __future__ import annotations

from gradscope.records.reference import Departure, ReferenceRecord
from gradscope.reports.page import Cell, Row, Section, SectionContext, Table, fmt_number, num, text

CODES = ("GS8",)


QUANTITIES = {"grad_norm": "gradient norm", "update_ratio": "update ratio", "loss": "loss", "lr": "learning rate",
              "clip": "clipping", "clip_rate": "clip rate", "optimizer": "optimizer", "param_groups": "param groups",
              "weight_decay": "weight decay", "parameters": "parameters", "frozen": "frozen layers",
              "finding": "new finding", "step_ms": "step time (ms)"}


def _band(d: Departure) -> str:
    if d.low is None or d.high is None:
        return ""
    low, high = fmt_number(d.low), fmt_number(d.high)
    return low if low == high else f"{low} to {high}"


def departures_table(departures: list[Departure]) -> Table:
    """One row per departure, by step (settings, which have none, first): code, where, what, the
    step, this run's value and the band there. The messages are the findings above the table."""
    ordered = sorted(departures, key=lambda d: (-1 if d.step is None else d.step, d.code))
    rows = [Row([Cell(d.code, css="mono"), text(d.where, mono=True), text(QUANTITIES.get(d.quantity, d.quantity)),
                 num(d.step), num(d.value),
                 text(_band(d))],
                css="flag" if d.severity == "error" else ("warn" if d.severity == "warning" else ""))
            for d in ordered]
    return Table("departures", ["code", "where", "what", "step", "this run", "reference band"], rows,
                 note="Step: the first step outside the band (none for a setting); the band is the references' "
                      "range widened by the tolerance, at that step.")


def gist(rec: ReferenceRecord) -> str:
    if not rec.departures:
        return f"inside the envelope of {', '.join(rec.references)}"
    stepped = [d.step for d in rec.departures if d.step is not None]
    first = f", first at step {min(stepped)}" if stepped else ""
    return f"{len(rec.departures)} departure(s) from {', '.join(rec.references)}{first}"


def section_reference(rec: ReferenceRecord, ctx: SectionContext) -> Section | None:
    s = Section("reference", "Against the reference runs", gist=gist(rec))
    s.facts.append(("reference runs", ", ".join(rec.references)))
    if rec.reference_steps:
        s.facts.append(("their steps", ", ".join(fmt_number(n) for n in rec.reference_steps)))
    if rec.compared_until is not None:
        s.facts.append(("compared up to step", fmt_number(rec.compared_until)))
    if rec.departures:
        s.tables.append(departures_table(rec.departures))
    else:
        s.notes.append("No departure: every compared quantity stayed inside the references' envelope, and the "
                       "settings, parameters and findings match.")
    s.notes += rec.notes
    s.related = ctx.related(CODES)
    return s
