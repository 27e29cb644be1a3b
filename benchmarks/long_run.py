"""A long run of a small buggy model under ``watch()``: host memory stays flat, the record and the
page stay within their budgets, and every finding of a short run with the same bugs is still found.

The model is a small MLP with planted bugs: a registered layer never called, a frozen layer handed
to the optimizer, a layer whose ReLU units are all dead (a bias of -50), clipping at a max_norm so
small that it always acts, and a learning-rate scheduler never stepped. The same model is trained
for ``--short`` steps and then for ``--steps`` steps (each in a fresh ``watch()``); resident memory
is sampled along the long run (after a garbage collection), both records and pages are written,
and the findings of the two runs are compared by code and place.

Not a test (100,000 steps take several minutes): run it by hand,
``python benchmarks/long_run.py --steps 100000``, optionally with ``--json results.json``; it exits
1 when the long run lost a finding or left a budget.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import gradscope
from gradscope.records import load_record, write_record
from gradscope.records.budget import PARAMETER_VALUES, STEP_VALUES
from gradscope.records.io import side_path
from gradscope.reports.html import write_html

PAGE_BYTES = 15 * 1024 * 1024


class Buggy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(16, 32)
        self.frozen = nn.Linear(32, 32)
        self.dead = nn.Linear(32, 32)
        self.out = nn.Linear(32, 4)
        self.unused = nn.Linear(32, 32)            # registered, never called
        for p in self.frozen.parameters():
            p.requires_grad_(False)
        with torch.no_grad():
            self.dead.bias.fill_(-50.0)             # every ReLU unit after it is dead

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.frozen(torch.relu(self.inp(x))))
        return self.out(h + torch.relu(self.dead(h)))


def rss_mb() -> float:
    """Resident memory now (from /proc), or the peak where /proc is missing."""
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def train(steps: int, out: Path, samples: int = 10) -> dict[str, Any]:
    torch.manual_seed(0)
    model = Buggy()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)     # the frozen layer too: GS301
    torch.optim.lr_scheduler.StepLR(opt, step_size=10)      # never stepped: GS309
    batches = [(torch.randn(8, 16), torch.randint(0, 4, (8,))) for _ in range(16)]
    loss_fn = nn.CrossEntropyLoss()
    marks = {max(1, steps * k // samples) for k in range(1, samples + 1)} | {min(steps, 1_000)}
    memory: list[tuple[int, float]] = []
    started = time.perf_counter()
    with gradscope.watch(model, opt) as scope:
        for step in range(1, steps + 1):
            x, y = batches[step % len(batches)]
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1e-4)
            opt.step()
            if step in marks:
                gc.collect()
                memory.append((step, rss_mb()))
    seconds = time.perf_counter() - started
    record = scope.to_record()
    t0 = time.perf_counter()
    json_path = write_record(record, out / "run.json")
    write_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    html_path = write_html(record, out / "report.html")
    page_s = time.perf_counter() - t0
    loaded = load_record(json_path)
    values = sum(getattr(rec, name).size for rec in loaded.probes.values()
                 for name in ("layer_norms", "parameter_norms", "norms", "ratios", "ms", "loss", "lr", "total_norm")
                 if getattr(rec, name, None) is not None and hasattr(getattr(rec, name), "size"))
    side = side_path(json_path)
    return {
        "steps": steps, "seconds": round(seconds, 1), "ms_per_step": round(1e3 * seconds / steps, 3),
        "rss_mb": [(s, round(m, 1)) for s, m in memory],
        "json_mb": round(json_path.stat().st_size / 1e6, 3),
        "npz_mb": round(side.stat().st_size / 1e6, 3) if side.exists() else 0.0,
        "page_mb": round(html_path.stat().st_size / 1e6, 3), "write_s": round(write_s, 2),
        "page_s": round(page_s, 2), "array_values": values,
        "findings": sorted({(f.code, f.where) for f in record.findings}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="steps of the long run")
    parser.add_argument("--short", type=int, default=1_000, help="steps of the short run it is compared with")
    parser.add_argument("--out", type=Path, default=None, help="folder for the records and pages (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    base = args.out or Path(tempfile.mkdtemp(prefix="gradscope-long-run-"))
    short = train(args.short, base / "short")
    long = train(args.steps, base / "long")
    first, last = long["rss_mb"][0], long["rss_mb"][-1]
    missing = sorted(set(map(tuple, short["findings"])) - set(map(tuple, long["findings"])))
    result = {"short": short, "long": long, "rss_growth_mb": round(last[1] - first[1], 1),
              "findings_missing_in_long_run": missing, "folder": str(base)}
    for label, run in (("short", short), ("long", long)):
        print(f"{label}: {run['steps']:,} steps in {run['seconds']} s ({run['ms_per_step']} ms/step); record "
              f"{run['json_mb']} MB JSON + {run['npz_mb']} MB npz ({run['array_values']:,} array values), "
              f"written in {run['write_s']} s; page {run['page_mb']} MB in {run['page_s']} s; "
              f"{len(run['findings'])} findings: {', '.join(sorted({c for c, _ in run['findings']}))}")
    print("resident memory along the long run (step: MB): "
          + ", ".join(f"{s:,}: {m}" for s, m in long["rss_mb"]))
    print(f"growth from step {first[0]:,} to step {last[0]:,}: {result['rss_growth_mb']} MB")
    print("findings of the short run missing from the long run: " + (", ".join(map(str, missing)) or "none"))
    ok = (not missing and long["page_mb"] * 1e6 < PAGE_BYTES
          and long["array_values"] <= PARAMETER_VALUES + STEP_VALUES)
    print("within budget, nothing lost" if ok else "NOT within budget, or findings lost")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
