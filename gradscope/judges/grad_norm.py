"""GS201–GS205 from the grad-norm record."""
from __future__ import annotations

import math

import numpy as np

from gradscope.findings import Finding, finding
from gradscope.judges import plural
from gradscope.records.grad_norm import GradNormRecord
from gradscope.records.loss import LossRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds

GROWTH_MIN_STEPS = 20   # GS204 by growth needs this many finite kept steps


def judge_grad_norm(rec: GradNormRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    if run.backwards == 0 or not rec.parameters:
        return []
    return (never_got_gradient(rec, run) + always_zero(rec, run.root_name) + vanishing(rec, th)
            + exploding(rec, run, th) + nonfinite(rec, run))


def owner(name: str, root: str) -> str:
    """The module owning parameter ``name`` (the root's class name for the root's own)."""
    return name.rpartition(".")[0] or root


MAX_PLACES = 10   # beyond this many places, one finding at the root names the first few and the count


def _listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def never_got_gradient(rec: GradNormRecord, run: RunRecord) -> list[Finding]:
    if not rec.no_gradient:
        return []
    by_layer: dict[str, list[str]] = {}
    for name in rec.no_gradient:
        by_layer.setdefault(owner(name, run.root_name), []).append(name)
    passes = plural(run.backwards, 'backward pass', 'backward passes')
    if len(by_layer) > MAX_PLACES:
        return [finding("GS201", run.root_name,
                        f"{plural(len(rec.no_gradient), 'trainable parameter')} in {len(by_layer)} layers "
                        f"({_listed(list(by_layer))}) never received a gradient in {passes}: the loss does "
                        "not depend on them, so they never train.")]
    return [
        finding("GS201", layer,
                f"{', '.join(names)} ({plural(len(names), 'trainable parameter')}) never received a "
                f"gradient in {passes}: the loss does not depend on them, so they never train.")
        for layer, names in by_layer.items()
    ]


def always_zero(rec: GradNormRecord, root: str = "model") -> list[Finding]:
    if rec.no_gradient is None:
        return []  # a record before version 2: which parameters got a gradient is unknown
    missing = set(rec.no_gradient)
    stats = rec.parameter_stats
    zero = [(name, int(stats.count[i])) for i, name in enumerate(rec.parameters)
            if name not in missing and stats.count[i] and float(stats.max[i]) == 0.0]
    if len(zero) > MAX_PLACES:
        names = [name for name, _ in zero]
        return [finding(
            "GS202", root,
            f"the gradients of {len(zero)} parameters ({_listed(names)}) were exactly zero at every "
            "observed step: they are connected to the loss but nothing flows through them, so they "
            "never change.")]
    return [finding(
        "GS202", name,
        f"the gradient of {name} was exactly zero at all {seen} observed steps: it is "
        "connected to the loss but nothing flows through it, so it never changes.") for name, seen in zero]


def layer_means(rec: GradNormRecord) -> list[tuple[int, float]]:
    """(layer index, mean norm over the run) in backward order: output side first."""
    index = {n: i for i, n in enumerate(rec.parameters)}
    params = [index[n] for n in rec.backward_order if n in index] or list(range(len(rec.parameters) - 1, -1, -1))
    order: list[int] = []
    seen: set[int] = set()
    for p in params:
        layer = rec.parameter_layer[p]
        if layer not in seen:
            seen.add(layer)
            order.append(layer)
    stats = rec.layer_stats
    return [(layer, float(stats.mean[layer])) for layer in order if stats.count[layer]]


def vanishing(rec: GradNormRecord, th: Thresholds) -> list[Finding]:
    layers = [(i, m) for i, m in layer_means(rec) if m > 0.0]  # all-zero layers: GS202
    if len(layers) < 2:
        return []
    (out_i, out_m), (in_i, in_m) = layers[0], layers[-1]
    names = rec.layers
    if in_m > 0 and out_m / in_m > th.vanishing_ratio:
        return [finding(
            "GS203", names[in_i],
            f"the mean gradient norm falls from {out_m:.3g} at {names[out_i]} (output side) to "
            f"{in_m:.3g} at {names[in_i]} (input side), a factor of {out_m / in_m:.3g} (threshold "
            f"{th.vanishing_ratio:g}): the early layers barely learn.")]
    largest = max(m for _, m in layers)
    tiny = [(i, m) for i, m in layers if m < th.vanishing_floor]
    if tiny and largest >= th.vanishing_floor:
        return [finding(
            "GS203", names[i],
            f"the mean gradient norm of {names[i]} is {m:.3g}, below {th.vanishing_floor:g} while "
            f"other layers reach {largest:.3g}: this layer barely learns.") for i, m in tiny]
    return []


def exploding(rec: GradNormRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    peak = rec.total_stats.max
    # A large norm alone says more about the loss's scale (a summed reconstruction loss) than
    # about trouble: it is explosion where the loss does not fall with it.
    losses = run.probe(LossRecord)
    learning = losses.falling() if losses is not None else None
    if rec.total_stats.count and peak is not None and peak > th.exploding_norm and learning is not True:
        return [finding(
            "GS204", run.root_name,
            f"the total gradient norm reached {peak:.3g} (threshold {th.exploding_norm:g})"
            + (" and the loss is not falling" if learning is False else "")
            + ": updates this large throw the weights far from where the loss was measured.")]
    totals = rec.total_norm[np.isfinite(rec.total_norm)]
    if totals.size >= GROWTH_MIN_STEPS:
        k = max(1, totals.size // 10)
        early, late = float(totals[:k].mean()), float(totals[-k:].mean())
        if early > 0 and late / early > th.exploding_growth:
            return [finding(
                "GS204", run.root_name,
                f"the total gradient norm grew from {early:.3g} (first tenth of the run) to {late:.3g} "
                f"(last tenth), a factor of {late / early:.3g} (threshold {th.exploding_growth:g}): "
                "training is diverging.")]
    return []


def nonfinite(rec: GradNormRecord, run: RunRecord) -> list[Finding]:
    if rec.steps_seen is None:
        return []  # a record before version 2: the GradScaler tolerance below cannot be applied
    stats = rec.parameter_stats
    first = [s for s in stats.first_nonfinite_step if s is not None]
    if not first:
        return []
    if run.grad_scaler and rec.steps_seen:
        # a GradScaler skips overflowing steps by design; only persistent NaN/Inf is a fault
        worst = 1.0 - min(stats.count) / rec.steps_seen
        if worst <= 0.5:
            return []
    step = min(first)
    bad = {i for i, s in enumerate(stats.first_nonfinite_step) if s == step}
    index = {n: i for i, n in enumerate(rec.parameters)}
    order = [index[n] for n in rec.backward_order if n in index]
    order += [i for i in range(len(rec.parameters) - 1, -1, -1) if i not in set(order)]
    culprit = next(i for i in order if i in bad)
    name = rec.parameters[culprit]
    return [finding(
        "GS205", name,
        f"the gradient of {name} (module {owner(name, run.root_name)}) was the first to become "
        f"non-finite, at step {step}, in backward order; {len(bad)} parameter gradient"
        f"{'s were' if len(bad) > 1 else ' was'} non-finite at that step. Every update after it "
        "spreads NaN/Inf into the weights.")]


def layer_shares(rec: GradNormRecord, steps: list[int], top: int = 3) -> dict[str, float]:
    """The layers carrying most of the squared total norm, averaged over the kept ``steps``."""
    wanted = set(steps)
    rows = [i for i, s in enumerate(rec.steps) if s in wanted]
    if not rows or rec.layer_norms.size == 0:
        return {}
    layers = np.square(rec.layer_norms[rows])
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.nanmean(layers / np.maximum(layers.sum(axis=1, keepdims=True), 1e-300), axis=0)
    best = [int(i) for i in np.argsort(-np.nan_to_num(share, nan=-1.0))[:top]]
    return {rec.layers[i]: float(share[i]) for i in best if not math.isnan(share[i])}
