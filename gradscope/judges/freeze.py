"""GS301–GS306 from the freeze record (GS305 also reads which parameters got gradients)."""
from __future__ import annotations

import dataclasses
from typing import Sequence

from gradscope.findings import Finding, Severity, finding
from gradscope.judges import grouped, short
from gradscope.records.freeze import FreezeRecord, TensorState
from gradscope.records.grad_norm import GradNormRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds

ALMOST_ALL_FROZEN = 0.01  # GS306: under 1% of parameters train


def judge_freeze(rec: FreezeRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out: list[Finding] = []
    out += _batchnorm(rec)
    if rec.tensors is None:
        return out  # a record before version 2 has only the per-module table
    root = run.root_name
    has_opt = bool(run.optimizers) if run.optimizers is not None else any(t.in_optimizer for t in rec.tensors)

    def places(items: list[TensorState]) -> dict[str, list[str]]:
        return by_module([t.name for t in items], root, rec.frozen_subtrees)

    gone = [t for t in rec.tensors if not t.in_model and t.in_optimizer]
    out += grouped("GS307", places(gone),
                   "parameter(s) of {where} ({names}) are no longer in the model but still in the optimizer: "
                   "the layer was replaced after the optimizer was built, so the optimizer keeps updating "
                   "the old tensors (and their state) while the new layer may get no updates at all (GS303).")
    tensors = [t for t in rec.tensors if t.in_model]
    frozen_in_opt = [t for t in tensors if t.in_optimizer and not t.requires_grad]
    # An optimizer skips a parameter whose .grad is None, weight decay and momentum included: only
    # a frozen parameter that holds a gradient (frozen after training, or zeroed with
    # set_to_none=False) can be moved, and only that is worth a warning.
    movable = [t for t in frozen_in_opt if t.grad_while_frozen]
    inert = [t for t in frozen_in_opt if not t.grad_while_frozen]
    out += grouped("GS301", places(movable),
                   "frozen parameter(s) of {where} ({names}) are in the optimizer and hold a gradient: weight "
                   "decay or momentum can still move them (GS302), and they take optimizer state.")
    out += [dataclasses.replace(f, severity=Severity.INFO) for f in grouped(
        "GS301", places(inert),
        "frozen parameter(s) of {where} ({names}) are in the optimizer; they never get a gradient, so the "
        "optimizer skips them, but they still take a place in its param groups.")]
    out += grouped("GS303", places([t for t in tensors
                                    if has_opt and not t.in_optimizer and t.requires_grad]),
                   "trainable parameter(s) of {where} ({names}) are in no optimizer param group: they "
                   "get gradients but are never updated (was the layer replaced after the optimizer "
                   "was built?).")
    if run.steps > 0:
        moved = [t for t in tensors if t.first_frozen_change_step is not None and not t.requires_grad]
        if moved:
            first = min(t.first_frozen_change_step for t in moved if t.first_frozen_change_step is not None)
            out += grouped("GS302", places(moved),
                           "frozen parameter(s) of {where} ({names}) changed during training (first "
                           f"seen by step {first}): something other than gradients moves them (weight "
                           "decay, stale momentum or Adam state, or an in-place edit).")
        if has_opt:
            grads = run.probe(GradNormRecord)
            # without a non-zero gradient a parameter cannot move: GS201 and GS202 say why
            no_grad = set(grads.no_gradient or []) if grads is not None else set()
            if grads is not None:
                stats = grads.parameter_stats
                no_grad |= {n for i, n in enumerate(grads.parameters[: len(stats)])
                            if stats.count[i] and float(stats.max[i]) == 0.0}
            still = [t for t in tensors if t.in_optimizer and t.requires_grad
                     and t.first_changed_step is None and t.name not in no_grad]
            lrs = sorted({t.lr for t in still if t.lr is not None})
            lr_text = f" (learning rate {', '.join(f'{x:g}' for x in lrs)})" if lrs else ""
            out += grouped("GS305", places(still),
                           "parameter(s) of {where} ({names}) are in the optimizer and got gradients, "
                           f"yet never changed over {run.steps} steps{lr_text}.")
    total = sum(t.numel for t in tensors)
    trainable = [t for t in tensors if t.trainable]
    count = sum(t.numel for t in trainable)
    if total and 0 < count < ALMOST_ALL_FROZEN * total:
        names = [t.name for t in trainable]
        kinds = {t.norm_kind for t in trainable}
        what = short(names)
        if kinds == {"BatchNorm"}:
            what = f"only BatchNorm affine parameters ({what})"
        elif None not in kinds:
            what = f"only normalisation-layer affine parameters ({what})"
        out.append(finding(
            "GS306", root, f"only {count:,} of {total:,} parameters ({count / total:.2%}) train: {what}."))
    return out


def _batchnorm(rec: FreezeRecord) -> list[Finding]:
    if not rec.batchnorm_train_in_frozen:
        return []
    subtrees = sorted({subtree_of(name, rec.frozen_subtrees) for name in rec.batchnorm_train_in_frozen})
    where = subtrees[0] if len(subtrees) == 1 else ", ".join(subtrees[:3]) + ("…" if len(subtrees) > 3 else "")
    return [finding(
        "GS304", where,
        f"{len(rec.batchnorm_train_in_frozen)} BatchNorm layer(s) inside frozen submodule(s) "
        f"({short(subtrees)}) ran in train mode: their running mean and variance keep changing "
        "although the weights are frozen, so evaluation drifts.")]


def subtree_of(name: str, subtrees: Sequence[str]) -> str:
    """The frozen subtree holding module or parameter ``name`` (the longest that matches)."""
    found = [t for t in subtrees if name == t or name.startswith(t + ".")]
    return max(found, key=len) if found else name


def by_module(names: list[str], root: str, subtrees: Sequence[str] = ()) -> dict[str, list[str]]:
    """Group parameter names by the frozen subtree holding them, else by their owning module."""
    out: dict[str, list[str]] = {}
    for n in names:
        owner = next((t for t in subtrees if n.startswith(t + ".")), None)
        out.setdefault(owner or n.rpartition(".")[0] or root, []).append(n)
    return out
