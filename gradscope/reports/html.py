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
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, TypeVar

from gradscope.errors import GradscopeError
from gradscope.findings import Finding
from gradscope.records import (
    ActivationGradRecord,
    ClippingRecord,
    FreezeRecord,
    GradNormRecord,
    Registration,
    RunRecord,
    TensorGradRecord,
    TimingRecord,
    UpdateRatioRecord,
    write_text_atomic,
)
from gradscope.records.base import ProbeRecord
from gradscope.records.budget import even_indices
from gradscope.records.run import Curves
from gradscope.records.stats import StatsTable
from gradscope.reports.page import (
    FindingView,
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
from gradscope.reports.sections.grad_norm import flagged_rows, ranked_layers, worst_first
from gradscope.reports.sections.run import AFTER_PROBES, BEFORE_PROBES

EMBED_MAX_VALUES = 30_000      # numbers kept per per-step matrix in the embedded record
EMBED_MAX_SERIES = 4096        # entries kept per per-step list in the embedded record
EMBED_MAX_CALLS = 2048         # clip calls kept in the embedded record
EMBED_MAX_LAYERS = 2048        # layer (and module) columns kept in the embedded record, worst first
EMBED_MAX_PARAMETERS = 4096    # parameter columns kept in the embedded record, worst first
EMBED_MAX_ITEMS = 4096         # entries kept of a per-tensor list (freeze states, module tree)
EMBED_MAX_FINDINGS = 200       # findings of one code kept in the embedded record
PAGE_MAX_FINDINGS = 20         # findings of one code listed on the page (the count says how many in all)


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
thin_indices = even_indices   # at most ``limit`` evenly spaced indices of ``range(n)``, ends kept


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
        if value is not None and len(value) == len(steps) and not (k == "parameter_norms" and getattr(
                rec, "parameter_steps", None) is not None):   # rows of its own steps: left as they are
            changes[k] = value[idx]
    notes.append(f"{where}: {len(steps):,} recorded steps thinned evenly to {len(idx):,} "
                 f"({', '.join(['steps', *keys])})")
    return dataclasses.replace(rec, **changes)  # type: ignore[type-var]


def _rows(stats: StatsTable, rows: list[int]) -> StatsTable:
    """The entries ``rows`` of a statistics table (an empty table stays empty)."""
    if not len(stats):
        return stats
    return StatsTable(count=[stats.count[i] for i in rows], min=stats.min[rows], max=stats.max[rows],
                      mean=stats.mean[rows], first_nonfinite_step=[stats.first_nonfinite_step[i] for i in rows])


def _columns(matrix: Any, columns: list[int]) -> Any:
    return matrix[:, columns] if matrix is not None and matrix.ndim == 2 and matrix.size else matrix


def _grad_columns(grad: GradNormRecord, findings: Sequence[Finding], notes: list[str]) -> GradNormRecord:
    """At most ``EMBED_MAX_LAYERS`` layers and ``EMBED_MAX_PARAMETERS`` parameters, the worst ones,
    in model order; the parameters of a layer left out go with it."""
    if len(grad.layers) <= EMBED_MAX_LAYERS and len(grad.parameters) <= EMBED_MAX_PARAMETERS:
        return grad
    layers = sorted(ranked_layers(grad, findings)[:EMBED_MAX_LAYERS]) if len(grad.layers) > EMBED_MAX_LAYERS \
        else list(range(len(grad.layers)))
    new_layer = {old: new for new, old in enumerate(layers)}
    params = [i for i, layer in enumerate(grad.parameter_layer) if layer in new_layer]
    if len(params) > EMBED_MAX_PARAMETERS:
        names = [grad.parameters[i] for i in params]
        stats = _rows(grad.parameter_stats, params)
        ranked = worst_first(names, stats, flagged_rows(names, findings)) if len(stats) else range(len(params))
        params = sorted(params[j] for j in list(ranked)[:EMBED_MAX_PARAMETERS])
    kept = {grad.parameters[i] for i in params}
    notes.append(f"probes.grad_norm: {len(layers):,} of {len(grad.layers):,} layers and {len(params):,} of "
                 f"{len(grad.parameters):,} parameters kept, the worst ones (NaN/Inf, named in a finding, "
                 "no value, farthest from the typical)")
    return dataclasses.replace(
        grad, layers=[grad.layers[i] for i in layers], layer_norms=_columns(grad.layer_norms, layers),
        layer_stats=_rows(grad.layer_stats, layers), parameters=[grad.parameters[i] for i in params],
        parameter_layer=[new_layer[grad.parameter_layer[i]] for i in params],
        parameter_norms=_columns(grad.parameter_norms, params), parameter_stats=_rows(grad.parameter_stats, params),
        backward_order=[n for n in grad.backward_order if n in kept],
        no_gradient=None if grad.no_gradient is None else grad.no_gradient[:EMBED_MAX_ITEMS])


def _first_flagged(flags: Sequence[bool], limit: int) -> list[int]:
    """At most ``limit`` indices, every flagged one first, in their order."""
    flagged = [i for i, f in enumerate(flags) if f]
    rest = [i for i, f in enumerate(flags) if not f]
    return sorted((flagged + rest)[:limit])


def _trim_lists(run: RunRecord, probes: dict[str, ProbeRecord], notes: list[str]) -> Registration | None:
    """Per-tensor lists cut to ``EMBED_MAX_ITEMS`` entries, the ones showing a problem kept first."""
    freeze = run.probe(FreezeRecord)
    if freeze is not None:
        changes: dict[str, Any] = {}
        tensors = freeze.tensors or []
        if len(tensors) > EMBED_MAX_ITEMS:
            keep = _first_flagged([t.first_frozen_change_step is not None or t.grad_while_frozen or not t.in_model
                                   or (t.trainable and not t.in_optimizer) or t.requires_grad != t.trainable
                                   for t in tensors], EMBED_MAX_ITEMS)
            changes["tensors"] = [tensors[i] for i in keep]
            notes.append(f"probes.freeze.tensors: {len(keep):,} of {len(tensors):,} kept, every one with a "
                         "problem first")
        if len(freeze.table) > EMBED_MAX_ITEMS:
            keep = _first_flagged([bool((r.not_in_optimizer and r.trainable) or (r.frozen and r.changed))
                                   for r in freeze.table], EMBED_MAX_ITEMS)
            changes["table"] = [freeze.table[i] for i in keep]
            notes.append(f"probes.freeze.table: {len(keep):,} of {len(freeze.table):,} modules kept")
        if changes:
            probes[freeze.probe] = dataclasses.replace(freeze, **changes)
    tree = run.registration.tree if run.registration else []
    if len(tree) <= EMBED_MAX_ITEMS:
        return run.registration
    keep = _first_flagged([i == 0 or bool(node.unregistered) for i, node in enumerate(tree)], EMBED_MAX_ITEMS)
    notes.append(f"registration.tree: {len(keep):,} of {len(tree):,} modules kept (the root and every one "
                 "holding something unregistered first)")
    return Registration(tree=[tree[i] for i in keep])


def _trim_findings(findings: list[Finding], where: str, notes: list[str]) -> list[Finding]:
    """At most ``EMBED_MAX_FINDINGS`` findings of each code, the first ones."""
    counts = Counter(f.code for f in findings)
    if max(counts.values(), default=0) <= EMBED_MAX_FINDINGS:
        return findings
    seen: Counter[str] = Counter()
    kept = []
    for f in findings:
        seen[f.code] += 1
        if seen[f.code] <= EMBED_MAX_FINDINGS:
            kept.append(f)
    cut = ", ".join(f"{n:,} {code}" for code, n in counts.items() if n > EMBED_MAX_FINDINGS)
    notes.append(f"{where}: the first {EMBED_MAX_FINDINGS:,} findings of each code kept (of {cut})")
    return kept


def trim_record(run: RunRecord) -> tuple[RunRecord, list[str]]:
    """A copy of ``run`` small enough to embed in the page, and what was cut.

    Per-step matrices keep at most ``EMBED_MAX_VALUES`` numbers (rows thinned evenly, with their
    ``steps``), per-step lists at most ``EMBED_MAX_SERIES`` entries, clip calls at most
    ``EMBED_MAX_CALLS``; ``grad_norm.parameter_norms`` is dropped when it is larger than the budget
    (``parameter_stats`` keeps its per-parameter summary). However large the model, at most
    ``EMBED_MAX_LAYERS`` layers and ``EMBED_MAX_PARAMETERS`` parameters are kept (the worst ones,
    ``sections.grad_norm.worst_first``), per-tensor lists keep ``EMBED_MAX_ITEMS`` entries and each
    finding code ``EMBED_MAX_FINDINGS`` findings. The input is not changed.
    """
    notes: list[str] = []
    probes: dict[str, ProbeRecord] = dict(run.probes)
    grad = run.probe(GradNormRecord)
    if grad is not None:
        grad = _grad_columns(grad, run.findings, notes)
        if grad.parameter_norms is not None and grad.parameter_norms.size > EMBED_MAX_VALUES:
            rows, width = grad.parameter_norms.shape
            grad = dataclasses.replace(grad, parameter_norms=None, parameter_steps=None)
            notes.append(f"probes.grad_norm.parameter_norms: dropped ({rows:,} steps x {width:,} parameters); "
                         "per-parameter statistics stay in parameter_stats")
        keys = ["total_norm", "layer_norms"] + (["parameter_norms"] if grad.parameter_norms is not None else [])
        wide = max(len(grad.layers), len(grad.parameters) if grad.parameter_norms is not None else 0)
        probes[grad.probe] = _thin(grad, keys, wide, "probes.grad_norm", notes)
    act = run.probe(ActivationGradRecord)
    if act is not None:
        if len(act.modules) > EMBED_MAX_LAYERS:
            keep = sorted(worst_first(act.modules, act.stats)[:EMBED_MAX_LAYERS]) if len(act.stats) \
                else list(range(EMBED_MAX_LAYERS))
            notes.append(f"probes.activation_grad: {len(keep):,} of {len(act.modules):,} modules kept, the worst ones")
            act = dataclasses.replace(act, modules=[act.modules[i] for i in keep], norms=_columns(act.norms, keep),
                                      stats=_rows(act.stats, keep))
        probes[act.probe] = _thin(act, ["norms"], len(act.modules), "probes.activation_grad", notes)
    upd = run.probe(UpdateRatioRecord)
    if upd is not None:
        if len(upd.layers) > EMBED_MAX_LAYERS:
            wanted = set(grad.layers) if grad is not None else set()   # the layers kept above
            keep = [i for i, layer in enumerate(upd.layers) if layer in wanted][:EMBED_MAX_LAYERS] or \
                list(range(EMBED_MAX_LAYERS))
            notes.append(f"probes.update_ratio: {len(keep):,} of {len(upd.layers):,} layers kept")
            upd = dataclasses.replace(upd, layers=[upd.layers[i] for i in keep], ratios=_columns(upd.ratios, keep))
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
    registration = _trim_lists(run, probes, notes)
    findings = _trim_findings(run.findings, "findings", notes)
    models = []
    for i, m in enumerate(run.models):   # each root model's own records, trimmed the same way
        sub, sub_notes = trim_record(RunRecord(probes=m.probes, findings=m.findings))
        notes += [f"models[{i}].{note}" for note in sub_notes]
        models.append(dataclasses.replace(m, probes=sub.probes, findings=sub.findings) if sub_notes else m)
    trimmed = dataclasses.replace(run, probes=probes, registration=registration, findings=findings, models=models)
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


def page_findings(views: list[FindingView], per_code: int = PAGE_MAX_FINDINGS) -> list[FindingView]:
    """At most ``per_code`` findings of each code (the first ones: most severe first), each code cut
    short followed by one line saying how many more there are (all of them are in the record)."""
    total = Counter(v.code for v in views)
    if max(total.values(), default=0) <= per_code:
        return views
    seen: Counter[str] = Counter()
    out = []
    for v in views:
        seen[v.code] += 1
        if seen[v.code] > per_code:
            continue
        out.append(v)
        if seen[v.code] == per_code and total[v.code] > per_code:
            more = total[v.code] - per_code
            out.append(FindingView(v.severity, v.code, f"{more:,} more",
                                   f"… and {more:,} more {v.code} findings like these, {total[v.code]:,} in all, "
                                   "left off this page to keep it small; the JSON record lists every one.",
                                   "", v.title))
    return out


def build_page(run: RunRecord) -> tuple[Page, RunRecord, list[str]]:
    """The page's view model, with the trimmed record to embed and the trimming notes."""
    every = finding_views(run.findings)
    findings = page_findings(every)
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
                counts=severity_counts(every), sections=sections, status=status_line, status_ok=ok,
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
