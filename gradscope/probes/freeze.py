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

from gradscope.distributed import clean_name, is_dtensor, local, reduce_rows_max
from gradscope.errors import GradscopeError
from gradscope.judges.freeze import judge_freeze
from gradscope.probes.base import Probe
from gradscope.records.freeze import FreezeRecord, FreezeRow, TensorState
from gradscope.reports.sections.freeze import section_freeze

BATCHNORM = (nn.modules.batchnorm._BatchNorm,)


def fingerprint(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """(n x 2) float64 [sum, L2 norm] per tensor, computed where the tensors live."""
    if not tensors:
        return torch.zeros(0, 2, dtype=torch.float64)
    detached = [_as_real_float(local(t).detach()) for t in tensors]  # a DTensor: this rank's shard
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


def optimizer_membership(optimizers: Sequence[torch.optim.Optimizer],
                         live: Sequence[bool] | None = None) -> dict[int, list[tuple[int, int]]]:
    """id(parameter) -> the (optimizer, group) pairs that hold it (of the ``live`` optimizers only)."""
    where: dict[int, list[tuple[int, int]]] = {}
    for oi, opt in enumerate(optimizers):
        if live is not None and not live[oi]:
            continue
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
    """The largest submodules whose parameters are all frozen (the root is never one). One pass
    over the tree (a module's verdict from its own parameters and its children's), so a deep or
    wide model costs what its size does."""
    frozen: dict[int, bool | None] = {}   # id -> all frozen (None: no parameters at all)

    def judge(module: nn.Module) -> bool | None:
        verdicts = [judge(child) for child in module.children()]
        verdicts += [not p.requires_grad for p in module._parameters.values() if p is not None]
        known = [v for v in verdicts if v is not None]
        frozen[id(module)] = all(known) if known else None
        return frozen[id(module)]

    judge(model)
    out: list[tuple[str, nn.Module]] = []

    def visit(prefix: str, module: nn.Module) -> None:
        for name, child in module.named_children():
            path = f"{prefix}.{name}" if prefix else name
            if frozen.get(id(child)):
                out.append((path, child))
            else:
                visit(path, child)

    visit("", model)
    return out


class FreezeProbe(Probe):
    """GS301–GS306 and the freeze table."""

    name = "freeze"
    codes = ("GS301", "GS302", "GS303", "GS304", "GS305", "GS306", "GS307")
    record_type = FreezeRecord
    judge = staticmethod(judge_freeze)
    section = staticmethod(section_freeze)
    report_order = 500

    def __init__(self) -> None:
        super().__init__()
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
        self.kinds: list[str | None] = []    # the owning layer's kind, for GS306
        self.sharded = False                 # some parameter is sharded: changes are OR-ed over ranks
        self.grad_while_frozen: list[bool] = []  # a frozen parameter held a .grad (the optimizer can move it)
        self.in_model: list[bool] = []       # still one of the model's parameters (layers get replaced)
        self.group_sizes: list[int] = []     # parameters per param group, to notice a new group cheaply

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.sharded = any(is_dtensor(p) for p in run.model.parameters()) or run.sharded
        self._add([(clean_name(n), p) for n, p in run.model.named_parameters()])
        self.group_sizes = _group_sizes(run.optimizers)
        for path, sub in frozen_subtrees(run.model):
            path = clean_name(path)
            self.subtrees.append(path)
            for bn_name, bn in sub.named_modules():
                if isinstance(bn, BATCHNORM) and bn.track_running_stats:
                    full = f"{path}.{bn_name}" if bn_name else path
                    self.handles.append(bn.register_forward_pre_hook(
                        lambda m, _a, full=full, path=path: self._on_bn(m, full, path)))

    def _add(self, named: list[tuple[str, nn.Parameter]]) -> None:
        """Start following parameters: at attach, and those a layer replaced during the run
        brought in (model surgery, pruning, a new head)."""
        run = self._state()
        member = optimizer_membership(run.optimizers, run.live_optimizers())
        owners = {id(p): m for m in run.model.modules() for p in m._parameters.values() if p is not None}
        start = len(self.params)
        for name, p in named:
            pairs = member.get(id(p), [])
            self.kinds.append(_norm_kind(owners.get(id(p))))
            self.names.append(name)
            self.params.append(p)
            self.info.append(ParamInfo(name, p.numel(), p.requires_grad, pairs,
                                       _group_value(run.optimizers, pairs, "lr"),
                                       _group_value(run.optimizers, pairs, "weight_decay")))
            self.first_changed_step.append(None)
            self.first_frozen_change.append(None)
            self.grad_while_frozen.append(False)
            self.requires_grad.append(p.requires_grad)
            self.in_model.append(True)
        if len(self.params) == start:
            return
        base = fingerprint(self.params[start:]).cpu()
        self.baseline = base if self.baseline is None else torch.cat([self.baseline, base])
        self.frozen_base.update({start + j: base[j] for j, p in enumerate(self.params[start:]) if not p.requires_grad})

    def _reread(self) -> None:
        """The model's parameters and the optimizers' param groups as they are now: layers may have
        been replaced, optimizers rebuilt or given new groups since the scope began."""
        run = self._state()
        current = {id(p): (clean_name(n), p) for n, p in run.model.named_parameters()}
        known = {id(p) for p in self.params}
        self.in_model = [id(p) in current for p in self.params]
        self._add([entry for pid, entry in current.items() if pid not in known])
        member = optimizer_membership(run.optimizers, run.live_optimizers())
        self.group_sizes = _group_sizes(run.optimizers)
        for i, p in enumerate(self.params):
            pairs = member.get(id(p), [])
            if pairs != self.info[i].groups:
                self.info[i] = ParamInfo(self.info[i].name, self.info[i].numel, self.info[i].trainable, pairs,
                                         _group_value(run.optimizers, pairs, "lr"),
                                         _group_value(run.optimizers, pairs, "weight_decay"))

    def _on_bn(self, module: nn.Module, full: str, subtree: str) -> None:
        if module.training and torch.is_grad_enabled():
            self.bn_train.setdefault(full, subtree)

    def on_optimizer_added(self, optimizer: torch.optim.Optimizer) -> None:
        self._reread()   # new layers get their baseline now, before the new optimizer moves them

    def on_step_begin(self) -> None:
        if _group_sizes(self._state().optimizers) != self.group_sizes:
            self._reread()   # add_param_group(), a new head: baselines before this step moves them
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
        if not steps:
            return
        self._reread()
        if self.baseline is None:
            return
        run = self._state()
        for i, p in enumerate(self.params):  # host checks: an optimizer skips a parameter whose .grad is None
            if not p.requires_grad and p.grad is not None:
                self.grad_while_frozen[i] = True
        now = fingerprint(self.params).cpu()
        changed = (now != self.baseline).any(dim=1)
        frozen_changed = torch.zeros_like(changed)
        for i, base in list(self.frozen_base.items()):
            if self.params[i].requires_grad:
                continue
            base = base.cpu()
            self.frozen_base[i] = base
            frozen_changed[i] = bool((now[i] != base).any())
        if run.collective and self.sharded:
            # each rank fingerprints its own shard: a change anywhere is a change
            flags = torch.stack([changed, frozen_changed]).to(torch.float32)
            flags = reduce_rows_max(flags.to(self.params[0].device)).cpu() > 0
            changed, frozen_changed = flags[0], flags[1]
        for i, moved in enumerate(changed.tolist()):
            if moved and self.first_changed_step[i] is None:
                self.first_changed_step[i] = steps[-1]
        for i, moved in enumerate(frozen_changed.tolist()):
            if moved and self.first_frozen_change[i] is None:
                self.first_frozen_change[i] = steps[-1]

    # ---- results -------------------------------------------------------------------------------
    def tensors(self) -> list[TensorState]:
        return [TensorState(name=i.name, numel=i.numel, trainable=i.trainable, requires_grad=p.requires_grad,
                            in_optimizer=bool(i.groups), lr=i.lr, weight_decay=i.weight_decay,
                            first_changed_step=changed, first_frozen_change_step=frozen_change,
                            norm_kind=kind, grad_while_frozen=held, in_model=inside)
                for i, p, changed, frozen_change, kind, held, inside in zip(
                    self.info, self.params, self.first_changed_step, self.first_frozen_change, self.kinds,
                    self.grad_while_frozen, self.in_model)]

    def table(self) -> list[FreezeRow]:
        """One row per module that owns parameters: counts, optimizer coverage, lr, change."""
        return FreezeRecord.rows_of(self.tensors(), self._state().root_name)

    def record(self) -> FreezeRecord:
        tensors = self.tensors()
        total = sum(t.numel for t in tensors)
        trainable = sum(t.numel for t in tensors if t.trainable)
        return FreezeRecord(parameters=total, trainable=trainable, frozen=total - trainable,
                            frozen_subtrees=list(self.subtrees),
                            batchnorm_train_in_frozen=sorted(self.bn_train),
                            table=FreezeRecord.rows_of(tensors, self._state().root_name), tensors=tensors)


def _group_sizes(optimizers: Sequence[torch.optim.Optimizer]) -> list[int]:
    return [len(group["params"]) for opt in optimizers for group in opt.param_groups]


def _norm_kind(module: nn.Module | None) -> str | None:
    """"BatchNorm" or "norm" when a parameter's owner is a normalisation layer, else None."""
    if isinstance(module, BATCHNORM):
        return "BatchNorm"
    if isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)):
        return "norm"
    return None
