"""Hooks: GS601 (hooks piling up) and GS602 (a user hook that replaced a gradient), each with a
healthy twin; user hooks keep working and are given back unwrapped."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn

from gradscope.scope import watch


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def _train(model: nn.Module, each_step: Callable[[int, nn.Module, torch.optim.Optimizer], None] | None = None,
           steps: int = 8, watched: bool = True, **options: Any) -> Any:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(0)

    def loop() -> None:
        for step in range(steps):
            opt.zero_grad()
            if each_step is not None:
                each_step(step, model, opt)
            model(torch.randn(6, 4, generator=g)).pow(2).mean().backward()
            opt.step()

    if not watched:
        loop()
        return None
    with watch(model, opt, **options) as scope:
        loop()
    return scope


def _codes(scope: Any, code: str) -> list:
    return [f for f in scope.findings if f.code == code]


def _noop_forward_hook(_m: nn.Module, _a: Any, _o: Any) -> None:
    return None


def _noop_tensor_hook(_g: torch.Tensor) -> None:
    return None


# ---- GS601 ---------------------------------------------------------------------------------------------


def _pile_on_module(step: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    model[0].register_forward_hook(_noop_forward_hook)


def _pile_on_parameter(step: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    model[2].weight.register_hook(_noop_tensor_hook)


def _pile_on_optimizer(step: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.register_step_post_hook(lambda *a: None)


@pytest.mark.parametrize("pile,where", [(_pile_on_module, "0"), (_pile_on_parameter, "2.weight"),
                                        (_pile_on_optimizer, "0 (SGD)")],
                         ids=["module", "parameter", "optimizer"])
def test_gs601_a_hook_registered_every_step_is_flagged(pile: Callable[..., None], where: str) -> None:
    torch.manual_seed(0)
    [f] = _codes(_train(_mlp(), pile), "GS601")
    assert f.where == where
    assert "after step 0" in f.message and "8 after step 7" in f.message


def test_gs601_healthy_twin_registered_once() -> None:
    torch.manual_seed(0)
    model = _mlp()
    model[0].register_forward_hook(_noop_forward_hook)
    model[2].weight.register_hook(_noop_tensor_hook)
    scope = _train(model, activations="all", strict=True)
    assert not _codes(scope, "GS601")
    counts = scope.records["hooks"].hook_counts
    assert counts == {"module 0": 1, "parameter 2.weight": 1}, "gradscope's own hooks are not counted"


def test_gs601_healthy_twin_removed_every_step() -> None:
    torch.manual_seed(0)
    handles: list[Any] = []

    def register_and_remove(step: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        while handles:
            handles.pop().remove()
        handles.append(model[0].register_forward_hook(_noop_forward_hook))
        handles.append(model[2].weight.register_hook(_noop_tensor_hook))

    assert not _codes(_train(_mlp(), register_and_remove), "GS601")


def test_gs601_growth_seen_at_flushes_after_the_first_steps() -> None:
    torch.manual_seed(0)

    def late_pile(step: int, model: nn.Module, opt: torch.optim.Optimizer) -> None:
        if step >= 12:
            model[0].register_forward_hook(_noop_forward_hook)

    scope = _train(_mlp(), late_pile, steps=40, flush_every=5)
    assert [f.where for f in _codes(scope, "GS601")] == ["0"]


def test_gs601_threshold_moves_the_verdict() -> None:
    torch.manual_seed(0)
    assert not _codes(_train(_mlp(), _pile_on_module, thresholds={"hooks_growth_samples": 50}), "GS601")


# ---- GS602 ---------------------------------------------------------------------------------------------


def _double(g: torch.Tensor) -> torch.Tensor:
    return g * 2


def _identity(g: torch.Tensor) -> torch.Tensor:
    return g


@pytest.mark.parametrize("register_inside", [False, True], ids=["before-watch", "after-watch"])
def test_gs602_a_parameter_hook_returning_a_new_gradient(register_inside: bool) -> None:
    torch.manual_seed(0)
    model = _mlp()
    if not register_inside:
        model[2].weight.register_hook(_double)
    added: list[bool] = []

    def add_once(step: int, m: nn.Module, opt: torch.optim.Optimizer) -> None:
        if register_inside and not added:
            added.append(True)
            m[2].weight.register_hook(_double)

    [f] = _codes(_train(model, add_once), "GS602")
    assert f.where == "2.weight" and "tensor hook" in f.message
    times = 8 if not register_inside else 7  # registered inside: wrapped from the end of step 0 on
    assert f"{times} time(s)" in f.message


@pytest.mark.parametrize("hook", [_noop_tensor_hook, _identity], ids=["returns-None", "returns-the-same-tensor"])
def test_gs602_healthy_twin(hook: Callable[[torch.Tensor], Any]) -> None:
    torch.manual_seed(0)
    model = _mlp()
    model[2].weight.register_hook(hook)
    assert not _codes(_train(model), "GS602")


def test_gs602_module_backward_hooks() -> None:
    torch.manual_seed(0)
    model = _mlp()
    model[2].register_full_backward_hook(lambda m, gi, go: tuple(g * 2 for g in gi))
    model[0].register_full_backward_pre_hook(lambda m, go: tuple(g * 3 for g in go))
    found = {f.where: f.message for f in _codes(_train(model), "GS602")}
    assert set(found) == {"0", "2"}
    assert "module full backward hook" in found["2"] and "module backward pre-hook" in found["0"]


def test_gs602_module_hooks_that_return_what_they_got_are_healthy() -> None:
    torch.manual_seed(0)
    model = _mlp()
    model[2].register_full_backward_hook(lambda m, gi, go: gi)
    model[2].register_full_backward_hook(lambda m, gi, go: None)
    model[0].register_full_backward_pre_hook(lambda m, go: go)
    assert not _codes(_train(model), "GS602")


def test_user_hooks_still_act_and_are_restored_to_the_original_functions() -> None:
    def module_hook(m: nn.Module, gi: tuple, go: tuple) -> tuple:
        return tuple(None if g is None else g * 0.5 for g in gi)

    def pre_hook(m: nn.Module, go: tuple) -> tuple:
        return tuple(g * 3 for g in go)

    def setup() -> tuple[nn.Module, dict[str, Any]]:
        torch.manual_seed(0)
        model = _mlp()
        hs = {"tensor": model[2].weight.register_hook(_double),
              "module": model[2].register_full_backward_hook(module_hook),
              "pre": model[0].register_full_backward_pre_hook(pre_hook)}
        return model, hs

    twin, _ = setup()
    _train(twin, watched=False)
    model, handles = setup()
    scope = _train(model, activations="all")
    assert len(_codes(scope, "GS602")) == 3
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b), "the hooks changed the gradients exactly as without gradscope"
    assert model[2].weight._backward_hooks[handles["tensor"].id] is _double
    assert model[2]._backward_hooks[handles["module"].id] is module_hook
    assert model[0]._backward_pre_hooks[handles["pre"].id] is pre_hook
    # and the user's handles still remove them
    for h in handles.values():
        h.remove()
    assert not model[2].weight._backward_hooks and not model[2]._backward_hooks
    assert not model[0]._backward_pre_hooks


def test_a_hook_removed_by_the_user_while_watched_stays_removed() -> None:
    torch.manual_seed(0)
    model = _mlp()
    handle = model[2].weight.register_hook(_double)

    def remove_at_3(step: int, m: nn.Module, opt: torch.optim.Optimizer) -> None:
        if step == 3:
            handle.remove()

    scope = _train(model, remove_at_3)
    assert not model[2].weight._backward_hooks
    [f] = _codes(scope, "GS602")
    assert "3 time(s)" in f.message
