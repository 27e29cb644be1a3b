"""Shared pieces of the benchmarks: models, steps and the interleaved ratio runner."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from gradscope.runner import notes_cnn


def resnet18() -> nn.Module:
    import torchvision

    return torchvision.models.resnet18(weights=None, num_classes=10)


def resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


class TinyTransformer(nn.Module):
    """A small nn.TransformerEncoder classifier over token sequences."""

    def __init__(self, vocab: int = 1000, dim: int = 128, layers: int = 2, classes: int = 10) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        layer = nn.TransformerEncoderLayer(dim, nhead=4, dim_feedforward=4 * dim, batch_first=True,
                                           dropout=0.0)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


@dataclass
class Workload:
    """A model, one batch and how to build a fresh copy; steps are plain notes-style steps."""

    name: str
    build: Callable[[], nn.Module]
    batch: Callable[[torch.device], tuple[torch.Tensor, torch.Tensor]]
    amp: bool = False        # autocast to bfloat16 around forward and loss
    cuda_only: bool = False  # too large for a CPU benchmark


WORKLOADS = {
    "cnn": Workload("notes CNN b64 1x28x28", notes_cnn,
                    lambda d: (torch.randn(64, 1, 28, 28, device=d), torch.randint(0, 10, (64,), device=d))),
    "resnet18": Workload("resnet18 b16 3x64x64", resnet18,
                         lambda d: (torch.randn(16, 3, 64, 64, device=d), torch.randint(0, 10, (16,), device=d))),
    "transformer": Workload("TransformerEncoder b32 seq64", TinyTransformer,
                            lambda d: (torch.randint(0, 1000, (32, 64), device=d),
                                       torch.randint(0, 10, (32,), device=d))),
    "resnet50_amp": Workload("resnet50 b64 3x224x224 AMP bf16", resnet50,
                             lambda d: (torch.randn(64, 3, 224, 224, device=d),
                                        torch.randint(0, 1000, (64,), device=d)),
                             amp=True, cuda_only=True),
}


def make_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
              amp: bool = False) -> Callable[[], None]:
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_ratio(variants: dict[str, Callable[[], None]], device: torch.device, rounds: int,
                      steps_per_round: int, warmup: int = 3) -> dict[str, dict[str, float]]:
    """Per-step time of each variant, measured in alternating rounds, as ratios to "bare".

    Returns, per variant, the best round's time (``min_ms``) and the median round's (``median_ms``)
    and both ratios. On a shared machine other processes only ever add time, so the best round is
    the steadiest estimate of a variant's own cost (as ``timeit`` advises); the median is shown
    beside it so the noise is visible.
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants) if r % 2 == 0 else list(reversed(variants))
        for name in order:
            fn = variants[name]
            sync(device)
            start = time.perf_counter()
            for _ in range(steps_per_round):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / steps_per_round)
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    return {k: {"min_ms": 1e3 * best[k], "median_ms": 1e3 * median[k],
                "ratio": best[k] / best["bare"], "median_ratio": median[k] / median["bare"]}
            for k in variants}
