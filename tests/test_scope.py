"""watch(): argument checks, the promise of non-intrusion (bitwise-identical training, no hook left
behind, also after an exception) and flat memory over a long run."""
from __future__ import annotations

import gc
from typing import Any, Callable

import pytest
import torch
import torchvision
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.scope import Scope, watch


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


# ---- argument checks ----------------------------------------------------------------------------------


def test_a_model_class_instead_of_an_instance() -> None:
    with pytest.raises(GradscopeError) as info:
        watch(Net)  # type: ignore[arg-type]
    assert "got the class `Net`" in str(info.value) and "expected an instance: `Net()`" in str(info.value)


def test_something_that_is_not_a_module() -> None:
    with pytest.raises(GradscopeError, match="expected an nn.Module .* got str"):
        watch("model.pt")  # type: ignore[arg-type]


@pytest.mark.parametrize("optimizer,words", [
    (torch.optim.SGD, ["optimizer class `SGD`", "`SGD(model.parameters(), lr=1e-3)`"]),
    ("adam", ["torch.optim.Optimizer", "got str"]),
    (None, []),
], ids=["class", "string", "parameters-generator"])
def test_bad_optimizers(optimizer: Any, words: list[str]) -> None:
    model = Net()
    if optimizer is None:
        optimizer, words = model.parameters(), ["torch.optim.Optimizer", "got generator"]
    with pytest.raises(GradscopeError) as info:
        watch(model, optimizer)
    for word in words:
        assert word in str(info.value)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(GradscopeError, match="got int"):
        watch(model, [opt, 3])  # type: ignore[list-item]


def test_bad_step_on() -> None:
    model = Net()
    with pytest.raises(GradscopeError) as info:
        watch(model, step_on="epoch")
    assert "'auto', 'optimizer', 'backward' or 'manual'" in str(info.value) and "'epoch'" in str(info.value)
    with pytest.raises(GradscopeError, match="needs an optimizer"):
        watch(model, step_on="optimizer")


def test_scope_step_with_an_optimizer_clock_explains() -> None:
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt) as scope:
        with pytest.raises(GradscopeError) as info:
            scope.step()
    msg = str(info.value)
    assert "step_on='manual'" in msg and "optimizer" in msg and "Drop the step() call" in msg
    with watch(model) as scope:
        with pytest.raises(GradscopeError, match="backward"):
            scope.step()


@pytest.mark.parametrize("options,words", [
    ({"flush_every": 0}, "flush_every must be an integer >= 1"),
    ({"max_kept_steps": 1}, "max_kept_steps must be an integer >= 2"),
    ({"probes": ["grad_norms"]}, "is not a probe"),
], ids=["flush_every", "max_kept_steps", "probes"])
def test_bad_options(options: dict[str, Any], words: str) -> None:
    with pytest.raises(GradscopeError, match=words):
        watch(Net(), **options)


def test_a_scope_is_entered_once_and_closes_twice_safely() -> None:
    model = Net()
    scope = watch(model)
    with scope:
        model(torch.randn(2, 4)).sum().backward()
    scope.close()
    with pytest.raises(GradscopeError, match="entered once"):
        with scope:
            pass
    assert scope.steps == 1


# ---- no hook left behind ----------------------------------------------------------------------------


def _global_state() -> dict[str, Any]:
    mm = torch.nn.modules.module
    clip = torch.nn.utils.clip_grad
    state: dict[str, Any] = {
        "global module hooks": [len(mm._global_forward_hooks), len(mm._global_forward_pre_hooks),
                                len(mm._global_backward_hooks), len(mm._global_backward_pre_hooks)],
        "GradScaler.scale": torch.amp.GradScaler.__dict__["scale"],
    }
    for name in ("clip_grad_norm_", "clip_grad_value_", "_clip_grads_with_norm_"):
        fn = getattr(clip, name, None)
        state[name] = [c.cell_contents for c in (getattr(fn, "__closure__", None) or ())]
    state["torch.nn.utils.clip_grad_norm_"] = torch.nn.utils.clip_grad_norm_
    return state


