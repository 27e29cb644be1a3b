"""Freezing and the optimizer (GS301–GS306), and the freeze table.

At attach: which parameters are frozen, which sit in which optimizer param group (with its lr and
weight decay), and which trainable ones are in none. Over the run: whether each parameter changed,
and whether a frozen one changed while frozen. A parameter frozen during the run (gradual
freezing) gets its own baseline right before the first optimizer step after it was frozen (a
host-side look at ``requires_grad`` each step; the fingerprint itself stays on the device).
Change is detected by a fingerprint (float64 sum and L2 norm of each tensor), computed on the
device at attach, at every flush and at the end: no copy of a large frozen backbone is ever kept,
and a change that leaves both sum and norm bitwise equal is, in practice, impossible.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.findings import Finding, finding
from gradscope.probes.base import Probe

BATCHNORM = (nn.modules.batchnorm._BatchNorm,)
ALMOST_ALL_FROZEN = 0.01  # GS306: under 1% of parameters train


def fingerprint(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """(n x 2) float64 [sum, L2 norm] per tensor, computed where the tensors live."""
    if not tensors:
        return torch.zeros(0, 2, dtype=torch.float64)
    detached = [_as_real_float(t.detach()) for t in tensors]
    sums = torch.stack([t.sum(dtype=torch.float64).to(detached[0].device) for t in detached])
    norms = torch.stack([n.to(detached[0].device) for n in
                         torch._foreach_norm(detached, 2, dtype=torch.float64)])
    return torch.stack([sums, norms], dim=1)


def _as_real_float(t: torch.Tensor) -> torch.Tensor:
    """A floating view (or, for the rare integer/bool parameter, a float64 copy) to fingerprint."""
    if t.is_floating_point():
        return t
    if t.is_complex():
        return torch.view_as_real(t)
    return t.to(torch.float64)  # integer parameters (frozen by construction): norms need floats


@dataclass
class ParamInfo:
    """One parameter as the optimizer sees it."""

    name: str
    numel: int
    trainable: bool
    groups: list[tuple[int, int]]      # (optimizer index, param group index)
    lr: float | None
    weight_decay: float | None


def optimizer_membership(optimizers: Sequence[torch.optim.Optimizer]) -> dict[int, list[tuple[int, int]]]:
    """id(parameter) -> the (optimizer, group) pairs that hold it."""
    where: dict[int, list[tuple[int, int]]] = {}
    for oi, opt in enumerate(optimizers):
        for gi, group in enumerate(opt.param_groups):
            for p in group["params"]:
                where.setdefault(id(p), []).append((oi, gi))
    return where


def _group_value(optimizers: Sequence[torch.optim.Optimizer], pairs: list[tuple[int, int]], key: str) -> float | None:
    if not pairs:
        return None
    oi, gi = pairs[0]
    value = optimizers[oi].param_groups[gi].get(key)
    return float(value) if isinstance(value, (int, float)) else None


def freeze(model: nn.Module, train: str | Iterable[str] = ()) -> list[nn.Parameter]:
    """Freeze every parameter of ``model`` except those under the submodules named in ``train``.

    Returns the trainable parameters, ready for the optimizer (build it *after* replacing layers):
    ``opt = torch.optim.Adam(gradscope.freeze(model, train=["fc"]), lr=1e-3)``.
    """
    names = [train] if isinstance(train, str) else list(train)  # train="fc" means one name
    modules = dict(model.named_modules())
    unknown = [n for n in names if n not in modules]
    if unknown:
        raise GradscopeError(
            f"freeze(train={unknown}): no such submodule in {type(model).__name__}; "
            f"top-level children are {[n for n, _ in model.named_children()]}")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable: list[nn.Parameter] = []
    seen: set[int] = set()
    for name in names:
        for p in modules[name].parameters():
            p.requires_grad_(True)
            if id(p) not in seen:
                seen.add(id(p))
                trainable.append(p)
    return trainable


def frozen_subtrees(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The largest submodules whose parameters are all frozen (the root is never one)."""
    out: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            params = list(child.parameters())
            if params and not any(p.requires_grad for p in params):
                out.append((path, child))
            else:
                visit(path, child)

    visit("", model)
    return out


