"""Two runs side by side, to answer one question: did the fix help?

``render_compare(a, b)`` lays out: a verdict (is B better, worse or mixed compared with A, and
why), the key numbers of both runs with the change, the findings present in A only (fixed),
in B only (new) and in both, and the total-norm and loss/accuracy curves overlaid. Findings are
matched by ``(code, where)``: the message of a finding carries numbers that change between runs.

With ``reference=`` (``gradscope compare --reference good.json new.json``) the page also has the
section "Against the reference runs": B's departures from the envelope of the reference runs
(GS801–GS810, see ``gradscope.reference``), what else changed, and, given the ``envelope``, the
bands of the quantities that left it with B drawn over them.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from gradscope.errors import GradscopeError
from gradscope.records import ClippingRecord, GradNormRecord, LossRecord, LrRecord, RunRecord, write_text_atomic
from gradscope.records.reference import ReferenceRecord
from gradscope.records.run import Curves
from gradscope.reference import SMOOTH, Band, Envelope, Quantity, band_edges, departure_findings, group_key
from gradscope.reports.html import as_run_record, steps_per_second, trim_record
from gradscope.reports.page import (
    Cell,
    FigureView,
    FindingView,
    Row,
    Section,
    SectionContext,
    Table,
    asset,
    defang,
    draw,
    embed_json,
    finding_views,
    fmt_number,
    jinja_environment,
    severity_counts,
    visible_controls,
)
from gradscope.reports.sections.reference import section_reference
from gradscope.thresholds import Thresholds

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gradscope.reports.charts import Chart

ACCURACY_POINTS = 0.5    # a change of test accuracy smaller than this (percentage points) is no change
LOSS_RELATIVE = 0.02     # a change of loss smaller than 2% is no change


@dataclass
class FindingsDiff:
    """Findings matched by (code, where): only in A (fixed by B), only in B (new), in both."""

    only_a: list[FindingView]
    only_b: list[FindingView]
    both: list[tuple[FindingView, FindingView]]


@dataclass
class KeyNumber:
    name: str
    a: Any
    b: Any
    better: str = ""        # "higher", "lower" or "" (no direction)
    suffix: str = ""

    @property
    def change(self) -> float | None:
        x, y = _number(self.a), _number(self.b)
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            return None
        return y - x

    @property
    def verdict(self) -> str:
        """"better", "worse" or "" for B against A."""
        d = self.change
        if d is None or not self.better or d == 0:
            return ""
        return "better" if (d > 0) == (self.better == "higher") else "worse"


@dataclass
class ComparePage:
    title: str
    names: tuple[str, str]
    headline: str
    tone: str                         # "better", "worse" or "" (mixed / no clear change)
    reasons: list[str]
    numbers: Table
    diff: FindingsDiff
    figures: list[FigureView] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    reference: Section | None = None   # B against the reference runs (compare --reference)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def diff_findings(a: RunRecord, b: RunRecord) -> FindingsDiff:
    """Match the findings of two records by (code, where)."""
    fa, fb = finding_views(a.findings), finding_views(b.findings)
    index_b: dict[tuple[str, str], FindingView] = {}
    for f in fb:
        index_b.setdefault((f.code, f.where), f)
    keys_a = {(f.code, f.where) for f in fa}
    both, only_a, seen = [], [], set()
    for f in fa:
        key = (f.code, f.where)
        if key in seen:
            continue
        seen.add(key)
        if key in index_b:
            both.append((f, index_b[key]))
        else:
            only_a.append(f)
    only_b, seen_b = [], set()
    for f in fb:
        key = (f.code, f.where)
        if key not in keys_a and key not in seen_b:
            seen_b.add(key)
            only_b.append(f)
    return FindingsDiff(only_a, only_b, both)


def _facts(record: RunRecord) -> dict[str, Any]:
    curves = record.curves or Curves()
    grad, clip = record.probe(GradNormRecord), record.probe(ClippingRecord)
    counts = severity_counts(finding_views(record.findings))
    clipped = clip.summary.clipped_fraction if clip is not None else None
    # a run that stopped before its first evaluation after training has only the one before it:
    # that is no final accuracy, and must not make a crashed run look as good as a finished one
    trained = [i for i, epoch in enumerate(curves.epoch) if epoch != -1]
    after = trained[-1] + 1 if trained else 0
    return {
        "status": record.run.status if record.run else None,
        "steps": record.run.steps if record.run and record.run.steps is not None else record.steps,
        "test_acc": Curves.last(curves.test_accuracy_percent[:after]),
        "test_loss": Curves.last(curves.test_loss[:after]),
        "train_loss": Curves.last(curves.train_loss),
        "clipped": None if clipped is None else 100 * clipped,
        "norm_mean": grad.total_stats.mean if grad is not None else None,
        "norm_max": grad.total_stats.max if grad is not None else None,
        "errors": counts["error"], "warnings": counts["warning"], "info": counts["info"],
        "trainable": record.model.trainable if record.model else None,
        "speed": steps_per_second(record),
    }


def key_numbers(a: RunRecord, b: RunRecord) -> list[KeyNumber]:
    """The numbers that say whether a run went better: outcome, gradients, findings, speed."""
    fa, fb = _facts(a), _facts(b)
    rows = [KeyNumber("status", fa["status"], fb["status"]),
            KeyNumber("final test accuracy", fa["test_acc"], fb["test_acc"], "higher", " %"),
            KeyNumber("final test loss", fa["test_loss"], fb["test_loss"], "lower"),
            KeyNumber("final train loss", fa["train_loss"], fb["train_loss"], "lower"),
            KeyNumber("steps", fa["steps"], fb["steps"]),
            KeyNumber("errors", fa["errors"], fb["errors"], "lower"),
            KeyNumber("warnings", fa["warnings"], fb["warnings"], "lower"),
            KeyNumber("info", fa["info"], fb["info"]),
            KeyNumber("clipped fraction", fa["clipped"], fb["clipped"], "", " %"),
            KeyNumber("mean total gradient norm", fa["norm_mean"], fb["norm_mean"]),
            KeyNumber("max total gradient norm", fa["norm_max"], fb["norm_max"]),
            KeyNumber("trainable parameters", fa["trainable"], fb["trainable"]),
            KeyNumber("steps per second", fa["speed"], fb["speed"], "higher")]
    return [r for r in rows if r.a is not None or r.b is not None]


def judge(numbers: Sequence[KeyNumber], diff: FindingsDiff, names: tuple[str, str]) -> tuple[str, str, list[str]]:
    """(headline, tone, reasons): is B better than A, from the outcome and the findings."""
    a_name, b_name = names
    reasons: list[str] = []
    by_name = {n.name: n for n in numbers}
    outcome = 0
    for metric in ("final test accuracy", "final test loss", "final train loss"):
        n = by_name.get(metric)
        if n is None or n.change is None:
            continue
        base = abs(_number(n.a) or 0.0)
        small = (abs(n.change) < ACCURACY_POINTS if metric == "final test accuracy"
                 else abs(n.change) <= LOSS_RELATIVE * max(base, 1e-12))
        unit = " points" if metric == "final test accuracy" else ""
        if small:
            reasons.append(f"{metric} about the same ({fmt_number(n.a)} → {fmt_number(n.b)})")
        else:
            outcome = 1 if n.verdict == "better" else -1
            reasons.append(f"{metric} {fmt_number(n.a)} → {fmt_number(n.b)} "
                           f"({'+' if n.change > 0 else ''}{fmt_number(n.change)}{unit})")
        break
    status = by_name.get("status")
    if status and status.a != status.b and status.a is not None and status.b is not None:
        reasons.append(f"status {status.a} → {status.b}")
        if status.b == "completed":
            outcome = max(outcome, 1)
        elif status.a == "completed":
            outcome = min(outcome, -1)

    def weight(items: Sequence[FindingView]) -> tuple[int, int]:
        return (sum(f.severity == "error" for f in items), sum(f.severity == "warning" for f in items))

    fixed, new = weight(diff.only_a), weight(diff.only_b)
    findings = 0 if fixed == new else (1 if fixed > new else -1)
    if diff.only_a:
        reasons.append(f"{len(diff.only_a)} finding(s) of {a_name} gone in {b_name}")
    if diff.only_b:
        reasons.append(f"{len(diff.only_b)} new finding(s) in {b_name}")
    if diff.both:
        reasons.append(f"{len(diff.both)} finding(s) in both")
    if outcome >= 0 and findings >= 0 and (outcome or findings):
        return f"{b_name} looks better than {a_name}", "better", reasons
    if outcome <= 0 and findings <= 0 and (outcome or findings):
        return f"{b_name} looks worse than {a_name}", "worse", reasons
    if outcome and findings:
        return f"Mixed: {b_name} is better on one count and worse on another", "", reasons
    return f"No clear difference between {a_name} and {b_name}", "", reasons


def _numbers_table(numbers: Sequence[KeyNumber], names: tuple[str, str]) -> Table:
    rows = []
    for n in numbers:
        change = n.change
        change_cell = Cell("" if change is None else ("+" if change > 0 else "") + fmt_number(change),
                           sort="" if change is None else repr(change), css=f"num {n.verdict}".strip())
        rows.append(Row([Cell(n.name), _value(n.a, n.suffix), _value(n.b, n.suffix), change_cell]))
    return Table("key-numbers", ["", names[0], names[1], "change (B − A)"], rows)


def _value(value: Any, suffix: str) -> Cell:
    x = _number(value)
    if x is None:
        return Cell("" if value is None else str(value))
    return Cell(fmt_number(value) + suffix, sort=repr(x), css="num")


def _names(names: Sequence[str]) -> tuple[str, str]:
    if isinstance(names, str) or len(names) != 2:
        raise GradscopeError(f"names= expects two labels such as ('before', 'after'), got {names!r}")
    a, b = (str(x) for x in names)
    if a == b:
        a, b = f"{a} (A)", f"{b} (B)"
    return a, b


def build_compare(a: RunRecord, b: RunRecord, names: tuple[str, str], reference: ReferenceRecord | None = None,
                  envelope: Envelope | None = None, thresholds: Thresholds | None = None) -> ComparePage:
    from gradscope.reports import figures as F

    diff = diff_findings(a, b)
    numbers = key_numbers(a, b)
    headline, tone, reasons = judge(numbers, diff, names)
    page = ComparePage(title=f"gradscope compare: {names[0]} vs {names[1]}", names=names,
                       headline=headline, tone=tone, reasons=reasons,
                       numbers=_numbers_table(numbers, names), diff=diff)
    page.figures = draw([("curves overlay", functools.partial(F.compare_curves, a, b, names)),
                         ("total norm overlay", functools.partial(F.compare_total_norm, a, b, names))],
                        page.notes)
    if reference is not None:
        page.reference = reference_section(b, names[1], reference, envelope,
                                           thresholds if thresholds is not None else b.judged_with())
        if reference.departures:
            page.reasons.append(f"{len(reference.departures)} departure(s) of {names[1]} from the reference "
                                "runs (see Against the reference runs)")
    return page


# ---- against the reference runs ------------------------------------------------------------------
def reference_section(run: RunRecord, name: str, reference: ReferenceRecord, envelope: Envelope | None,
                      thresholds: Thresholds) -> Section:
    """The departures of ``run`` from its references, with the bands they left when ``envelope``
    is given (the gradient norm of the first layer to leave, the loss, a learning rate)."""
    ctx = SectionContext(run, finding_views(departure_findings(reference)))
    section = section_reference(reference, ctx)
    assert section is not None
    section.notes.insert(0, f"{name} judged against the envelope of {', '.join(reference.references)}: the first "
                            "step (and layer) where it leaves it by more than the reference runs differ among "
                            "themselves, and what else changed.")
    section.related_label = "Departures (hints say what to check):"
    section.compact = False
    section.related = ctx.findings
    if envelope is not None:
        builds = [(title, functools.partial(band_figure, *spec, name, thresholds))
                  for title, spec in _bands_to_draw(run, reference, envelope)]
        section.figures = draw(builds, section.notes)
    return section


def _bands_to_draw(run: RunRecord, reference: ReferenceRecord, envelope: Envelope
                   ) -> list[tuple[str, tuple[str, str, Band, Quantity, np.ndarray, np.ndarray, int | None]]]:
    """What to draw: (title, (key, label, band, quantity, this run's steps, values, departure step))."""
    first = {d.code: d for d in reversed(reference.departures)}   # the first departure of each code
    out: list[tuple[str, tuple[str, str, Band, Quantity, np.ndarray, np.ndarray, int | None]]] = []
    grad = run.probe(GradNormRecord)
    if grad is not None and grad.steps and envelope.grad_norm:
        gs801 = first.get("GS801")
        layer = gs801.where if gs801 is not None and gs801.where in grad.layers else next(
            (x for x in grad.layers if x in envelope.grad_norm), None)
        if layer is not None and layer in envelope.grad_norm:
            column = grad.layer_norms[:, grad.layers.index(layer)]
            out.append(("reference band: gradient norm", (
                "reference-grad-norm", f"gradient norm of {layer}", envelope.grad_norm[layer], "grad_norm",
                np.asarray(grad.steps, dtype=float), column, gs801.step if gs801 is not None else None)))
    losses = run.probe(LossRecord)
    if losses is not None and losses.steps and envelope.loss is not None:
        gs802 = first.get("GS802")
        out.append(("reference band: loss", ("reference-loss", "loss", envelope.loss, "loss",
                                             np.asarray(losses.steps, dtype=float), losses.loss,
                                             gs802.step if gs802 is not None else None)))
    lrs, gs806 = run.probe(LrRecord), first.get("GS806")
    if lrs is not None and gs806 is not None and gs806.where in lrs.groups:
        key = group_key(gs806.where)
        if key in envelope.lr:
            out.append(("reference band: learning rate", (
                "reference-lr", f"learning rate of {gs806.where}", envelope.lr[key], "lr",
                np.asarray(lrs.steps, dtype=float), lrs.lr[:, lrs.groups.index(gs806.where)], gs806.step)))
    return out


def band_figure(key: str, what: str, band: Band, quantity: Quantity, steps: np.ndarray, values: np.ndarray,
                step: int | None, name: str, thresholds: Thresholds) -> Chart | None:
    """The references' range of one quantity (dark), the band the judge allows (light) and this
    run over it, with a line at the step where it left."""
    from gradscope.reports.charts import COLOURS, NONFINITE_COLOUR, Chart, label, log_scale, new_figure, positive, style

    if not band.steps.size or not values.size:
        return None
    grid, low, high = band_edges(band, quantity, thresholds)
    inner_low, inner_high = band.low, band.high
    if band.log:
        with np.errstate(over="ignore"):
            inner_low, inner_high = 10.0 ** inner_low, 10.0 ** inner_high
    show = positive if band.log else (lambda v: v)
    with style():
        fig = new_figure(10, 3.0)
        ax = fig.add_subplot()
        chart = Chart(key, f"Against the reference runs: {what}", fig)
        ax.fill_between(grid, show(low), show(high), color=COLOURS[0], alpha=0.15, linewidth=0,
                        label="allowed band")
        ax.fill_between(grid, show(inner_low), show(inner_high), color=COLOURS[0], alpha=0.35, linewidth=0,
                        label="reference runs")
        (line,) = ax.plot(steps, show(values), color=COLOURS[1], linewidth=1.2, label=label(name))
        finite = values[np.isfinite(values)]
        if finite.size:
            chart.tip(line, f"{name}: min {fmt_number(float(finite.min()))}, max {fmt_number(float(finite.max()))}")
        if step is not None:
            mark = ax.axvline(float(step), color=NONFINITE_COLOUR, linewidth=1, linestyle="--",
                              label=f"left at step {step}")
            chart.tip(mark, f"{name} left the band at step {step}")
        if band.log:
            log_scale(ax)
        ax.set_xlabel("step")
        ax.set_ylabel(label(what, 30))
        ax.legend(loc="upper right", fontsize=8)
    chart.caption = (f"Dark: the range of the {band.count} reference run(s) (running medians of {SMOOTH} kept steps); "
                     "light: the band a run may stay in (the tolerance of one reference, or their spread and "
                     "margin); zeros and non-finite values are not drawn on a log axis.")
    return chart


def render_compare(a: RunRecord | Mapping[str, Any], b: RunRecord | Mapping[str, Any],
                   names: Sequence[str] = ("A", "B"), *, reference: ReferenceRecord | None = None,
                   envelope: Envelope | None = None, thresholds: Thresholds | None = None) -> str:
    """A self-contained HTML page comparing run records ``a`` and ``b`` (before and after a fix).

    ``reference``: B's departures from reference runs (``gradscope.reference.judge_against``), shown in
    their own section; ``envelope`` (and the ``thresholds`` it was judged with) adds the bands."""
    from markupsafe import Markup

    first, second = as_run_record(a, "first record"), as_run_record(b, "second record")
    labels = _names(names)
    page = build_compare(first, second, labels, reference, envelope, thresholds)
    embedded: dict[str, Any] = {"names": list(labels), "a": trim_record(first)[0].to_json(),
                                "b": trim_record(second)[0].to_json()}
    if reference is not None:
        embedded["reference"] = reference.to_json()
    html = jinja_environment().get_template("compare.html").render(
        page=page, css=Markup(asset("report.css")), script=Markup(asset("report.js")),
        record_json=Markup(embed_json(embedded)))
    return visible_controls(defang(html))


def write_compare(a: RunRecord | Mapping[str, Any], b: RunRecord | Mapping[str, Any], path: str | Path,
                  names: Sequence[str] = ("A", "B"), *, reference: ReferenceRecord | None = None,
                  envelope: Envelope | None = None, thresholds: Thresholds | None = None) -> Path:
    """Render the comparison and write it to ``path`` atomically; returns the path."""
    return write_text_atomic(render_compare(a, b, names, reference=reference, envelope=envelope,
                                            thresholds=thresholds), path)