def assert_no_hooks(model: nn.Module, optimizers: list[torch.optim.Optimizer], before: dict[str, Any]) -> None:
    for name, m in model.named_modules():
        for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
                  "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs"):
            assert not getattr(m, d), f"{d} left on module {name or 'root'}"
    for name, p in model.named_parameters():
        assert not p._backward_hooks, f"tensor hook left on {name}"
        assert not p._post_accumulate_grad_hooks, f"post-accumulate hook left on {name}"
    for opt in optimizers:
        assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    after = _global_state()
    for key, value in before.items():
        if isinstance(value, list):
            assert len(after[key]) == len(value) and all(a is b or a == b for a, b in zip(after[key], value)), key
        else:
            assert after[key] is value, key


def _bn_dropout() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.25),
                         nn.Linear(16, 16), nn.ReLU(), nn.Dropout(0.25), nn.Linear(16, 3))


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


OPTIMIZERS: dict[str, Callable[[Any], torch.optim.Optimizer]] = {
    "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.9, weight_decay=1e-4),
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-3),
}


def _train(make: Callable[[], nn.Module], opt_name: str, steps: int, watched: bool,
           shape: tuple[int, ...] = (8, 6), classes: int = 3, fail_at: int | None = None,
           **options: Any) -> tuple[nn.Module, torch.optim.Optimizer, list[torch.Tensor], torch.Tensor, Scope | None]:
    torch.manual_seed(0)
    model = make()
    opt = OPTIMIZERS[opt_name](model.parameters())
    g = torch.Generator().manual_seed(1)
    losses: list[torch.Tensor] = []

    def loop(scope: Scope | None) -> None:
        for step in range(steps):
            if fail_at == step:
                raise RuntimeError("the user's loop failed")
            x, y = torch.randn(shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)
            opt.zero_grad()
            out = model(x)
            if scope is not None:  # probed and retained tensors change nothing either
                scope.probe(out, "logits")
                scope.retain(out, "logits (retained)")
            loss = nn.functional.cross_entropy(out, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.detach())

    scope = None
    if watched:
        with watch(model, opt, activations="all", update_ratio_every=7, dead_units_every=3,
                   flush_every=16, **options) as scope:
            loop(scope)
    else:
        loop(None)
    return model, opt, losses, torch.get_rng_state(), scope


def _tensors_of(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for k in sorted(obj, key=str) for t in _tensors_of(obj[k])]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors_of(v)]
    return []


def _assert_bitwise(a: Any, b: Any, what: str) -> None:
    ta, tb = _tensors_of(a), _tensors_of(b)
    assert len(ta) == len(tb) and ta, what
    for i, (x, y) in enumerate(zip(ta, tb)):
        assert x.dtype == y.dtype and x.shape == y.shape, (what, i)
        assert torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)), (what, i)


