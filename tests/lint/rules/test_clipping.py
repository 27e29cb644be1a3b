"""GS403: gradient clipping with nothing fresh to clip: before its backward, or after the step."""
from __future__ import annotations

import textwrap

import pytest

from gradscope.lint import lint_source


def lines(source: str) -> list[int]:
    findings = lint_source(textwrap.dedent(source), "train.py", select={"GS403"})
    return [int(f.where.split(":")[1]) for f in findings]


MATCH = {
    "norm-before-backward": ("""
        import torch
        for x, y in loader:
            optimizer.zero_grad()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            loss_fn(model(x), y).backward()
            optimizer.step()
        """, [5]),
    "value-before-backward": ("""
        from torch.nn.utils import clip_grad_value_
        for x, y in loader:
            clip_grad_value_(model.parameters(), clip_value=1)
            loss.backward()
            optimizer.step()
        """, [4]),
    "before-scaled-backward": ("""
        import torch.nn as nn
        while True:
            nn.utils.clip_grad_norm_(params, 1.0)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
        """, [4]),
    "after-step": ("""
        import torch
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            optimizer.step()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        """, [7]),
    "before-inner-accumulation-loop": ("""
        import torch
        for step in range(10):
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            for micro in chunks:
                loss_fn(micro).backward()
            optimizer.step()
        """, [4]),
}


@pytest.mark.parametrize(("source", "expected"), MATCH.values(), ids=MATCH.keys())
def test_clip_before_backward_is_found(source: str, expected: list[int]) -> None:
    assert lines(source) == expected


NOT_MATCH = {
    "after-backward": """
        import torch
        for x, y in loader:
            optimizer.zero_grad()
            loss_fn(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
            optimizer.step()
        """,
    "accumulation": """
        import torch
        for i, (x, y) in enumerate(loader):
            loss_fn(model(x), y).backward()
            if (i + 1) % k == 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
        """,
    "clip-and-step-of-the-previous-backward": """
        import torch
        for i, (x, y) in enumerate(loader):
            if i > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                optimizer.zero_grad()
            loss_fn(model(x), y).backward()
        """,
    "step-in-a-helper": """
        import torch
        for x, y in loader:
            loss_fn(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            apply_update()
        """,
    "outside-a-loop": """
        import torch
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        loss.backward()
        """,
    "gan-with-optimizers-unpacked-from-a-tuple": """
        import torch
        from torch import nn
        g, d = nn.Linear(2, 3), nn.Linear(3, 1)
        og, od = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
        for _ in range(8):
            fake = g(torch.randn(8, 2))
            od.zero_grad()
            (d(torch.randn(8, 3)).mean() - d(fake.detach()).mean()).backward()
            torch.nn.utils.clip_grad_norm_(d.parameters(), 1.0)
            od.step()
            og.zero_grad()
            d(fake).mean().backward()
            torch.nn.utils.clip_grad_norm_(g.parameters(), 1.0)
            og.step()
        """,
}


@pytest.mark.parametrize("source", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_clip_after_backward_is_not_flagged(source: str) -> None:
    assert lines(source) == []
