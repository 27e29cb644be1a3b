"""CUDA-only checks; they skip cleanly on a machine without a GPU."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gradscope.runner import notes_cnn
from gradscope.scope import watch

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_default_probes_cause_no_host_device_sync_between_flushes() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = notes_cnn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(64, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (64,), device=device)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    with watch(model, opt, flush_every=1000, activations="all") as scope:
        for _ in range(12):  # first steps: lazy set-up (index tensors, hook choice) may copy
            step()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(30):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert scope.steps == 42
    assert len(scope.records["grad_norm"].steps) == 42


def test_cuda_norms_match_plain_autograd() -> None:
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = notes_cnn().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(8, 1, 28, 28, device=device)
    y = torch.randint(0, 10, (8,), device=device)
    with watch(model, opt) as scope:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        expected = [p.grad.norm().item() for p in model.parameters()]
        opt.step()
    got = scope.records["grad_norm"].parameter_norms[0].tolist()
    assert got == pytest.approx(expected, rel=1e-5)
    timing = scope.records["timing"]
    assert timing.clock == "cuda events"
