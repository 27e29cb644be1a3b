"""Update-to-weight ratio (GS208): sampled ||dW|| / ||W|| per layer against a hand computation, and
the finding's specimens and healthy twin."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gradscope.records import UpdateRatioRecord
from gradscope.scope import watch


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))


def _layer_norm(tensors: list[torch.Tensor]) -> float:
    return float(torch.cat([t.flatten() for t in tensors]).norm())


def _ratio(delta: float, weight: float) -> float:
    """``||dW|| / ||W||``, NaN where ``||W||`` is 0 (a ratio to nothing is undefined)."""
    return delta / weight if weight > 0 else math.nan


def _train(lr: float, steps: int, every: int, optimizer: str = "sgd", zero: str | None = None,
           **options: Any) -> tuple[Any, dict[int, dict[str, float]]]:
    torch.manual_seed(0)
    model = _mlp()
    if zero is not None:  # a zero-initialised layer
        with torch.no_grad():
            for p in model.get_submodule(zero).parameters():
                p.zero_()
    opt = (torch.optim.SGD(model.parameters(), lr=lr) if optimizer == "sgd"
           else torch.optim.Adam(model.parameters(), lr=lr))
    layers = {name: list(m.parameters(recurse=False)) for name, m in model.named_modules()
              if list(m.parameters(recurse=False))}
    want: dict[int, dict[str, float]] = {}
    g = torch.Generator().manual_seed(0)
    with watch(model, opt, update_ratio_every=every, **options) as scope:
        for step in range(steps):
            opt.zero_grad()
            x = torch.randn(16, 8, generator=g)
            nn.functional.mse_loss(model(x), x[:, :1]).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            before = {n: [p.detach().clone() for p in ps] for n, ps in layers.items()}
            opt.step()
            want[step] = {n: _ratio(_layer_norm([p.detach() - b for p, b in zip(ps, before[n])]),
                                    _layer_norm(before[n]))
                          for n, ps in layers.items()}
    return scope, want


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_ratios_equal_a_hand_computation_at_the_sampled_steps(optimizer: str) -> None:
    scope, want = _train(lr=1e-2, steps=10, every=3, optimizer=optimizer)
    rec = scope.records["update_ratio"]
    assert rec.steps == [0, 1, 2, 3, 6, 9]  # 0, 1, 2, 4, ... below `every`, then every `every`-th
    assert rec.layers == ["0", "2", "4"]
    assert rec.ratios.shape == (len(rec.steps), len(rec.layers))
    for row, step in zip(rec.ratios.tolist(), rec.steps):
        assert row == pytest.approx([want[step][n] for n in rec.layers], rel=1e-4), step


@pytest.mark.parametrize("zero,moves", [("4", True), ("2", False)],
                         ids=["zero-head-starts-to-move", "zero-hidden-stays-zero"])
def test_a_layer_whose_weights_are_zero_has_no_ratio(zero: str, moves: bool) -> None:
    """A ratio to a zero weight norm is undefined: NaN, not 0 (still zero) or inf (moved off 0)."""
    scope, want = _train(lr=1e-2, steps=4, every=1, zero=zero)
    rec = scope.records["update_ratio"]
    assert rec.steps == [0, 1, 2, 3] and rec.layers == ["0", "2", "4"]
    j = rec.layers.index(zero)
    column = rec.ratios[:, j]
    assert math.isnan(column[0]), "||W|| was 0 before the first step"
    if moves:  # the head gets a gradient from its input and leaves zero at once
        assert np.isfinite(column[1:]).all() and (column[1:] > 0).all()
    else:  # behind a ReLU whose output is 0, it gets no gradient and stays at zero
        assert np.isnan(column).all()
        assert not [f for f in scope.findings if f.code == "GS208" and f.where == zero], \
            "an undefined ratio is not judged small or large"
    for row, step in zip(rec.ratios.tolist(), rec.steps):
        assert row == pytest.approx([want[step][n] for n in rec.layers], rel=1e-4, nan_ok=True), step
    back = UpdateRatioRecord.from_json(rec.to_json())
    np.testing.assert_array_equal(back.ratios, rec.ratios)  # NaN survives JSON, in place


def test_gs208_a_learning_rate_of_10_is_flagged_large() -> None:
    scope, _ = _train(lr=10.0, steps=4, every=1)
    found = [f for f in scope.findings if f.code == "GS208"]
    assert found and all("this is large" in f.message for f in found)
    assert {f.where for f in found} <= {"0", "2", "4"}


def test_gs208_a_learning_rate_of_1e_minus_3_is_healthy() -> None:
    scope, _ = _train(lr=1e-3, steps=4, every=1)
    assert not [f for f in scope.findings if f.code == "GS208"]


def test_gs208_a_tiny_learning_rate_is_flagged_small() -> None:
    scope, _ = _train(lr=1e-9, steps=4, every=1)
    found = [f for f in scope.findings if f.code == "GS208"]
    assert found and all("this is small" in f.message for f in found)


def test_gs208_thresholds_move_the_verdict() -> None:
    scope, _ = _train(lr=1e-3, steps=4, every=1, thresholds={"update_ratio_high": 1e-6})
    assert [f for f in scope.findings if f.code == "GS208"]
    scope, _ = _train(lr=10.0, steps=4, every=1, thresholds={"update_ratio_high": 1e9})
    assert not [f for f in scope.findings if f.code == "GS208"]


def test_no_optimizer_or_every_0_means_no_update_ratio() -> None:
    scope, _ = _train(lr=1e-2, steps=2, every=0)
    assert "update_ratio" not in scope.records
    model = _mlp()
    with watch(model, update_ratio_every=1) as scope:
        model(torch.randn(2, 8)).sum().backward()
    assert "update_ratio" not in scope.records


def test_samples_stay_bounded() -> None:
    scope, _ = _train(lr=1e-3, steps=30, every=1, max_kept_steps=8, flush_every=4)
    steps = scope.records["update_ratio"].steps
    assert len(steps) <= 8 and steps[0] == 0
    assert len({b - a for a, b in zip(steps, steps[1:])}) == 1, "evenly spaced"