class FreezeProbe(Probe):
    """GS301–GS306 and the freeze table."""

    name = "freeze"

    def __init__(self, had_grad: Any = None) -> None:
        super().__init__()
        self.had_grad = had_grad  # callable: parameter name -> bool, from the grad-norm probe
        self.names: list[str] = []
        self.params: list[nn.Parameter] = []
        self.info: list[ParamInfo] = []
        self.baseline: torch.Tensor | None = None
        self.first_changed_step: list[int | None] = []
        self.requires_grad: list[bool] = []             # as last seen, to notice (un)freezing
        self.frozen_base: dict[int, torch.Tensor] = {}  # frozen parameter -> fingerprint when frozen
        self.first_frozen_change: list[int | None] = []
        self.bn_train: dict[str, str] = {}   # BatchNorm path -> frozen subtree, seen in train mode
        self.subtrees: list[str] = []

    def attach(self, run: Any) -> None:
        super().attach(run)
        member = optimizer_membership(run.optimizers)
        for name, p in run.model.named_parameters():
            pairs = member.get(id(p), [])
            self.names.append(name)
            self.params.append(p)
            self.info.append(ParamInfo(name, p.numel(), p.requires_grad, pairs,
                                       _group_value(run.optimizers, pairs, "lr"),
                                       _group_value(run.optimizers, pairs, "weight_decay")))
        self.baseline = fingerprint(self.params).cpu() if self.params else None
        self.first_changed_step = [None] * len(self.params)
        self.first_frozen_change = [None] * len(self.params)
        self.requires_grad = [p.requires_grad for p in self.params]
        if self.baseline is not None:
            self.frozen_base = {i: self.baseline[i] for i, rg in enumerate(self.requires_grad) if not rg}
        for path, sub in frozen_subtrees(run.model):
            self.subtrees.append(path)
            for bn_name, bn in sub.named_modules():
                if isinstance(bn, BATCHNORM) and bn.track_running_stats:
                    full = f"{path}.{bn_name}" if bn_name else path
                    self.handles.append(bn.register_forward_pre_hook(
                        lambda m, _a, full=full, path=path: self._on_bn(m, full, path)))

    def _on_bn(self, module: nn.Module, full: str, subtree: str) -> None:
        if module.training and torch.is_grad_enabled():
            self.bn_train.setdefault(full, subtree)

    def on_step_begin(self) -> None:
        changed = [i for i, p in enumerate(self.params) if p.requires_grad != self.requires_grad[i]]
        if not changed:
            return
        newly_frozen = []
        for i in changed:
            self.requires_grad[i] = self.params[i].requires_grad
            if self.requires_grad[i]:
                self.frozen_base.pop(i, None)
            else:
                newly_frozen.append(i)
        if newly_frozen:  # right before this step can move them; kept on the device until a flush
            base = fingerprint([self.params[i] for i in newly_frozen])
            self.frozen_base.update({i: base[j] for j, i in enumerate(newly_frozen)})

    def flush(self, steps: list[int]) -> None:
        if self.baseline is None or not steps:
            return
        now = fingerprint(self.params).cpu()
        changed = (now != self.baseline).any(dim=1).tolist()
        for i, moved in enumerate(changed):
            if moved and self.first_changed_step[i] is None:
                self.first_changed_step[i] = steps[-1]
        for i, base in list(self.frozen_base.items()):
            if self.params[i].requires_grad:
                continue
            base = base.cpu()
            self.frozen_base[i] = base
            if self.first_frozen_change[i] is None and bool((now[i] != base).any()):
                self.first_frozen_change[i] = steps[-1]

    # ---- results -------------------------------------------------------------------------------
    def changed(self, name: str) -> bool | None:
        if name not in self.names:
            return None
        return self.first_changed_step[self.names.index(name)] is not None

    def table(self) -> list[dict[str, Any]]:
        """One row per module that owns parameters: counts, optimizer coverage, lr, change."""
        run = self._state()
        rows: dict[str, dict[str, Any]] = {}
        for i, info in enumerate(self.info):
            module = info.name.rpartition(".")[0] or run.root_name
            row = rows.setdefault(module, {"module": module, "trainable": 0, "frozen": 0,
                                           "in_optimizer": 0, "not_in_optimizer": 0,
                                           "lr": set(), "weight_decay": set(), "changed": 0,
                                           "tensors": 0})
            row["tensors"] += 1
            row["trainable" if info.trainable else "frozen"] += info.numel
            row["in_optimizer" if info.groups else "not_in_optimizer"] += info.numel
            if info.lr is not None:
                row["lr"].add(info.lr)
            if info.weight_decay is not None:
                row["weight_decay"].add(info.weight_decay)
            row["changed"] += int(self.first_changed_step[i] is not None)
        for row in rows.values():
            row["lr"] = sorted(row["lr"])
            row["weight_decay"] = sorted(row["weight_decay"])
        return list(rows.values())

    def record(self) -> dict[str, Any]:
        total = sum(i.numel for i in self.info)
        trainable = sum(i.numel for i in self.info if i.trainable)
        return {"parameters": total, "trainable": trainable, "frozen": total - trainable,
                "frozen_subtrees": self.subtrees, "batchnorm_train_in_frozen": sorted(self.bn_train),
                "table": self.table()}

    def findings(self) -> list[Finding]:
        run = self._state()
        out: list[Finding] = []
        has_opt = bool(run.optimizers)
        subtrees = self.subtrees

        def by_module(names: list[str], root: str) -> dict[str, list[str]]:
            return _by_module(names, root, subtrees)
        frozen_in_opt = [i.name for i, p in zip(self.info, self.params)
                         if i.groups and not p.requires_grad]
        out += _grouped("GS301", by_module(frozen_in_opt, run.root_name),
                        "frozen parameter(s) of {where} ({names}) are in the optimizer: they take "
                        "optimizer state, and weight decay or momentum can still move them (GS302).")
        not_in_opt = [i.name for i, p in zip(self.info, self.params)
                      if has_opt and not i.groups and p.requires_grad]
        out += _grouped("GS303", by_module(not_in_opt, run.root_name),
                        "trainable parameter(s) of {where} ({names}) are in no optimizer param group: "
                        "they get gradients but are never updated (was the layer replaced after the "
                        "optimizer was built?).")
        if run.step > 0:
            moved = [(i.name, s) for i, p, s in zip(self.info, self.params, self.first_frozen_change)
                     if s is not None and not p.requires_grad]
            if moved:
                first = min(s for _, s in moved)
                out += _grouped("GS302", by_module([n for n, _ in moved], run.root_name),
                                "frozen parameter(s) of {where} ({names}) changed during training "
                                f"(first seen by step {first}): something other than gradients moves "
                                "them (weight decay, stale momentum or Adam state, or an in-place edit).")
            if has_opt:
                still = [i.name for i, p, s in zip(self.info, self.params, self.first_changed_step)
                         if i.groups and p.requires_grad and s is None
                         and (self.had_grad is None or self.had_grad(i.name))]
                lrs = sorted({i.lr for i in self.info if i.name in still and i.lr is not None})
                lr_text = f" (learning rate {', '.join(f'{x:g}' for x in lrs)})" if lrs else ""
                out += _grouped("GS305", by_module(still, run.root_name),
                                "parameter(s) of {where} ({names}) are in the optimizer and got "
                                f"gradients, yet never changed over {run.step} steps{lr_text}.")
        if self.bn_train:
            subtrees = sorted(set(self.bn_train.values()))
            out.append(finding(
                "GS304", subtrees[0] if len(subtrees) == 1 else ", ".join(subtrees[:3]) + ("…" if len(subtrees) > 3 else ""),
                f"{len(self.bn_train)} BatchNorm layer(s) inside frozen submodule(s) "
                f"({_short(subtrees)}) ran in train mode: their running mean and variance keep "
                "changing although the weights are frozen, so evaluation drifts."))
        total = sum(i.numel for i in self.info)
        trainable = sum(i.numel for i in self.info if i.trainable)
        if total and 0 < trainable < ALMOST_ALL_FROZEN * total:
            names = [i.name for i in self.info if i.trainable]
            kinds = {_norm_kind(run.model, n) for n in names}
            what = _short(names)
            if kinds == {"BatchNorm"}:
                what = f"only BatchNorm affine parameters ({what})"
            elif None not in kinds:
                what = f"only normalisation-layer affine parameters ({what})"
            out.append(finding(
                "GS306", run.root_name,
                f"only {trainable:,} of {total:,} parameters ({trainable / total:.2%}) train: {what}."))
        return out


