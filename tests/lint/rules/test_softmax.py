"""GS501: a model that ends in softmax, trained with CrossEntropyLoss in the same file."""
from __future__ import annotations

import textwrap

import pytest

from gradscope.lint import lint_source


def lines(source: str) -> list[int]:
    findings = lint_source(textwrap.dedent(source), "train.py", select={"GS501"})
    return [int(f.where.split(":")[1]) for f in findings]


MATCH = {
    "sequential": ("""
        import torch.nn as nn
        model = nn.Sequential(
            nn.Linear(4, 3),
            nn.Softmax(dim=1),
        )
        loss_fn = nn.CrossEntropyLoss()
        """, [5]),
    "forward-returns-functional-softmax": ("""
        import torch.nn.functional as F
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                return F.softmax(self.fc(x), dim=1)
        def train(out, y):
            return F.cross_entropy(out, y)
        """, [6]),
    "forward-returns-name-bound-to-softmax": ("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                x = self.fc(x)
                x = torch.softmax(x, 1)
                return x
        criterion = nn.CrossEntropyLoss()
        """, [8]),
    "forward-returns-softmax-attribute": ("""
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 3)
                self.out = nn.Softmax(dim=-1)
            def forward(self, x):
                return self.out(self.fc(x))
        criterion = nn.CrossEntropyLoss()
        """, [9]),
    "tensor-softmax-method": ("""
        import torch.nn.functional as F
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                return self.fc(x).softmax(dim=-1)
        def loss(out, y):
            return F.cross_entropy(out, y)
        """, [6]),
}


@pytest.mark.parametrize(("source", "expected"), MATCH.values(), ids=MATCH.keys())
def test_softmax_before_cross_entropy_is_found(source: str, expected: list[int]) -> None:
    assert lines(source) == expected


NOT_MATCH = {
    "softmax-for-reporting-after-the-loss": """
        import torch
        loss_fn = torch.nn.CrossEntropyLoss()
        for data, targets in loader:
            predictions = model(data)
            loss = loss_fn(predictions, targets)
            class_probs = torch.nn.functional.softmax(predictions, 1)
        """,
    "log-softmax-with-nll": """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1))
        loss_fn = nn.NLLLoss()
        """,
    "log-softmax-with-cross-entropy": """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1))
        loss_fn = nn.CrossEntropyLoss()
        """,
    "no-cross-entropy-in-file": """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
        """,
    "softmax-only-in-eval": """
        import torch.nn.functional as F
        from torch import nn
        class Net(nn.Module):
            def forward(self, x):
                x = self.fc(x)
                if self.training:
                    return x
                return x.softmax(-1)
        def loss(out, y):
            return F.cross_entropy(out, y)
        """,
    "softmax-inside-not-last": """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1), nn.Linear(3, 3))
        loss_fn = nn.CrossEntropyLoss()
        """,
    "not-a-module-forward": """
        import torch.nn.functional as F
        class Helper:
            def forward(self, x):
                return F.softmax(x, dim=1)
        def loss(out, y):
            return F.cross_entropy(out, y)
        """,
}


@pytest.mark.parametrize("source", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_logits_models_and_reporting_softmax_are_not_flagged(source: str) -> None:
    assert lines(source) == []
