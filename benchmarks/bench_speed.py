"""How long gradscope's own slow parts take, and whether its step clock agrees with PyTorch's.

Speeds are measured here, never decided by a unit test (a shared machine makes such tests
flaky). Each benchmark prints its number and the target it is held to:

- linting the installed torchvision (about 185 files): target under 60 s on 2 cores;
- generating the default glyph data (12,000 + 2,000 images): target under 20 s;
- ``gradscope --help`` (which imports neither torch nor matplotlib): target under 0.5 s;
- the timing probe's step time against ``torch.utils.benchmark.Timer`` on the same step, in
  alternating rounds: the best times agree within 25% (they measure the same thing).

Run: ``python -m pytest benchmarks/bench_speed.py -o python_files="bench_*.py" --benchmark-only -s``.
"""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils import benchmark as torch_benchmark

from gradscope.records.timing import PHASES
from gradscope.scope import watch

HELP_TARGET_S = 0.5
LINT_TARGET_S = 60.0
DATA_TARGET_S = 20.0
CLOCK_AGREEMENT = (0.75, 1.35)


def test_help_starts_quickly(benchmark: pytest.FixtureRequest) -> None:
    import subprocess
    import sys

    def run_help() -> None:
        subprocess.run([sys.executable, "-m", "gradscope.cli", "--help"], check=True, capture_output=True)

    benchmark.pedantic(run_help, rounds=5, iterations=1, warmup_rounds=1)  # type: ignore[attr-defined]
    seconds = benchmark.stats.stats.min  # type: ignore[attr-defined]
    print(f"\ngradscope --help: {seconds:.2f} s (target < {HELP_TARGET_S} s)")


def test_lint_of_installed_torchvision(benchmark: pytest.FixtureRequest) -> None:
    import torchvision

    from gradscope.lint import lint_paths

    package = Path(torchvision.__file__).parent
    result = benchmark.pedantic(lint_paths, args=([package],), rounds=1, iterations=1)  # type: ignore[attr-defined]
    seconds = benchmark.stats.stats.min  # type: ignore[attr-defined]
    print(f"\nlint: {result.files} torchvision files in {seconds:.1f} s (target < {LINT_TARGET_S:.0f} s)")


def test_default_data_generation(benchmark: pytest.FixtureRequest) -> None:
    from gradscope.data import load_data

    train, test = benchmark.pedantic(load_data, args=("glyphs", (1, 28, 28), 10), kwargs={"seed": 0},  # type: ignore[attr-defined]
                                     rounds=1, iterations=1)
    seconds = benchmark.stats.stats.min  # type: ignore[attr-defined]
    print(f"\ndata: {len(train):,} + {len(test):,} glyphs in {seconds:.1f} s (target < {DATA_TARGET_S:.0f} s)")


def test_step_clock_agrees_with_torch_utils_benchmark(benchmark: pytest.FixtureRequest) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(384, 384), nn.ReLU(), nn.Linear(384, 384), nn.ReLU(), nn.Linear(384, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(256, 384), torch.randint(0, 10, (256,))

    def step() -> None:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def measure() -> tuple[float, float]:
        reference: list[float] = []
        with watch(model, opt, probes=["timing"]) as scope:
            for _ in range(3):  # alternate the two clocks so that load affects both alike
                timer = torch_benchmark.Timer("step()", globals={"step": step}, num_threads=1)
                reference += timer.blocked_autorange(min_run_time=0.3).times
                for _ in range(12):
                    step()
        ours = [row[PHASES.index("step")] / 1e3 for row in scope.records["timing"].ms[5:].tolist()]
        return min(ours), min(reference)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(5):
            step()
        started = time.perf_counter()
        ours, reference = benchmark.pedantic(measure, rounds=1, iterations=1)  # type: ignore[attr-defined]
    finally:
        torch.set_num_threads(threads)
    ratio = ours / reference
    low, high = CLOCK_AGREEMENT
    print(f"\nstep clock: gradscope {1e3 * ours:.2f} ms, torch.utils.benchmark {1e3 * reference:.2f} ms, "
          f"ratio {ratio:.2f} (agreement band {low}..{high}; measured in {time.perf_counter() - started:.1f} s)")
