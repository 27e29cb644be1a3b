"""GS202 and GS203 sharpened by the gradient histograms: layers mostly exactly zero, and underflow.

The gradient-norm judge sees a layer's norm only: it reports GS202 when a parameter's gradient is
zero at every step, GS203 when norms fall from the output side to the input side. The histograms
see inside a layer:

- GS203 (underflow): in a run that computed in float16 (autocast or float16 gradients), most
  nonzero gradient elements of a layer sit below float16's smallest normal, 6.1e-05, as backward
  produced them (loss scale included): there they lose precision and flush to zero. A float32 run
  is not judged (it does not underflow there); its section still shows the share.
- GS202 (mostly zero): most elements of a layer's gradient are exactly zero at a typical sampled
  step, while the layer is not all-zero (that is the norm judge's GS202) and not an embedding
  (rows of tokens a batch does not use are zero by design). In a float16 run the message says that
  underflow flushes gradients to exact zeros too.
"""
from __future__ import annotations

import numpy as np

from gradscope.findings import Finding, finding
from gradscope.judges import MAX_PLACES, plural, short
from gradscope.judges.grad_norm import always_zero
from gradscope.records.grad_norm import GradNormRecord
from gradscope.records.histogram import HistogramRecord, finite_medians
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds

UNDERFLOW_SHARE = 0.5   # GS203: median share of nonzero elements below the smallest normal
ZERO_SHARE = 0.9        # GS202: median share of elements exactly zero
MIN_SAMPLES = 2         # a layer is judged on at least this many sampled steps
SPARSE_BY_DESIGN = ("Embedding", "EmbeddingBag")
UNDERFLOW_HINT = ("Scale the loss with torch.amp.GradScaler (float16 needs it), or autocast to bfloat16, "
                  "whose range is float32's; check that the loss is not divided by a large constant.")


def judge_histogram(rec: HistogramRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    if not rec.steps or not rec.layers:
        return []
    flagged, found = underflow(rec)
    return found + mostly_zero(rec, run, skip=flagged)


def underflow(rec: HistogramRecord) -> tuple[set[int], list[Finding]]:
    """Layers whose nonzero gradients mostly sit below the smallest normal of the run's dtype."""
    if rec.low_precision is None:
        return set(), []
    share, samples = finite_medians(rec.below_normal)
    zeros, _ = finite_medians(rec.zero_fraction)
    hit = [j for j in range(len(rec.layers))
           if samples[j] >= MIN_SAMPLES and share[j] >= UNDERFLOW_SHARE]
    if not hit:
        return set(), []
    hit.sort(key=lambda j: -share[j])
    dtype, normal = rec.dtype, rec.smallest_normal
    scale = rec.loss_scale[np.isfinite(rec.loss_scale)]
    scaled = f", even with the GradScaler's loss scale of {scale[-1]:g}" if scale.size and scale[-1] != 1 else ""
    why = (f"in a {dtype} backward these values lose precision or flush to zero (underflow), so the "
           "updates of these weights vanish")
    if len(hit) <= MAX_PLACES:
        out = [finding("GS203", rec.layers[j],
                       f"{share[j]:.0%} of the nonzero gradient elements of {rec.layers[j]} are below "
                       f"{dtype}'s smallest normal ({normal:.2g}) at a typical sampled step (median of "
                       f"{plural(int(samples[j]), 'sample')}{scaled}), and {zeros[j]:.0%} are exactly zero: "
                       f"{why}.", UNDERFLOW_HINT) for j in hit]
        return set(hit), out
    names = [rec.layers[j] for j in hit]
    where = ", ".join(names[:MAX_PLACES]) + f" and {len(names) - MAX_PLACES} more"
    low, high = float(share[hit].min()), float(share[hit].max())
    return set(hit), [finding(
        "GS203", where,
        f"in {len(hit)} layers ({short(names)}) {low:.0%} to {high:.0%} of the nonzero gradient elements "
        f"are below {dtype}'s smallest normal ({normal:.2g}) at a typical sampled step{scaled}: {why}.",
        UNDERFLOW_HINT)]


def mostly_zero(rec: HistogramRecord, run: RunRecord, skip: set[int]) -> list[Finding]:
    """Layers whose gradient is mostly exact zeros, though not entirely (the norm judge's case)."""
    share, samples = finite_medians(rec.zero_fraction)
    lowest = np.array([np.nanmin(col) if np.isfinite(col).any() else np.nan for col in rec.zero_fraction.T])
    covered = _all_zero_layers(run)
    out = []
    for j, layer in enumerate(rec.layers):
        kind = rec.modules[j] if j < len(rec.modules) else ""
        if j in skip or layer in covered or kind in SPARSE_BY_DESIGN:
            continue
        if samples[j] >= MIN_SAMPLES and share[j] >= ZERO_SHARE:
            out.append(finding(
                "GS202", layer,
                f"{share[j]:.0%} of the gradient elements of {layer} were exactly zero at a typical sampled "
                f"step (median of {plural(int(samples[j]), 'sample')}, lowest {lowest[j]:.0%}): most of this "
                "layer receives no gradient, so most of it never changes."
                + (" In a float16 run, gradients that underflow flush to zero and look the same: scale the "
                   "loss with torch.amp.GradScaler first if it is not scaled." if rec.low_precision == "float16"
                   else "")))
    return out


def _all_zero_layers(run: RunRecord) -> set[str]:
    """Layers holding a parameter whose gradient the norm judge already reports as always zero."""
    grad = run.probe(GradNormRecord)
    if grad is None:
        return set()
    zero = {f.where for f in always_zero(grad)}
    return {grad.layers[grad.parameter_layer[i]] for i, name in enumerate(grad.parameters)
            if name in zero and i < len(grad.parameter_layer)}
