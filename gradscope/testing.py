"""gradscope in a project's own test suite: ``assert_healthy`` and the findings check behind the
``gradscope_watch`` pytest fixture (``gradscope.pytest_plugin``).

    def test_model_trains():
        gradscope.testing.assert_healthy(Net(), example_input=torch.randn(8, 1, 28, 28),
                                         target=torch.randint(0, 10, (8,)),
                                         loss_fn=nn.CrossEntropyLoss())

A model whose layers sit in a plain list, whose loss goes NaN, or whose frozen parameters sit in
the optimizer fails that test with an ``AssertionError`` naming each finding's code and place,
the way a wrong number fails an ``assert``: in CI, before a long run finds out.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.findings import Finding, Severity, sort_findings

LossFn = Callable[..., torch.Tensor]


def _call(model: nn.Module, example_input: Any) -> Any:
    """Call the model the way ``gradscope.check`` does: a tuple is positional arguments, a dict
    keyword arguments, anything else the one argument."""
    if isinstance(example_input, tuple):
        return model(*example_input)
    if isinstance(example_input, dict):
        return model(**example_input)
    return model(example_input)


def _default_loss(output: Any, target: Any = None) -> torch.Tensor:
    """A loss when none is given: cross-entropy for integer targets, MSE for float targets, and the
    mean square of the output without a target (it sends a gradient to every layer in use)."""
    if isinstance(output, dict) and isinstance(output.get("loss"), torch.Tensor):
        return output["loss"]
    if not isinstance(output, torch.Tensor):
        raise GradscopeError(f"assert_healthy() cannot make a loss from a model output of type "
                             f"{type(output).__name__}; pass loss_fn=..., a function of (output) or "
                             "(output, target) returning a scalar tensor")
    if target is None:
        return output.float().square().mean()
    if isinstance(target, torch.Tensor) and not target.is_floating_point():
        return nn.functional.cross_entropy(output, target)
    return nn.functional.mse_loss(output, target)


def _matches(code: str, patterns: Iterable[str]) -> bool:
    return any(code == p or code.startswith(p) for p in patterns)


def failing(findings: Iterable[Finding], severity: str | Severity = "warning",
            ignore: Iterable[str] = ()) -> list[Finding]:
    """The findings at or above ``severity`` whose code is not ignored (a code, or a prefix: "GS2")."""
    level = Severity(severity) if not isinstance(severity, Severity) else severity
    skipped = list(ignore)
    return [f for f in findings if f.severity >= level and not _matches(f.code, skipped)]


def describe(bad: Sequence[Finding], everything: Sequence[Finding], severity: str | Severity, subject: str) -> str:
    """The assertion message: one block per failing finding (code, severity, place, message,
    hint), then what was left below the bar."""
    level = severity.value if isinstance(severity, Severity) else severity
    lines = [f"gradscope found {len(bad)} problem{'s' if len(bad) != 1 else ''} at or above {level!r} in "
             f"{subject}:"]
    for f in bad:
        lines.append(f"  {f.code} {f.severity.value} at {f.where}: {f.message}")
        if f.hint:
            lines.append(f"      fix: {f.hint}")
    rest = [f for f in everything if f not in bad]
    if rest:
        lines.append("  (also, not failing: " + ", ".join(f"{f.code} at {f.where}" for f in rest) + ")")
    return "\n".join(lines)


def assert_healthy(model: nn.Module, example_input: Any, *, target: Any = None,
                   optimizer: torch.optim.Optimizer | None = None, steps: int = 5, loss_fn: LossFn | None = None,
                   severity: str | Severity = "warning", ignore: Iterable[str] = (),
                   **watch_options: Any) -> list[Finding]:
    """Train ``model`` for a few steps under ``watch()``, check its registration, and raise
    ``AssertionError`` listing every finding at or above ``severity``.

    The model trains in place (pass a fresh one); its train/eval mode is put back afterwards.

    Args:
        model: the model to check.
        example_input: one batch: a tensor, a tuple of positional arguments or a dict of keyword
            arguments (as ``gradscope.check`` takes it). The same batch is used at every step.
        target: the batch's targets, passed to ``loss_fn`` as its second argument.
        optimizer: default ``SGD(trainable parameters, lr=1e-2)``.
        steps: optimizer steps to take.
        loss_fn: ``loss_fn(output)`` or, with a target, ``loss_fn(output, target)``; default:
            cross-entropy for integer targets, MSE for float ones, the output's mean square
            without a target, or the ``"loss"`` of a dict output.
        severity: the lowest severity that fails: "error", "warning" or "info".
        ignore: codes (or prefixes, "GS2") that never fail.
        **watch_options: passed to ``watch()`` (thresholds=..., activations=...).

    Returns:
        Every finding (also those below ``severity``), most severe first, when none fails.
    """
    from gradscope.registration import check
    from gradscope.scope import watch

    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise GradscopeError(f"assert_healthy(steps=...) must be an integer >= 1, got {steps!r}")
    level = Severity(severity) if not isinstance(severity, Severity) else severity
    loss_of = loss_fn or _default_loss
    if optimizer is None:
        trainable = [p for p in model.parameters() if p.requires_grad]
        if not trainable:
            raise GradscopeError(f"assert_healthy() got a {type(model).__name__} with no trainable parameter; "
                                 "there is nothing to train (check requires_grad, or pass optimizer=...)")
        optimizer = torch.optim.SGD(trainable, lr=1e-2)
    found = list(check(model, example_input))
    was_training = model.training
    model.train()
    try:
        with watch(model, optimizer, **watch_options) as scope:
            for _ in range(steps):
                optimizer.zero_grad()
                output = _call(model, example_input)
                loss = loss_of(output) if target is None else loss_of(output, target)
                loss.backward()
                optimizer.step()
    finally:
        model.train(was_training)
    everything = sort_findings([*found, *scope.findings])
    bad = failing(everything, level, ignore)
    if bad:
        raise AssertionError(describe(bad, everything, level, f"{type(model).__name__} after {steps} training "
                                                               f"step{'s' if steps != 1 else ''}"))
    return everything
