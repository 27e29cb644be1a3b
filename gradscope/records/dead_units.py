"""The dead-unit probe's record: ReLU-family layers and the share of units that never fired."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradscope.records.base import ProbeRecord, Record


@dataclass(frozen=True)
class DeadUnits(Record):
    module: str = ""
    units: int = 0
    batches: int = 0
    dead_fraction: float = 0.0


@dataclass(frozen=True)
class DeadUnitsRecord(ProbeRecord, probe="dead_units"):
    layers: list[DeadUnits] = field(default_factory=list)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        if isinstance(data.get("layers"), list):
            return data
        return {"layers": list(data.values())}  # before version 2: {"module[width]": {...}}
