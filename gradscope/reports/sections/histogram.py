"""The "Gradient histograms" section."""
from __future__ import annotations

import functools

import numpy as np

from gradscope.records.histogram import (
    ABOVE,
    BELOW,
    FIRST_OCTAVE,
    HIGH,
    LOW,
    NONFINITE,
    HistogramRecord,
    finite_medians,
)
from gradscope.reports.page import (
    Cell,
    Row,
    Section,
    SectionContext,
    Table,
    capped,
    draw,
    fmt_number,
    num,
    pct,
    text,
)

CODES = ("GS202", "GS203")


def typical_magnitude(counts: np.ndarray) -> Cell:
    """The octave holding the median nonzero finite element of one layer's ``BINS`` counts."""
    finite = counts[BELOW:NONFINITE]                    # below 2**LOW, the octaves, 2**HIGH and above
    total = finite.sum()
    if total <= 0:
        return Cell("", sort="", css="num")
    column = BELOW + int(np.searchsorted(np.cumsum(finite), total / 2))
    if column == BELOW:
        return Cell(f"< {2.0 ** LOW:.2g}", sort=repr(0.0), css="num")
    if column == ABOVE:
        return Cell(f"≥ {2.0 ** HIGH:g}", sort=repr(2.0 ** HIGH), css="num")
    low = 2.0 ** (LOW + column - FIRST_OCTAVE)
    return Cell(f"{low:.2g} to {2 * low:.2g}", sort=repr(low), css="num")


def section_histogram(rec: HistogramRecord, ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    if not rec.steps or not rec.layers:
        return None
    s = Section("histograms", "Gradient histograms")
    kept = f"{len(rec.steps):,} of {rec.samples_seen:,}" if rec.samples_seen > len(rec.steps) else f"{len(rec.steps):,}"
    s.facts.append(("sampled steps", kept + (f" (every {rec.stride}th kept)" if rec.stride > 1 else "")))
    s.facts.append(("schedule", f"steps 0, 1, 2, 4, ... then every {rec.every:,}th"))
    s.facts.append(("layers", fmt_number(len(rec.layers))))
    seen = f"{rec.low_precision} seen in the run" if rec.low_precision else "no autocast or half gradients seen"
    s.facts.append(("underflow threshold", f"{rec.dtype}'s smallest normal, {rec.smallest_normal:.3g} ({seen})"))
    scale = rec.loss_scale[np.isfinite(rec.loss_scale)]
    if scale.size and (scale != 1).any():
        s.facts.append(("loss scale", f"{fmt_number(float(scale.min()))} to {fmt_number(float(scale.max()))} "
                                      "(divided out of the bins, kept in the underflow share)"))
    zeros, samples = finite_medians(rec.zero_fraction)
    below, _ = finite_medians(rec.below_normal)
    order = rec.worst_first()
    worst = order[0]
    if np.isfinite(zeros[worst]):
        s.gist = (f"worst {rec.layers[worst]}: {pct(float(zeros[worst]))} exact zeros, "
                  f"{pct(float(below[worst]))} below {rec.dtype} normal")
    s.figures = draw([("gradient histogram figure", functools.partial(F.histogram_figure, rec))], s.notes)
    last = rec.layer_counts()[-1]
    nonfinite = (np.nan_to_num(rec.nonfinite_fraction(), nan=0.0) > 0).sum(axis=0)
    kinds = rec.modules if len(rec.modules) == len(rec.layers) else [""] * len(rec.layers)
    rows = [Row([text(rec.layers[j], mono=True), text(kinds[j]), num(float(last[j].sum())),
                 num(_share(zeros[j]), "%"), num(_share(below[j]), "%"),
                 typical_magnitude(last[j]), num(int(samples[j])), num(int(nonfinite[j]))],
                css="flag" if nonfinite[j] else ("warn" if samples[j] == 0 else ""))
            for j in order]
    rows, note = capped(rows, "layers")
    s.tables.append(Table("histogram-layers", ["layer", "module", "elements", "exact zeros (median %)",
                                               f"below {rec.dtype} normal (median % of nonzero)",
                                               "typical |g| (last sample)", "samples", "samples with NaN/Inf"],
                          rows, "Per-layer gradient distribution, worst first", note))
    s.notes.append("Histograms are of log2|g| per layer (octave bins from 9.1e-13 to 16384, plus exact zeros, "
                   "smaller, larger and NaN/Inf), read after backward and before clipping. The below-normal "
                   "share counts nonzero elements as backward produced them (still multiplied by a GradScaler's "
                   f"scale); {rec.dtype} is used because "
                   + (f"the run computed in {rec.low_precision}." if rec.low_precision else
                      "nothing ran in half precision (float16's range is the risk if AMP is turned on)."))
    s.related = ctx.related(CODES)
    return s


def _share(value: float) -> float:
    return float(value) * 100 if np.isfinite(value) else float("nan")
