"""The zero-grad probe at run time: GS511 (``zero_grad()`` inside the accumulation loop) and GS503
(no ``zero_grad()`` at all), each with a specimen and a healthy twin, LBFGS's closure, and the
choice of the watched parameter among those an optimizer steps and that get gradients."""
from __future__ import annotations

from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradscope.findings import Finding, Severity
from gradscope.records import ZeroGradRecord
from gradscope.scope import Scope, watch

MICRO = 4   # backward passes per optimizer step
Clear = Literal["optimizer", "optimizer, set_to_none=False", "model"]


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def _batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(i)
    return torch.randn(8, 4, generator=g), torch.randn(8, 1, generator=g)


def _clear(how: Clear, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    if how == "model":
        model.zero_grad()
    else:
        opt.zero_grad(set_to_none=how == "optimizer")


def _record(scope: Scope) -> ZeroGradRecord:
    rec = scope.records["zero_grad"]
    assert isinstance(rec, ZeroGradRecord)
    return rec


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


# ---- GS511 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", [
    pytest.param("optimizer", id="optimizer.zero_grad()"),
    pytest.param("optimizer, set_to_none=False", id="optimizer.zero_grad(set_to_none=False)"),
    pytest.param("model", id="model.zero_grad()"),
])
def test_gs511_zero_grad_before_every_micro_batch(how: Clear) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt) as scope:
        for step in range(4):
            for k in range(MICRO):
                _clear(how, model, opt)
                x, y = _batch(step * MICRO + k)
                (F.mse_loss(model(x), y) / MICRO).backward()
            if step == 3:
                used = [p.grad.clone() for p in model.parameters()]
                weights = {k: v.clone() for k, v in model.state_dict().items()}   # as the last micro-batch saw them
            opt.step()
    (f,) = only(scope.findings, "GS511")
    assert (f.severity, f.where) == (Severity.WARNING, "Sequential")
    # every step is checked, the first one too: the sentinel is chosen right after the first backward
    assert "4 of 4 accumulation steps (first at step 0" in f.message and "accumulation does nothing" in f.message
    rec = _record(scope)
    assert (rec.accumulation_steps, rec.emptied_accumulation_steps, rec.first_emptied_step) == (4, 4, 0)
    assert only(scope.findings, "GS503") == []
    # plain autograd: the last step used the last micro-batch's gradient alone
    before = _mlp()
    before.load_state_dict(weights)
    x, y = _batch(3 * MICRO + MICRO - 1)
    last = torch.autograd.grad(F.mse_loss(before(x), y) / MICRO, list(before.parameters()))
    for g_used, g_last in zip(used, last):
        torch.testing.assert_close(g_used, g_last)


@pytest.mark.parametrize("how", [
    pytest.param("optimizer", id="optimizer.zero_grad()"),
    pytest.param("optimizer, set_to_none=False", id="optimizer.zero_grad(set_to_none=False)"),
    pytest.param("model", id="model.zero_grad()"),
])
def test_gs511_twin_zero_grad_once_per_step_under_accumulation(how: Clear) -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt) as scope:
        for step in range(4):
            _clear(how, model, opt)
            for k in range(MICRO):
                x, y = _batch(step * MICRO + k)
                (F.mse_loss(model(x), y) / MICRO).backward()
            opt.step()
    assert not {f.code for f in scope.findings} & {"GS503", "GS511"}
    rec = _record(scope)
    assert (rec.accumulation_steps, rec.emptied_accumulation_steps, rec.steps_with_stale_gradients) == (4, 0, 0)


