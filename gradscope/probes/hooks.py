"""Hooks: ones that pile up (GS601) and user hooks that replace a gradient (GS602).

GS601 counts the user's hooks (gradscope's own are left out) on every module, parameter and
optimizer at the end of each of the first steps and at every flush, host-side only; a count that
grows at several samples in a row is a hook registered inside the loop and never removed.

GS602 wraps each user gradient hook found (parameter ``register_hook`` hooks, module full backward
hooks and backward pre-hooks) in an observer that calls it and returns exactly what it returned,
noting when that was a different tensor. The originals are put back on exit.
"""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from gradscope.distributed import clean_name
from gradscope.judges.hooks import judge_hooks
from gradscope.probes.base import Probe
from gradscope.records.hooks import HookChange, HookSample, HooksRecord
from gradscope.reports.sections.hooks import section_hooks

EARLY_SAMPLES = 10  # sample at the end of each of the first steps; later only at flushes
MAX_SAMPLES = 64    # samples kept: the early ones and the most recent

_MODULE_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_PARAM_DICTS = ("_backward_hooks", "_post_accumulate_grad_hooks")
_OPTIMIZER_DICTS = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks")


class _Observed:
    """A user's gradient hook, called unchanged; remembers whether it replaced the gradient."""

    def __init__(self, fn: Callable[..., Any], where: str, kind: str, on_change: Callable[[str, str], None]) -> None:
        self.fn = fn
        self.where = where
        self.kind = kind
        self.on_change = on_change

    def __call__(self, *args: Any) -> Any:
        result = self.fn(*args)
        # What the result replaces: the gradient for a tensor hook (grad), grad_input for a module
        # full backward hook (module, grad_input, grad_output), grad_output for a pre-hook
        # (module, grad_output): the second argument of both module hooks.
        if result is not None and _replaced(result, args[0] if self.kind == "tensor" else args[1]):
            self.on_change(self.where, self.kind)
        return result


def _replaced(result: Any, original: Any) -> bool:
    if isinstance(result, (tuple, list)) and isinstance(original, (tuple, list)):
        return any(r is not o for r, o in zip(result, original))
    return result is not original


class HookProbe(Probe):
    """GS601 and GS602."""

    name = "hooks"
    codes = ("GS601", "GS602")
    record_type = HooksRecord
    judge = staticmethod(judge_hooks)
    section = staticmethod(section_hooks)
    report_order = 900

    def __init__(self) -> None:
        super().__init__()
        self.samples: list[tuple[int, dict[str, int]]] = []
        self.changed: dict[tuple[str, str], int] = {}
        self.wrapped: list[tuple[dict[int, Any], int, _Observed]] = []

    def attach(self, run: Any) -> None:
        super().attach(run)
        self._wrap_new(list(run.model.named_modules()), list(run.model.named_parameters()))

    def detach(self) -> None:
        super().detach()
        while self.wrapped:
            hooks, key, observed = self.wrapped.pop()
            if hooks.get(key) is observed:
                hooks[key] = observed.fn

    # ---- GS602 ---------------------------------------------------------------------------------
    def _note_change(self, where: str, kind: str) -> None:
        self.changed[(where, kind)] = self.changed.get((where, kind), 0) + 1

    def _wrap(self, hooks: dict[int, Any] | None, where: str, kind: str) -> None:
        if not hooks:
            return
        own = self._state().own_hook_ids
        for key, fn in list(hooks.items()):
            if key in own or isinstance(fn, _Observed):
                continue
            observed = _Observed(fn, where, kind, self._note_change)
            hooks[key] = observed
            self.wrapped.append((hooks, key, observed))

    def _wrap_new(self, modules: list[tuple[str, nn.Module]], params: list[tuple[str, nn.Parameter]]) -> None:
        run = self._state()
        for name, module in modules:
            if module._backward_hooks or module._backward_pre_hooks:
                where = clean_name(name) or run.root_name
                self._wrap(module._backward_hooks, where, "module full backward hook")
                self._wrap(module._backward_pre_hooks, where, "module backward pre-hook")
        for name, p in params:
            if p._backward_hooks:
                self._wrap(p._backward_hooks, clean_name(name), "tensor")

    # ---- GS601 ---------------------------------------------------------------------------------
    def _count(self, modules: list[tuple[str, nn.Module]], params: list[tuple[str, nn.Parameter]]) -> dict[str, int]:
        run = self._state()
        own = run.own_hook_ids

        def number(obj: Any, names: tuple[str, ...]) -> int:
            return sum(sum(1 for k in (getattr(obj, d, None) or {}) if k not in own) for d in names)

        counts: dict[str, int] = {}
        for name, module in modules:
            if n := number(module, _MODULE_DICTS):
                counts[f"module {clean_name(name) or run.root_name}"] = n
        for name, p in params:
            if n := number(p, _PARAM_DICTS):
                counts[f"parameter {clean_name(name)}"] = n
        for i, opt in enumerate(run.optimizers):
            if n := number(opt, _OPTIMIZER_DICTS):
                counts[f"optimizer {i} ({type(opt).__name__})"] = n
        return counts

    def _sample(self) -> None:
        run = self._state()
        modules, params = list(run.model.named_modules()), list(run.model.named_parameters())
        self.samples.append((run.step, self._count(modules, params)))
        if len(self.samples) > MAX_SAMPLES:  # bounded: the early ones, then the latest
            del self.samples[EARLY_SAMPLES]
        self._wrap_new(modules, params)

    def on_step_end(self) -> None:
        if self._state().step < EARLY_SAMPLES:
            self._sample()

    def flush(self, steps: list[int]) -> None:
        if steps and steps[-1] >= EARLY_SAMPLES:
            self._sample()

    def record(self) -> HooksRecord:
        last = self.samples[-1][1] if self.samples else {}
        return HooksRecord(
            hook_counts=dict(last),
            gradient_changed_by=[HookChange(w, k, n) for (w, k), n in sorted(self.changed.items())],
            samples=[HookSample(step, dict(counts)) for step, counts in self.samples])
