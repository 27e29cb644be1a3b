"""GS503: a loop that steps an optimizer after backward but never clears gradients."""
from __future__ import annotations

import textwrap

import pytest

from gradscope.lint import lint_source


def lines(source: str) -> list[int]:
    findings = lint_source(textwrap.dedent(source), "train.py", select={"GS503"})
    return [int(f.where.split(":")[1]) for f in findings]


MATCH = {
    "plain": ("""
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        """, [5]),
    "zero-only-before-the-loop": ("""
        def train():
            optimizer.zero_grad()
            for x, y in loader:
                loss_fn(model(x), y).backward()
                optimizer.step()
        """, [6]),
    "step-per-epoch-backward-per-batch": ("""
        for epoch in range(3):
            for x, y in loader:
                loss_fn(model(x), y).backward()
            opt.step()
        """, [5]),
    "grad-scaler": ("""
        for x, y in loader:
            scaler.scale(loss_fn(model(x), y)).backward()
            scaler.step(optimizer)
            scaler.update()
        """, [4]),
    "attribute-optimizer": ("""
        class Trainer:
            def fit(self):
                for x, y in self.loader:
                    self.loss(x, y).backward()
                    self.optimizer.step()
        """, [6]),
    "optimizer-known-by-binding": ("""
        import torch
        sgd = torch.optim.SGD(params, lr=0.1)
        while True:
            loss_fn(model(x), y).backward()
            sgd.step()
        """, [6]),
}


@pytest.mark.parametrize(("source", "expected"), MATCH.values(), ids=MATCH.keys())
def test_step_without_zero_grad_is_found(source: str, expected: list[int]) -> None:
    assert lines(source) == expected


NOT_MATCH = {
    "accumulate-every-k-steps": """
        for i, (x, y) in enumerate(loader):
            loss = loss_fn(model(x), y) / k
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
    "zero-after-step": """
        for x, y in loader:
            loss_fn(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        """,
    "model-zero-grad": """
        for x, y in loader:
            model.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
        """,
    "grad-set-to-none": """
        for x, y in loader:
            loss_fn(model(x), y).backward()
            optimizer.step()
            for p in model.parameters():
                p.grad = None
        """,
    "grad-zeroed-in-place": """
        for x, y in loader:
            loss_fn(model(x), y).backward()
            optimizer.step()
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.zero_()
        """,
    "zero-in-enclosing-loop": """
        for epoch in range(3):
            optimizer.zero_grad()
            for x, y in loader:
                loss_fn(model(x), y).backward()
                optimizer.step()
        """,
    "zero-in-helper": """
        def reset(opt):
            opt.zero_grad()
        for x, y in loader:
            reset(optimizer)
            loss_fn(model(x), y).backward()
            optimizer.step()
        """,
    "zero-in-method-helper": """
        class Trainer:
            def clear(self):
                self.optimizer.zero_grad()
            def fit(self):
                for x, y in self.loader:
                    self.clear()
                    self.loss(x, y).backward()
                    self.optimizer.step()
        """,
    "zero-grad-named-helper": """
        from helpers import zero_grads
        for x, y in loader:
            zero_grads(model)
            loss_fn(model(x), y).backward()
            optimizer.step()
        """,
    "lbfgs-closure": """
        for x, y in loader:
            def closure():
                optimizer.zero_grad()
                loss = loss_fn(model(x), y)
                loss.backward()
                return loss
            optimizer.step(closure)
        """,
    "environment-step": """
        for t in range(100):
            obs, reward, done, info = env.step(action)
            loss_fn(obs).backward()
        """,
    "scheduler-step-only": """
        for epoch in range(3):
            train_one_epoch()
            scheduler.step()
        """,
    "no-backward": """
        for x, y in loader:
            optimizer.step()
        """,
}


@pytest.mark.parametrize("source", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_loops_that_clear_gradients_are_not_flagged(source: str) -> None:
    assert lines(source) == []
