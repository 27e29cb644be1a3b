"""How long the HTML report takes for a large run, and how big the page is.

The record: 2,000 parameter tensors in 1,000 layers (40 blocks of 25), 20,000 steps that were
*not* decimated by the engine (the renderer must not rely on ``max_kept_steps``), 1,000 watched
modules, a clip call per step, a freeze table and a module tree of 1,000 rows. Per-layer and
per-module rows are all distinct; per-parameter rows cycle through a few lists to keep the
benchmark's own memory reasonable (the renderer drops them from the page anyway). Target: under
30 s on 2 cores and under 10 MB.

Run: ``python -m pytest benchmarks/bench_report.py -o python_files="bench_*.py" --benchmark-only -s``.
"""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradscope.reports.html import render_html, write_html

TARGET_SECONDS = 30.0
TARGET_BYTES = 10 * 1024 * 1024


def large_record(blocks: int = 40, per_block: int = 25, steps: int = 20_000) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    layers = [f"encoder.blocks.{b}.layers.{i}" for b in range(blocks) for i in range(per_block)]
    params = [f"{layer}.{k}" for layer in layers for k in ("weight", "bias")]
    depth = np.linspace(-4, 0, len(layers))
    drift = np.linspace(0, 1, steps)[:, None]
    layer_norms = (10 ** (depth + drift + rng.normal(0, 0.3, (steps, len(layers))))).tolist()
    layer_norms[12_345][17] = "NaN"
    act_norms = (10 ** (depth + rng.normal(0, 0.2, (steps, len(layers))))).tolist()
    cycle = [(10 ** (np.repeat(depth, 2) + rng.normal(0, 0.3, len(params)))).tolist() for _ in range(64)]
    total = np.sqrt(np.square(np.asarray(layer_norms[:12_345] + layer_norms[12_346:], dtype=float)).sum(axis=1))
    total = np.insert(total, 12_345, np.nan).tolist()

    def stats(names: list[str]) -> dict[str, Any]:
        return {n: {"count": steps, "min": float(rng.random() * 1e-4), "max": float(1 + rng.random()),
                    "mean": float(10 ** rng.uniform(-4, 0)), "first_nonfinite_step": None} for n in names}

    return {
        "schema": "gradscope.record", "version": 1, "torch_version": "2.x",
        "model": {"class": "Encoder", "parameters": 120_000_000, "trainable": 120_000_000, "device": "cuda:0"},
        "steps": steps, "backwards": steps, "step_on": "optimizer",
        "findings": [{"code": "GS203", "severity": "warning", "where": f"encoder.blocks.{b}",
                      "message": "per-layer gradient norms fall by more than 1e4", "hint": "residuals"}
                     for b in range(blocks)],
        "probes": {
            "grad_norm": {"parameters": params, "layers": layers,
                          "parameter_layer": [i // 2 for i in range(len(params))],
                          "backward_order": params[::-1], "steps": list(range(steps)), "stride": 1,
                          "total_norm": total, "layer_norms": layer_norms,
                          "parameter_norms": [cycle[s % 64] for s in range(steps)],
                          "parameter_stats": stats(params), "layer_stats": stats(layers),
                          "total_stats": {"count": steps - 1, "min": 0.1, "max": 90.0, "mean": 5.0,
                                          "first_nonfinite_step": 12_345}},
            "activation_grad": {"modules": layers, "steps": list(range(steps)), "norms": act_norms,
                                "stats": stats(layers)},
            "clipping": {"calls": [{"step": s, "kind": "norm", "threshold": 5.0, "total_norm": t,
                                    "coefficient": 1.0, "clipped_norm": t, "acted": False}
                                   for s, t in enumerate(total)],
                         "summary": {"calls": steps, "norm_calls": steps, "clipped_fraction": 0.3,
                                     "rolling_clipped_fraction": rng.random(steps).tolist(),
                                     "mean_saturated": None}},
            "update_ratio": {"layers": layers, "steps": list(range(0, steps, 50)),
                             "ratios": (10 ** rng.normal(-3, 0.5, (steps // 50, len(layers)))).tolist()},
            "freeze": {"parameters": 120_000_000, "trainable": 120_000_000, "frozen": 0,
                       "frozen_subtrees": [], "batchnorm_train_in_frozen": [],
                       "table": [{"module": n, "trainable": 1000, "frozen": 0, "in_optimizer": 1000,
                                  "not_in_optimizer": 0, "lr": [1e-3], "weight_decay": [0.01],
                                  "changed": 2, "tensors": 2} for n in layers]},
        },
        "registration": {"tree": [{"path": n, "class": "Linear", "own_parameters": 1000, "parameters": 1000,
                                   "trainable": 1000, "unregistered": []} for n in layers]},
        "curves": {"epoch": list(range(-1, 20)), "train_loss": [None] + [1 / (e + 1) for e in range(20)],
                   "train_accuracy_percent": [None] + [90 - 40 / (e + 1) for e in range(20)],
                   "test_loss": [2.3] + [1.2 / (e + 1) for e in range(20)],
                   "test_accuracy_percent": [10.0] + [88 - 40 / (e + 1) for e in range(20)]},
    }


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    return large_record()


def test_large_report(benchmark: Any, record: dict[str, Any], tmp_path: Path) -> None:
    render_html({"schema": "gradscope.record", "version": 1, "curves": record["curves"]})  # imports, warm
    # Correct before timing: every section there, nothing external, the JSON intact.
    page = render_html(record)
    assert "could not be drawn" not in page and "http://" not in page and "https://" not in page
    data = json.loads(re.search(r'id="gradscope-record">(.*?)</script>', page, re.S).group(1))
    assert data["report_trimmed"] and len(data["probes"]["grad_norm"]["parameter_stats"]["count"]) == 2000

    target = tmp_path / "large.html"
    timings: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        write_html(record, target)
        timings.append(time.perf_counter() - started)

    benchmark.pedantic(run, rounds=1, iterations=1)
    seconds, size = timings[-1], target.stat().st_size
    benchmark.extra_info.update(seconds=round(seconds, 2), megabytes=round(size / 1e6, 2))
    print(f"\nlarge report: {seconds:.1f} s, {size / 1e6:.2f} MB "
          f"(targets {TARGET_SECONDS:.0f} s, {TARGET_BYTES / 1e6:.1f} MB)")
    assert seconds < TARGET_SECONDS and size < TARGET_BYTES
