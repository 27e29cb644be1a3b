"""Gradient norms (per parameter, per layer, total) against plain autograd, the step clock, and
the gradient-flow findings GS201-GS205 with a specimen and a healthy twin each."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from gradscope.records import GradNormRecord, Stats
from gradscope.runner import notes_cnn
from gradscope.scope import Scope, watch

# ---- models ----------------------------------------------------------------------------------------


class LSTMNet(nn.Module):
    """A module wrapping nn.LSTM with a linear head on the last time step."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(4, 8, num_layers=2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 3))


def _cnn() -> nn.Module:
    """The notes' CNN, as `gradscope run` trains it by default."""
    return notes_cnn()


def _resnet() -> nn.Module:
    return torchvision.models.resnet18(weights=None, num_classes=10)


# name -> (model factory, input shape, classes, steps)
MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...], int, int]] = {
    "mlp": (_mlp, (4, 6), 3, 3),
    "cnn": (_cnn, (2, 1, 28, 28), 10, 2),
    "resnet18": (_resnet, (2, 3, 32, 32), 10, 2),
    "lstm": (LSTMNet, (3, 5, 4), 3, 3),
}


def _batch(shape: tuple[int, ...], classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)


def _f64(values: Any) -> torch.Tensor:
    assert values is not None
    return torch.tensor(np.asarray(values), dtype=torch.float64)


def _parameter_stats(rec: GradNormRecord, name: str) -> Stats:
    return rec.parameter_stats.row(rec.parameters.index(name))


def _layer_stats(rec: GradNormRecord, name: str) -> Stats:
    return rec.layer_stats.row(rec.layers.index(name))


def _layer_grad_norms(model: nn.Module) -> dict[str, torch.Tensor]:
    """Norm of the concatenated gradients of each module's own parameters, by hand."""
    out = {}
    for name, module in model.named_modules():
        grads = [p.grad.flatten() for p in module.parameters(recurse=False) if p.grad is not None]
        if grads:
            out[name or type(model).__name__] = torch.cat(grads).norm()
    return out


# ---- statistics against plain autograd -------------------------------------------------------------


@pytest.mark.parametrize("model_name", list(MODELS))
def test_norms_equal_plain_autograd_and_are_pre_clip(model_name: str) -> None:
    make, shape, classes, steps = MODELS[model_name]
    torch.manual_seed(0)
    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = [p for p in model.parameters() if p.requires_grad]
    want_params, want_layers, want_totals = [], [], []
    with watch(model, opt) as scope:
        for step in range(steps):
            x, y = _batch(shape, classes, step)
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            want_params.append(torch.stack([p.grad.norm() for p in params]))
            want_layers.append(_layer_grad_norms(model))
            want_totals.append(torch.nn.utils.get_total_norm([p.grad for p in params]))
            clipped = torch.nn.utils.clip_grad_norm_(params, max_norm=want_totals[-1].item() / 10)
            after = torch.nn.utils.get_total_norm([p.grad for p in params])
            assert float(after) < float(clipped) / 5, "the clip acted, so pre- and post-clip differ"
            opt.step()
    rec = scope.records["grad_norm"]
    assert rec.parameters == names
    assert rec.steps == list(range(steps))
    got_params = _f64(rec.parameter_norms)
    torch.testing.assert_close(got_params, torch.stack(want_params).double(), rtol=1e-5, atol=1e-12)
    torch.testing.assert_close(_f64(rec.total_norm), torch.stack(want_totals).double(),
                               rtol=1e-5, atol=0)
    assert sorted(rec.layers) == sorted(want_layers[0])
    for step, layers in enumerate(want_layers):
        got = dict(zip(rec.layers, rec.layer_norms[step].tolist()))
        for layer, value in layers.items():
            assert got[layer] == pytest.approx(float(value), rel=1e-5), (step, layer)
    # min / max / mean over the run
    table = torch.stack(want_params).double()
    for j, name in enumerate(names):
        stats = _parameter_stats(rec, name)
        assert stats.count == steps
        assert stats.min == pytest.approx(float(table[:, j].min()), rel=1e-5)
        assert stats.max == pytest.approx(float(table[:, j].max()), rel=1e-5)
        assert stats.mean == pytest.approx(float(table[:, j].mean()), rel=1e-5)
    totals = torch.stack(want_totals).double()
    assert rec.total_stats.max == pytest.approx(float(totals.max()), rel=1e-5)
    assert rec.total_stats.min == pytest.approx(float(totals.min()), rel=1e-5)
    assert rec.total_stats.mean == pytest.approx(float(totals.mean()), rel=1e-5)
    layer0 = rec.layers[0]
    assert _layer_stats(rec, layer0).max == pytest.approx(max(float(w[layer0]) for w in want_layers), rel=1e-5)


