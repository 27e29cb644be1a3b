"""The reference probe: judge a run against known-good reference runs while it trains.

``watch(model, optimizer, probes=["default", ReferenceProbe("good.json")])``. The references are
read and their envelope built when the probe is made, so a missing or broken file fails before
training starts. The probe has no hooks and touches no tensor: at each flush, after the probes
before it have moved their rows to the host, it builds the run's record from their host data and
judges it (``gradscope.reference.judge_against``); ``departures`` holds what was found so far.
A judgement reads the run's whole history, so a flush judges again only once the run has grown by
a tenth since the last one (every flush of a short run, a few dozen times in a long one). When the
scope closes it judges once more with every probe's record (the run's findings included, for
GS809), and its record keeps that final judgement for the report and the JSON record.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from gradscope.errors import GradscopeError
from gradscope.findings import Finding
from gradscope.probes.base import Probe
from gradscope.records import (
    ClippingRecord,
    FreezeRecord,
    GradNormRecord,
    LossRecord,
    LrRecord,
    ModelInfo,
    NonFiniteRecord,
    ProbeRecord,
    RunRecord,
    TimingRecord,
    UpdateRatioRecord,
    load_record,
)
from gradscope.records.reference import Departure, ReferenceRecord
from gradscope.reference import Envelope, build_envelope, file_labels, judge_against, judge_reference
from gradscope.reports.sections.reference import section_reference

Reference = Union[str, "os.PathLike[str]", RunRecord, Mapping[str, Any]]
CODES = tuple(f"GS8{i:02d}" for i in range(1, 11))
JUDGE_GROWTH = 0.1      # at a flush, judge again once the run has this share more steps than at the last
# what the envelope compares; their records are host data once flushed, so a flush may read them
# (others, such as the dead-unit masks, read the device and are left for the end of the run)
COMPARED = (GradNormRecord, LossRecord, LrRecord, UpdateRatioRecord, ClippingRecord, TimingRecord, FreezeRecord,
            NonFiniteRecord)


def read_references(references: Reference | Sequence[Reference]) -> tuple[list[RunRecord], list[str]]:
    """The reference records and their names (file names; ``reference N`` for records in memory).

    Raises:
        GradscopeError: a file that is missing or not a gradscope record (naming it), or a value
            that is neither a path nor a record.
    """
    items: list[Any] = (list(references) if isinstance(references, (list, tuple)) else [references])
    if not items:
        raise GradscopeError("ReferenceProbe() needs at least one reference: a path to a JSON record "
                             "written by gradscope (scope.report(), gradscope run), or a RunRecord")
    records: list[RunRecord] = []
    names: list[str] = []
    paths = [item for item in items if isinstance(item, (str, os.PathLike))]
    labels = dict(zip(map(id, paths), file_labels(paths)))
    for i, item in enumerate(items):
        if isinstance(item, (str, os.PathLike)):
            records.append(load_record(Path(item)))
            names.append(labels[id(item)])
        elif isinstance(item, RunRecord):
            records.append(item)
            names.append(f"reference {i + 1}")
        elif isinstance(item, Mapping):
            records.append(RunRecord.from_json(item, f"reference {i + 1}"))
            names.append(f"reference {i + 1}")
        else:
            raise GradscopeError(f"ReferenceProbe() got {type(item).__name__}; expected a path to a JSON "
                                 "record (\"good.json\"), a RunRecord (gradscope.load_record(...)) or a list "
                                 "of them")
    return records, names


class ReferenceProbe(Probe):
    """Departures from reference runs (GS801–GS810), judged at flushes from host data only."""

    name = "reference"
    codes = CODES
    record_type = ReferenceRecord
    judge = staticmethod(judge_reference)
    section = staticmethod(section_reference)
    report_order = 50          # first among the probes' sections: what changed against the good run

    def __init__(self, references: Reference | Sequence[Reference], *, names: Sequence[str] | None = None) -> None:
        super().__init__()
        records, found = read_references(references)
        self.envelope: Envelope = build_envelope(records, list(names) if names is not None else found)
        self.departures: list[Departure] = []      # the last judgement, at a flush or at the end
        self._latest: ReferenceRecord | None = None
        self._judged_until: int | None = None      # the steps the last judgement at a flush saw
        self._final: ReferenceRecord | None = None
        self._closed = False

    def attach(self, run: Any) -> None:
        super().attach(run)
        self._closed, self._final, self._latest, self._judged_until = False, None, None, None

    def detach(self) -> None:
        super().detach()
        self._closed = True

    def flush(self, steps: list[int]) -> None:
        if not steps:
            return
        done = steps[-1] + 1
        # a judgement reads the whole history (about 1 s for 2,000 layers x 2,048 kept steps): at a
        # flush, judge again once the run has grown by a tenth, so a long run is judged a few dozen
        # times, not at each of its hundreds of flushes, and a departure is seen within 10% of its step
        if self._judged_until is None or done - self._judged_until >= JUDGE_GROWTH * done:
            self._latest = self._judge(only=COMPARED)
            self._judged_until = done

    def record(self) -> ReferenceRecord | None:
        if self._closed and self.run is not None:
            if self._final is None:
                self._final = self._judge(only=None)
            return self._final
        return self._latest

    def _judge(self, only: tuple[type[ProbeRecord], ...] | None) -> ReferenceRecord:
        """Judge the run so far from the other probes' records (``only`` those types, or all)."""
        from gradscope.probes import judge_run  # the package imports its probes: not at import time

        run = self._state()
        probes: dict[str, ProbeRecord] = {}
        for name, probe in run.probes.items():
            if probe is self or (only is not None and probe.record_type not in only):
                continue
            found = probe.record()
            if found is not None:
                probes[name] = found
        record = RunRecord(
            model=ModelInfo(class_name=run.root_name, parameters=sum(p.numel() for p in run.model.parameters()),
                            trainable=sum(p.numel() for p in run.params)),
            steps=run.step, backwards=run.backwards, optimizers=[type(o).__name__ for o in run.optimizers],
            grad_scaler=bool(run.scalers), thresholds=dataclasses.asdict(run.thresholds), probes=probes)
        findings: list[Finding] = judge_run(record, run.thresholds)
        judged = judge_against(record, self.envelope, run.thresholds, findings)
        self.departures = list(judged.departures)
        return judged
