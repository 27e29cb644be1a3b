"""The loss probe against the losses the loop computed (read here with ``.item()`` after the fact,
which gradscope itself may not do), the bounded record, the ``backward`` patch, and GS206 for a
loss that is non-finite while the gradients stay finite (a mask hides it), with a healthy twin."""
from __future__ import annotations

import contextlib
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradscope.findings import Finding, Severity
from gradscope.records import LossRecord
from gradscope.scope import Scope, watch

ToLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _regression(seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    return nn.Linear(4, 1), torch.randn(64, 4, generator=g), torch.randn(64, 1, generator=g) + 3.0


def _train(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, steps: int,
           **options: int) -> tuple[Scope, list[torch.Tensor]]:
    """``steps`` plain SGD steps under ``watch``; returns the scope and the losses the loop made."""
    losses: list[torch.Tensor] = []
    with watch(model, opt, **options) as scope:
        for _ in range(steps):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    return scope, losses


def _loss(scope: Scope) -> LossRecord:
    rec = scope.records["loss"]
    assert isinstance(rec, LossRecord)
    return rec


def _gs206(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.code == "GS206"]


# ---- the values ----------------------------------------------------------------------------------
@pytest.mark.parametrize("flush_every", [
    pytest.param(1, id="a flush after every step"),
    pytest.param(7, id="flushes that do not divide the run"),
    pytest.param(100, id="one flush at the end"),
])
def test_recorded_losses_equal_the_losses_the_loop_computed(flush_every: int) -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    scope, losses = _train(model, opt, x, y, 20, flush_every=flush_every)
    rec = _loss(scope)
    expected = [t.item() for t in losses]
    assert rec.steps == list(range(20))
    assert rec.loss.tolist() == expected   # float32 losses, exactly
    assert (rec.stats.count, rec.stats.min, rec.stats.max) == (20, min(expected), max(expected))
    assert rec.stats.mean == pytest.approx(sum(expected) / 20, rel=1e-12)
    assert rec.stats.first_nonfinite_step is None
    saved = scope.to_record().probe(LossRecord)
    assert saved is not None and saved.loss.tolist() == expected


def test_accumulated_micro_batch_losses_are_summed_per_step_also_across_a_read_in_mid_step() -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    sums: list[float] = []
    with watch(model, opt, flush_every=3) as scope:
        for step in range(7):
            opt.zero_grad()
            total = torch.zeros(())   # float32, added in the order the probe adds
            for k in range(2):
                micro = F.mse_loss(model(x[k::2]), y[k::2]) / 2
                micro.backward()
                total += micro.detach()
                if step == 4 and k == 0:
                    assert scope.records["loss"].steps == [0, 1, 2, 3]  # a read flushes in mid-step
            opt.step()
            sums.append(total.item())
    assert _loss(scope).loss.tolist() == sums


def test_a_bounded_record_keeps_evenly_spaced_steps_and_statistics_over_all_of_them() -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    scope, losses = _train(model, opt, x, y, 40, max_kept_steps=8, flush_every=5)
    rec = _loss(scope)
    expected = [t.item() for t in losses]
    assert rec.steps == [0, 8, 16, 24, 32]   # thinned by doubling strides, never above 8 rows
    assert rec.loss.tolist() == [expected[s] for s in rec.steps]
    assert (rec.stats.count, rec.stats.min, rec.stats.max) == (40, min(expected), max(expected))
    assert rec.stats.mean == pytest.approx(sum(expected) / 40, rel=1e-12)


# ---- falling() on real runs ------------------------------------------------------------------------
def test_falling_is_true_for_a_run_that_learns() -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    scope, losses = _train(model, opt, x, y, 30)
    assert losses[-1].item() < 0.5 * losses[0].item()   # plain torch: it learns
    assert _loss(scope).falling() is True


@pytest.mark.parametrize("fresh_batches", [
    pytest.param(False, id="the same batch every step gives a flat loss"),
    pytest.param(True, id="a new batch every step gives a noisy loss"),
])
def test_falling_is_false_for_a_run_that_does_not_learn(fresh_batches: bool) -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    g = torch.Generator().manual_seed(1)
    with watch(model, opt) as scope:
        for _ in range(30):
            if fresh_batches:
                x, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
    assert _loss(scope).falling() is False


def test_falling_needs_ten_values() -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    scope, losses = _train(model, opt, x, y, 9)
    assert losses[-1].item() < 0.5 * losses[0].item()
    assert _loss(scope).falling() is None


# ---- which backward passes count -------------------------------------------------------------------
def test_a_backward_that_reaches_another_model_is_not_this_scopes_loss() -> None:
    model, x, y = _regression()
    other = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    opt_other = torch.optim.SGD(other.parameters(), lr=0.02)
    mine: list[float] = []
    theirs: list[float] = []
    with watch(model, opt) as scope, watch(other, opt_other) as scope_other:
        for _ in range(5):
            opt.zero_grad()
            opt_other.zero_grad()
            loss_other = F.mse_loss(other(x), -y)
            loss_other.backward()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            opt_other.step()
            mine.append(loss.item())
            theirs.append(loss_other.item())
    assert _loss(scope).loss.tolist() == mine
    assert _loss(scope_other).loss.tolist() == theirs


def test_a_backward_from_a_non_scalar_root_is_no_loss() -> None:
    model, x, _ = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    with watch(model, opt) as scope:
        for _ in range(3):
            opt.zero_grad()
            out = model(x)
            out.backward(torch.ones_like(out))   # y.backward(v): a vector-Jacobian product
            opt.step()
    assert scope.steps == 3 and "loss" not in scope.records


@pytest.mark.parametrize("raises", [pytest.param(False, id="a block that ends"),
                                    pytest.param(True, id="a block that raises")])
def test_the_backward_patch_is_removed_when_the_scope_exits(raises: bool) -> None:
    original = torch.autograd.backward
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    with pytest.raises(RuntimeError, match="user error") if raises else contextlib.nullcontext():
        with watch(model, opt):
            assert torch.autograd.backward is not original
            F.mse_loss(model(x), y).backward()
            if raises:
                raise RuntimeError("user error")
    assert torch.autograd.backward is original


def test_under_a_grad_scaler_the_recorded_loss_is_the_unscaled_loss() -> None:
    model, x, y = _regression()
    opt = torch.optim.SGD(model.parameters(), lr=0.02)
    scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=1)  # the scale doubles every step
    losses: list[float] = []
    with watch(model, opt) as scope:
        for _ in range(12):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    rec = _loss(scope)
    assert rec.loss.tolist() == pytest.approx(losses, rel=1e-6)
    assert rec.falling() is True


