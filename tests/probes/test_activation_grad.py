"""Activation gradients (module outputs, scope.probe, scope.retain) against plain retain_grad, and
proof that gradscope's tensor hooks never replace a gradient."""
from __future__ import annotations

from typing import Any, Callable

import pytest
import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.probes.outputs import first_grad_tensor
from gradscope.runner import notes_cnn
from gradscope.scope import watch


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.block = nn.Sequential(nn.Tanh(), nn.Linear(12, 12), nn.ReLU())
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.block(self.fc1(x)))


def _cnn() -> nn.Module:
    """The notes' CNN, as `gradscope run` trains it by default."""
    return notes_cnn()


MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int]] = {
    "nested-mlp": (Nested, (4, 6), 3),
    "cnn": (_cnn, (2, 1, 28, 28), 10),
    "lstm": (LSTMNet, (3, 5, 4), 3),
}


def _retain_outputs(model: nn.Module, names: list[str]) -> tuple[dict[str, list[torch.Tensor]], list[Any]]:
    """Plain PyTorch: retain_grad() on each named module's output, every call."""
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        def hook(_m: nn.Module, _a: Any, out: Any, name: str = name) -> None:
            t = first_grad_tensor(out)
            t.retain_grad()
            kept[name].append(t)
        handles.append(modules[name].register_forward_hook(hook))
    return kept, handles


def _expected_names(model: nn.Module, spec: Any) -> list[str]:
    if spec == "all":
        return [n for n, m in model.named_modules() if n and not list(m.children())]
    out = []
    for n, m in model.named_modules():
        if n and any((isinstance(s, str) and s == n) or (isinstance(s, type) and isinstance(m, s)) for s in spec):
            out.append(n)
    return out


SPECS = {
    "all": "all",
    "names": ["fc1", "block.1"],
    "classes": [nn.Linear, nn.ReLU],
}


def _check(model_name: str, spec: Any) -> None:
    make, shape, classes = MODELS[model_name]
    torch.manual_seed(0)
    model = make()
    names = _expected_names(model, spec)
    assert names
    kept, handles = _retain_outputs(model, names)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    want = []
    with watch(model, opt, activations=spec) as scope:
        for step in range(3):
            g = torch.Generator().manual_seed(step)
            x, y = torch.randn(shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)
            for ts in kept.values():
                ts.clear()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            want.append([float(torch.stack([t.grad.norm() for t in kept[n]]).norm()) for n in names])
            opt.step()
    for h in handles:
        h.remove()
    rec = scope.records["activation_grad"]
    assert rec.modules == names
    assert rec.steps == [0, 1, 2]
    assert rec.norms.shape == (3, len(names))
    for step in range(3):
        assert rec.norms[step].tolist() == pytest.approx(want[step], rel=1e-5), step
    first = names[0]
    column = [w[0] for w in want]
    stats = rec.stats.row(rec.modules.index(first))
    assert stats.max == pytest.approx(max(column), rel=1e-5)
    assert stats.mean == pytest.approx(sum(column) / 3, rel=1e-5)


@pytest.mark.parametrize("model_name", list(MODELS))
def test_all_module_outputs_equal_retain_grad(model_name: str) -> None:
    _check(model_name, "all")


@pytest.mark.parametrize("spec_name", ["names", "classes"])
def test_named_and_class_selections_equal_retain_grad(spec_name: str) -> None:
    _check("nested-mlp", SPECS[spec_name])


def test_all_means_leaf_modules_only() -> None:
    model = Nested()
    with watch(model, activations="all") as scope:
        model(torch.randn(2, 6)).sum().backward()
    assert scope.records["activation_grad"].modules == ["fc1", "block.0", "block.1", "block.2", "fc2"]


class SharedTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(5, 5)
        self.head = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.shared(torch.tanh(self.shared(x)))))


def test_a_module_called_twice_reports_the_root_sum_square_of_its_calls() -> None:
    torch.manual_seed(0)
    model = SharedTwice()
    kept, handles = _retain_outputs(model, ["shared"])
    with watch(model, activations=["shared"]) as scope:
        model(torch.randn(3, 5)).sum().backward()
    for h in handles:
        h.remove()
    assert len(kept["shared"]) == 2
    want = (kept["shared"][0].grad.norm() ** 2 + kept["shared"][1].grad.norm() ** 2).sqrt()
    assert float(scope.records["activation_grad"].norms[0, 0]) == pytest.approx(float(want), rel=1e-5)


def test_no_grad_forwards_are_not_recorded() -> None:
    model = Nested()
    with watch(model, activations="all") as scope:
        model(torch.randn(2, 6)).sum().backward()
        with torch.no_grad():
            model(torch.randn(2, 6))
    assert scope.steps == 1 and len(scope.records["activation_grad"].norms) == 1


# ---- scope.probe / scope.retain -------------------------------------------------------------------


