"""The "Gradient norms" section, and the worst-first order of layers and parameters that large
models are shown in."""
from __future__ import annotations

import functools
from typing import Iterable, Protocol, Sequence

import numpy as np

from gradscope.records.clipping import ClippingRecord
from gradscope.records.grad_norm import GradNormRecord
from gradscope.records.stats import StatsTable
from gradscope.reports.page import (
    Section,
    SectionContext,
    Table,
    draw,
    fmt_number,
    stats_facts,
    stats_table,
)

CODES = ("GS201", "GS202", "GS203", "GS204", "GS205")
MODEL_ORDER_ROWS = 200     # a table this long or shorter keeps model order; a longer one is worst first
SHOWN_ROWS = 500           # rows of a worst-first table on the page (all of them are in the record)
WORST_SHOWN = 24           # layers of the worst-layers heatmap
WORST_ORDER = ("NaN/Inf first, then those named in a finding, then those with no non-zero value, then those "
               "farthest from the typical one (a peak far above it, or a mean far below)")


def worst_first(names: Sequence[str], stats: StatsTable, flagged: Iterable[int] = ()) -> list[int]:
    """Indices of ``names`` (rows of ``stats``), worst first.

    First the rows that saw NaN/Inf (earliest first), then those a finding names (``flagged``);
    within each of those and among the rest, first the rows with no finite or no non-zero value,
    then by how far they sit from the typical row, in orders of magnitude: a peak (``max``) far
    above the median peak (exploding) or a ``mean`` far below the median mean (vanishing),
    whichever is further. Ties keep model order."""
    n = min(len(names), len(stats))
    if n == 0:
        return []
    count = np.asarray(stats.count[:n], dtype=float)
    peak, mean = np.asarray(stats.max[:n], dtype=float), np.asarray(stats.mean[:n], dtype=float)
    first = np.array([np.inf if s is None else s for s in stats.first_nonfinite_step[:n]], dtype=float)
    named = np.zeros(n, dtype=bool)
    named[[i for i in flagged if 0 <= i < n]] = True
    live = (count > 0) & np.isfinite(peak) & (peak > 0) & np.isfinite(mean) & (mean > 0)
    spread = np.zeros(n)
    if live.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            above = np.log10(peak / np.median(peak[live]))
            below = np.log10(np.median(mean[live]) / mean)
        spread = np.where(live, np.maximum(above, below), 0.0)
    bad = np.isfinite(first)
    # np.lexsort sorts by its last key first
    keys = (np.arange(n), -spread, live, ~named, np.where(bad, first, 0.0), ~bad)
    return [int(i) for i in np.lexsort(keys)]


class Placed(Protocol):
    """A finding, or its view on the page: what matters here is its place."""

    @property
    def where(self) -> str: ...


def flagged_rows(names: Sequence[str], findings: Iterable[Placed],
                 owners: dict[str, str] | None = None) -> set[int]:
    """Indices of ``names`` that a finding names as its place, directly or (through ``owners``,
    a map from a finding's place to one of ``names``) by one of their parts."""
    index = {n: i for i, n in enumerate(names)}
    out = set()
    for f in findings:
        where = owners.get(f.where, f.where) if owners else f.where
        if where in index:
            out.add(index[where])
    return out


def _subset(stats: StatsTable, rows: list[int]) -> StatsTable:
    return StatsTable(count=[stats.count[i] for i in rows], min=stats.min[rows], max=stats.max[rows],
                      mean=stats.mean[rows], first_nonfinite_step=[stats.first_nonfinite_step[i] for i in rows])


def ranked_stats_table(table_id: str, title: str, first: str, names: Sequence[str], stats: StatsTable,
                       flagged: Iterable[int], what: str) -> Table | None:
    """``stats_table`` in model order for up to ``MODEL_ORDER_ROWS`` rows; beyond that the
    ``SHOWN_ROWS`` worst rows (``worst_first``), with a note saying what was left out."""
    n = min(len(names), len(stats))
    if n <= MODEL_ORDER_ROWS:
        return stats_table(table_id, title, first, names, stats)
    rows = worst_first(names, stats, flagged)[:SHOWN_ROWS]
    table = stats_table(table_id, title + " (worst first)", first, [names[i] for i in rows], _subset(stats, rows))
    if table is not None:
        table.note = f"Showing the {len(rows):,} worst of {n:,} {what}: {WORST_ORDER}; every one is in the JSON record."
    return table