CASES = {
    "mlp-sgd-momentum": (_mlp, "sgd-momentum"),
    "mlp-adam": (_mlp, "adam"),
    "bn-dropout-sgd-momentum": (_bn_dropout, "sgd-momentum"),
    "bn-dropout-adam": (_bn_dropout, "adam"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_training_is_bitwise_identical_with_and_without_watch(case: str) -> None:
    make, opt_name = CASES[case]
    before = _global_state()
    twin, twin_opt, twin_losses, twin_rng, _ = _train(make, opt_name, steps=50, watched=False)
    model, opt, losses, rng, scope = _train(make, opt_name, steps=50, watched=True)
    assert scope is not None and scope.steps == 50
    assert "activation_grad" in scope.records and "tensor_grad" in scope.records
    _assert_bitwise(model.state_dict(), twin.state_dict(), "parameters and buffers")
    _assert_bitwise(opt.state_dict()["state"], twin_opt.state_dict()["state"], "optimizer state")
    _assert_bitwise(losses, twin_losses, "losses")
    _assert_bitwise(rng, twin_rng, "RNG state")
    assert_no_hooks(model, [opt], before)


def test_resnet18_with_inplace_relu_is_bitwise_identical() -> None:
    before = _global_state()
    make = lambda: torchvision.models.resnet18(weights=None, num_classes=10)  # noqa: E731
    twin, twin_opt, *_ = _train(make, "sgd-momentum", steps=2, watched=False, shape=(2, 3, 32, 32), classes=10)
    model, opt, *_ = _train(make, "sgd-momentum", steps=2, watched=True, shape=(2, 3, 32, 32), classes=10)
    _assert_bitwise(model.state_dict(), twin.state_dict(), "parameters and buffers")
    _assert_bitwise(opt.state_dict()["state"], twin_opt.state_dict()["state"], "optimizer state")
    assert_no_hooks(model, [opt], before)


def test_every_hook_is_removed_after_an_exception_in_the_body() -> None:
    before = _global_state()
    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="the user's loop failed"):
        _train(_bn_dropout, "adam", steps=10, watched=True, fail_at=4, strict=True)
    # the model is gone with the frame: repeat with one we keep
    model = _bn_dropout()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    error = ValueError("boom")
    with pytest.raises(ValueError) as info:
        with watch(model, opt, activations="all", strict=True) as scope:
            for step in range(3):
                opt.zero_grad()
                nn.functional.cross_entropy(model(torch.randn(4, 6)), torch.tensor([0, 1, 2, 0])).backward()
                if step == 2:
                    raise error  # between backward and optimizer.step()
                opt.step()
    assert info.value is error, "the user's exception comes out unchanged"
    assert scope.steps == 3, "the step cut short is still recorded"
    assert scope.records["grad_norm"].steps == [0, 1, 2]
    assert_no_hooks(model, [opt], before)


def test_an_exception_inside_forward_and_backward_also_detaches() -> None:
    before = _global_state()

    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.fc(x)
            h.register_hook(lambda g: (_ for _ in ()).throw(KeyError("in backward")))
            return h

    model = Boom()
    with pytest.raises(KeyError):
        with watch(model, activations="all"):
            model(torch.randn(2, 4)).sum().backward()
    assert_no_hooks(model, [], before)


# ---- memory ------------------------------------------------------------------------------------------


def _live_tensors() -> int:
    gc.collect()
    # type(), not isinstance(): some deprecated torch objects warn when their __class__ is read
    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def test_memory_stays_flat_over_5000_steps() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x, y = torch.randn(4, 4), torch.randn(4, 1)
    counts: dict[int, int] = {}
    with watch(model, opt, max_kept_steps=64) as scope:
        for step in range(1, 5001):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            if step in (1000, 3000, 5000):
                scope.records  # noqa: B018  (a flush that also merges the kept rows)
                counts[step] = _live_tensors()
    assert counts[3000] <= counts[1000] and counts[5000] <= counts[1000], counts
    rec = scope.records["grad_norm"]
    assert len(rec.steps) <= 64 and rec.parameter_stats.row(rec.parameters.index("0.weight")).count == 5000
    assert rec.steps[0] == 0 and rec.steps[-1] >= 5000 - 2 * rec.stride


# ---- many tensors: the steady path has no Python call per parameter ----------------------------------
def _grad_norms(scope: Scope) -> dict[int, list[float]]:
    rec = scope.records["grad_norm"]
    return {step: row.tolist() for step, row in zip(rec.steps, rec.parameter_norms)}


def test_after_the_first_backward_only_sentinel_parameters_keep_a_hook() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(4, 4) for _ in range(20)])   # 40 parameter tensors
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 4)
    expected: dict[int, list[float]] = {}
    with watch(model, opt) as scope:
        for step in range(4):
            opt.zero_grad()
            model(x).square().mean().backward()
            expected[step] = [float(p.grad.norm()) for p in model.parameters()]
            opt.step()
            if step == 0:
                assert len(scope._param_hooks) == 2   # the first and last in backward order
    assert scope.run.backwards == 4 and scope.run.step == 4
    assert scope.run.backward_order[:2] == [39, 38]   # the output side first
    got = _grad_norms(scope)
    for step in range(4):
        assert got[step] == pytest.approx(expected[step], rel=1e-6)


