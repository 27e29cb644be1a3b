"""What gradscope costs on models with many parameter tensors, against the same bare step measured
in the same run (alternating rounds), and how long attaching and closing take.

- ``linear5000``: 5,000 small ``Linear`` layers (10,000 parameter tensors), foreach SGD;
- ``transformer1000``: a stack of 83 ``TransformerEncoderLayer`` (about 1,000 parameter tensors);
- resnet18 (62 tensors) for comparison, from bench_overhead's workloads.

Targets (CPU): at most 1.05x for the first two; resnet18 no worse than before. Attach and close:
well under a second for 10,000 tensors. Run:
``python -m pytest benchmarks/bench_scale.py -o python_files="bench_*.py" --benchmark-only -s``.
"""
from __future__ import annotations

import copy
import os
import time
from typing import Callable

import pytest
import torch
from torch import nn

from gradscope.scope import watch

from workloads import WORKLOADS, interleaved_ratio

TARGET = 1.05
ROUNDS = int(os.environ.get("GRADSCOPE_BENCH_ROUNDS", "7"))


def linear5000() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Linear(8, 8) for _ in range(5000)])
    x, y = torch.randn(4, 8), torch.randn(4, 8)
    return model, lambda m: nn.functional.mse_loss(m(x), y)


def transformer1000() -> tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]:
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(64, nhead=4, dim_feedforward=128, batch_first=True, dropout=0.0)
    model = nn.TransformerEncoder(layer, 83, enable_nested_tensor=False)   # 12 tensors a layer
    x = torch.randn(8, 16, 64)
    return model, lambda m: m(x).square().mean()


def _step(model: nn.Module, opt: torch.optim.Optimizer, loss_of: Callable[[nn.Module], torch.Tensor]
          ) -> Callable[[], None]:
    def step() -> None:
        opt.zero_grad()
        loss_of(model).backward()
        opt.step()
    return step


@pytest.mark.parametrize("build", [linear5000, transformer1000], ids=["linear5000", "transformer1000"])
def test_many_tensors(build: Callable[[], tuple[nn.Module, Callable[[nn.Module], torch.Tensor]]],
                      benchmark: pytest.FixtureRequest) -> None:
    base, loss_of = build()
    tensors = len(list(base.parameters()))
    variants = {}
    scopes = []
    attach_s = close_s = 0.0
    for label in ("bare", "watch"):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, foreach=True)
        if label == "watch":
            started = time.perf_counter()
            scope = watch(model, opt)
            scope.__enter__()
            attach_s = time.perf_counter() - started
            scopes.append(scope)
        variants[label] = _step(model, opt, loss_of)
    try:
        ratios = interleaved_ratio(variants, torch.device("cpu"), rounds=ROUNDS, steps_per_round=3)
        benchmark.pedantic(variants["watch"], rounds=3, iterations=1)  # type: ignore[attr-defined]
    finally:
        for scope in scopes:
            started = time.perf_counter()
            scope.close()
            close_s = time.perf_counter() - started
    every = scopes[0].get_probe("grad_norm").every  # type: ignore[union-attr]
    benchmark.extra_info.update({"tensors": tensors, "grad_norm_every": every,  # type: ignore[attr-defined]
                                 "attach_s": round(attach_s, 3), "close_s": round(close_s, 3),
                                 **{k: {m: round(x, 4) for m, x in v.items()} for k, v in ratios.items()}})
    bare, watched = ratios["bare"], ratios["watch"]
    print(f"\n{build.__name__} ({tensors} tensors, norms every {every} step(s)): bare {bare['min_ms']:.1f} ms "
          f"best; watch() {watched['ratio']:.3f}x best, {watched['median_ratio']:.3f}x median (target at most "
          f"{TARGET:.2f}x: {'met' if watched['ratio'] <= TARGET else 'NOT met'}); attach {attach_s:.2f} s, "
          f"close {close_s:.2f} s")


def test_resnet18_for_comparison(benchmark: pytest.FixtureRequest) -> None:
    w = WORKLOADS["resnet18"]
    torch.manual_seed(0)
    base = w.build()
    x, y = w.batch(torch.device("cpu"))
    loss_fn = nn.CrossEntropyLoss()
    variants = {}
    scopes = []
    for label in ("bare", "watch"):
        model = copy.deepcopy(base)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        if label == "watch":
            scope = watch(model, opt)
            scope.__enter__()
            scopes.append(scope)
        variants[label] = _step(model, opt, lambda m: loss_fn(m(x), y))
    try:
        ratios = interleaved_ratio(variants, torch.device("cpu"), rounds=ROUNDS, steps_per_round=3)
        benchmark.pedantic(variants["watch"], rounds=3, iterations=1)  # type: ignore[attr-defined]
    finally:
        for scope in scopes:
            scope.close()
    benchmark.extra_info.update({k: {m: round(x, 4) for m, x in v.items()}  # type: ignore[attr-defined]
                                 for k, v in ratios.items()})
    print(f"\nresnet18 (62 tensors): watch() {ratios['watch']['ratio']:.3f}x best, "
          f"{ratios['watch']['median_ratio']:.3f}x median")
