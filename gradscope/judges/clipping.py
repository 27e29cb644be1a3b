"""GS401–GS407 from the clipping record."""
from __future__ import annotations

import math

from gradscope.findings import Finding, Severity, finding
from gradscope.records.clipping import ClipCall, ClippingRecord
from gradscope.records.loss import LossRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds

MIN_CALLS_FOR_RATE = 5  # GS401/GS402 need this many clip calls to speak of a rate


def _finite(x: float | None) -> bool:
    return x is not None and math.isfinite(x)


def persistent(calls: list[ClipCall], bad: list[ClipCall]) -> bool:
    """Under a GradScaler overflowing steps are normal while it lowers its scale (they are
    skipped); a fault is one that is still there: most of the last half of the calls."""
    late = calls[len(calls) // 2:]
    late_bad = sum(1 for c in late if any(c is b for b in bad))
    return bool(late) and late_bad >= 0.9 * len(late)


def judge_clipping(rec: ClippingRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    if rec.misplaced:
        first = rec.misplaced[0]
        out.append(finding(
            "GS403", first.function,
            f"{first.function} ran {first.when} at step {first.step} ({len(rec.misplaced)} time(s) in "
            "all): there was no fresh gradient to clip, so the gradients the optimizer used were never "
            "clipped."))
    if rec.scaled:
        first = rec.scaled[0]
        out.append(finding(
            "GS406", first.function,
            f"clipping ran on gradients still multiplied by the GradScaler's scale at step {first.step} "
            f"({len(rec.scaled)} time(s)): the threshold is compared with scaled norms, so clipping acts "
            "far too often or never as intended."))
    # A GradScaler skipping an overflowing step makes one iteration look like two backwards in one
    # step; clipping per micro-batch repeats at most steps that clip.
    micro = rec.per_micro_batch or []
    if micro and rec.clip_steps is not None and len(micro) >= max(2, rec.clip_steps // 2):
        out.append(finding(
            "GS407", micro[0].function,
            f"clipping ran after each micro-batch of {len(micro)} accumulation step(s) (first at step "
            f"{micro[0].step}): partial sums are clipped, so the accumulated gradient is not the one a "
            "single clip would give."))
    norm_calls = [c for c in rec.calls if c.acted is not None]
    nonfinite = [c for c in norm_calls if not _finite(c.total_norm)]
    if nonfinite and (not run.grad_scaler or persistent(norm_calls, nonfinite)):
        out.append(finding(
            "GS404", "clip_grad_norm_",
            f"the total gradient norm was non-finite at clipping time at step {nonfinite[0].step} "
            f"({len(nonfinite)} call(s)): clipping scales every gradient by NaN or 0."))
    finite = [c for c in norm_calls if _finite(c.total_norm)]
    if len(finite) >= MIN_CALLS_FOR_RATE:
        share = sum(bool(c.acted) for c in finite) / len(finite)
        totals = sorted(c.total_norm for c in finite if c.total_norm is not None)
        threshold = finite[-1].threshold
        if share > th.clip_rate:
            median = totals[len(totals) // 2]
            cut = threshold / median if median > 0 else 1.0
            losses = run.probe(LossRecord)
            learning = losses.falling() if losses is not None else None
            # Clipping every step is a design choice (the official word-language model clips at
            # 0.25 with lr 20): a warning only with evidence of harm.
            harm = learning is False or cut < th.clip_harm_factor
            why = ("; the loss is not falling" if learning is False else
                   f"; it divides the gradient by about {1 / cut:.0f}" if cut < th.clip_harm_factor else
                   "; the loss is falling, so this may be by design")
            out.append(finding(
                "GS401", "clip_grad_norm_",
                f"norm clipping acted on {share:.0%} of {len(finite)} steps (max_norm {threshold:g}; "
                f"median pre-clip norm {median:.3g}){why}: it works as a smaller learning rate rather "
                "than a guard against spikes.", severity=Severity.WARNING if harm else Severity.INFO))
        elif share == 0.0:
            out.append(finding(
                "GS402", "clip_grad_norm_",
                f"clipping never acted in {len(finite)} steps: max_norm {threshold:g} is above every "
                f"observed pre-clip norm (largest {totals[-1]:.3g})."))
    sats = [c.saturated for c in rec.calls if c.saturated is not None]
    if sats:
        mean = sum(sats) / len(sats)
        if mean > th.value_saturation:
            out.append(finding(
                "GS405", "clip_grad_value_",
                f"value clipping saturated {mean:.0%} of gradient elements on average over {len(sats)} "
                "calls: the gradient's direction is being rewritten, not just bounded."))
    return out
