"""The HTML report: one self-contained page that explains a training run.

The page is one autoescaped Jinja2 template (``templates/report.html``) fed with the page kit's
dataclasses (``gradscope.reports.page``), built from a typed ``RunRecord``. Run-level sections
come from ``sections.run``; each probe's section is the one its class declares
(``Probe.section``), in ``Probe.report_order``. CSS and script are inlined, the figures are inline
SVG, and the record itself is embedded as JSON in a ``<script type="application/json">`` block
(trimmed for large runs, see ``trim_record``). The page makes no request of any kind: a
Content-Security-Policy forbids it, and no ``http://`` or ``https://`` string is left in it (URLs
in user text are shown with ``&#58;`` for the colon).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, TypeVar

from gradscope.errors import GradscopeError
from gradscope.records import (
    ActivationGradRecord,
    ClippingRecord,
    GradNormRecord,
    RunRecord,
    TensorGradRecord,
    TimingRecord,
    UpdateRatioRecord,
    write_text_atomic,
)
from gradscope.records.base import ProbeRecord
from gradscope.records.run import Curves
from gradscope.reports.page import (
    Page,
    Section,
    SectionContext,
    asset,
    defang,
    embed_json,
    finding_views,
    fmt_number,
    jinja_environment,
    pct,
    severity_counts,
    visible_controls,
)
from gradscope.reports.sections.run import AFTER_PROBES, BEFORE_PROBES

EMBED_MAX_VALUES = 30_000      # numbers kept per per-step matrix in the embedded record
EMBED_MAX_SERIES = 4096        # entries kept per per-step list in the embedded record
EMBED_MAX_CALLS = 2048         # clip calls kept in the embedded record


def as_run_record(record: RunRecord | Mapping[str, Any], what: str = "record") -> RunRecord:
    """A typed run record from a ``RunRecord`` or its JSON (as ``json.load`` gives it)."""
    if isinstance(record, RunRecord):
        return record
    if not isinstance(record, Mapping):
        raise GradscopeError(
            f"the {what} to render must be a RunRecord or its JSON (a dict, as json.load gives it), "
            f"got {type(record).__name__}")
    return RunRecord.from_json(record, what)


# ---- trimming the embedded record ----------------------------------------------------------------
def thin_indices(n: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spaced indices of ``range(n)``, always with the first and last."""
    if n <= limit:
        return list(range(n))
    limit = max(2, limit)
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _limit(width: int) -> int:
    return min(EMBED_MAX_SERIES, max(2, EMBED_MAX_VALUES // max(width, 1)))


class _Stepped(Protocol):
    @property
    def steps(self) -> list[int]: ...


T = TypeVar("T", bound=_Stepped)


def _thin(rec: T, keys: Sequence[str], width: int, where: str, notes: list[str]) -> T:
    steps = rec.steps
    idx = thin_indices(len(steps), _limit(width))
    if len(idx) == len(steps):
        return rec
    changes: dict[str, Any] = {"steps": [steps[i] for i in idx]}
    for k in keys:
        value = getattr(rec, k)
        if value is not None and len(value) == len(steps):
            changes[k] = value[idx]
    notes.append(f"{where}: {len(steps):,} recorded steps thinned evenly to {len(idx):,} "
                 f"({', '.join(['steps', *keys])})")
    return dataclasses.replace(rec, **changes)  # type: ignore[type-var]


def trim_record(run: RunRecord) -> tuple[RunRecord, list[str]]:
    """A copy of ``run`` small enough to embed in the page, and what was cut.

    Per-step matrices keep at most ``EMBED_MAX_VALUES`` numbers (rows thinned evenly, with their
    ``steps``), per-step lists at most ``EMBED_MAX_SERIES`` entries, clip calls at most
    ``EMBED_MAX_CALLS``; ``grad_norm.parameter_norms`` is dropped when it is larger than the budget
    (``parameter_stats`` keeps its per-parameter summary). The input is not changed.
    """
    notes: list[str] = []
    probes: dict[str, ProbeRecord] = dict(run.probes)
    grad = run.probe(GradNormRecord)
    if grad is not None:
        if grad.parameter_norms is not None and grad.parameter_norms.size > EMBED_MAX_VALUES:
            rows, width = grad.parameter_norms.shape
            grad = dataclasses.replace(grad, parameter_norms=None)
            notes.append(f"probes.grad_norm.parameter_norms: dropped ({rows:,} steps x {width:,} parameters); "
                         "per-parameter statistics stay in parameter_stats")
        keys = ["total_norm", "layer_norms"] + (["parameter_norms"] if grad.parameter_norms is not None else [])
        wide = max(len(grad.layers), len(grad.parameters) if grad.parameter_norms is not None else 0)
        probes[grad.probe] = _thin(grad, keys, wide, "probes.grad_norm", notes)
    act = run.probe(ActivationGradRecord)
    if act is not None:
        probes[act.probe] = _thin(act, ["norms"], len(act.modules), "probes.activation_grad", notes)
    upd = run.probe(UpdateRatioRecord)
    if upd is not None:
        probes[upd.probe] = _thin(upd, ["ratios"], len(upd.layers), "probes.update_ratio", notes)
    tensors = run.probe(TensorGradRecord)
    if tensors is not None:
        thinned = {name: _thin(series, ["norm", "max_abs"], 2, f"probes.tensor_grad[{name!r}]", notes)
                   for name, series in tensors.tensors.items()}
        probes[tensors.probe] = dataclasses.replace(tensors, tensors=thinned)
    timing = run.probe(TimingRecord)
    if timing is not None:
        probes[timing.probe] = _thin(timing, ["ms"], len(timing.columns), "probes.timing", notes)
    clip = run.probe(ClippingRecord)
    if clip is not None:
        calls, rolling = clip.calls, clip.summary.rolling_clipped_fraction
        if len(calls) > EMBED_MAX_CALLS:
            calls = [calls[i] for i in thin_indices(len(calls), EMBED_MAX_CALLS)]
            notes.append(f"probes.clipping.calls: {len(clip.calls):,} calls thinned evenly to {len(calls):,}")
        if len(rolling) > EMBED_MAX_SERIES:
            rolling = rolling[thin_indices(len(rolling), EMBED_MAX_SERIES)]
            before = len(clip.summary.rolling_clipped_fraction)
            notes.append(f"probes.clipping.summary.rolling_clipped_fraction: {before:,} values thinned "
                         f"evenly to {EMBED_MAX_SERIES:,}")
        probes[clip.probe] = dataclasses.replace(
            clip, calls=calls, summary=dataclasses.replace(clip.summary, rolling_clipped_fraction=rolling))
    trimmed = dataclasses.replace(run, probes=probes)
    if notes:
        trimmed = dataclasses.replace(trimmed, extra={**run.extra, "report_trimmed": notes})
    return trimmed, notes


# ---- the page ------------------------------------------------------------------------------------
def probe_sections(ctx: SectionContext) -> list[Section]:
    """The sections the run's probes declare, in their report order."""
    from gradscope.probes.base import declared_probes

    declared = declared_probes()
    present = [(declared[name], rec) for name, rec in ctx.run.probes.items() if name in declared]
    out = []
    for kind, rec in sorted(present, key=lambda pr: (pr[0].report_order, pr[0].name)):
        section = kind.section(rec, ctx)
        if section is not None:
            out.append(section)
    return out


def build_page(run: RunRecord) -> tuple[Page, RunRecord, list[str]]:
    """The page's view model, with the trimmed record to embed and the trimming notes."""
    findings = finding_views(run.findings)
    trimmed, notes = trim_record(run)
    ctx = SectionContext(run, findings, notes)
    sections = [s for s in (build(ctx) for build in BEFORE_PROBES) if s is not None]
    sections += probe_sections(ctx)
    sections += [s for s in (build(ctx) for build in AFTER_PROBES) if s is not None]
    name = run.model.class_name if run.model and run.model.class_name else "run"
    parts = [name]
    steps = run.run.steps if run.run and run.run.steps is not None else run.steps
    parts.append(f"{fmt_number(steps)} steps")
    device = (run.run.device if run.run else None) or (run.model.device if run.model else None)
    if device:
        parts.append(device)
    status_line, ok = "", True
    if run.run is not None:
        status = run.run.status
        ok = status == "completed"
        status_line = ("Run completed." if ok else
                       f"Run {status}" + (f": {run.run.error}" if run.run.error else "."))
    page = Page(title=f"gradscope report: {name}", subtitle=" · ".join(parts), findings=findings,
                counts=severity_counts(findings), sections=sections, status=status_line, status_ok=ok,
                highlights=highlights(run))
    return page, trimmed, notes


def highlights(run: RunRecord) -> list[tuple[str, str]]:
    """The few numbers shown under the verdict: outcome, length, gradients, clipping, speed."""
    out: list[tuple[str, str]] = []
    curves = run.curves or Curves()
    # a run that stopped before its first evaluation after training has only the one before it
    final = "test accuracy before training" if curves.epoch[-1:] == [-1] else "final test accuracy"
    for values, label_, suffix in ((curves.test_accuracy_percent, final, "%"),
                                   (curves.test_loss, final.replace("accuracy", "loss"), ""),
                                   (curves.train_loss, "final train loss", "")):
        value = Curves.last(values)
        if value is not None:
            out.append((label_, fmt_number(value) + suffix))
    out.append(("steps", fmt_number(run.run.steps if run.run and run.run.steps is not None else run.steps)))
    grad = run.probe(GradNormRecord)
    if grad is not None and grad.total_stats.max is not None:
        out.append(("max total gradient norm", fmt_number(grad.total_stats.max)))
    clip = run.probe(ClippingRecord)
    if clip is not None and clip.summary.clipped_fraction is not None:
        out.append(("steps clipped", pct(clip.summary.clipped_fraction)))
    speed = steps_per_second(run)
    if speed is not None:
        out.append(("steps per second", fmt_number(speed)))
    return out


def steps_per_second(run: RunRecord) -> float | None:
    timing = run.probe(TimingRecord)
    if timing is None or timing.summary is None:
        return None
    return timing.summary.steps_per_second


def render_html(record: RunRecord | Mapping[str, Any]) -> str:
    """The self-contained HTML report of a run record (a ``RunRecord``, or its JSON). Sections
    appear only for the data the record holds."""
    from markupsafe import Markup

    run = as_run_record(record)
    page, trimmed, _ = build_page(run)
    html = jinja_environment().get_template("report.html").render(
        page=page, css=Markup(asset("report.css")), script=Markup(asset("report.js")),
        record_json=Markup(embed_json(trimmed.to_json())))
    return visible_controls(defang(html))


def write_html(record: RunRecord | Mapping[str, Any], path: str | Path) -> Path:
    """Render the report and write it to ``path`` atomically; returns the path."""
    return write_text_atomic(render_html(record), path)