@pytest.mark.parametrize("how", ["probe", "retain"])
def test_probe_and_retain_equal_retain_grad(how: str) -> None:
    torch.manual_seed(0)
    model = Nested()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    norms, maxes = [], []
    with watch(model, opt) as scope:
        for _ in range(4):
            opt.zero_grad()
            h = model.fc1(torch.randn(4, 6))
            assert getattr(scope, how)(h, "hidden") is h
            h.retain_grad()
            model.fc2(model.block(h)).pow(2).mean().backward()
            norms.append(float(h.grad.norm()))
            maxes.append(float(h.grad.abs().max()))
            opt.step()
    rec = scope.records["tensor_grad"].tensors["hidden"]
    assert rec.via == {"probe": "register_hook", "retain": "retain_grad"}[how]
    assert rec.steps == [0, 1, 2, 3]
    assert rec.norm.tolist() == pytest.approx(norms, rel=1e-5)
    assert rec.max_abs.tolist() == pytest.approx(maxes, rel=1e-6)
    assert rec.norm_stats.max == pytest.approx(max(norms), rel=1e-5)


def test_probed_tensor_every_few_steps_is_keyed_by_its_steps() -> None:
    model = Nested()
    with watch(model) as scope:
        for step in range(7):
            h = model.fc1(torch.randn(2, 6))
            if step % 3 == 1:
                scope.probe(h, "h")
            model.fc2(model.block(h)).sum().backward()
    assert scope.records["tensor_grad"].tensors["h"].steps == [1, 4]


def _double(grad: torch.Tensor) -> torch.Tensor:
    return grad * 2


def _hooked_run(order: str, watched: bool) -> tuple[nn.Module, float, float, float | None]:
    """Train 3 steps with a user hook that doubles the hidden gradient; return model and grads."""
    torch.manual_seed(0)
    model = Nested()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    recorded = None

    def body(scope: Any) -> tuple[float, float]:
        for _ in range(3):
            opt.zero_grad()
            h = model.fc1(torch.randn(4, 6))
            seen: list[torch.Tensor] = []
            h.register_hook(lambda g, seen=seen: seen.append(g) or None)  # sees the gradient before doubling
            if scope is not None and order == "probe-first":
                scope.probe(h, "h")
            h.register_hook(_double)
            if scope is not None and order == "probe-last":
                scope.probe(h, "h")
            h.retain_grad()
            model.fc2(model.block(h)).pow(2).mean().backward()
            opt.step()
        return float(seen[0].norm()), float(h.grad.norm())

    if watched:
        with watch(model, opt, activations="all") as scope:
            plain, final = body(scope)
        recorded = float(scope.records["tensor_grad"].tensors["h"].norm[-1])
    else:
        plain, final = body(None)
    return model, plain, final, recorded


@pytest.mark.parametrize("order", ["probe-first", "probe-last"])
def test_user_hooks_still_replace_gradients_and_run_in_registration_order(order: str) -> None:
    twin, _, _, _ = _hooked_run(order, watched=False)
    model, plain, final, recorded = _hooked_run(order, watched=True)
    assert final == pytest.approx(2 * plain, rel=1e-6), "retain_grad sees the doubled gradient"
    for (name, a), b in zip(model.named_parameters(), twin.parameters()):
        assert torch.equal(a, b), f"{name}: the doubling hook must act exactly as without gradscope"
    want = plain if order == "probe-first" else final
    assert recorded == pytest.approx(want, rel=1e-6)


# ---- mistakes ---------------------------------------------------------------------------------------


def test_a_misspelt_module_name_suggests_the_real_one() -> None:
    with pytest.raises(GradscopeError) as info:
        with watch(Nested(), activations=["fc", "block.1"]):
            pass
    msg = str(info.value)
    assert "'fc'" in msg and "Did you mean" in msg and "fc1" in msg and "named_modules" in msg


def test_a_bad_name_leaves_no_hook_behind() -> None:
    model = Nested()
    with pytest.raises(GradscopeError):
        with watch(model, activations=["nope"]):
            pass
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all(not p._post_accumulate_grad_hooks for p in model.parameters())


@pytest.mark.parametrize("spec", [42, [int], [3.5]], ids=["number", "non-module-class", "float-item"])
def test_bad_activation_specs_are_clear_errors(spec: Any) -> None:
    with pytest.raises(GradscopeError, match="activations="):
        with watch(Nested(), activations=spec):
            pass


def test_probe_argument_mistakes_are_clear_errors() -> None:
    model = Nested()
    with watch(model) as scope:
        h = model.fc1(torch.randn(2, 6))
        with pytest.raises(GradscopeError, match="expected a torch.Tensor"):
            scope.probe([1, 2], "h")  # type: ignore[arg-type]
        with pytest.raises(GradscopeError, match="non-empty string name"):
            scope.retain(h, "")
        with pytest.raises(GradscopeError, match="does not require grad"):
            scope.probe(h.detach(), "h")
