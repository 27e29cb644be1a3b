"""GS509: a loss tensor accumulated across iterations, keeping every step's graph alive."""
from __future__ import annotations

import textwrap

import pytest

from gradscope.lint import lint_source
from gradscope.lint.roles import is_loss_name


def lines(source: str) -> list[int]:
    findings = lint_source(textwrap.dedent(source), "train.py", select={"GS509"})
    return [int(f.where.split(":")[1]) for f in findings]


MATCH = {
    "returned-after-each-backward": ("""
        def train_epoch(loader):
            train_loss = 0
            for x, y in loader:
                optimizer.zero_grad()
                loss = criterion(model(x), y)
                loss.backward()
                optimizer.step()
                train_loss += loss
            return train_loss / len(loader)
        """, [9]),
    "augmented": ("""
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            running_loss += loss
        """, [5]),
    "plain-sum": ("""
        for x, y in loader:
            loss = loss_fn(model(x), y)
            total = total + loss
        """, [4]),
    "append": ("""
        losses = []
        for x, y in loader:
            loss = criterion(model(x), y)
            losses.append(loss)
        """, [5]),
    "scaled": ("""
        for x, y in loader:
            loss = criterion(model(x), y)
            epoch_loss += loss * x.size(0)
        """, [4]),
    "direct-functional-call": ("""
        import torch.nn.functional as F
        for x, y in loader:
            running += F.cross_entropy(model(x), y)
        """, [4]),
    "backward-receiver-from-opaque-call": ("""
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            total += loss
        """, [5]),
    "while-loop": ("""
        while step < 10:
            loss = criterion(model(x), y)
            acc += loss
        """, [4]),
    "loss-module-instance": ("""
        import torch.nn as nn
        mse = nn.MSELoss()
        for x, y in loader:
            err = mse(model(x), y)
            tot += err
        """, [6]),
    "attribute-accumulator": ("""
        class Trainer:
            def fit(self, loader):
                for x, y in loader:
                    loss = self.criterion(self.model(x), y)
                    self.total += loss
        """, [6]),
    "graph-keeping-method": ("""
        for x, y in loader:
            loss = criterion(model(x), y)
            total += loss.cpu()
        """, [4]),
}


@pytest.mark.parametrize(("source", "expected"), MATCH.values(), ids=MATCH.keys())
def test_accumulated_loss_tensor_is_found(source: str, expected: list[int]) -> None:
    assert lines(source) == expected


NOT_MATCH = {
    "returned-to-be-differentiated": """
        def unrolled(batches):
            total = 0
            for x, y in batches:
                total += criterion(model(x), y)
            return total
        """,
    "item": """
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            running_loss += loss.item()
        """,
    "detach-and-float": """
        for x, y in loader:
            loss = criterion(model(x), y)
            a += loss.detach()
            b = b + float(loss)
            c += loss.detach().cpu()
            d += loss.data
        """,
    "append-item": """
        losses = []
        for x, y in loader:
            loss = criterion(model(x), y)
            losses.append(loss.item())
        """,
    "notes-eval-loop-item": """
        for data, targets in test_loader:
            running_loss += loss_fn(model(data), targets).item()
        """,
    "summed-then-backward": """
        total = 0
        for head in heads:
            loss = criterion(head(x), y)
            total += loss
        total.backward()
        """,
    "appended-then-backward": """
        import torch
        losses = []
        for head in heads:
            losses.append(criterion(head(x), y))
        torch.stack(losses).sum().backward()
        """,
    "under-no-grad": """
        import torch
        with torch.no_grad():
            for x, y in loader:
                loss = criterion(model(x), y)
                total += loss
        """,
    "no-grad-decorator": """
        import torch
        @torch.no_grad()
        def evaluate(loader):
            total = 0
            for x, y in loader:
                total += criterion(model(x), y)
            return total
        """,
    "rebound-to-item": """
        for x, y in loader:
            loss = criterion(model(x), y)
            loss.backward()
            loss = loss.item()
            total += loss
        """,
    "not-a-loss": """
        for x, y in loader:
            pred = model(x).argmax(1)
            correct += (pred == y).sum()
        """,
    "outside-a-loop": """
        loss = criterion(model(x), y)
        total += loss
        """,
    "loss-named-but-not-a-loss": """
        for step in range(10):
            weight = get_loss_weight(step)
            total_weight += weight
            total_scale += loss_scale(step)
        """,
    "opaque-function-of-loss": """
        for x, y in loader:
            loss = criterion(model(x), y)
            total += all_reduce_mean(loss)
        """,
}


@pytest.mark.parametrize("source", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_detached_or_backwarded_accumulation_is_not_flagged(source: str) -> None:
    assert lines(source) == []


@pytest.mark.parametrize(("name", "is_loss"), [
    ("loss_fn", True), ("criterion", True), ("compute_loss", True), ("celoss", True), ("loss", True),
    ("lossfn", True), ("mse_loss_function", True), ("train_crit", True),
    ("get_loss_weight", False), ("loss_scale", False), ("glossary", False), ("scaler", False),
])
def test_which_callable_names_count_as_losses(name: str, is_loss: bool) -> None:
    assert is_loss_name(name) is is_loss
