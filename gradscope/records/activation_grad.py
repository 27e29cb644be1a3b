"""Records of activation gradients: module outputs (``activations=``) and named tensors."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradscope.records.base import Matrix, ProbeRecord, Record, Vector, empty_matrix, empty_vector, fail
from gradscope.records.stats import Stats, StatsTable, upgrade_named


@dataclass(frozen=True)
class ActivationGradRecord(ProbeRecord, probe="activation_grad"):
    """Norm of each watched module's output gradient per kept step (root-sum-square over calls)."""

    modules: list[str] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    norms: Matrix = field(default_factory=empty_matrix)
    stats: StatsTable = field(default_factory=StatsTable)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        upgrade_named(data, "stats", "modules")
        return data

    def validate(self, path: str) -> None:
        if (self.steps or self.norms.size) and self.norms.shape != (len(self.steps), len(self.modules)):
            raise fail(f"{path}.norms", f"{len(self.steps)} rows of {len(self.modules)} values",
                       self.norms.tolist())


@dataclass(frozen=True)
class TensorSeries(Record):
    """One tensor named with ``scope.probe`` (via ``register_hook``) or ``scope.retain``."""

    via: str = ""
    steps: list[int] = field(default_factory=list)
    norm: Vector = field(default_factory=empty_vector)
    max_abs: Vector = field(default_factory=empty_vector)
    norm_stats: Stats = field(default_factory=Stats)
    max_abs_stats: Stats = field(default_factory=Stats)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        stats = data.pop("stats", None)
        if isinstance(stats, dict):
            data.setdefault("norm_stats", stats.get("norm", {}))
            data.setdefault("max_abs_stats", stats.get("max_abs", {}))
        return data

    def validate(self, path: str) -> None:
        for name in ("norm", "max_abs"):
            if len(getattr(self, name)) != len(self.steps):
                raise fail(f"{path}.{name}", f"{len(self.steps)} values (one per step)",
                           getattr(self, name).tolist())


@dataclass(frozen=True)
class TensorGradRecord(ProbeRecord, probe="tensor_grad"):
    """Gradients of the tensors the user named, by name."""

    tensors: dict[str, TensorSeries] = field(default_factory=dict)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        inner = data.get("tensors")
        if isinstance(inner, dict) and not ("via" in inner and "steps" in inner):
            return data
        return {"tensors": data}  # records before version 2 held the series at the top level
