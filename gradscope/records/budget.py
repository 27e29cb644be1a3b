"""The size budget of a written record: per-step arrays within a fixed number of values.

Probes keep per-step rows for at most ``max_kept_steps`` steps, but a row is as wide as the model:
a model of 10,000 parameter tensors keeps 20 million per-parameter numbers at the default 2,048
kept steps. ``budgeted`` returns a copy of a run record whose per-step arrays fit a fixed budget;
``records.io.write_record`` writes that copy, while the record in memory (``scope.records``,
``scope.to_record()``) keeps what the probes kept. Statistics over every step (``Stats``,
``StatsTable``) are never thinned: they stay exact.

- ``PARAMETER_VALUES``: per-parameter arrays (``ProbeRecord.per_parameter``, that is
  ``grad_norm.parameter_norms``) keep at most this many numbers in all. Their rows are thinned
  evenly (the first and the last stay) and listed in their own steps field
  (``grad_norm.parameter_steps``); an array too wide for two rows is dropped (null).
- ``STEP_VALUES``: every other array with a row per kept step (any ``Vector`` or ``Matrix`` field of
  a probe record whose rows match its ``steps``: per-layer norms, per-module output-gradient norms,
  update ratios, timings, losses) is kept whole while all of them together fit, which holds up to
  about 2,900 layer columns at 2,048 kept steps. Beyond that, the largest record loses every
  second kept step (as the engine's own thinning does, so its ``stride`` doubles) until they fit.

``RunRecord.thinned`` names each array that lost rows and the steps its rows now hold.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from gradscope.records.base import ProbeRecord, array_fields
from gradscope.records.run import RunRecord

PARAMETER_VALUES = 2_000_000   # per-parameter per-step numbers a written record keeps, in all
STEP_VALUES = 6_000_000        # all other per-step numbers (per layer, per module, totals), in all


def even_indices(n: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spaced indices of ``range(n)``, always with the first and last."""
    if n <= limit:
        return list(range(n))
    limit = max(2, limit)
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def step_arrays(rec: ProbeRecord) -> list[str]:
    """The fields of ``rec`` holding a row per entry of its ``steps`` (per-parameter ones aside)."""
    steps = getattr(rec, "steps", None)
    if not isinstance(steps, list) or not steps:
        return []
    return [name for name in array_fields(type(rec)) if name not in rec.per_parameter
            and isinstance(value := getattr(rec, name), np.ndarray) and value.ndim and value.shape[0] == len(steps)]


@dataclasses.dataclass
class _Part:
    """One probe record of the run, where it sits, and the changes a budget makes to it."""

    path: str                     # "probes.grad_norm", "models[1].probes.grad_norm"
    record: ProbeRecord
    changes: dict[str, Any] = dataclasses.field(default_factory=dict)

    def value(self, name: str) -> Any:
        return self.changes[name] if name in self.changes else getattr(self.record, name)


def _thin_steps(parts: list[_Part], budget: int, thinned: dict[str, list[int]]) -> None:
    """Halve the kept steps of the largest records until their per-step arrays fit ``budget``."""
    sizes = [sum(getattr(p.record, n).size for n in step_arrays(p.record)) for p in parts]
    rows = [len(getattr(p.record, "steps", []) or []) if sizes[i] else 0 for i, p in enumerate(parts)]
    factor = [1] * len(parts)

    def kept(i: int) -> float:
        return sizes[i] * (-(-rows[i] // factor[i])) / rows[i] if rows[i] else 0.0

    while sum(kept(i) for i in range(len(parts))) > budget:
        room = [i for i in range(len(parts)) if -(-rows[i] // (2 * factor[i])) >= 2]
        if not room:
            break  # two rows each: nothing left to halve
        factor[max(room, key=kept)] *= 2
    for i, part in enumerate(parts):
        if factor[i] == 1:
            continue
        rec = part.record
        index = list(range(0, rows[i], factor[i]))
        steps = [rec.steps[j] for j in index]  # type: ignore[attr-defined]
        names = step_arrays(rec) + [name for name, steps_field in rec.per_parameter.items()
                                    if getattr(rec, steps_field) is None
                                    and isinstance(getattr(rec, name), np.ndarray)
                                    and getattr(rec, name).shape[0] == rows[i]]
        part.changes["steps"] = steps
        for name in names:
            part.changes[name] = getattr(rec, name)[index]
            thinned[f"{part.path}.{name}"] = steps
        if isinstance(getattr(rec, "stride", None), int):
            part.changes["stride"] = rec.stride * factor[i]  # type: ignore[attr-defined]


def _thin_parameters(parts: list[_Part], budget: int, thinned: dict[str, list[int]]) -> None:
    """Thin the rows of per-parameter arrays evenly so that together they keep ``budget`` values."""
    arrays = [(p, name, steps_field) for p in parts for name, steps_field in p.record.per_parameter.items()
              if isinstance(p.value(name), np.ndarray) and p.value(name).size]
    total = sum(p.value(name).size for p, name, _ in arrays)
    if total <= budget:
        return
    for part, name, steps_field in arrays:
        values = part.value(name)
        steps = part.value(steps_field)
        steps = part.value("steps") if steps is None else steps
        width = values.shape[1] if values.ndim > 1 else 1
        rows = int(budget * values.size / total) // max(width, 1)   # an equal share of every array's rows
        if rows < 2:
            part.changes[name] = None
            part.changes[steps_field] = None
            thinned[f"{part.path}.{name}"] = []
            continue
        index = even_indices(values.shape[0], rows)
        part.changes[name] = values[index]
        part.changes[steps_field] = [steps[j] for j in index]
        thinned[f"{part.path}.{name}"] = part.changes[steps_field]


def budgeted(run: RunRecord, parameter_values: int = PARAMETER_VALUES,
             step_values: int = STEP_VALUES) -> RunRecord:
    """A copy of ``run`` whose per-step arrays fit the budgets (``run`` itself when they already
    do), with ``thinned`` saying which arrays lost rows and which steps their rows hold."""
    parts = [_Part(f"probes.{name}", rec) for name, rec in run.probes.items()]
    parts += [_Part(f"models[{i}].probes.{name}", rec)
              for i, model in enumerate(run.models) for name, rec in model.probes.items()]
    thinned: dict[str, list[int]] = {}
    _thin_steps(parts, step_values, thinned)
    _thin_parameters(parts, parameter_values, thinned)
    if not thinned:
        return run
    done = {p.path: dataclasses.replace(p.record, **p.changes) if p.changes else p.record  # type: ignore[type-var]
            for p in parts}
    probes = {name: done[f"probes.{name}"] for name in run.probes}
    models = [dataclasses.replace(model, probes={name: done[f"models[{i}].probes.{name}"] for name in model.probes})
              for i, model in enumerate(run.models)]
    return dataclasses.replace(run, probes=probes, models=models, thinned={**(run.thinned or {}), **thinned})
