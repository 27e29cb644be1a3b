"""Non-finite tracing: GS205 (gradients), GS206 (forward output, input, loss), the localisation
re-run leaving training untouched, and strict mode."""
from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from gradscope.errors import NonFiniteError
from gradscope.records import NonFiniteRecord
from gradscope.scope import watch

# ---- helpers ---------------------------------------------------------------------------------------


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))


def _data(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(step)
    return torch.randn(6, 4, generator=g), torch.randn(6, 2, generator=g)


def _findings(scope: Any, code: str) -> list:
    return [f for f in scope.findings if f.code == code]


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of a tensor: equality is bitwise, NaN included."""
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _no_hooks_left(model: nn.Module, opt: torch.optim.Optimizer | None) -> None:
    for name, m in model.named_modules():
        for d in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert not getattr(m, d), f"{d} left on module {name!r}"
    for name, p in model.named_parameters():
        assert not p._backward_hooks, f"tensor hook left on {name}"
        assert not p._post_accumulate_grad_hooks, f"post-accumulate hook left on {name}"
    if opt is not None:
        assert not opt._optimizer_step_pre_hooks and not opt._optimizer_step_post_hooks
    mm = torch.nn.modules.module
    assert not mm._global_forward_hooks and not mm._global_forward_pre_hooks
    assert not mm._global_backward_hooks and not mm._global_backward_pre_hooks


def _backward_order(model: nn.Module) -> tuple[list[str], list[Any]]:
    """Plain PyTorch: the order in which parameters' .grad are finalised in a backward."""
    order: list[str] = []
    handles = [p.register_post_accumulate_grad_hook(lambda _p, n=n: order.append(n))
               for n, p in model.named_parameters()]
    return order, handles


class _NaNGrad(torch.autograd.Function):
    """Identity forward; a NaN gradient in backward, as a broken custom op would give."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return g * float("nan")


class CustomOpNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 8)
        self.b = nn.Linear(8, 8)
        self.c = nn.Linear(8, 2)
        self.broken = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.a(x))
        h = torch.relu(self.b(h))
        if self.broken:
            h = _NaNGrad.apply(h)
        return self.c(h)


class LogNeg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.on = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(-x - 1) if self.on else x  # x >= 0 after a ReLU: log of a negative


class ZeroDiv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.on = True
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x / 0 * 0 if self.on else x


# ---- GS205 -------------------------------------------------------------------------------------------


def test_gs205_names_the_step_and_first_parameter_in_backward_order_after_nan_weights() -> None:
    k = 3
    torch.manual_seed(0)
    twin = _mlp()
    torch.manual_seed(0)
    model = _mlp()
    # the plain twin tells which gradients go NaN at step k, and in which order they were finalised
    opt = torch.optim.SGD(twin.parameters(), lr=0.01)
    for step in range(k + 1):
        if step == k:
            with torch.no_grad():
                twin[2].weight[0, 0] = float("nan")
            order, handles = _backward_order(twin)
        opt.zero_grad()
        nn.functional.mse_loss(twin(_data(step)[0]), _data(step)[1]).backward()
        opt.step()
    for h in handles:
        h.remove()
    grads_bad = {n for n, p in twin.named_parameters() if not torch.isfinite(p.grad).all()}
    want = next(n for n in order if n in grads_bad)

    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt) as scope:
        for step in range(k + 3):
            if step == k:
                with torch.no_grad():
                    model[2].weight[0, 0] = float("nan")
            opt.zero_grad()
            nn.functional.mse_loss(model(_data(step)[0]), _data(step)[1]).backward()
            opt.step()
    [f] = _findings(scope, "GS205")
    assert f.where == want
    assert f"at step {k}" in f.message and f"module {want.rpartition('.')[0]}" in f.message
    rec = scope.records["grad_norm"]
    assert rec.parameter_stats.row(rec.parameters.index(want)).first_nonfinite_step == k


def test_gs205_a_custom_function_with_a_nan_gradient_names_the_layer_below_it() -> None:
    torch.manual_seed(0)
    model = CustomOpNet()
    order, handles = _backward_order(model)
    model.broken = True
    nn.functional.mse_loss(model(_data(0)[0]), _data(0)[1]).backward()
    for h in handles:
        h.remove()
    bad = {n for n, p in model.named_parameters() if not torch.isfinite(p.grad).all()}
    assert bad == {"a.weight", "a.bias", "b.weight", "b.bias"}, "c's gradient is above the NaN: finite"
    want = next(n for n in order if n in bad)
    assert want.startswith("b.")

    model.broken = False
    with watch(model) as scope:  # no optimizer: the weights stay finite, each backward is a step
        for step in range(5):
            model.broken = step == 2
            model.zero_grad()
            nn.functional.mse_loss(model(_data(step)[0]), _data(step)[1]).backward()
    [f] = _findings(scope, "GS205")
    assert f.where == want and "at step 2" in f.message and "module b" in f.message
    assert not _findings(scope, "GS206"), "the forward stayed finite"


def test_a_finite_run_has_no_nonfinite_findings() -> None:
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt) as scope:
        for step in range(5):
            opt.zero_grad()
            nn.functional.mse_loss(model(_data(step)[0]), _data(step)[1]).backward()
            opt.step()
    assert not _findings(scope, "GS205") and not _findings(scope, "GS206")
    assert scope.records["nonfinite"] == NonFiniteRecord(first_nonfinite_output_step=None,
                                                         first_nonfinite_loss_step=None, located={})


# ---- GS206 -------------------------------------------------------------------------------------------


def _run_with_bad_module(model: nn.Module, bad: nn.Module, k: int, steps: int = 5, **options: Any) -> Any:
    with watch(model, **options) as scope:  # no optimizer: the weights stay finite after step k
        for step in range(steps):
            bad.on = step == k
            model.zero_grad()
            nn.functional.mse_loss(model(_data(step)[0]), _data(step)[1]).backward()
    return scope


@pytest.mark.parametrize("bad_cls", [LogNeg, ZeroDiv], ids=["log-of-negative", "divide-by-zero"])
def test_gs206_names_the_first_module_with_a_nonfinite_output(bad_cls: type[nn.Module]) -> None:
    torch.manual_seed(0)
    bad = bad_cls()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), bad, nn.Linear(8, 2))
    scope = _run_with_bad_module(model, bad, k=2)
    [f] = _findings(scope, "GS206")
    assert f.where == "2" and "at step 2" in f.message


def test_gs206_names_the_innermost_module_of_a_nested_model() -> None:
    torch.manual_seed(0)
    bad = ZeroDiv()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Linear(4, 8)
            self.block = nn.Sequential(nn.Linear(8, 8), bad, nn.Tanh())
            self.head = nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.block(self.stem(x)))

    scope = _run_with_bad_module(Net(), bad, k=1)
    [f] = _findings(scope, "GS206")
    assert f.where == "block.1" and "at step 1" in f.message


def test_gs206_names_the_input_when_the_batch_holds_nan() -> None:
    torch.manual_seed(0)
    model = _mlp()
    with watch(model) as scope:
        for step in range(4):
            x, y = _data(step)
            if step == 2:
                x[1, 3] = float("nan")
            model.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
    [f] = _findings(scope, "GS206")
    assert f.where == "input" and "at step 2" in f.message and "data" in f.hint


def test_gs206_names_the_loss_when_the_output_is_finite() -> None:
    torch.manual_seed(0)
    model = _mlp()
    with watch(model) as scope:
        for step in range(4):
            x, y = _data(step)
            if step == 1:
                y[0, 0] = float("nan")  # a NaN target: the loss is NaN, the model is fine
            model.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
    [f] = _findings(scope, "GS206")
    assert f.where == "loss" and "at step 1" in f.message
    assert scope.records["nonfinite"].first_nonfinite_loss_step == 1
    assert scope.records["nonfinite"].first_nonfinite_output_step is None


# ---- the localisation re-run changes nothing ---------------------------------------------------------


class CountCalls(nn.Module):
    """Counts its training calls in a non-persistent buffer (one state_dict() does not hold)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("calls", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return x


class BNDropNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.count = CountCalls()
        self.fc = nn.Linear(4, 16)
        self.bn = nn.BatchNorm1d(16)
        self.drop = nn.Dropout(0.3)
        self.bad = ZeroDiv()
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bad(torch.relu(self.drop(self.bn(self.fc(self.count(x)))))))


def _bn_drop_run(watched: bool, k: int = 3, steps: int = 8
                 ) -> tuple[nn.Module, torch.optim.Optimizer, list, torch.Tensor, Any]:
    torch.manual_seed(0)
    model = BNDropNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []

    def loop() -> None:
        for step in range(steps):
            model.bad.on = step == k
            x, y = _data(step)
            out = model(x)
            loss = nn.functional.mse_loss(out, y)
            losses.append(loss.detach())
            if torch.isfinite(loss):  # the user's own guard: skip the bad batch
                loss.backward()
                opt.step()
            opt.zero_grad()

    scope = None
    if watched:
        with watch(model, opt, activations="all") as scope:
            loop()
    else:
        loop()
    return model, opt, losses, torch.get_rng_state(), scope


def test_localisation_rerun_leaves_buffers_rng_and_training_bitwise_unchanged() -> None:
    twin, twin_opt, twin_losses, twin_rng, _ = _bn_drop_run(watched=False)
    model, opt, losses, rng, scope = _bn_drop_run(watched=True)
    [f] = _findings(scope, "GS206")
    assert f.where == "bad" and "at step 3" in f.message
    assert model.bad.calls == twin.bad.calls + 1, "the forward was run once more to find the module"
    for (name, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert _same(a, b), name  # parameters, running_mean/var, num_batches_tracked
    assert int(model.bn.num_batches_tracked) == 8
    assert int(model.count.calls) == int(twin.count.calls) == 8, "non-persistent buffers are restored too"
    assert _same(rng, twin_rng), "the dropout RNG stream is where it would have been"
    assert all(_same(a, b) for a, b in zip(losses, twin_losses))
    for sa, sb in zip(opt.state.values(), twin_opt.state.values()):
        assert _same(sa["momentum_buffer"], sb["momentum_buffer"])


def test_after_divergence_the_forward_is_rerun_once_not_every_step() -> None:
    torch.manual_seed(0)
    bad = ZeroDiv()
    model = nn.Sequential(nn.Linear(4, 8), bad, nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    bad.on = False
    with watch(model, opt) as scope:
        for step in range(12):
            bad.on = step == 2  # NaN gradients at step 2 put NaN into the weights from then on
            opt.zero_grad()
            nn.functional.mse_loss(model(_data(step)[0]), _data(step)[1]).backward()
            opt.step()
    assert not torch.isfinite(model[0].weight).all()
    assert bad.calls == 12 + 1
    assert scope.records["nonfinite"].located == {"2": "1"}


# ---- strict mode ---------------------------------------------------------------------------------------


def _strict_run(case: str, k: int = 2) -> tuple[nn.Module, torch.optim.Optimizer, list[int], BaseException]:
    torch.manual_seed(0)
    bad = LogNeg()
    bad.on = False
    custom = CustomOpNet()
    model: nn.Module = custom if case == "gradient" else nn.Sequential(nn.Linear(4, 8), nn.ReLU(), bad, nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    done: list[int] = []
    with pytest.raises(NonFiniteError) as info:
        with watch(model, opt, strict=True, activations="all"):
            for step in range(6):
                x, y = _data(step)
                bad.on = case == "forward" and step == k
                custom.broken = case == "gradient" and step == k
                if case == "loss" and step == k:
                    y[0, 0] = float("nan")
                opt.zero_grad()
                nn.functional.mse_loss(model(x), y).backward()
                opt.step()
                done.append(step)
    return model, opt, done, info.value


@pytest.mark.parametrize("case,words", [
    ("forward", ["forward output", "step 2", "first produced by 2"]),
    ("loss", ["non-finite loss", "step 2"]),
    ("gradient", ["non-finite gradient", "step 2", "b."]),
])
def test_strict_mode_raises_at_the_first_bad_step_and_removes_every_hook(case: str, words: list[str]) -> None:
    model, opt, done, error = _strict_run(case)
    assert done == [0, 1], "the steps before the bad one ran normally"
    for word in words:
        assert word in str(error), (word, str(error))
    _no_hooks_left(model, opt)
