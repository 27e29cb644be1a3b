"""The probes: one kind of evidence each, declared by their class (see ``gradscope.probes.base``).

``DEFAULT_PROBES`` is the one list of what ``watch()`` attaches by default, in attach order
(timing first: its forward hooks then bracket the model alone, not the other probes).
``judge_run`` judges a run record with every declared probe's judge.
"""
from __future__ import annotations

from gradscope.findings import Finding, sort_findings
from gradscope.probes.activation_grad import ActivationProbe
from gradscope.probes.base import Probe, RunState, WatchOptions, declared_probes
from gradscope.probes.clipping import ClipProbe
from gradscope.probes.dead_units import DeadUnitProbe
from gradscope.probes.freeze import FreezeProbe
from gradscope.probes.grad_norm import GradNormProbe
from gradscope.probes.histogram import HistogramProbe
from gradscope.probes.hooks import HookProbe
from gradscope.probes.loss import LossProbe
from gradscope.probes.loss_inputs import LossInputProbe
from gradscope.probes.lr import LrProbe
from gradscope.probes.mode import ModeProbe
from gradscope.probes.nonfinite import NonFiniteProbe
from gradscope.probes.reference import ReferenceProbe  # noqa: F401  declared, not a default probe
from gradscope.probes.replicas import ReplicasProbe
from gradscope.probes.tensor_grad import TensorProbe
from gradscope.probes.timing import TimingProbe
from gradscope.probes.update_ratio import UpdateRatioProbe
from gradscope.probes.zero_grad import ZeroGradProbe
from gradscope.records.run import RunRecord
from gradscope.thresholds import Thresholds

DEFAULT_PROBES: tuple[type[Probe], ...] = (
    TimingProbe, GradNormProbe, NonFiniteProbe, LossProbe, LossInputProbe, TensorProbe, HookProbe, FreezeProbe,
    ClipProbe, ModeProbe, ZeroGradProbe, ActivationProbe, DeadUnitProbe, LrProbe, UpdateRatioProbe, ReplicasProbe)
PROBE_NAMES: tuple[str, ...] = tuple(p.name for p in DEFAULT_PROBES)
# built in but off by default (named in probes=[...] to attach them): histograms cost more than the
# bar for an always-on probe on a CPU
OPTIONAL_PROBES: tuple[type[Probe], ...] = (HistogramProbe,)
OPTIONAL_NAMES: tuple[str, ...] = tuple(p.name for p in OPTIONAL_PROBES)


def judge_run(run: RunRecord, thresholds: Thresholds | None = None) -> list[Finding]:
    """Every finding the probe records in ``run`` support, judged with ``thresholds`` (by default
    the ones ``run`` was judged with), most severe first."""
    th = thresholds if thresholds is not None else run.judged_with()
    probes = declared_probes()
    out: list[Finding] = []
    for name, record in run.probes.items():
        kind = probes.get(name)
        if kind is not None:
            out += kind.judge(record, run, th)
    return sort_findings(out)


def rejudge(run: RunRecord, thresholds: Thresholds) -> RunRecord:
    """``run`` with its probe findings judged again with ``thresholds``.

    Findings that no probe record can judge (registration, lint, the loop's own, and codes whose
    evidence a record from an older gradscope does not hold) are kept as they were recorded.
    """
    import dataclasses

    if len(run.models) > 1:
        return _rejudge_models(run, thresholds)
    probes = declared_probes()
    judged: set[str] = set()
    for name, record in run.probes.items():
        kind = probes.get(name)
        if kind is not None:
            judged |= set(kind.codes) - record.unjudged()
    fresh = [f for f in judge_run(run, thresholds) if f.code in judged]
    kept = [f for f in run.findings if f.code not in judged]
    values = {f.name: getattr(thresholds, f.name) for f in dataclasses.fields(thresholds)}
    return dataclasses.replace(run, findings=sort_findings(kept + fresh), thresholds=values)


def _rejudge_models(run: RunRecord, thresholds: Thresholds) -> RunRecord:
    """A script's record with several root models: each model is judged on its own records, and
    its findings are named ``model: place`` in the run's list, as ``gradscope run`` wrote them."""
    import dataclasses

    prefixes = tuple(f"{m.name}: " for m in run.models)
    findings = [f for f in run.findings if not f.where.startswith(prefixes)]
    models = []
    for m in run.models:
        view = dataclasses.replace(run, probes=m.probes, findings=m.findings, model=m.model,
                                   steps=m.steps, models=[])
        judged = rejudge(view, thresholds)
        models.append(dataclasses.replace(m, findings=judged.findings))
        findings += [dataclasses.replace(f, where=f"{m.name}: {f.where}") for f in judged.findings]
    values = {f.name: getattr(thresholds, f.name) for f in dataclasses.fields(thresholds)}
    first = models[0]
    return dataclasses.replace(run, models=models, findings=sort_findings(findings), thresholds=values,
                               probes=first.probes)


__all__ = [
    "DEFAULT_PROBES", "OPTIONAL_NAMES", "OPTIONAL_PROBES", "PROBE_NAMES", "ActivationProbe", "ClipProbe",
    "DeadUnitProbe", "FreezeProbe", "GradNormProbe", "HistogramProbe", "HookProbe", "LossInputProbe",
    "LossProbe", "LrProbe", "ModeProbe", "NonFiniteProbe", "Probe", "ReplicasProbe", "RunState", "TensorProbe",
    "TimingProbe", "UpdateRatioProbe", "WatchOptions", "ZeroGradProbe", "declared_probes", "judge_run",
    "rejudge",
]
