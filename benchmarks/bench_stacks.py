"""What gradscope costs on the training stacks people scale with: a ``torch.compile``d step and a
DDP step, each against the same bare step measured in the same run (alternating rounds).

- compile: the notes' CNN compiled with the default inductor backend, bare and inside
  ``watch()`` with the default probes (one compiled model each; both compile before timing);
- DDP: the notes' CNN in ``DistributedDataParallel`` on a one-rank gloo group (the reducer, its
  buckets and the deferred end-of-backward read are all there; with one rank the all-reduce is
  local, so the ratio is gradscope's own cost, not the network's).

Targets (CPU): at most 1.05x each. Run:
``python -m pytest benchmarks/bench_stacks.py -o python_files="bench_*.py" --benchmark-only -s``.
"""
from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from gradscope.scope import watch

from workloads import WORKLOADS, interleaved_ratio, make_step

TARGET = 1.05
ROUNDS = int(os.environ.get("GRADSCOPE_BENCH_ROUNDS", "7"))


def _report(label: str, ratios: dict[str, dict[str, float]], benchmark: pytest.FixtureRequest) -> None:
    benchmark.extra_info.update({k: {m: round(x, 4) for m, x in v.items()} for k, v in ratios.items()})  # type: ignore[attr-defined]
    bare, watched = ratios["bare"], ratios["watch"]
    print(f"\n{label}: bare {bare['min_ms']:.2f} ms best, {bare['median_ms']:.2f} ms median; watch() "
          f"{watched['ratio']:.3f}x best, {watched['median_ratio']:.3f}x median "
          f"(target at most {TARGET:.2f}x: {'met' if watched['ratio'] <= TARGET else 'NOT met'})")


def test_compiled_step(benchmark: pytest.FixtureRequest) -> None:
    w = WORKLOADS["cnn"]
    device = torch.device("cpu")
    torch.manual_seed(0)
    base = w.build()
    x, y = w.batch(device)
    variants = {}
    scopes = []
    for label in ("bare", "watch"):
        model = copy.deepcopy(base)
        compiled = torch.compile(model)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        if label == "watch":
            scope = watch(compiled, opt)
            scope.__enter__()
            scopes.append(scope)
        variants[label] = make_step(compiled, opt, x, y)  # type: ignore[arg-type]
    try:
        for step in variants.values():  # compile both (and both sampling variants) before timing
            for _ in range(12):
                step()
        ratios = interleaved_ratio(variants, device, rounds=ROUNDS, steps_per_round=4)
        benchmark.pedantic(variants["watch"], rounds=3, iterations=1)  # type: ignore[attr-defined]
    finally:
        for scope in scopes:
            scope.close()
    _report("notes CNN, torch.compile (inductor), CPU", ratios, benchmark)


def test_ddp_step(benchmark: pytest.FixtureRequest) -> None:
    from torch.nn.parallel import DistributedDataParallel

    w = WORKLOADS["cnn"]
    device = torch.device("cpu")
    folder = Path(tempfile.mkdtemp())
    dist.init_process_group("gloo", store=dist.FileStore(str(folder / "store"), 1), rank=0, world_size=1)
    scopes = []
    try:
        torch.manual_seed(0)
        base = w.build()
        x, y = w.batch(device)
        variants = {}
        for label in ("bare", "watch"):
            model = DistributedDataParallel(copy.deepcopy(base))
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            if label == "watch":
                scope = watch(model, opt)
                scope.__enter__()
                scopes.append(scope)
            variants[label] = make_step(model, opt, x, y)
        ratios = interleaved_ratio(variants, device, rounds=ROUNDS, steps_per_round=4)
        benchmark.pedantic(variants["watch"], rounds=3, iterations=1)  # type: ignore[attr-defined]
    finally:
        for scope in scopes:
            scope.close()
        dist.destroy_process_group()
    _report("notes CNN, DistributedDataParallel (one gloo rank), CPU", ratios, benchmark)