def test_gs511_twin_lbfgs_evaluating_its_closure_several_times_per_step() -> None:
    model = _mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.5, max_iter=4)
    evaluations = 0
    with watch(model, opt) as scope:
        for step in range(4):
            x, y = _batch(step)

            def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                nonlocal evaluations
                evaluations += 1
                opt.zero_grad()   # LBFGS wants fresh gradients at every evaluation
                loss = F.mse_loss(model(x), y)
                loss.backward()
                return loss

            opt.step(closure)
    assert evaluations > 4 and scope.steps == 4   # several backward passes inside each step
    assert not {f.code for f in scope.findings} & {"GS503", "GS511"}
    assert _record(scope).accumulation_steps == 0


# ---- GS503 ---------------------------------------------------------------------------------------
class Net(nn.Module):
    """A head with three small parameters that sort before it, none of which may be the sentinel
    of a check on what the optimizer's zero_grad() clears: an unused layer (never a gradient), a
    frozen scalar, and a scalar the test can keep out of the optimizer."""

    def __init__(self) -> None:
        super().__init__()
        self.aux = nn.Linear(1, 1)                                        # never called
        self.anchor = nn.Parameter(torch.ones(1), requires_grad=False)    # frozen
        self.alpha = nn.Parameter(torch.ones(1))                          # used
        self.fc = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.alpha * self.anchor


def _gs503_run(zero_grad: bool, alpha_in_optimizer: bool, frozen_in_optimizer: bool) -> tuple[Scope, Net]:
    torch.manual_seed(0)
    model = Net()
    params = [p for name, p in model.named_parameters()
              if (alpha_in_optimizer or name != "alpha") and (frozen_in_optimizer or name != "anchor")]
    opt = torch.optim.SGD(params, lr=0.01)
    x, y = _batch(0)
    with watch(model, opt) as scope:
        for _ in range(5):
            if zero_grad:
                opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
    return scope, model


LAYOUTS = [
    pytest.param(True, False, id="every small parameter in the optimizer"),
    pytest.param(False, False, id="a used scalar kept out of the optimizer"),
    pytest.param(True, True, id="a frozen scalar in the optimizer"),
]


@pytest.mark.parametrize(("alpha_in_optimizer", "frozen_in_optimizer"), LAYOUTS)
def test_gs503_a_missing_zero_grad_is_found(alpha_in_optimizer: bool, frozen_in_optimizer: bool) -> None:
    scope, model = _gs503_run(False, alpha_in_optimizer, frozen_in_optimizer)
    (f,) = only(scope.findings, "GS503")
    assert (f.severity, f.where) == (Severity.WARNING, "Net")
    rec = _record(scope)
    assert (rec.steps_checked, rec.steps_with_stale_gradients, rec.first_stale_step) == (4, 4, 1)
    assert model.aux.weight.grad is None   # plain torch: the unused layer never got a gradient
    assert rec.watched_parameter == ("alpha" if alpha_in_optimizer else "fc.bias")


@pytest.mark.parametrize(("alpha_in_optimizer", "frozen_in_optimizer"), LAYOUTS)
def test_gs503_twin_zero_grad_every_step(alpha_in_optimizer: bool, frozen_in_optimizer: bool) -> None:
    scope, model = _gs503_run(True, alpha_in_optimizer, frozen_in_optimizer)
    assert only(scope.findings, "GS503") == []
    rec = _record(scope)
    assert (rec.steps_checked, rec.steps_with_stale_gradients) == (4, 0)
    # the scalar outside the optimizer piles up gradients by design: no zero_grad() of it ran
    assert rec.watched_parameter != "alpha" or alpha_in_optimizer
    if not alpha_in_optimizer:
        assert model.alpha.grad is not None and only(scope.findings, "GS303")


def test_a_trainer_that_zeroes_before_its_step_callback_still_gets_the_check() -> None:
    """HF's Trainer zeroes the gradients before its step-end callback ticks a manual clock: the
    sentinel is chosen right after the first backward, while the gradients are there."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt, step_on="manual") as scope:
        for step in range(4):
            x, y = _batch(step)
            F.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
            scope.step()
    rec = _record(scope)
    assert rec.steps_checked == 3 and rec.steps_with_stale_gradients == 0
