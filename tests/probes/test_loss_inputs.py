"""GS501 in the user's own loop: what reaches F.cross_entropy, F.nll_loss and
F.binary_cross_entropy_with_logits (and the loss modules that call them)."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from gradscope import watch
from gradscope.records import LossInputsRecord
from gradscope.scope import Scope

ORIGINALS = {name: getattr(F, name) for name in ("cross_entropy", "nll_loss", "binary_cross_entropy_with_logits")}
Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def train(loss_of: Loss, outputs: int = 3, steps: int = 6) -> Scope:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, outputs))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    with watch(model, opt) as scope:
        for _ in range(steps):
            x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
            opt.zero_grad()
            loss_of(model(x), y).backward()
            opt.step()
    return scope


def gs501(scope: Scope) -> list[str]:
    return [f.message for f in scope.findings if f.code == "GS501"]


SPECIMENS: dict[str, tuple[Loss, int, str]] = {
    "sigmoid-into-cross-entropy-module": (lambda out, y: nn.CrossEntropyLoss()(torch.sigmoid(out), y), 3,
                                          "got values strictly between 0 and 1"),
    "softmax-into-cross-entropy": (lambda out, y: F.cross_entropy(out.softmax(dim=1), y), 3, "got probabilities"),
    "softmax-into-nll": (lambda out, y: nn.NLLLoss()(out.softmax(dim=1), y), 3, "got non-negative values"),
    "sigmoid-into-bce-with-logits": (lambda out, y: F.binary_cross_entropy_with_logits(
        torch.sigmoid(out).squeeze(1), (y > 0).float()), 1, "BCEWithLogitsLoss applies the sigmoid itself"),
}
TWINS: dict[str, tuple[Loss, int]] = {
    "logits-into-cross-entropy": (lambda out, y: nn.CrossEntropyLoss()(out, y), 3),
    "log-softmax-into-nll": (lambda out, y: F.nll_loss(out.log_softmax(dim=1), y), 3),
    "logits-into-bce-with-logits": (lambda out, y: nn.BCEWithLogitsLoss()(out.squeeze(1), (y > 0).float()), 1),
    "relu-into-cross-entropy": (lambda out, y: F.cross_entropy(torch.relu(out), y), 3),  # zeros: no sigmoid
}


@pytest.mark.parametrize(("loss_of", "outputs", "words"), SPECIMENS.values(), ids=SPECIMENS.keys())
def test_probabilities_fed_to_a_logit_loss_are_gs501(loss_of: Loss, outputs: int, words: str) -> None:
    scope = train(loss_of, outputs)
    (message,) = gs501(scope)
    assert words in message and "in all 4 sampled call(s)" in message   # calls 0-3 of 6
    # the call site is the line that calls the loss, in the training code
    rec = scope.records["loss_inputs"]
    assert isinstance(rec, LossInputsRecord)
    (site,) = rec.sites
    assert site.site is not None and f"(called at {site.site})" in message
    path, line = site.site.rsplit(":", 1)
    text = open(path, encoding="utf-8").read().splitlines()[int(line) - 1]
    assert path == __file__ and any(w in text for w in ("CrossEntropyLoss", "cross_entropy", "NLLLoss"))
    (f,) = [f for f in scope.findings if f.code == "GS501"]
    assert f.where == "Sequential"
    assert all(getattr(F, name) is fn for name, fn in ORIGINALS.items())   # observers gone after the scope


@pytest.mark.parametrize(("loss_of", "outputs"), TWINS.values(), ids=TWINS.keys())
def test_logits_and_log_probabilities_are_not(loss_of: Loss, outputs: int) -> None:
    scope = train(loss_of, outputs)
    assert gs501(scope) == []
    rec = scope.records["loss_inputs"]
    assert isinstance(rec, LossInputsRecord) and rec.sites and rec.sites[0].checked == 4


def test_sampled_calls_are_the_first_four_then_sparse() -> None:
    scope = train(lambda out, y: F.cross_entropy(out, y), steps=20)
    rec = scope.records["loss_inputs"]
    assert isinstance(rec, LossInputsRecord)
    (site,) = rec.sites
    assert (site.function, site.checked) == ("cross_entropy", 5)   # calls 0-3 and 16


def test_an_evaluation_under_no_grad_is_not_sampled() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with watch(model, opt) as scope:
        for _ in range(3):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            with torch.no_grad():
                F.nll_loss(model(x).softmax(1), y)   # probabilities, but no training: not judged
    assert gs501(scope) == []


def test_the_training_numbers_are_unchanged() -> None:
    def run(watched: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(4, 3))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        g = torch.Generator().manual_seed(1)
        scope = watch(model, opt) if watched else None
        if scope is not None:
            scope.__enter__()
        for _ in range(5):
            x, y = torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g)
            opt.zero_grad()
            F.cross_entropy(torch.sigmoid(model(x)), y).backward()
            opt.step()
        if scope is not None:
            scope.__exit__(None, None, None)
        return [p.detach().clone() for p in model.parameters()]

    assert all(torch.equal(a, b) for a, b in zip(run(False), run(True)))
