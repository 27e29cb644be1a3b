"""Dead ReLU units (GS207): specimen, healthy twin, and the fraction checked by hand."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from gradscope.probes.dead_units import alive_units, unit_dim
from gradscope.records import DeadUnits
from gradscope.scope import watch


def _mlp(dead_bias: float | None) -> nn.Sequential:
    model = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 1))
    if dead_bias is not None:
        with torch.no_grad():
            model[0].bias.fill_(dead_bias)
    return model


def _train(model: nn.Module, steps: int, in_shape: tuple[int, ...] = (16, 4), **options: Any) -> Any:
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)
    with watch(model, opt, **options) as scope:
        for _ in range(steps):
            opt.zero_grad()
            model(torch.randn(in_shape, generator=g)).float().pow(2).mean().backward()
            opt.step()
    return scope


def _layer(scope: Any, module: str, units: int) -> DeadUnits:
    """The dead-unit entry of ``module`` at width ``units`` (the old ``"module[units]"`` key)."""
    [layer] = [d for d in scope.records["dead_units"].layers if d.module == module and d.units == units]
    return layer


def _gs207(scope: Any) -> list:
    return [f for f in scope.findings if f.code == "GS207"]


@pytest.mark.parametrize("seed", [0, 1])
def test_gs207_bias_of_minus_100_kills_every_unit(seed: int) -> None:
    torch.manual_seed(seed)
    [f] = _gs207(_train(_mlp(dead_bias=-100.0), steps=12))
    assert f.where == "1" and "32 of 32 units (100%)" in f.message and "2 training batches" in f.message
    torch.manual_seed(seed)
    assert not _gs207(_train(_mlp(dead_bias=None), steps=12))


def test_gs207_in_a_cnn_counts_channels() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 1))
    with torch.no_grad():
        model[0].bias[:4] = -100.0
    scope = _train(model, steps=3, in_shape=(2, 1, 8, 8), dead_units_every=1)
    [f] = _gs207(scope)
    assert "4 of 6 units" in f.message
    rec = _layer(scope, "1", 6)
    assert rec.units == 6 and rec.batches == 3 and rec.dead_fraction == pytest.approx(4 / 6)


def test_dead_fraction_equals_a_hand_count_over_the_sampled_batches() -> None:
    torch.manual_seed(0)
    model = _mlp(dead_bias=None)
    with torch.no_grad():
        model[0].bias[:10] -= 3.0  # some units fire rarely, some never
    seen: list[torch.Tensor] = []
    handle = model[1].register_forward_hook(
        lambda _m, _a, out: seen.append((out > 0).any(0)) if torch.is_grad_enabled() else None)
    scope = _train(model, steps=25, dead_units_every=5)
    handle.remove()
    sampled = seen[0::5]  # steps 0, 5, 10, 15, 20
    alive = torch.stack(sampled).any(0)
    rec = _layer(scope, "1", 32)
    assert rec.batches == 5
    assert rec.dead_fraction == pytest.approx(1.0 - alive.float().mean().item())


def test_eval_and_no_grad_forwards_do_not_count() -> None:
    torch.manual_seed(0)
    model = _mlp(dead_bias=-100.0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with watch(model, opt, dead_units_every=1) as scope:
        for _ in range(2):
            opt.zero_grad()
            model(torch.randn(8, 4)).pow(2).mean().backward()
            opt.step()
            with torch.no_grad():
                model[0].bias.add_(200.0)  # alive in evaluation only
                model(torch.randn(8, 4))
                model.eval()
                model[0].bias.sub_(200.0)
            with torch.enable_grad():
                model(torch.randn(8, 4))  # eval mode, grad on: still not a training batch
            model.train()
    rec = _layer(scope, "1", 32)
    assert rec.batches == 2 and rec.dead_fraction == 1.0
    assert _gs207(scope)


def test_dead_units_can_be_turned_off() -> None:
    torch.manual_seed(0)
    scope = _train(_mlp(dead_bias=-100.0), steps=2, dead_units_every=0)
    assert "dead_units" not in scope.records and not _gs207(scope)


@pytest.mark.parametrize("ndim,dim", [(1, 0), (2, 1), (3, 2), (4, 1), (5, 1)])
def test_unit_dimension(ndim: int, dim: int) -> None:
    assert unit_dim(ndim) == dim


def test_alive_units_of_a_sequence_use_the_feature_dimension() -> None:
    x = torch.full((2, 5, 3), -1.0)
    x[1, 4, 2] = 0.5
    assert alive_units(x).tolist() == [False, False, True]