def _owners(rec: GradNormRecord) -> dict[str, str]:
    """Each parameter's layer."""
    return {p: rec.layers[i] for p, i in zip(rec.parameters, rec.parameter_layer) if 0 <= i < len(rec.layers)}


def ranked_layers(rec: GradNormRecord, findings: Iterable[Placed]) -> list[int]:
    """The record's layers, worst first; a finding on a parameter flags its layer."""
    return worst_first(rec.layers, rec.layer_stats, flagged_rows(rec.layers, findings, _owners(rec)))


def section_grad_norm(rec: GradNormRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    s = Section("gradients", "Gradient norms")
    stride = f" (every {rec.stride}th step kept)" if rec.stride > 1 else ""
    s.facts.append(("recorded steps", f"{len(rec.steps):,}{stride}"))
    s.facts.append(("parameter tensors", fmt_number(len(rec.parameters))))
    s.facts.append(("layers", fmt_number(len(rec.layers))))
    t = rec.total_stats
    if t.count:
        s.facts += [(f"total norm: {k}", v) for k, v in
                    stats_facts(t.count, t.min, t.max, t.mean, t.first_nonfinite_step)]
        s.gist = f"total norm mean {fmt_number(t.mean)}, max {fmt_number(t.max)}"
    clip = ctx.run.probe(ClippingRecord)
    builds = [("total norm figure", functools.partial(F.total_norm_figure, rec, clip)),
              ("grad norm heatmap", functools.partial(F.grad_norm_heatmap, rec))]
    findings = ctx.run.findings   # all of them, also those the page leaves off
    if len(rec.layers) > F.MAX_GROUPS:  # the heatmap shows groups of layers: show the worst ones alone too
        worst = ranked_layers(rec, findings)[:WORST_SHOWN]
        builds.append(("worst layers heatmap", functools.partial(F.worst_layers_heatmap, rec, worst)))
    builds.append(("gradient flow figure", functools.partial(F.gradient_flow_figure, rec)))
    s.figures = draw(builds, s.notes)
    owners = _owners(rec)
    members: dict[str, list[int]] = {}
    for i, p in enumerate(rec.parameters):
        if p in owners:
            members.setdefault(owners[p], []).append(i)
    flagged_params = flagged_rows(rec.parameters, findings)
    for f in findings:   # a finding on a layer flags its parameters
        flagged_params.update(members.get(f.where, ()))
    for table in (ranked_stats_table("layer-stats", "Per-layer gradient norm over the run", "layer", rec.layers,
                                     rec.layer_stats, flagged_rows(rec.layers, findings, owners), "layers"),
                  ranked_stats_table("parameter-stats", "Per-parameter gradient norm over the run", "parameter",
                                     rec.parameters, rec.parameter_stats, flagged_params, "parameters")):
        if table:
            s.tables.append(table)
    if rec.backward_order:
        order = rec.backward_order
        shown = ", ".join(order[:12]) + (f", … ({len(order):,} in all)" if len(order) > 12 else "")
        s.notes.append(f"Order in which gradients arrived in the first backward pass: {shown}.")
    if rec.no_gradient:
        s.notes.append(f"{len(rec.no_gradient)} trainable parameter(s) never received a gradient: "
                       + ", ".join(rec.no_gradient[:8]) + ("…" if len(rec.no_gradient) > 8 else "") + ".")
    if rec.parameter_steps is not None:
        s.notes.append(f"The record keeps per-parameter norms for {len(rec.parameter_steps):,} of the "
                       f"{len(rec.steps):,} recorded steps (its size budget); the statistics cover every step.")
    s.notes.append("Norms are taken after backward and before clipping; rows in red saw NaN/Inf, "
                   "rows in yellow have no recorded value.")
    s.related = ctx.related(CODES)
    return s