def test_backward_passes_that_skip_the_models_output_still_tick() -> None:
    """``model.forward(x)`` runs no module hook of the root, and an auxiliary loss on an inner
    layer's output never passes through the root's output: the sentinels see both."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 4)
    with watch(model, opt, step_on="backward") as scope:
        model(x).square().mean().backward()          # records the order
        model.forward(x).square().mean().backward()  # no root hook runs
        model[1](model[0](x)).square().mean().backward()   # reaches the input side only
    assert scope.run.backwards == 3
    rec = scope.records["grad_norm"]
    assert rec.steps == [0, 1, 2]


def test_an_unreached_parameter_keeps_its_hook_until_it_is_reached() -> None:
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(4, 4), "b": nn.Linear(4, 4), "c": nn.Linear(4, 4)})
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 4)
    with watch(model, opt, step_on="backward") as scope:
        model["b"](model["a"](x)).sum().backward()   # c unreached: its two tensors keep their hooks
        kept = set(scope._param_hooks)
        model["c"](x).sum().backward()                 # a backward through c alone
    names = scope.run.param_names
    assert {names[i] for i in kept} >= {"c.weight", "c.bias"}
    assert scope.run.backwards == 2


@pytest.mark.parametrize(("every", "steps"), [(1, [0, 1, 2, 3, 4, 5, 6]), (3, [0, 1, 2, 3, 6])])
def test_grad_norm_every_reads_the_norms_on_sampled_steps(every: int, steps: list[int]) -> None:
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    expected: dict[int, list[float]] = {}
    with watch(model, opt, grad_norm_every=every) as scope:
        for step in range(7):
            opt.zero_grad()
            model(torch.randn(8, 6)).square().mean().backward()
            expected[step] = [float(p.grad.norm()) for p in model.parameters() if p.requires_grad]
            opt.step()
    got = _grad_norms(scope)
    assert sorted(got) == steps
    for step in steps:
        assert got[step] == pytest.approx(expected[step], rel=1e-6)


def test_models_with_thousands_of_tensors_are_sampled_by_default_and_strict_reads_every_step() -> None:
    model = nn.Sequential(*[nn.Linear(2, 2) for _ in range(1001)])   # 2,002 tensors
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt) as scope:
        pass
    assert scope.get_probe("grad_norm").every == 2   # type: ignore[union-attr]
    with watch(model, opt, strict=True) as scope:
        pass
    assert scope.get_probe("grad_norm").every == 1   # type: ignore[union-attr]


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3"])
def test_a_bad_grad_norm_every_is_refused(value: Any) -> None:
    with pytest.raises(GradscopeError, match="grad_norm_every must be an integer >= 1 or None"):
        watch(nn.Linear(2, 2), grad_norm_every=value)


def test_begin_step_gives_a_manual_clock_its_update_ratios() -> None:
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    expected = []
    with watch(model, opt, step_on="manual", update_ratio_every=1) as scope:
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(8, 6)).square().mean().backward()
            before = [p.detach().clone() for p in model.parameters()]
            scope.begin_step()
            opt.step()
            scope.step()
            layers = [[0, 1], [2, 3], [4, 5]]   # weight and bias of each Linear
            after = [p.detach() for p in model.parameters()]
            expected.append([
                float(torch.stack([(after[i] - before[i]).norm() for i in ix]).norm()
                      / torch.stack([before[i].norm() for i in ix]).norm()) for ix in layers])
    rec = scope.records["update_ratio"]
    assert rec.steps == [0, 1, 2]
    assert rec.ratios.tolist() == [pytest.approx(row, rel=1e-5) for row in expected]
    with pytest.raises(GradscopeError, match="begin_step\\(\\) is for step_on='manual'"):
        with watch(model, opt) as other:
            other.begin_step()
