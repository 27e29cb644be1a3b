"""Typed records: what probes captured and what a run left behind, with JSON in and out.

Probes return these (``Probe.record()``), judges read them, and the reports are views of them.
Nothing here imports torch. Importing this package declares every built-in probe's record type,
so that ``RunRecord.from_json`` can read them by probe name.
"""
from __future__ import annotations

from gradscope.records.activation_grad import ActivationGradRecord, TensorGradRecord, TensorSeries
from gradscope.records.base import Matrix, ProbeRecord, Record, Vector, probe_record_type
from gradscope.records.clipping import ClipCall, ClipEvent, ClippingRecord, ClipSummary
from gradscope.records.dead_units import DeadUnits, DeadUnitsRecord
from gradscope.records.freeze import FreezeRecord, FreezeRow, TensorState
from gradscope.records.grad_norm import GradNormRecord
from gradscope.records.histogram import HistogramRecord
from gradscope.records.hooks import HookChange, HookSample, HooksRecord
from gradscope.records.io import load_record, read_json, write_record, write_text_atomic
from gradscope.records.loss import LossRecord
from gradscope.records.loss_inputs import LossInputSite, LossInputsRecord
from gradscope.records.lr import LrRecord, SchedulerState
from gradscope.records.mode import ModeRecord
from gradscope.records.nonfinite import NonFiniteRecord
from gradscope.records.reference import Departure, ReferenceRecord
from gradscope.records.replicas import ReplicasRecord
from gradscope.records.run import (
    SCHEMA,
    VERSION,
    Curves,
    DistributedInfo,
    Environment,
    ModelInfo,
    ModuleNode,
    Registration,
    RunInfo,
    RunRecord,
    RunStatus,
    Unregistered,
    WatchedModel,
)
from gradscope.records.stats import Stats, StatsTable
from gradscope.records.timing import PhaseStats, TimingRecord, TimingSummary
from gradscope.records.update_ratio import UpdateRatioRecord
from gradscope.records.zero_grad import ZeroGradRecord

__all__ = [
    "SCHEMA", "VERSION", "ActivationGradRecord", "ClipCall", "ClipEvent", "ClipSummary", "ClippingRecord",
    "Curves", "DeadUnits", "DeadUnitsRecord", "Departure", "DistributedInfo", "Environment", "FreezeRecord",
    "FreezeRow", "GradNormRecord", "HistogramRecord", "HookChange", "HookSample", "HooksRecord",
    "LossInputSite", "LossInputsRecord", "LossRecord", "LrRecord", "Matrix", "ModeRecord", "ModelInfo",
    "ModuleNode", "NonFiniteRecord", "PhaseStats", "ProbeRecord", "Record", "ReferenceRecord", "Registration",
    "ReplicasRecord", "RunInfo", "RunRecord", "RunStatus", "SchedulerState", "Stats", "StatsTable",
    "TensorGradRecord", "TensorSeries", "TensorState", "TimingRecord", "TimingSummary", "Unregistered",
    "UpdateRatioRecord", "Vector", "WatchedModel", "ZeroGradRecord", "load_record", "probe_record_type",
    "read_json", "write_record", "write_text_atomic",
]
