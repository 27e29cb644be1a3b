"""The grad-norm probe's record: gradient L2 norms per parameter, per layer and in total."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradscope.records.base import Matrix, ProbeRecord, Vector, empty_matrix, empty_vector, fail
from gradscope.records.stats import Stats, StatsTable, upgrade_named


@dataclass(frozen=True)
class GradNormRecord(ProbeRecord, probe="grad_norm"):
    """Norms after backward, before clipping, for the kept steps; statistics over every step.

    ``parameter_norms`` is None when it was left out to keep a page or a record small (the
    statistics stay). A written record keeps at most a fixed number of per-parameter values
    (``records.budget``): its rows are then a subset of the kept steps, listed in
    ``parameter_steps`` (None: one row per entry of ``steps``, as the probe keeps them).
    """

    parameters: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)
    parameter_layer: list[int] = field(default_factory=list)
    backward_order: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    stride: int = 1
    total_norm: Vector = field(default_factory=empty_vector)
    layer_norms: Matrix = field(default_factory=empty_matrix)
    parameter_norms: Matrix | None = None
    parameter_stats: StatsTable = field(default_factory=StatsTable)
    layer_stats: StatsTable = field(default_factory=StatsTable)
    total_stats: Stats = field(default_factory=Stats)
    no_gradient: list[str] | None = None     # trainable parameters that never got a gradient
    steps_seen: int | None = None             # steps whose norms were recorded, kept or not
    parameter_steps: list[int] | None = None  # the steps of parameter_norms' rows, when fewer than steps

    evidence = {"GS201": ("no_gradient",), "GS202": ("no_gradient",), "GS205": ("steps_seen",)}
    per_parameter = {"parameter_norms": "parameter_steps"}

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        upgrade_named(data, "parameter_stats", "parameters")
        upgrade_named(data, "layer_stats", "layers")
        return data

    def validate(self, path: str) -> None:
        n_steps = len(self.steps)
        if self.layer_norms.size and self.layer_norms.shape[1] != len(self.layers):
            raise fail(f"{path}.layer_norms", f"rows of {len(self.layers)} values (one per layer)",
                       self.layer_norms.tolist()[0])
        if self.parameter_norms is not None and self.parameter_norms.size and \
                self.parameter_norms.shape[1] != len(self.parameters):
            raise fail(f"{path}.parameter_norms", f"rows of {len(self.parameters)} values (one per parameter)",
                       self.parameter_norms.tolist()[0])
        checks = [("total_norm", self.total_norm.shape[0], n_steps, "one per step"),
                  ("parameter_layer", len(self.parameter_layer), len(self.parameters), "one per parameter"),
                  ("parameter_stats", len(self.parameter_stats), len(self.parameters), "one per parameter"),
                  ("layer_stats", len(self.layer_stats), len(self.layers), "one per layer")]
        if n_steps or self.layer_norms.size:
            checks.append(("layer_norms", self.layer_norms.shape[0], n_steps, "a row per step"))
        if self.parameter_norms is not None and self.parameter_norms.size:
            rows, what = ((len(self.parameter_steps), "a row per entry of parameter_steps")
                          if self.parameter_steps is not None else (n_steps, "a row per step"))
            checks.append(("parameter_norms", self.parameter_norms.shape[0], rows, what))
        for name, got, want, what in checks:
            if got != want and not (name.endswith("_stats") and got == 0):
                raise fail(f"{path}.{name}", f"{want} entries ({what})", getattr(self, name).tolist()
                           if hasattr(getattr(self, name), "tolist") else getattr(self, name))
        if any(not 0 <= i < len(self.layers) for i in self.parameter_layer):
            raise fail(f"{path}.parameter_layer", f"indices into layers (0..{len(self.layers) - 1})",
                       self.parameter_layer)
