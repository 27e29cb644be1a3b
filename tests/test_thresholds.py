"""Thresholds: catalog defaults, overrides through watch(thresholds=...), clear errors."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.scope import watch
from gradscope.thresholds import Thresholds


def test_defaults_are_the_catalog_numbers() -> None:
    t = Thresholds()
    assert t.vanishing_ratio == 1e4 and t.vanishing_floor == 1e-8
    assert t.exploding_norm == 1e3 and t.exploding_growth == 1e2
    assert t.dead_fraction == 0.5
    assert (t.update_ratio_low, t.update_ratio_high) == (1e-5, 1e-1)
    assert t.hooks_growth_samples == 3
    assert t.clip_rate == 0.9 and t.value_saturation == 0.1


def test_of_accepts_none_an_instance_and_a_mapping() -> None:
    assert Thresholds.of(None) == Thresholds()
    custom = Thresholds(dead_fraction=0.9)
    assert Thresholds.of(custom) is custom
    t = Thresholds.of({"exploding_norm": 10, "hooks_growth_samples": 5})
    assert t.exploding_norm == 10.0 and isinstance(t.exploding_norm, float)
    assert t.hooks_growth_samples == 5
    assert t.vanishing_ratio == 1e4, "the others keep their defaults"


def test_unknown_threshold_names_are_a_clear_error() -> None:
    with pytest.raises(GradscopeError) as info:
        Thresholds.of({"exploding": 10})
    msg = str(info.value)
    assert "'exploding'" in msg and "exploding_norm" in msg, msg


def test_watch_rejects_unknown_thresholds_before_attaching() -> None:
    model = nn.Linear(2, 2)
    with pytest.raises(GradscopeError, match="unknown threshold"):
        watch(model, thresholds={"dead_fractoin": 0.1})
    assert not model._forward_hooks and not model.weight._post_accumulate_grad_hooks


def _dead_relu_run(thresholds: dict[str, float] | None) -> list[str]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():  # 6 of 8 units can never activate: 75% dead
        model[0].bias[:6] = -100.0
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with watch(model, opt, thresholds=thresholds) as scope:
        for _ in range(5):
            opt.zero_grad()
            model(torch.randn(16, 4)).pow(2).mean().backward()
            opt.step()
    return [f.code for f in scope.findings]


def test_moving_a_threshold_flips_a_finding() -> None:
    assert "GS207" in _dead_relu_run(None)
    assert "GS207" not in _dead_relu_run({"dead_fraction": 0.8})
    assert "GS207" in _dead_relu_run({"dead_fraction": 0.7})


@pytest.mark.parametrize("value", [float("nan"), "nan", "NaN"], ids=["float", "text", "capitalised"])
def test_a_nan_threshold_is_refused_before_attaching(value: float | str) -> None:
    """NaN compares false with everything: accepted, it would turn its check off in silence."""
    model = nn.Linear(2, 2)
    with pytest.raises(GradscopeError, match="exploding_norm=nan: expected a number.*never fire"):
        watch(model, thresholds={"exploding_norm": value})
    assert not model._forward_hooks and not model.weight._post_accumulate_grad_hooks
    with pytest.raises(GradscopeError, match="dead_fraction=nan"):
        Thresholds(dead_fraction=float("nan"))


def test_infinity_is_an_explicit_no_limit_and_an_int_threshold_says_so() -> None:
    assert Thresholds.of({"exploding_norm": "inf"}).exploding_norm == float("inf")
    with pytest.raises(GradscopeError, match="hooks_growth_samples=inf: expected an int"):
        Thresholds.of({"hooks_growth_samples": float("inf")})   # int(inf) overflows: still a clear error
