"""A compact HTML summary of a run for notebooks (``Scope._repr_html_``, ``RunRecord._repr_html_``).

The full report is a page of its own; a notebook cell wants a few lines: the verdict, the
findings, the key numbers and the total-norm figure. The summary is a fragment (a ``<div>`` with
its own scoped ``<style>``), self-contained like the report: the figure is inline SVG, nothing is
fetched, no ``http://`` or ``https://`` string is left in it (URLs in user text are made inert),
and every name from the user's model or record is escaped by the autoescaped template.
"""
from __future__ import annotations

import uuid
from typing import Any, Mapping

from gradscope.records import ClippingRecord, GradNormRecord, RunRecord
from gradscope.reports.page import FigureView, defang, draw, finding_views, fmt_number, severity_counts

MAX_FINDINGS = 20   # rows of the findings table; the rest are counted

TEMPLATE = """\
<div class="gradscope-summary" id="{{ uid }}">
<style>
#{{ uid }} { font-family: system-ui, sans-serif; font-size: 13px; line-height: 1.4; max-width: 980px; }
#{{ uid }} .gs-title { font-weight: 600; font-size: 14px; }
#{{ uid }} .gs-sub { color: #555; }
#{{ uid }} .gs-verdict { margin: 6px 0; padding: 4px 8px; border-left: 4px solid #2ca02c; background: #f3faf3; }
#{{ uid }} .gs-verdict.gs-bad { border-color: #d62728; background: #fdf3f3; }
#{{ uid }} .gs-verdict.gs-warn { border-color: #ff7f0e; background: #fff8f0; }
#{{ uid }} table { border-collapse: collapse; margin: 4px 0; }
#{{ uid }} th, #{{ uid }} td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #e5e5e5;
  vertical-align: top; }
#{{ uid }} .gs-error { color: #b3001b; font-weight: 600; }
#{{ uid }} .gs-warning { color: #b35900; font-weight: 600; }
#{{ uid }} .gs-info { color: #1f5f99; }
#{{ uid }} .gs-hint { color: #555; font-size: 12px; }
#{{ uid }} code { font-size: 12px; }
#{{ uid }} svg { max-width: 100%; height: auto; }
</style>
<div class="gs-title">gradscope: {{ title }}</div>
<div class="gs-sub">{{ subtitle }}</div>
<div class="gs-verdict {{ verdict_css }}">{% if status %}{{ status }} {% endif %}{{ verdict }}</div>
{% if numbers %}<table class="gs-numbers"><tbody>
{% for label, value in numbers %}<tr><th>{{ label }}</th><td>{{ value }}</td></tr>
{% endfor %}</tbody></table>{% endif %}
{% if findings %}<table class="gs-findings"><thead><tr><th>severity</th><th>code</th><th>where</th>
<th>what is wrong, and the fix</th></tr></thead><tbody>
{% for f in findings %}<tr><td class="gs-{{ f.severity }}">{{ f.severity }}</td><td><code>{{ f.code }}</code></td>
<td><code>{{ f.where }}</code></td><td>{{ f.message }}<div class="gs-hint">{{ f.hint }}</div></td></tr>
{% endfor %}</tbody></table>{% endif %}
{% if more %}<div class="gs-sub">... and {{ more }} more finding(s) in the full report.</div>{% endif %}
{% for fig in figures %}<figure>{{ fig.svg }}<figcaption class="gs-sub">{{ fig.caption }}</figcaption></figure>
{% endfor %}{% for note in notes %}<div class="gs-sub">{{ note }}</div>
{% endfor %}</div>
"""


def summary_html(record: RunRecord | Mapping[str, Any]) -> str:
    """A notebook-sized, self-contained HTML summary of a run record (or its JSON)."""
    import jinja2

    from gradscope.reports.html import as_run_record, highlights

    run = as_run_record(record)
    uid = f"gradscope-{uuid.uuid4().hex[:10]}"   # several summaries in one notebook: no clashing ids
    views = finding_views(run.findings)
    counts = severity_counts(views)
    if views:
        verdict = ", ".join(f"{counts[s]} {s}{'s' if counts[s] != 1 and s != 'info' else ''}"
                            for s in ("error", "warning", "info"))
        verdict_css = "gs-bad" if counts["error"] else ("gs-warn" if counts["warning"] else "")
    else:
        verdict, verdict_css = "No findings: nothing gradscope checks for went wrong.", ""
    status = ""
    if run.run is not None and run.run.status != "completed":
        status = f"Run {run.run.status}" + (f": {run.run.error}." if run.run.error else ".")
        verdict_css = "gs-bad"
    name = run.model.class_name if run.model and run.model.class_name else "run"
    parts = [f"{fmt_number(run.steps)} steps", f"{fmt_number(run.backwards)} backward passes"]
    if run.model is not None and run.model.device:
        parts.append(run.model.device)
    notes: list[str] = []
    page = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(TEMPLATE).render(
        uid=uid, title=name, subtitle=" · ".join(parts), verdict=verdict, verdict_css=verdict_css, status=status,
        numbers=highlights(run), findings=views[:MAX_FINDINGS], more=max(0, len(views) - MAX_FINDINGS),
        figures=_figures(run, uid, notes), notes=notes)
    return defang(page)


def _figures(run: RunRecord, uid: str, notes: list[str]) -> list[FigureView]:
    from gradscope.reports import figures

    grad = run.probe(GradNormRecord)
    if grad is None:
        return []

    def total_norm() -> Any:
        chart = figures.total_norm_figure(grad, run.probe(ClippingRecord))
        if chart is not None:
            chart.key = f"{uid}-total-norm"   # the SVG's ids take the key as their prefix
        return chart

    return draw([("total gradient norm", total_norm)], notes)
