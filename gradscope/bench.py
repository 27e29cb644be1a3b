"""``gradscope bench``: what each phase of a training step costs, with and without gradscope.

Two copies of the same model (same initial weights, same batches) train side by side in
alternating chunks of steps, so machine noise hits both alike: one under ``watch()`` with only
the timing probe (the baseline), one under ``watch()`` with the default probes. The timing probe
gives per-phase medians and 90th percentiles; the overhead ratio is the ratio of median steps.
"""
from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.loop import pick_device
from gradscope.modelfile import ModelSpec, build
from gradscope.records import TimingRecord, TimingSummary
from gradscope.records.timing import PHASES
from gradscope.scope import Scope, watch

CHUNK = 5  # steps per variant before switching


@dataclass
class BenchResult:
    """Per-phase timings of both variants and the overhead ratio."""

    model: str
    device: str
    steps: int
    batch_size: int
    baseline: TimingSummary | None
    watched: TimingSummary | None
    ratio: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        def summary(s: TimingSummary | None) -> dict[str, Any] | None:
            if s is None:
                return None
            out = s.to_json()
            out["samples_per_second"] = s.steps_per_second * self.batch_size if s.steps_per_second else None
            return out

        return {"model": self.model, "device": self.device, "steps": self.steps,
                "batch_size": self.batch_size, "baseline": summary(self.baseline),
                "watched": summary(self.watched), "overhead_ratio": self.ratio, "notes": self.notes}


def _batches(spec: ModelSpec, batch_size: int, device: torch.device, seed: int
             ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    if spec.build_loaders is not None:
        train, _ = spec.build_loaders()
        out = []
        for data, targets in itertools.islice(iter(train), 8):
            out.append((data.to(device), targets.to(device)))
        if not out:
            raise GradscopeError(f"{spec.path}: build_loaders() gave an empty training loader")
        return out
    if spec.input_shape is None:
        raise GradscopeError(f"{spec.path}: add `input_shape = (...)` (one sample) so bench can make batches")
    from gradscope.data import load_data

    dataset, _ = load_data("glyphs", spec.input_shape, spec.num_classes or 10, seed=seed,
                           train_size=batch_size * 8, test_size=batch_size)
    loader: torch.utils.data.DataLoader[Any] = torch.utils.data.DataLoader(dataset, batch_size=batch_size)
    return [(x.to(device), y.to(device)) for x, y in loader]


def _stepper(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: Callable[..., torch.Tensor],
             scope: Scope, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Callable[[], None]:
    cycle = itertools.cycle(batches)

    def step() -> None:
        with scope.phase("data"):
            data, targets = next(cycle)
        loss = loss_fn(model(data), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def bench(spec: ModelSpec, *, device: str | None = None, steps: int = 60, batch_size: int = 64,
          seed: int = 0) -> BenchResult:
    """Time ``steps`` training steps of the model file's model under both variants."""
    if steps < 10:
        raise GradscopeError(f"--steps must be at least 10 (5 are warm-up), got {steps}")
    dev = pick_device(device)
    torch.manual_seed(seed)
    base = build(spec).to(dev)
    batches = _batches(spec, batch_size, dev, seed)
    loss_fn = spec.loss_fn if spec.loss_fn is not None else nn.CrossEntropyLoss()
    variants = {}
    scopes = {}
    for name, probes in (("baseline", ["timing"]), ("watched", None)):
        model = copy.deepcopy(base)
        opt = (spec.build_optimizer(model) if spec.build_optimizer is not None
               else torch.optim.Adam(model.parameters(), lr=1e-3))
        scope = watch(model, opt, probes=probes, flush_every=max(steps, 10))
        scopes[name] = scope
        variants[name] = _stepper(model, opt, loss_fn, scope, batches)
    with scopes["baseline"], scopes["watched"]:
        done = 0
        while done < steps:
            n = min(CHUNK, steps - done)
            for name in (("baseline", "watched") if (done // CHUNK) % 2 == 0 else ("watched", "baseline")):
                for _ in range(n):
                    variants[name]()
            done += n
    b, w = (_summary(scopes[name]) for name in ("baseline", "watched"))
    ratio = None
    if b is not None and w is not None and b.phases["step"].median_ms > 0:
        ratio = w.phases["step"].median_ms / b.phases["step"].median_ms
    return BenchResult(model=type(base).__name__, device=str(dev), steps=steps, batch_size=batch_size,
                       baseline=b, watched=w, ratio=ratio)


def _summary(scope: Scope) -> TimingSummary | None:
    timing = scope.records.get(TimingRecord.probe)
    return timing.summary if isinstance(timing, TimingRecord) else None


def format_table(result: BenchResult) -> str:
    """The per-phase table ``gradscope bench`` prints."""
    header = ("phase", "baseline median", "p90", "watched median", "p90")
    lines: list[tuple[str, ...]] = [header]
    for phase in PHASES:
        row = [phase]
        for summary in (result.baseline, result.watched):
            ph = summary.phases.get(phase) if summary is not None else None
            row += [f"{ph.median_ms:.3f} ms", f"{ph.p90_ms:.3f} ms"] if ph else ["-", "-"]
        lines.append(tuple(row))
    widths = [max(len(r[c]) for r in lines) for c in range(len(header))]
    text = ["  ".join(v.rjust(w) if c else v.ljust(w) for c, (v, w) in enumerate(zip(r, widths)))
            for r in lines]
    for label, summary in (("baseline", result.baseline), ("watched", result.watched)):
        if summary is not None and summary.steps_per_second:
            text.append(f"{label}: {summary.steps_per_second:.2f} steps/s, "
                        f"{summary.steps_per_second * result.batch_size:.1f} samples/s")
    if result.ratio is not None:
        text.append(f"overhead ratio (watched / baseline median step): {result.ratio:.3f}x")
    return "\n".join(text)