def _by_module(names: list[str], root: str, subtrees: Sequence[str] = ()) -> dict[str, list[str]]:
    """Group parameter names by the frozen subtree holding them, else by their owning module."""
    out: dict[str, list[str]] = {}
    for n in names:
        owner = next((t for t in subtrees if n.startswith(t + ".")), None)
        out.setdefault(owner or n.rpartition(".")[0] or root, []).append(n)
    return out


MAX_PLACES = 3  # more groups than this become one finding naming the first few


def _grouped(code: str, groups: dict[str, list[str]], template: str) -> list[Finding]:
    """One finding per module group, or one for all when many modules share the problem."""
    if not groups:
        return []
    if len(groups) <= MAX_PLACES:
        return [finding(code, where, f"{len(names)} " + template.format(where=where, names=_short(names)))
                for where, names in groups.items()]
    places = list(groups)
    where = ", ".join(places[:MAX_PLACES]) + f" and {len(places) - MAX_PLACES} more"
    names = [n for group in groups.values() for n in group]
    return [finding(code, where, f"{len(names)} " + template.format(
        where=f"{len(places)} modules ({_short(places)})", names=_short(names)))]


def _short(names: Sequence[str], limit: int = 4) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _norm_kind(model: nn.Module, param_name: str) -> str | None:
    """"BatchNorm" or "norm" when the parameter's owner is a normalisation layer, else None."""
    owner = param_name.rpartition(".")[0]
    module = model.get_submodule(owner) if owner else model
    if isinstance(module, BATCHNORM):
        return "BatchNorm"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
        return "norm"
    return None


def format_freeze_table(rows: list[dict[str, Any]]) -> str:
    """The freeze table as aligned text for a terminal."""
    header = ("module", "trainable", "frozen", "in optimizer", "lr", "changed")
    lines = [header]
    for r in rows:
        lines.append((r["module"], f"{r['trainable']:,}", f"{r['frozen']:,}",
                      "all" if not r["not_in_optimizer"] else ("none" if not r["in_optimizer"] else "some"),
                      ",".join(f"{x:g}" for x in r["lr"]) or "-",
                      f"{r['changed']}/{r['tensors']}"))
    widths = [max(len(str(line[c])) for line in lines) for c in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