def _mlp_problem(seed: int = 0) -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    torch.manual_seed(seed)
    model = _mlp()
    data = [_batch((4, 6), 3, 100 + i) for i in range(40)]
    return model, data


def _loss(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return nn.functional.cross_entropy(model(batch[0]), batch[1])


def test_gradient_accumulation_records_the_accumulated_gradient() -> None:
    model, data = _mlp_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    k = 3
    want, last_micro = [], []
    with watch(model, opt) as scope:
        for step in range(4):
            opt.zero_grad()
            for micro in range(k):
                _loss(model, data[step * k + micro]).backward()
            want.append(torch.stack([p.grad.norm() for p in model.parameters()]))
            opt.step()
        # what a single micro-batch would have given, to show the two differ
        opt.zero_grad()
        _loss(model, data[0]).backward()
        last_micro = torch.stack([p.grad.norm() for p in model.parameters()])
        opt.zero_grad()
    rec = scope.to_record()
    # the extra backward after the last optimizer.step() is not a step of its own (the block
    # ended normally), but it is counted as a backward pass
    assert rec.steps == 4 and rec.backwards == 4 * k + 1
    grad_norm = rec.probe(GradNormRecord)
    assert grad_norm is not None and grad_norm.steps == [0, 1, 2, 3]
    got = _f64(grad_norm.parameter_norms)
    torch.testing.assert_close(got, torch.stack(want).double(), rtol=1e-5, atol=1e-12)
    assert not torch.allclose(got[0], last_micro.double(), rtol=1e-2)


def test_without_an_optimizer_each_backward_is_a_step() -> None:
    model, data = _mlp_problem()
    want = []
    with watch(model) as scope:
        assert scope.step_on == "backward"
        for i in range(5):
            model.zero_grad()
            _loss(model, data[i]).backward()
            want.append(torch.stack([p.grad.norm() for p in model.parameters()]))
    rec = scope.records["grad_norm"]
    assert scope.steps == 5 and rec.steps == [0, 1, 2, 3, 4]
    torch.testing.assert_close(_f64(rec.parameter_norms), torch.stack(want).double(),
                               rtol=1e-5, atol=1e-12)


def test_step_on_backward_with_an_optimizer_counts_backwards() -> None:
    model, data = _mlp_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with watch(model, opt, step_on="backward") as scope:
        for step in range(3):
            opt.zero_grad()
            _loss(model, data[2 * step]).backward()
            _loss(model, data[2 * step + 1]).backward()
            opt.step()
    assert scope.steps == 6


def test_manual_steps_follow_scope_step() -> None:
    model, data = _mlp_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    want = []
    with watch(model, opt, step_on="manual") as scope:
        for step in range(3):
            opt.zero_grad()
            for micro in range(2):
                _loss(model, data[2 * step + micro]).backward()
                opt.step()  # the optimizer does not tick a manual clock
            want.append(torch.stack([p.grad.norm() for p in model.parameters()]))
            assert scope.steps == step
            scope.step()
            assert scope.steps == step + 1
    rec = scope.records["grad_norm"]
    assert rec.steps == [0, 1, 2]
    torch.testing.assert_close(_f64(rec.parameter_norms), torch.stack(want).double(),
                               rtol=1e-5, atol=1e-12)


def _run(flush_every: int, max_kept_steps: int = 2048, steps: int = 23,
         read_mid_step: bool = False) -> tuple[Scope, list[torch.Tensor]]:
    model, data = _mlp_problem()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    want = []
    with watch(model, opt, flush_every=flush_every, max_kept_steps=max_kept_steps) as scope:
        for i in range(steps):
            opt.zero_grad()
            _loss(model, data[i % len(data)]).backward()
            want.append(torch.stack([p.grad.norm() for p in model.parameters()]))
            if read_mid_step and i % 4 == 1:
                assert scope.records["grad_norm"].steps == list(range(i))
            opt.step()
    return scope, want


def test_several_flushes_give_the_same_numbers() -> None:
    one, want = _run(flush_every=100)
    many, _ = _run(flush_every=3)
    a, b = one.records["grad_norm"], many.records["grad_norm"]
    assert a.steps == b.steps == list(range(23))
    assert a.parameters == b.parameters and a.layers == b.layers
    for key in ("parameter_norms", "layer_norms", "total_norm"):
        assert getattr(a, key).tolist() == getattr(b, key).tolist(), key
    pairs = [(a.total_stats, b.total_stats)]
    pairs += [(getattr(a, key).row(i), getattr(b, key).row(i))
              for key, names in (("parameter_stats", a.parameters), ("layer_stats", a.layers))
              for i in range(len(names))]
    for x, y in pairs:  # the same up to the order of summation in the mean
        assert x.count == y.count and x.min == y.min and x.max == y.max
        assert x.mean == pytest.approx(y.mean, rel=1e-12)
    torch.testing.assert_close(_f64(b.parameter_norms), torch.stack(want).double(),
                               rtol=1e-5, atol=1e-12)


def test_reading_records_in_mid_step_loses_nothing() -> None:
    scope, want = _run(flush_every=5, read_mid_step=True)
    rec = scope.records["grad_norm"]
    assert rec.steps == list(range(23))
    torch.testing.assert_close(_f64(rec.parameter_norms), torch.stack(want).double(),
                               rtol=1e-5, atol=1e-12)


def test_thinned_rows_are_the_right_steps_and_stats_stay_exact() -> None:
    scope, want = _run(flush_every=4, max_kept_steps=8, steps=40)
    rec = scope.records["grad_norm"]
    table = torch.stack(want).double()
    assert len(rec.steps) <= 8 and rec.steps[0] == 0
    torch.testing.assert_close(_f64(rec.parameter_norms), table[rec.steps], rtol=1e-5, atol=1e-12)
    stats = _parameter_stats(rec, "0.weight")
    assert stats.count == 40
    assert stats.mean == pytest.approx(float(table[:, 0].mean()), rel=1e-5)
    assert stats.max == pytest.approx(float(table[:, 0].max()), rel=1e-5)


def test_frozen_parameters_are_not_recorded() -> None:
    model, data = _mlp_problem()
    model[0].weight.requires_grad_(False)
    with watch(model) as scope:
        _loss(model, data[0]).backward()
    rec = scope.records["grad_norm"]
    assert "0.weight" not in rec.parameters and "0.bias" in rec.parameters
    assert not [f for f in scope.findings if f.code == "GS201"]


def test_float64_model_is_recorded() -> None:
    model, data = _mlp_problem()
    model.double()
    with watch(model) as scope:
        _loss(model, (data[0][0].double(), data[0][1])).backward()
        want = [p.grad.norm().item() for p in model.parameters()]
    assert scope.records["grad_norm"].parameter_norms[0].tolist() == pytest.approx(want, rel=1e-6)


def test_sparse_embedding_gradient_norm_counts_repeated_indices() -> None:
    torch.manual_seed(0)
    model = nn.Embedding(6, 3, sparse=True)
    with watch(model) as scope:
        model(torch.tensor([1, 1, 1, 4, 2, 1])).pow(2).sum().backward()
        assert not model.weight.grad.is_coalesced()
        want = float(model.weight.grad.to_dense().norm())
    assert float(scope.records["grad_norm"].parameter_norms[0, 0]) == pytest.approx(want, rel=1e-6)


# ---- findings: specimen and healthy twin ------------------------------------------------------------


def _train(model: nn.Module, steps: int = 6, lr: float = 1e-2, in_features: int = 4,
           **options: object) -> list:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(1)
    with watch(model, opt, **options) as scope:
        for _ in range(steps):
            opt.zero_grad()
            x, y = torch.randn(8, in_features, generator=g), torch.randn(8, 1, generator=g)
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    return scope.findings


def _codes(findings: list, code: str) -> list:
    return [f for f in findings if f.code == code]


class Branches(nn.Module):
    def __init__(self, use_all: bool, zero_b: bool = False) -> None:
        super().__init__()
        self.use_all = use_all
        self.zero_b = zero_b
        self.a = nn.Linear(4, 1)
        self.b = nn.Linear(4, 1)
        self.spare = nn.Linear(4, 1)
        self.scale = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.a(x) + self.b(x) * (0.0 if self.zero_b else 1.0)
        if self.use_all:
            return (out + self.spare(x)) * self.scale
        return out * self.scale.detach()  # spare never used, scale detached


def test_gs201_unused_branch_and_detached_parameter() -> None:
    torch.manual_seed(0)
    found = _codes(_train(Branches(use_all=False)), "GS201")
    where = {f.where: f.message for f in found}
    assert set(where) == {"spare", "Branches"}
    assert "spare.weight" in where["spare"] and "spare.bias" in where["spare"]
    assert "scale" in where["Branches"]
    torch.manual_seed(0)
    assert not _codes(_train(Branches(use_all=True)), "GS201")


def test_gs202_layer_multiplied_by_zero() -> None:
    torch.manual_seed(0)
    found = _codes(_train(Branches(use_all=True, zero_b=True)), "GS202")
    assert {f.where for f in found} == {"b.weight", "b.bias"}
    assert "6 observed steps" in found[0].message
    torch.manual_seed(0)
    assert not _codes(_train(Branches(use_all=True)), "GS202")


def _deep(act: type[nn.Module], init_std: float | None, depth: int = 6, width: int = 16) -> nn.Module:
    layers: list[nn.Module] = [nn.Linear(4, width), act()]
    for _ in range(depth - 1):
        layers += [nn.Linear(width, width), act()]
    layers.append(nn.Linear(width, 1))
    model = nn.Sequential(*layers)
    if init_std is not None:
        for m in model:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=init_std)
                nn.init.zeros_(m.bias)
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gs203_vanishing_in_a_deep_sigmoid_net_with_tiny_init(seed: int) -> None:
    torch.manual_seed(seed)
    found = _codes(_train(_deep(nn.Sigmoid, init_std=0.01)), "GS203")
    assert [f.where for f in found] == ["0"], "the input-side layer is named"
    assert "output side" in found[0].message
    torch.manual_seed(seed)
    assert not _codes(_train(_deep(nn.ReLU, init_std=None)), "GS203")


