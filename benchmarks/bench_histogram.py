"""What gradient histograms cost on resnet18, amortised over 1,000 steps, against a bare step and
against W&B-style per-parameter histograms at the same steps, all measured in the same run.

1,000 real resnet18 steps per variant would take minutes each, so the amortised figure is built
from its parts instead, each measured in alternating rounds (``interleaved_ratio``) on its own copy
of the model:

- ``bare``: a plain step;
- ``watch``: ``watch()`` with its default probes;
- ``watch+hist:sampled``: the default probes and a histogram probe that samples every step;
- ``watch+hist:unsampled``: the same with a histogram probe that never samples (its forward hook
  and schedule check still run);
- ``wandb:sampled``: a bare step plus W&B ``watch(log="gradients")``-style logging of every
  parameter: clone, drop NaN/Inf, ``min().item()``/``max().item()``, ``torch.histc(64 bins)``,
  ``.cpu()`` (``wandb_torch.log_tensor_stats``);

plus, timed alone, a flush of the default probes (the rows the rounds left) and a flush of one
histogram sample. With the default schedule a run samples S = 17 of its first 1,000 steps (0, 1, 2,
4, ..., 64, then 100, 200, ..., 900) and flushes 10 times, so per step

    amortised = ((1000 - S) * unsampled + S * sampled + 10 * flushes) / 1000

and W&B-style logging at the same steps is ``((1000 - S) * bare + S * wandb_sampled) / 1000``.
Ratios are to the bare step, over the best rounds (noise on a shared machine only adds time) and
the median rounds, in wall time and, beside it, in the process's CPU time per step (which other
processes on a loaded machine disturb far less). Flushes are timed in wall time for both.

Run: ``python -m pytest benchmarks/bench_histogram.py -o python_files="bench_*.py" --benchmark-only -s``.
"""
from __future__ import annotations

import copy
import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from torch import nn

from gradscope.probes.histogram import HistogramProbe, log_spaced
from gradscope.scope import Scope, watch

from workloads import WORKLOADS, interleaved_ratio, make_step, sync

STEPS = 1000
EVERY = 100
FLUSH_EVERY = 100
TARGET = 1.05  # default probes with histograms on resnet18, CPU, amortised
ROUNDS = int(os.environ.get("GRADSCOPE_BENCH_ROUNDS", "15"))
SAMPLED = sum(log_spaced(s, EVERY) for s in range(STEPS))


class _Always(HistogramProbe):
    def samples(self, step: int) -> bool:
        return True


class _Never(HistogramProbe):
    def samples(self, step: int) -> bool:
        return False


def _wandb_style(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                 bins: int = 64) -> Callable[[], None]:
    loss_fn = nn.CrossEntropyLoss()
    logged: list[torch.Tensor] = []

    def step() -> None:
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        logged.clear()
        for p in model.parameters():
            if p.grad is None:
                continue
            flat = p.grad.detach().clone().reshape(-1)
            flat = flat[~torch.isnan(flat)]
            flat = flat[~torch.isinf(flat)]
            low, high = flat.min().item(), flat.max().item()
            logged.append(flat.histc(bins=bins, min=low, max=high).cpu())
        opt.step()

    return step