# ---- GS206: a non-finite loss whose gradient is finite ---------------------------------------------
def _masked_fill(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return logits.masked_fill(mask, float("-inf"))


def _where(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, torch.full_like(logits, float("-inf")), logits)


TARGETS = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def _masked_run(mask_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], masked_class: int
                ) -> tuple[Scope, list[float], bool]:
    """Cross-entropy on logits with one entry of sample 0 masked to -inf, outside the model (an
    attention or vocabulary mask). Returns the scope, the losses and whether every gradient the
    model received was finite (read with plain torch)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(8, 3, dtype=torch.bool)
    mask[0, masked_class] = True
    losses: list[float] = []
    finite = True
    with watch(model, opt) as scope:
        for _ in range(3):
            opt.zero_grad()
            loss = F.cross_entropy(mask_logits(model(x), mask), TARGETS)
            loss.backward()
            finite &= all(bool(torch.isfinite(p.grad).all()) for p in model.parameters() if p.grad is not None)
            opt.step()
            losses.append(loss.item())
    return scope, losses, finite


@pytest.mark.parametrize("mask_logits", [pytest.param(_masked_fill, id="masked_fill"),
                                         pytest.param(_where, id="torch.where")])
def test_gs206_a_mask_on_the_target_class_gives_an_infinite_loss_with_finite_gradients(
        mask_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    scope, losses, finite = _masked_run(mask_logits, masked_class=int(TARGETS[0]))
    assert losses == [float("inf")] * 3 and finite   # plain torch: the loss is inf, the gradient is not
    (f,) = _gs206(scope.findings)
    assert (f.severity, f.where) == (Severity.ERROR, "loss")
    assert "the loss was non-finite at step 0 while the gradients reaching the model stayed finite" in f.message
    rec = _loss(scope)
    assert rec.stats.first_nonfinite_step == 0 and rec.stats.count == 0


@pytest.mark.parametrize("mask_logits", [pytest.param(_masked_fill, id="masked_fill"),
                                         pytest.param(_where, id="torch.where")])
def test_gs206_twin_a_mask_on_another_class_leaves_the_loss_finite(
        mask_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    scope, losses, finite = _masked_run(mask_logits, masked_class=int(TARGETS[0]) + 1)
    assert all(torch.isfinite(torch.tensor(losses))) and finite
    assert _gs206(scope.findings) == []
    assert _loss(scope).loss.tolist() == losses


def test_gs206_a_loss_whose_gradient_is_non_finite_too_is_reported_once() -> None:
    # log(0): the loss and the gradient reaching the output are both inf. The non-finite probe
    # says so; the masked-loss rule must not add a second GS206 about the same loss.
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    with watch(model, opt) as scope:
        opt.zero_grad()
        loss = torch.log(model(x).sum() * 0).abs()
        loss.backward()
        opt.step()
    assert loss.item() == float("inf")
    (f,) = [f for f in _gs206(scope.findings) if f.where == "loss"]
    assert "the loss became non-finite at step 0 while the model's output was finite" in f.message