def test_gs203_threshold_moves_the_verdict() -> None:
    torch.manual_seed(0)
    lenient = {"vanishing_ratio": 1e30, "vanishing_floor": 0.0}
    assert not _codes(_train(_deep(nn.Sigmoid, init_std=0.01), thresholds=lenient), "GS203")
    torch.manual_seed(0)
    assert _codes(_train(_deep(nn.ReLU, init_std=None), thresholds={"vanishing_ratio": 1.5}), "GS203")


def _scaled_mlp(factor: float) -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(factor)
    return model


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gs204_exploding_with_weights_scaled_up(seed: int) -> None:
    torch.manual_seed(seed)
    found = _codes(_train(_scaled_mlp(10.0), lr=1e-9), "GS204")
    assert [f.where for f in found] == ["Sequential"] and "threshold 1000" in found[0].message
    torch.manual_seed(seed)
    assert not _codes(_train(_scaled_mlp(1.0), lr=1e-2), "GS204")


@pytest.mark.parametrize("grow", [1.15, 1.0], ids=["weights-growing", "healthy"])
def test_gs204_growth_over_the_run(grow: float) -> None:
    torch.manual_seed(0)
    model = _scaled_mlp(1.0)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    # no absolute limit: only the growth rule (late tenth over early tenth) can fire
    with watch(model, opt, thresholds={"exploding_norm": 1e300}) as scope:
        for _ in range(30):
            opt.zero_grad()
            nn.functional.mse_loss(model(torch.randn(8, 4, generator=g)), torch.randn(8, 1, generator=g)).backward()
            opt.step()
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(grow)
    found = _codes(scope.findings, "GS204")
    if grow > 1:
        assert found and "grew" in found[0].message and "first tenth" in found[0].message
    else:
        assert not found


def test_gs204_threshold_moves_the_verdict() -> None:
    torch.manual_seed(0)
    assert not _codes(_train(_scaled_mlp(10.0), lr=1e-9, thresholds={"exploding_norm": 1e12}), "GS204")


class _NaNGrad(torch.autograd.Function):
    """Identity forward; backward returns NaN (as a broken custom op would)."""

    @staticmethod
    def forward(ctx: object, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def backward(ctx: object, g: torch.Tensor) -> torch.Tensor:
        return g * float("nan")


def test_healthy_runs_raise_no_gradient_flow_findings() -> None:
    torch.manual_seed(0)
    codes = {f.code for f in _train(_scaled_mlp(1.0), steps=10)}
    assert not codes & {"GS201", "GS202", "GS203", "GS204", "GS205"}