class _CpuClock:
    """Wraps each variant to also record the process's CPU time per step: other processes on a
    shared machine stretch wall time but add little to this one's CPU time (a second estimate,
    shown beside the wall-clock one)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.times: dict[str, list[float]] = {}

    def wrap(self, name: str, fn: Callable[[], None]) -> Callable[[], None]:
        seen = self.times.setdefault(name, [])

        def timed() -> None:
            start = time.process_time()
            fn()
            seen.append(time.process_time() - start)
        return timed

    def per_step(self) -> dict[str, dict[str, float]]:
        kept = {k: v[self.warmup:] for k, v in self.times.items()}
        return {k: {"min_ms": 1e3 * min(v), "median_ms": 1e3 * statistics.median(v)} for k, v in kept.items()}


def _check_identical(device: torch.device) -> None:
    """Correctness before timing: histograms on every step leave training bit for bit the same."""
    w = WORKLOADS["resnet18"]
    torch.manual_seed(0)
    base = w.build().to(device)
    x, y = w.batch(device)
    results = []
    for watched in (False, True):
        m = copy.deepcopy(base)
        o = torch.optim.Adam(m.parameters(), lr=1e-3)
        step = make_step(m, o, x, y)
        scope = watch(m, o, probes=["default", HistogramProbe(every=1)]) if watched else None
        if scope is not None:
            scope.__enter__()
        for _ in range(2):
            step()
        if scope is not None:
            scope.close()
            assert scope.records["histogram"].steps == [0, 1]
        results.append([p.detach().clone() for p in m.parameters()])
    assert all(torch.equal(a, b) for a, b in zip(*results)), "the histogram probe changed training"


def _time_flush(scope: Scope, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    scope._flush()
    sync(device)
    return time.perf_counter() - start


def _histogram_flush(base: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                     repeats: int = 5) -> float:
    """Median time to flush one histogram sample (what each flush of a default run moves)."""
    m = copy.deepcopy(base)
    o = torch.optim.Adam(m.parameters(), lr=1e-3)
    step = make_step(m, o, x, y)
    times = []
    with watch(m, o, probes=[HistogramProbe(every=1)], flush_every=10_000) as scope:
        for _ in range(repeats + 1):
            step()
            times.append(_time_flush(scope, device))
    return statistics.median(times[1:])


def test_histogram_cost(benchmark: pytest.FixtureRequest, device: torch.device) -> None:
    w = WORKLOADS["resnet18"]
    if device.type == "cpu":
        _check_identical(device)
    torch.manual_seed(0)
    base = w.build().to(device)
    x, y = w.batch(device)

    def fresh() -> tuple[nn.Module, torch.optim.Optimizer]:
        m = copy.deepcopy(base)
        return m, torch.optim.Adam(m.parameters(), lr=1e-3)

    variants: dict[str, Callable[[], None]] = {}
    scopes: dict[str, Scope] = {}
    m, o = fresh()
    variants["bare"] = make_step(m, o, x, y)
    for label, extra in (("watch", []), ("watch+hist:sampled", [_Always(every=EVERY)]),
                         ("watch+hist:unsampled", [_Never(every=EVERY)])):
        m, o = fresh()
        scope = watch(m, o, probes=["default", *extra], flush_every=10_000)
        scope.__enter__()
        scopes[label] = scope
        variants[label] = make_step(m, o, x, y)
    m, o = fresh()
    variants["wandb:sampled"] = _wandb_style(m, o, x, y)
    clock = _CpuClock(warmup=3)
    variants = {k: clock.wrap(k, fn) for k, fn in variants.items()}
    try:
        r = interleaved_ratio(variants, device, rounds=ROUNDS, steps_per_round=2)
        cpu = clock.per_step()
        benchmark.pedantic(variants["watch+hist:sampled"], rounds=3, iterations=1, warmup_rounds=1)
        flush_default = _time_flush(scopes["watch"], device)
    finally:
        for scope in scopes.values():
            scope.close()
        sync(device)
    flush_hist = _histogram_flush(base, x, y, device)
    flushes = STEPS // FLUSH_EVERY

    def amortised(key: str, times: dict[str, dict[str, float]]) -> dict[str, float]:
        out = {}
        for kind in ("min_ms", "median_ms"):
            t = {k: v[kind] for k, v in times.items()}
            watch_ms = (STEPS * t["watch"] + flushes * 1e3 * flush_default) / STEPS
            hist_ms = ((STEPS - SAMPLED) * t["watch+hist:unsampled"] + SAMPLED * t["watch+hist:sampled"]
                       + flushes * 1e3 * (flush_default + flush_hist)) / STEPS
            wandb_ms = ((STEPS - SAMPLED) * t["bare"] + SAMPLED * t["wandb:sampled"]) / STEPS
            value = {"watch": watch_ms, "watch+hist": hist_ms, "wandb": wandb_ms}[key]
            out[kind] = value
            out["ratio" if kind == "min_ms" else "median_ratio"] = value / t["bare"]
        return out

    summary = {k: amortised(k, r) for k in ("watch", "watch+hist", "wandb")}
    summary_cpu = {k: amortised(k, cpu) for k in ("watch", "watch+hist", "wandb")}
    benchmark.extra_info.update({k: {m: round(v, 4) for m, v in d.items()} for k, d in r.items()})
    benchmark.extra_info.update({f"amortised:{k}": {m: round(v, 4) for m, v in d.items()}
                                 for k, d in summary.items()})
    benchmark.extra_info.update({f"amortised_cpu_time:{k}": {m: round(v, 4) for m, v in d.items()}
                                 for k, d in summary_cpu.items()})
    benchmark.extra_info.update({"flush_default_ms": 1e3 * flush_default, "flush_histogram_ms": 1e3 * flush_hist,
                                 "sampled_steps_per_1000": SAMPLED})
    bare = r["bare"]
    print(f"\n{w.name} on {device}: bare step {bare['min_ms']:.2f} ms best, {bare['median_ms']:.2f} ms median; "
          f"{ROUNDS} rounds of 2 steps")
    print(f"  {'per step':<26} {'best':>7} {'median':>8}   {'CPU time: best':>14} {'median':>8}")
    for label, v in r.items():
        c = cpu[label]
        print(f"  {label:<26} {v['ratio']:6.3f}x {v['median_ratio']:7.3f}x  "
              f"{c['min_ms'] / cpu['bare']['min_ms']:13.3f}x {c['median_ms'] / cpu['bare']['median_ms']:7.3f}x"
              f"  ({v['min_ms']:.2f} ms wall, {c['min_ms']:.2f} ms CPU)")
    print(f"  flush: default probes {1e3 * flush_default:.2f} ms (the rows the rounds left), "
          f"one histogram sample {1e3 * flush_hist:.2f} ms")
    print(f"  amortised over {STEPS} steps ({SAMPLED} sampled, {flushes} flushes):")
    for label, v in summary.items():
        c = summary_cpu[label]
        print(f"  {label:<26} {v['ratio']:6.3f}x {v['median_ratio']:7.3f}x  "
              f"{c['ratio']:13.3f}x {c['median_ratio']:7.3f}x  ({v['min_ms']:.2f} ms)")
    if device.type == "cpu":
        verdict = "met" if summary["watch+hist"]["ratio"] <= TARGET else "NOT met"
        print(f"  target for default probes with histograms: at most {TARGET:.2f}x (best rounds) -> {verdict}")


def _large_histogram(layers: list[str], steps: int = 20_000) -> dict[str, object]:
    """The histogram record the probe keeps for ``layers`` over ``steps`` steps (every 100th step
    sampled, rows thinned to the cell budget), with a realistic spread of octaves per layer."""
    from gradscope.probes.histogram import CELL_BUDGET, MIN_KEPT
    from gradscope.records.histogram import BINS, ZERO

    offered = [s for s in range(steps) if log_spaced(s, EVERY)]
    kept = max(MIN_KEPT, CELL_BUDGET // (len(layers) * BINS))
    stride = 1
    while len(offered[::stride]) > kept:
        stride *= 2
    kept_steps = offered[::stride]
    rng = np.random.default_rng(0)
    counts = np.zeros((len(kept_steps), len(layers), BINS))
    for j in range(len(layers)):
        centre = int(rng.integers(10, 45))
        counts[:, j, centre - 6:centre + 6] = rng.integers(0, 120_000, size=(len(kept_steps), 12))
        counts[:, j, ZERO] = rng.integers(0, 2_000, size=len(kept_steps))
    total = counts.sum(axis=2)
    return {"layers": layers, "modules": ["Linear"] * len(layers), "every": EVERY, "steps": kept_steps,
            "stride": stride, "samples_seen": len(offered), "counts": counts.reshape(len(kept_steps), -1).tolist(),
            "zero_fraction": (counts[:, :, ZERO] / total).tolist(),
            "below_normal": rng.random((len(kept_steps), len(layers))).tolist(),
            "dtype": "float16", "low_precision": "float16", "loss_scale": [65536.0] * len(kept_steps)}


def test_large_report_with_histograms(benchmark: pytest.FixtureRequest, tmp_path: Path) -> None:
    """bench_report's large run (2,000 tensors in 1,000 layers, 20,000 steps) with the histogram
    record the probe would keep for it: under 30 s and 15 MB (issue 17)."""
    from bench_report import large_record

    from gradscope.reports.html import render_html, write_html

    record = large_record()
    record["probes"]["histogram"] = _large_histogram(record["probes"]["grad_norm"]["layers"])
    page = render_html(record)  # correct before timing: the section and its figure are there
    assert 'id="histograms"' in page and 'id="fig-grad-histogram"' in page and "could not be drawn" not in page
    target = tmp_path / "large.html"
    timings: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        write_html(record, target)
        timings.append(time.perf_counter() - started)

    benchmark.pedantic(run, rounds=1, iterations=1)
    seconds, size = timings[-1], target.stat().st_size
    histogram_bytes = len(json.dumps(record["probes"]["histogram"], separators=(",", ":")))
    benchmark.extra_info.update(seconds=round(seconds, 2), megabytes=round(size / 1e6, 2),
                                histogram_megabytes=round(histogram_bytes / 1e6, 2))
    print(f"\nlarge report with histograms: {seconds:.1f} s, {size / 1e6:.2f} MB "
          f"(the histogram record {histogram_bytes / 1e6:.2f} MB; targets 30 s, 15 MB)")
    assert size < 15 * 1024 * 1024
