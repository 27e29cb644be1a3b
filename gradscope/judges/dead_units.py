"""GS207 from the dead-unit record."""
from __future__ import annotations

from gradscope.findings import Finding, finding
from gradscope.records.dead_units import DeadUnitsRecord
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds


def judge_dead_units(rec: DeadUnitsRecord, run: RunRecord, th: Thresholds) -> list[Finding]:
    out = []
    for layer in rec.layers:
        if layer.dead_fraction > th.dead_fraction:
            dead = round(layer.dead_fraction * layer.units)
            out.append(finding(
                "GS207", layer.module,
                f"{dead} of {layer.units} units ({layer.dead_fraction:.0%}) after {layer.module} never "
                f"activated over {layer.batches} training batches: they pass no gradient, so the "
                "weights feeding them stop learning."))
    return out
