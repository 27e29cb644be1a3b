"""GS512: gradient accumulation whose micro-batch losses are not divided by the number of steps."""
from __future__ import annotations

import textwrap

import pytest

from gradscope.lint import lint_source


def lines(source: str) -> list[int]:
    findings = lint_source(textwrap.dedent(source), "train.py", select={"GS512"})
    return [int(f.where.split(":")[1]) for f in findings]


MATCH = {
    "inline-loss": ("""
        for i, (x, y) in enumerate(loader):
            loss_fn(model(x), y).backward()
            if (i + 1) % accumulation_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
        """, [3]),
    "named-loss": ("""
        import torch.nn.functional as F
        for step, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if step % 4 == 0:
                opt.step()
                opt.zero_grad()
        """, [5]),
    "hugging-face-output-loss": ("""
        for step, batch in enumerate(dataloader):
            outputs = model(**batch)
            loss = outputs.loss
            loss.backward()
            if step % args.gradient_accumulation_steps == 0 or step == len(dataloader) - 1:
                optimizer.step()
                lr_scheduler.step()
                optimizer.zero_grad()
        """, [5]),
    "grad-scaler": ("""
        for i, (x, y) in enumerate(loader):
            with torch.autocast("cuda"):
                loss = criterion(model(x), y)
            scaler.scale(loss).backward()
            if (i + 1) % accum == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        """, [5]),
    "mean-is-no-division": ("""
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            loss = loss.mean()
            loss.backward()
            if (i + 1) % 8 == 0:
                optimizer.step()
                optimizer.zero_grad()
        """, [5]),
    "in-a-method": ("""
        class Trainer:
            def fit(self):
                for i, batch in enumerate(self.loader):
                    out = self.model(batch["x"])
                    self.criterion(out, batch["y"]).backward()
                    if (i + 1) % self.accumulate == 0:
                        self.optimizer.step()
                        self.optimizer.zero_grad()
        """, [6]),
}


@pytest.mark.parametrize(("source", "expected"), MATCH.values(), ids=MATCH.keys())
def test_undivided_accumulation_is_found(source: str, expected: list[int]) -> None:
    assert lines(source) == expected


NOT_MATCH = {
    "divided-inline": """
        for i, (x, y) in enumerate(loader):
            (loss_fn(model(x), y) / accumulation_steps).backward()
            if (i + 1) % accumulation_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
    "divided-at-binding": """
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y) / k
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
    "divided-after-binding": """
        for step, batch in enumerate(dataloader):
            loss = model(**batch).loss
            loss = loss / args.gradient_accumulation_steps
            loss.backward()
            if step % args.gradient_accumulation_steps == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
    "divided-in-place": """
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y)
            loss /= k
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
    "scaled-by-a-weight": """
        for i, (x, y) in enumerate(loader):
            loss = criterion(model(x), y) * (1.0 / k)
            scaler.scale(loss).backward()
            if (i + 1) % k == 0:
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
        """,
    "accelerate-divides-itself": """
        for step, batch in enumerate(dataloader):
            loss = model(**batch).loss
            accelerator.backward(loss)
            if step % accumulation == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
    "step-every-iteration": """
        for i, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
            if i % 100 == 0:
                print(i)
        """,
    "remainder-guards-only-logging": """
        for i, (x, y) in enumerate(loader):
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
            if i % 10 == 0:
                scheduler.step()
        """,
    "remainder-by-one": """
        for i, (x, y) in enumerate(loader):
            criterion(model(x), y).backward()
            if (i + 1) % 1 == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
    "unknown-value": """
        for i, batch in enumerate(loader):
            loss = compute(batch)
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
    "unpacked-loss": """
        for i, batch in enumerate(loader):
            loss, logs = model.training_step(batch)
            loss.backward()
            if (i + 1) % k == 0:
                optimizer.step()
                optimizer.zero_grad()
        """,
}


@pytest.mark.parametrize("source", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_divided_or_unaccumulated_losses_are_not_flagged(source: str) -> None:
    assert lines(source) == []
