"""GS504 at run time: evaluation in train mode, training in eval mode, functional dropout that
ignores model.eval(), and an evaluation written as training (forwards never backpropagated)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradscope import watch
from gradscope.records import ModeRecord
from gradscope.scope import Scope

ORIGINAL_DROPOUT = F.dropout


class FunctionalNet(nn.Module):
    """Dropout through F.dropout; ``hard_wired``: training=True whatever the mode."""

    def __init__(self, hard_wired: bool) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 16), nn.Linear(16, 3)
        self.hard_wired = hard_wired

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(F.dropout(h, 0.5, training=True if self.hard_wired else self.training))


class BnNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.drop, self.fc2 = nn.Linear(4, 16), nn.BatchNorm1d(16), nn.Dropout(0.3), nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(n)]


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    model.train()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()


def gs504(scope: Scope) -> list[str]:
    return [f.message for f in scope.findings if f.code == "GS504"]


def mode(scope: Scope) -> ModeRecord:
    rec = scope.records["mode"]
    assert isinstance(rec, ModeRecord)
    return rec


@pytest.mark.parametrize("hard_wired", [True, False], ids=["training=True", "training=self.training"])
def test_functional_dropout_hard_wired_on_is_found_in_evaluation(hard_wired: bool) -> None:
    torch.manual_seed(0)
    model = FunctionalNet(hard_wired)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt) as scope:
        for x, y in batches(3):
            train_step(model, opt, x, y)
            model.eval()
            with torch.no_grad():
                a, b = model(x), model(x)
    # plain torch agrees: with the dropout hard-wired on, two evaluations of one batch differ
    assert torch.equal(a, b) is not hard_wired
    if hard_wired:
        rec = mode(scope)
        assert rec.functional_dropout_in_evaluation == {"FunctionalNet": 6}
        assert rec.first_functional_dropout_step == 1
        (message,) = gs504(scope)
        assert "dropout_p > 0) ran 6 time(s) during evaluation" in message
        (f,) = [f for f in scope.findings if f.code == "GS504"]
        assert f.where == "FunctionalNet" and "training=self.training" in (f.hint or "")
    else:
        assert "mode" not in scope.records and gs504(scope) == []   # no Dropout module, nothing seen
    assert F.dropout is ORIGINAL_DROPOUT   # the observer is gone after the scope


def test_functional_dropout_in_a_submodule_is_named_by_its_module() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(FunctionalNet(hard_wired=True))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt) as scope:
        x, y = batches(1)[0]
        train_step(model, opt, x, y)
        model.eval()
        with torch.no_grad():
            model(x)
    assert mode(scope).functional_dropout_in_evaluation == {"0": 1}


def test_nn_dropout_and_another_models_functional_dropout_are_not_counted() -> None:
    torch.manual_seed(0)
    model, other = BnNet(), FunctionalNet(hard_wired=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt) as scope:
        for x, y in batches(3):
            train_step(model, opt, x, y)
            model.eval()
            with torch.no_grad():
                model(x)
                other.eval()
                other(x)   # not the watched model
    assert mode(scope).functional_dropout_in_evaluation == {} and gs504(scope) == []


class Attention(nn.Module):
    """Self-attention through scaled_dot_product_attention; ``hard_wired``: dropout_p=0.5 always."""

    def __init__(self, hard_wired: bool) -> None:
        super().__init__()
        self.qkv, self.out = nn.Linear(8, 24), nn.Linear(8, 3)
        self.hard_wired = hard_wired

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        p = 0.5 if self.hard_wired or self.training else 0.0
        return self.out(F.scaled_dot_product_attention(q, k, v, dropout_p=p).mean(dim=1))


@pytest.mark.parametrize("hard_wired", [True, False], ids=["dropout_p=0.5", "dropout_p=0 in eval"])
def test_attention_dropout_left_on_in_evaluation_is_found(hard_wired: bool) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(Attention(hard_wired), nn.Dropout(0.1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 5, 8, generator=g), torch.randint(0, 3, (4,), generator=g)
    with watch(model, opt) as scope:
        for _ in range(2):
            model.train()
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()   # dropout in training: right
            opt.step()
            model.eval()
            with torch.no_grad():
                model(x)
    rec = mode(scope)
    if hard_wired:
        assert rec.functional_dropout_in_evaluation == {"0 (scaled_dot_product_attention)": 2}
        (f,) = [f for f in scope.findings if f.code == "GS504"]
        assert f.where == "0" and "dropout_p" in (f.hint or "")
    else:
        assert rec.functional_dropout_in_evaluation == {} and gs504(scope) == []


@pytest.mark.parametrize("raises", [False, True], ids=["a block that ends", "a block that raises"])
def test_the_dropout_observer_is_removed_on_exit(raises: bool) -> None:
    model = FunctionalNet(hard_wired=False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError) if raises else _nothing():
        with watch(model, opt):
            assert F.dropout is not ORIGINAL_DROPOUT
            if raises:
                raise RuntimeError("user error")
    assert F.dropout is ORIGINAL_DROPOUT


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


@pytest.mark.parametrize("fixed", [False, True], ids=["validation as training", "eval() and no_grad()"])
def test_a_validation_loop_without_no_grad_or_eval_is_found(fixed: bool) -> None:
    torch.manual_seed(0)
    model = BnNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    data = batches(6)
    with watch(model, opt) as scope:
        for _epoch in range(2):
            for x, y in data[:4]:
                train_step(model, opt, x, y)
            for x, _ in data[4:]:
                if fixed:
                    model.eval()
                    with torch.no_grad():
                        out = model(x)
                else:
                    out = model(x)   # grad enabled, train mode, never backpropagated
                out.argmax(1)
    rec = mode(scope)
    if fixed:
        assert rec.unbackwarded_training_forwards == 0 and gs504(scope) == []
    else:
        # 4 validation forwards; the last one's output is still alive when the scope closes
        assert rec.unbackwarded_training_forwards == 3
        assert rec.unbackwarded_in_train_mode == ["bn", "drop"]
        assert rec.first_unbackwarded_step == 4
        (message,) = gs504(scope)
        assert "3 forward pass(es) with gradients enabled and bn, drop in train mode never reached a backward" \
            in message


def test_training_forwards_with_several_outputs_and_a_summary_forward_are_not_evaluations() -> None:
    """A forward before the first backward (a model summary) and the forwards of a two-view loss
    (both outputs reach one backward) are training."""
    torch.manual_seed(0)
    model = BnNet()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with watch(model, opt) as scope:
        x0, _ = batches(1)[0]
        model(x0)   # a summary before training
        for x, y in batches(5):
            opt.zero_grad()
            a, b = model(x), model(x + 0.1)
            (F.cross_entropy(a, y) + F.cross_entropy(b, y)).backward()
            opt.step()
    assert mode(scope).unbackwarded_training_forwards == 0 and gs504(scope) == []


def test_watching_for_evaluations_keeps_training_bitwise_identical() -> None:
    def run(watched: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = BnNet()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        data = batches(4)
        with watch(model, opt) if watched else _nothing():
            for x, y in data:
                train_step(model, opt, x, y)
                model(x).sum()   # an unbackpropagated forward: a hook on its output
        return [p.detach().clone() for p in model.parameters()] + [b.clone() for b in model.buffers()]

    assert all(torch.equal(a, b) for a, b in zip(run(False), run(True)))
