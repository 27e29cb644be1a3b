"""The timing probe: every phase of a step is measured and they add up; the input-bound rule
(GS510) is judged on synthetic timings, so no test here depends on how fast the machine is."""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch import nn

from gradscope.judges.timing import judge_timing
from gradscope.records import ModelInfo, PhaseStats, RunRecord, TimingRecord, TimingSummary
from gradscope.records.timing import PHASES
from gradscope.scope import watch
from gradscope.thresholds import Thresholds


def _setup(width: int = 256, batch: int = 128) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, 10))
    return model, torch.optim.SGD(model.parameters(), lr=0.01), torch.randn(batch, width), \
        torch.randint(0, 10, (batch,))


def _train(scope, model, opt, x, y, steps: int, data_sleep: float = 0.0, clip: bool = False) -> None:
    for _ in range(steps):
        with scope.phase("data"):
            if data_sleep:
                time.sleep(data_sleep)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def test_every_phase_is_timed_and_adds_up_to_the_step() -> None:
    model, opt, x, y = _setup()
    with watch(model, opt, probes=["timing", "clipping"]) as scope:
        _train(scope, model, opt, x, y, steps=12, clip=True)
    rec = scope.records["timing"]
    assert rec.columns == list(PHASES)
    assert rec.summary is not None and list(rec.summary.phases) == list(PHASES)
    assert rec.steps == list(range(12))
    assert rec.summary.steps_measured == 12 - rec.warmup_steps
    for row in rec.ms[rec.warmup_steps:]:
        named = dict(zip(PHASES, row.tolist()))
        for phase in ("forward", "backward", "clip", "optimizer"):
            assert named[phase] > 0, phase
        parts = sum(named[p] for p in ("data", "h2d", "forward", "backward", "clip", "optimizer"))
        assert parts + named["other"] == pytest.approx(named["step"], rel=1e-6, abs=1e-6)
        assert parts <= named["step"] * 1.0001
    assert rec.clock == "perf_counter_ns"
    assert rec.summary.steps_per_second == pytest.approx(1000.0 / rec.summary.phases["step"].median_ms)


def test_the_data_phase_is_what_the_loop_marks() -> None:
    model, opt, x, y = _setup(width=64, batch=32)
    with watch(model, opt, probes=["timing"]) as scope:
        _train(scope, model, opt, x, y, steps=8, data_sleep=0.001)
    data = scope.records["timing"].column("data")
    assert len(data) == 8 and all(ms > 0 for ms in data)  # each marked phase was measured
    with watch(model, opt, probes=["timing"]) as unmarked:
        for _ in range(8):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            opt.zero_grad()
    assert unmarked.records["timing"].column("data") == [0.0] * 8  # nothing marked, nothing measured


def _timed(data_ms: float, step_ms: float, steps: int = 20) -> RunRecord:
    """A run whose median step waited ``data_ms`` for its batch out of ``step_ms``."""
    phases = {p: PhaseStats(0.0, 0.0, 0.0) for p in PHASES}
    phases["data"] = PhaseStats(data_ms, data_ms, data_ms)
    phases["step"] = PhaseStats(step_ms, step_ms, step_ms)
    rec = TimingRecord(steps=list(range(steps + 5)), ms=np.zeros((steps + 5, len(PHASES))),
                       summary=TimingSummary(steps_measured=steps, phases=phases,
                                             steps_per_second=1000.0 / step_ms))
    return RunRecord(model=ModelInfo(class_name="Net"), steps=steps + 5, probes={"timing": rec})


@pytest.mark.parametrize(("data_ms", "step_ms", "share", "flagged"), [
    (20.0, 21.0, 0.3, True),     # the step waits for the loader
    (0.2, 21.0, 0.3, False),     # a fed loop
    (5.0, 10.0, 0.3, True),      # half the step
    (5.0, 10.0, 0.6, False),     # the share is a threshold
    (2.9, 10.0, 0.3, False),     # just under it
], ids=["input-bound", "fed", "half", "half-under-a-higher-threshold", "just-under"])
def test_input_bound_rule(data_ms: float, step_ms: float, share: float, flagged: bool) -> None:
    run = _timed(data_ms, step_ms)
    found = judge_timing(run.probes["timing"], run, Thresholds(input_bound_share=share))
    assert [f.code for f in found] == (["GS510"] if flagged else [])
    if flagged:
        assert "input-bound" in found[0].message and f"{data_ms:.1f} ms" in found[0].message


def test_input_bound_rule_needs_steps_past_the_warm_up() -> None:
    run = _timed(20.0, 21.0, steps=4)
    assert judge_timing(run.probes["timing"], run, Thresholds()) == []


def test_gradscope_overhead_is_measured_separately() -> None:
    model, opt, x, y = _setup(width=64, batch=32)
    with watch(model, opt) as scope:
        _train(scope, model, opt, x, y, steps=10)
    summary = scope.records["timing"].summary
    assert summary is not None
    assert summary.phases["gradscope"].median_ms > 0
    assert summary.phases["gradscope"].median_ms < summary.phases["step"].median_ms
