"""The HTML report: one self-contained page that explains a training run.

The page is one autoescaped Jinja2 template (``templates/report.html``) fed with small dataclasses
(``Page``, ``Section``, ``Table``, ...) built from the JSON record. CSS and script are inlined, the
figures are inline SVG (``gradscope.reports.figures``), and the record itself is embedded as JSON
in a ``<script type="application/json">`` block (trimmed for large runs, see ``trim_record``). The
page makes no request of any kind: a Content-Security-Policy forbids it, and no ``http://`` or
``https://`` string is left in it (URLs in user text are shown with ``&#58;`` for the colon).

Every section is optional and appears only when the record holds its data, so records from
``watch()``, from ``gradscope run`` and from older versions all render.
"""
from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from gradscope.errors import GradscopeError
from gradscope.reports.record import _clean, write_text_atomic

SEVERITIES = ("error", "warning", "info")
MAX_TABLE_ROWS = 2000          # rows of one table on the page (the rest stay in the record)
EMBED_MAX_VALUES = 30_000      # numbers kept per per-step matrix in the embedded record
EMBED_MAX_SERIES = 4096        # entries kept per per-step list in the embedded record
EMBED_MAX_CALLS = 2048         # clip calls kept in the embedded record
TEMPLATES = Path(__file__).with_name("templates")

# Which findings are repeated inside which section, by code prefix.
SECTION_CODES: dict[str, tuple[str, ...]] = {
    "run": ("GS501", "GS502", "GS506", "GS509"),
    "loop": ("GS503", "GS504"),
    "timings": ("GS510",),
    "registration": ("GS1",),
    "gradients": ("GS201", "GS202", "GS203", "GS204", "GS205"),
    "nonfinite": ("GS205", "GS206"),
    "dead-units": ("GS207",),
    "update-ratio": ("GS208",),
    "curves": ("GS209",),
    "freezing": ("GS3",),
    "clipping": ("GS4",),
    "hooks": ("GS6",),
}


# ---- the view model ------------------------------------------------------------------------------
@dataclass
class Cell:
    """One table cell: shown ``text``, and ``sort`` (a number as text) when it sorts numerically."""

    text: str
    sort: str | None = None
    css: str = ""
    title: str = ""
    indent: int = 0


@dataclass
class Row:
    cells: list[Cell]
    css: str = ""


@dataclass
class Table:
    id: str
    columns: list[str]
    rows: list[Row]
    title: str = ""
    note: str = ""


@dataclass
class FigureView:
    key: str
    title: str
    svg: Any            # markupsafe.Markup: sanitised SVG
    caption: str = ""


@dataclass
class FindingView:
    severity: str
    code: str
    where: str
    message: str
    hint: str
    title: str = ""


@dataclass
class Section:
    id: str
    title: str
    gist: str = ""
    facts: list[tuple[str, str]] = field(default_factory=list)
    blocks: list[tuple[str, str]] = field(default_factory=list)
    figures: list[FigureView] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    related: list[FindingView] = field(default_factory=list)
    open: bool = True
    download: str = ""
    related_label: str = "Findings here (hints in the verdict above):"
    compact: bool = True


@dataclass
class Page:
    title: str
    subtitle: str
    findings: list[FindingView]
    counts: dict[str, int]
    sections: list[Section]
    status: str = ""
    status_ok: bool = True
    highlights: list[tuple[str, str]] = field(default_factory=list)


# ---- small helpers -------------------------------------------------------------------------------
def as_object(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def as_number(value: Any) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def fmt_number(value: Any) -> str:
    """A number as the page shows it; strings and None pass through as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    number = as_number(value) if not isinstance(value, str) or value in ("NaN", "Infinity", "-Infinity") else None
    if number is None:
        return "" if value is None else str(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Inf" if number > 0 else "-Inf"
    if number == 0:
        return "0"
    if number.is_integer() and abs(number) < 1e15:
        return f"{int(number):,}"
    if 1e-3 <= abs(number) < 1e5:
        return f"{number:.4g}"
    return f"{number:.3e}"


def num(value: Any, suffix: str = "") -> Cell:
    """A numeric cell that sorts by value (missing values sort first)."""
    number = as_number(value)
    sort = "" if number is None or math.isnan(number) else repr(number)
    text = fmt_number(value)
    return Cell(text + (suffix if text and suffix else ""), sort=sort, css="num")


def text(value: Any, mono: bool = False, title: str = "") -> Cell:
    return Cell("" if value is None else str(value), css="mono" if mono else "", title=title)


def pct(value: Any) -> str:
    number = as_number(value)
    return "" if number is None else f"{100 * number:.1f}%"


def _capped(rows: list[Row], what: str) -> tuple[list[Row], str]:
    if len(rows) <= MAX_TABLE_ROWS:
        return rows, ""
    return rows[:MAX_TABLE_ROWS], (f"Showing the first {MAX_TABLE_ROWS:,} of {len(rows):,} {what}; "
                                   "all of them are in the JSON record.")


def defang(page: str) -> str:
    """Make URLs in user text inert: ``http://`` is written ``http&#58;//`` (same text on screen,
    no link, and no request), so the page holds no ``http://`` or ``https://`` string."""
    return re.sub(r"(?i)\b(https?|ftp|wss?)://", r"\1&#58;//", page)


def embed_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` are
    written as ``\\u003c``-style escapes (so no ``</script>`` or ``<!--`` can appear), and ``://``
    as ``\\u003a//``; ``JSON.parse`` gives back exactly the same data."""
    raw = json.dumps(_clean(data), ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)
    return (raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").replace("://", "\\u003a//"))


# ---- findings ------------------------------------------------------------------------------------
def finding_views(items: Any) -> list[FindingView]:
    """Findings from a record, most severe first (the record's order within a severity); a
    missing hint is filled from the catalog."""
    from gradscope.findings import CATALOG

    views = []
    for item in as_list(items):
        if not isinstance(item, Mapping):
            continue
        code = str(item.get("code", "") or "")
        entry = CATALOG.get(code)
        severity = str(item.get("severity", "") or "").lower()
        if severity not in SEVERITIES:
            severity = entry.severity.value if entry else "info"
        hint = item.get("hint") or (entry.hint if entry else "")
        views.append(FindingView(severity, code, str(item.get("where", "") or ""),
                                 str(item.get("message", "") or ""), str(hint or ""),
                                 entry.title if entry else ""))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    return sorted(views, key=lambda f: rank[f.severity])


def severity_counts(views: Iterable[FindingView]) -> dict[str, int]:
    counts = {s: 0 for s in SEVERITIES}
    for f in views:
        counts[f.severity] += 1
    return counts


def _related(findings: list[FindingView], section: str) -> list[FindingView]:
    prefixes = SECTION_CODES.get(section, ())
    return [f for f in findings if f.code.startswith(prefixes)] if prefixes else []


# ---- trimming the embedded record ----------------------------------------------------------------
def _thin_indices(n: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spaced indices of ``range(n)``, always with the first and last."""
    if n <= limit:
        return list(range(n))
    limit = max(2, limit)
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _thin_rows(p: dict[str, Any], keys: Sequence[str], width: int, where: str, notes: list[str]) -> None:
    lengths = [len(p[k]) for k in keys if isinstance(p.get(k), list)]
    if not lengths:
        return
    n = max(lengths)
    limit = min(EMBED_MAX_SERIES, max(2, EMBED_MAX_VALUES // max(width, 1)))
    if n <= limit:
        return
    idx = _thin_indices(n, limit)
    for k in keys:
        if isinstance(p.get(k), list) and len(p[k]) == n:
            rows = p[k]
            p[k] = [rows[i] for i in idx]
    notes.append(f"{where}: {n:,} recorded steps thinned evenly to {len(idx):,} ({', '.join(keys)})")


def trim_record(record: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A copy of ``record`` small enough to embed in the page, and what was cut.

    Per-step matrices keep at most ``EMBED_MAX_VALUES`` numbers (rows thinned evenly, with their
    ``steps``), per-step lists at most ``EMBED_MAX_SERIES`` entries, clip calls at most
    ``EMBED_MAX_CALLS``; ``grad_norm.parameter_norms`` is dropped when it is larger than the budget
    (``parameter_stats`` keeps its per-parameter summary). Everything else is kept as it is.
    Only the containers on the way to a trimmed list are copied; the input is not changed.
    """
    out = dict(record)
    notes: list[str] = []
    probes = as_object(out.get("probes"))
    if probes:
        out["probes"] = probes
    grad = as_object(probes.get("grad_norm"))
    if grad:
        probes["grad_norm"] = grad
        rows = as_list(grad.get("parameter_norms"))
        width = len(as_list(grad.get("parameters"))) or (len(as_list(rows[0])) if rows else 0)
        if rows and len(rows) * max(width, 1) > EMBED_MAX_VALUES:
            del grad["parameter_norms"]
            notes.append(f"probes.grad_norm.parameter_norms: dropped ({len(rows):,} steps x {width:,} "
                         "parameters); per-parameter statistics stay in parameter_stats")
        keys = ["steps", "total_norm", "layer_norms"] + (["parameter_norms"] if "parameter_norms" in grad else [])
        wide = max(len(as_list(grad.get("layers"))), width if "parameter_norms" in grad else 0)
        _thin_rows(grad, keys, wide, "probes.grad_norm", notes)
    act = as_object(probes.get("activation_grad"))
    if act:
        probes["activation_grad"] = act
        _thin_rows(act, ["steps", "norms"], len(as_list(act.get("modules"))), "probes.activation_grad", notes)
    upd = as_object(probes.get("update_ratio"))
    if upd:
        probes["update_ratio"] = upd
        _thin_rows(upd, ["steps", "ratios"], len(as_list(upd.get("layers"))), "probes.update_ratio", notes)
    tensors = as_object(probes.get("tensor_grad"))
    if tensors:
        probes["tensor_grad"] = tensors
        for name, series in list(tensors.items()):
            if isinstance(series, Mapping):
                tensors[name] = dict(series)
                _thin_rows(tensors[name], ["steps", "norm", "max_abs"], 2, f"probes.tensor_grad[{name!r}]", notes)
    timing = as_object(probes.get("timing"))
    if timing:
        probes["timing"] = timing
        _thin_rows(timing, ["steps", "ms"], 9, "probes.timing", notes)
    clip = as_object(probes.get("clipping"))
    if clip:
        probes["clipping"] = clip
        calls = as_list(clip.get("calls"))
        if len(calls) > EMBED_MAX_CALLS:
            clip["calls"] = [calls[i] for i in _thin_indices(len(calls), EMBED_MAX_CALLS)]
            notes.append(f"probes.clipping.calls: {len(calls):,} calls thinned evenly to {len(clip['calls']):,}")
        summary = as_object(clip.get("summary"))
        rolling = as_list(summary.get("rolling_clipped_fraction"))
        if len(rolling) > EMBED_MAX_SERIES:
            summary["rolling_clipped_fraction"] = [rolling[i] for i in _thin_indices(len(rolling), EMBED_MAX_SERIES)]
            clip["summary"] = summary
            notes.append(f"probes.clipping.summary.rolling_clipped_fraction: {len(rolling):,} values "
                         f"thinned evenly to {EMBED_MAX_SERIES:,}")
    if notes:
        out["report_trimmed"] = notes
    return out, notes


# ---- figures -------------------------------------------------------------------------------------
def draw(builds: Sequence[tuple[str, Callable[[], Any]]], notes: list[str]) -> list[FigureView]:
    """Run each named chart builder and turn its chart into inline SVG; a builder that returns
    None has no data; one that fails leaves a note on the page instead of losing the page."""
    from markupsafe import Markup

    from gradscope.reports import figures

    out = []
    for name, build in builds:
        try:
            chart = build()
            if chart is None:
                continue
            svg = figures.to_svg(chart, f"{chart.key}-")
        except Exception as exc:  # a malformed record must still give a page: say what failed
            notes.append(f"The figure '{name}' could not be drawn ({type(exc).__name__}: {exc}).")
            continue
        out.append(FigureView(chart.key, chart.title, Markup(svg), chart.caption))
    return out


def _figures(record: Mapping[str, Any], builders: Sequence[Callable[[Mapping[str, Any]], Any]],
             notes: list[str]) -> list[FigureView]:
    return draw([(b.__name__.replace("_", " "), functools.partial(b, record)) for b in builders], notes)


# ---- sections ------------------------------------------------------------------------------------
def _stat_facts(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [("mean", fmt_number(stats.get("mean"))), ("min", fmt_number(stats.get("min"))),
            ("max", fmt_number(stats.get("max"))), ("values seen", fmt_number(stats.get("count"))),
            ("first non-finite step", fmt_number(stats.get("first_nonfinite_step")) or "none")]


def _stats_table(table_id: str, title: str, first: str, order: Sequence[Any], stats: Any,
                 extra: Callable[[str], list[Cell]] | None = None, extra_columns: Sequence[str] = ()) -> Table | None:
    table = as_object(stats)
    if not table:
        return None
    keys = [str(k) for k in order if str(k) in table] or list(table)
    seen = set(keys)
    keys += [k for k in table if k not in seen]
    rows = []
    for k in keys:
        s = as_object(table.get(k))
        bad = s.get("first_nonfinite_step") is not None
        rows.append(Row([text(k, mono=True), num(s.get("mean")), num(s.get("min")), num(s.get("max")),
                         num(s.get("count")), num(s.get("first_nonfinite_step"))]
                        + (extra(k) if extra else []),
                        css="flag" if bad else ("warn" if s.get("count") == 0 else "")))
    rows, note = _capped(rows, "rows")
    return Table(table_id, [first, "mean", "min", "max", "values", "first non-finite step", *extra_columns],
                 rows, title, note)


def section_run(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    run = as_object(record.get("run"))
    if not run:
        return None
    s = Section("run", "Command and run", gist=str(run.get("status", "")))
    if run.get("command"):
        s.blocks.append(("Command line", str(run["command"])))
    for key, label_ in (("status", "status"), ("file", "model file"), ("data", "data"),
                        ("device", "device"), ("steps", "optimizer steps")):
        if run.get(key) not in (None, ""):
            s.facts.append((label_, fmt_number(run[key])))
    checkpoints = as_list(run.get("checkpoints"))
    if checkpoints:
        s.facts.append(("checkpoints", ", ".join(str(c) for c in checkpoints)))
    if run.get("error"):
        s.blocks.append(("Error", str(run["error"])))
    options = as_object(run.get("options"))
    if options:
        rows = [Row([text(k, mono=True), text(json.dumps(_clean(v), default=str)
                                                   if not isinstance(v, str) else v, mono=True)])
                for k, v in options.items()]
        s.tables.append(Table("options", ["option", "value"], rows, "Options"))
    known = {"command", "status", "file", "data", "device", "steps", "checkpoints", "error", "options"}
    for k, v in run.items():
        if k not in known and isinstance(v, (str, int, float)):
            s.facts.append((str(k), fmt_number(v)))
    s.related = _related(ctx.findings, "run")
    return s


def section_model(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    model = as_object(record.get("model"))
    if not model and not record.get("torch_version"):
        return None
    s = Section("model", "Model")
    total, trainable = as_number(model.get("parameters")), as_number(model.get("trainable"))
    if model.get("class"):
        s.facts.append(("class", str(model["class"])))
    if total is not None:
        s.facts.append(("parameters", fmt_number(int(total))))
    if trainable is not None:
        s.facts.append(("trainable", fmt_number(int(trainable))
                        + (f" ({100 * trainable / total:.1f}%)" if total else "")))
        if total is not None:
            s.facts.append(("frozen", fmt_number(int(total - trainable))))
    if model.get("device"):
        s.facts.append(("device", str(model["device"])))
    if record.get("torch_version"):
        s.facts.append(("torch", str(record["torch_version"])))
    for key, label_ in (("steps", "steps recorded"), ("backwards", "backward passes"), ("step_on", "step clock")):
        if record.get(key) is not None:
            s.facts.append((label_, fmt_number(record[key])))
    if total is not None and trainable is not None:
        s.gist = f"{fmt_number(int(total))} parameters, {fmt_number(int(trainable))} trainable"
    return s


def _first(node: Mapping[str, Any], *keys: str) -> Any:
    """The first of ``keys`` present in ``node`` (records name some fields in two ways)."""
    return next((node[k] for k in keys if k in node), None)


def _lost_text(item: Mapping[str, Any]) -> str:
    count = item.get("count")
    kind = str(item.get("kind", "?"))
    what = f"{count} {kind}{'s' if isinstance(count, int) and count != 1 else ''}" if count is not None else kind
    code = f", {item['code']}" if item.get("code") else ""
    return f"{item.get('attribute', '?')}: {what}{code}"


def section_models(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    """Zero-code mode with several root models (a GAN): one row and one norm chart per model.
    The other sections show the first model; findings name their model before the place."""
    from gradscope.reports import figures as F

    models = [as_object(m) for m in as_list(record.get("models"))]
    if len(models) < 2:
        return None
    s = Section("models", "Models in the script", gist=f"{len(models)} models watched")
    rows = []
    for m in models:
        info = as_object(m.get("model"))
        found = as_list(m.get("findings"))
        worst = ", ".join(sorted({str(as_object(f).get("code", "")) for f in found})) or "none"
        rows.append(Row([text(m.get("name", ""), mono=True), text(info.get("class", "")),
                         num(info.get("parameters")), num(info.get("trainable")),
                         text(", ".join(str(o) for o in as_list(m.get("optimizers"))) or "none"),
                         num(m.get("steps")), text(worst, mono=True)]))
    s.tables.append(Table("models", ["model", "class", "parameters", "trainable", "optimizers",
                                     "steps", "findings"], rows, "Root models and their optimizers"))

    def chart(i: int, m: Mapping[str, Any]) -> Any:
        c = F.total_norm_figure({"probes": as_object(m.get("probes"))})
        if c is not None:
            c.key = f"model{i}-total-norm"
            c.title = f"{m.get('name', f'model {i}')}: total gradient norm (before clipping)"
        return c

    s.figures = draw([(f"total norm of {m.get('name', i)}", functools.partial(chart, i, m))
                      for i, m in enumerate(models)], s.notes)
    s.notes.append(f"The sections below show {models[0].get('name', 'the first model')}; every "
                   "model's findings are in the verdict, named `model: place`.")
    return s


def section_registration(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    tree = [n for n in as_list(as_object(record.get("registration")).get("tree")) if isinstance(n, Mapping)]
    if not tree:
        return None
    rows = []
    flagged = 0
    for node in tree:
        path = str(node.get("path", "") or "")
        missing = [u for u in as_list(node.get("unregistered")) if isinstance(u, Mapping)]
        flagged += bool(missing)
        depth = node.get("depth") if isinstance(node.get("depth"), int) else (path.count(".") + 1 if path else 0)
        shown = path.rpartition(".")[2] if path else str(node.get("name") or "(root)")
        serious = any(u.get("severity", "error") == "error" for u in missing)
        rows.append(Row([Cell(shown, css="mono", title=path or "(root)", indent=min(depth, 24)),
                         text(_first(node, "class_name", "class"), mono=True),
                         num(_first(node, "own_params", "own_parameters")),
                         num(_first(node, "total_params", "parameters")),
                         num(_first(node, "trainable_params", "trainable")),
                         text("; ".join(_lost_text(u) for u in missing), mono=True)],
                        css=("flag" if serious else "warn") if missing else ""))
    note = ""
    if len(rows) > MAX_TABLE_ROWS:  # keep every flagged row visible, in tree order
        flagged_ids = {id(r) for r in rows if r.css}
        room = max(0, MAX_TABLE_ROWS - len(flagged_ids))
        head = {id(r) for r in rows[:room]}
        rows = [r for r in rows if id(r) in head or id(r) in flagged_ids]
        note = f"Showing {len(rows):,} of {len(tree):,} modules (every flagged one); all are in the JSON record."
    s = Section("registration", "Registration",
                gist=f"{len(tree):,} modules" + (f", {flagged} holding unregistered modules, parameters "
                                                 "or tensors" if flagged else ", all registered"))
    s.tables.append(Table("registration", ["module", "class", "own parameters", "parameters", "trainable",
                                           "not registered (attribute: what, code)"], rows, "Module tree", note))
    s.notes.append("Marked rows hold submodules, parameters or tensors in plain attributes or containers: "
                   "parameters(), .to(), state_dict() and the optimizer do not see them.")
    s.related = _related(ctx.findings, "registration")
    return s


def section_gradients(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    p = F.probe(record, "grad_norm")
    if not p:
        return None
    s = Section("gradients", "Gradient norms")
    total = as_object(p.get("total_stats"))
    steps = as_list(p.get("steps"))
    s.facts.append(("recorded steps", f"{len(steps):,}" + (f" (every {p['stride']}th step kept)"
                                                         if isinstance(p.get("stride"), int) and p["stride"] > 1 else "")))
    s.facts.append(("parameter tensors", fmt_number(len(as_list(p.get("parameters"))))))
    s.facts.append(("layers", fmt_number(len(as_list(p.get("layers"))))))
    if total:
        s.facts += [(f"total norm: {k}", v) for k, v in _stat_facts(total)]
        s.gist = f"total norm mean {fmt_number(total.get('mean'))}, max {fmt_number(total.get('max'))}"
    s.figures = _figures(record, (F.total_norm_figure, F.grad_norm_heatmap, F.gradient_flow_figure), s.notes)
    layer_table = _stats_table("layer-stats", "Per-layer gradient norm over the run", "layer",
                               as_list(p.get("layers")), p.get("layer_stats"))
    if layer_table:
        s.tables.append(layer_table)
    param_table = _stats_table("parameter-stats", "Per-parameter gradient norm over the run", "parameter",
                               as_list(p.get("parameters")), p.get("parameter_stats"))
    if param_table:
        s.tables.append(param_table)
    order = as_list(p.get("backward_order"))
    if order:
        shown = ", ".join(str(x) for x in order[:12]) + (f", … ({len(order):,} in all)" if len(order) > 12 else "")
        s.notes.append(f"Order in which gradients arrived in the first backward pass: {shown}.")
    s.notes.append("Norms are taken after backward and before clipping; rows in red saw NaN/Inf, "
                   "rows in yellow never received a gradient.")
    s.related = _related(ctx.findings, "gradients")
    return s


def section_activations(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    act, tensors = F.probe(record, "activation_grad"), F.probe(record, "tensor_grad")
    if not act and not tensors:
        return None
    s = Section("activations", "Activation gradients")
    if act:
        s.gist = f"{len(as_list(act.get('modules'))):,} modules watched"
    s.figures = _figures(record, (F.activation_flow_figure, F.activation_heatmap, F.tensor_grad_figure), s.notes)
    table = _stats_table("activation-stats", "Output gradient norm per module", "module",
                         as_list(act.get("modules")), act.get("stats"))
    if table:
        s.tables.append(table)
    rows = []
    for name, series in tensors.items():
        st = as_object(as_object(as_object(series).get("stats")).get("norm"))
        peak = as_object(as_object(as_object(series).get("stats")).get("max_abs"))
        rows.append(Row([text(name, mono=True), text(as_object(series).get("via")), num(st.get("mean")),
                         num(st.get("min")), num(st.get("max")), num(peak.get("max")), num(st.get("count")),
                         num(st.get("first_nonfinite_step"))],
                        css="flag" if st.get("first_nonfinite_step") is not None else ""))
    if rows:
        s.tables.append(Table("tensor-stats", ["tensor", "via", "mean norm", "min norm", "max norm",
                                               "max |g|", "values", "first non-finite step"], rows,
                              "Named tensors"))
    return s


def section_clipping(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    p = F.probe(record, "clipping")
    if not p:
        return None
    summary = as_object(p.get("summary"))
    calls = [c for c in as_list(p.get("calls")) if isinstance(c, Mapping)]
    s = Section("clipping", "Clipping")
    s.facts.append(("clip calls", fmt_number(summary.get("calls", len(calls)))))
    if summary.get("norm_calls") is not None:
        s.facts.append(("norm clipping calls", fmt_number(summary["norm_calls"])))
    if summary.get("clipped_fraction") is not None:
        s.facts.append(("norm clipping acted on", pct(summary["clipped_fraction"]) + " of calls"))
        s.gist = f"acted on {pct(summary['clipped_fraction'])} of calls"
    if summary.get("mean_saturated") is not None:
        s.facts.append(("value clipping: mean share of elements clipped", pct(summary["mean_saturated"])))
    thresholds = sorted({fmt_number(c.get("threshold")) + f" ({c.get('kind', '?')})" for c in calls})
    if thresholds:
        s.facts.append(("thresholds", ", ".join(thresholds[:8])))
    s.figures = _figures(record, (F.clipping_figure,), s.notes)
    top = as_object(p.get("top_layers_when_clipped"))
    if top:
        rows = [Row([text(k, mono=True), num(100 * (as_number(v) or 0), "%")]) for k, v in top.items()]
        s.tables.append(Table("clip-layers", ["layer", "share of squared norm"], rows,
                              "Layers carrying most of the norm on steps that were clipped"))
    s.related = _related(ctx.findings, "clipping")
    return s


def section_freezing(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    p = F.probe(record, "freeze")
    if not p:
        return None
    s = Section("freezing", "Freezing and the optimizer")
    for key in ("parameters", "trainable", "frozen"):
        if p.get(key) is not None:
            s.facts.append((key, fmt_number(p[key])))
    subtrees = as_list(p.get("frozen_subtrees"))
    s.facts.append(("frozen submodules", ", ".join(str(x) for x in subtrees[:20])
                    + (f", … ({len(subtrees)} in all)" if len(subtrees) > 20 else "") if subtrees else "none"))
    bn = as_list(p.get("batchnorm_train_in_frozen"))
    if bn:
        s.facts.append(("BatchNorm in train mode inside frozen parts", ", ".join(str(x) for x in bn[:20])))
    total, frozen = as_number(p.get("parameters")), as_number(p.get("frozen"))
    if total:
        s.gist = f"{100 * (frozen or 0) / total:.1f}% frozen"
    rows = []
    for r in as_list(p.get("table")):
        if not isinstance(r, Mapping):
            continue
        lr = ", ".join(fmt_number(x) for x in as_list(r.get("lr")))
        wd = ", ".join(fmt_number(x) for x in as_list(r.get("weight_decay")))
        problem = (r.get("not_in_optimizer") and r.get("trainable")) or (r.get("frozen") and r.get("changed"))
        rows.append(Row([text(r.get("module"), mono=True), num(r.get("tensors")), num(r.get("trainable")),
                         num(r.get("frozen")), num(r.get("in_optimizer")), num(r.get("not_in_optimizer")),
                         text(lr), text(wd), num(r.get("changed"))], css="warn" if problem else ""))
    if rows:
        rows, note = _capped(rows, "modules")
        s.tables.append(Table("freeze", ["module", "tensors", "trainable", "frozen", "in optimizer",
                                         "not in optimizer", "lr", "weight decay", "tensors changed"],
                              rows, "Freeze table (parameter counts per module)", note))
    s.related = _related(ctx.findings, "freezing")
    return s


def section_curves(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    curves = as_object(record.get("curves"))
    columns = ("train_loss", "train_accuracy_percent", "test_loss", "test_accuracy_percent")
    if not any(as_list(curves.get(k)) for k in ("epoch", *columns)):
        return None
    s = Section("curves", "Loss and accuracy")
    s.figures = _figures(record, (F.curves_figure,), s.notes)
    epochs = as_list(curves.get("epoch"))
    n = max(len(as_list(curves.get(k))) for k in ("epoch", *columns))
    rows = []
    for i in range(n):
        e = epochs[i] if i < len(epochs) else None
        shown = "before training" if e == -1 else ("" if e is None else str(e))
        rows.append(Row([Cell(shown, sort=str(e) if isinstance(e, int) else "", css="num")]
                        + [num(as_list(curves.get(k))[i] if i < len(as_list(curves.get(k))) else None)
                           for k in columns]))
    s.tables.append(Table("curves", ["epoch", "train loss", "train accuracy %", "test loss",
                                     "test accuracy %"], rows, "Per epoch"))
    acc = [a for a in as_list(curves.get("test_accuracy_percent")) if as_number(a) is not None]
    if acc:
        s.gist = f"final test accuracy {fmt_number(acc[-1])}%"
    s.related = _related(ctx.findings, "curves")
    return s


def timing_summary(record: Mapping[str, Any]) -> dict[str, Any]:
    """Step timings from ``record["timings"]`` or the timing probe, with ``phases`` as
    ``{name: {median_ms, p90_ms, ...}}`` (computed from the per-step rows when only those exist)."""
    import numpy as np

    from gradscope.reports import figures as F

    timings = as_object(record.get("timings")) or F.probe(record, "timing")
    if not timings:
        return {}
    out = dict(timings)
    phases = timings.get("phases")
    if isinstance(phases, list):  # no summary (every step was warm-up): summarise the rows
        table = F.matrix(timings.get("ms"), len(phases))
        out["phases"] = {}
        for j, name in enumerate(phases):
            column = table[:, j][np.isfinite(table[:, j])] if table.size else table
            if column.size:
                out["phases"][str(name)] = {"median_ms": float(np.median(column)),
                                            "p90_ms": float(np.quantile(column, 0.9))}
    return out


def section_timings(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    timings = timing_summary(record)
    if not timings:
        return None
    s = Section("timings", "Step timings")
    phases = as_object(timings.get("phases"))
    step = as_object(phases.get("step"))
    if step:
        s.facts.append(("median step", f"{fmt_number(step.get('median_ms'))} ms (90th percentile "
                                       f"{fmt_number(step.get('p90_ms'))} ms)"))
    for k, v in timings.items():
        if k not in ("phases", "steps", "ms") and isinstance(v, (int, float, str)):
            s.facts.append((str(k).replace("_", " "), fmt_number(v)))
    if as_number(timings.get("steps_per_second")) is not None:
        s.gist = f"{fmt_number(timings['steps_per_second'])} steps/s"
    s.figures = draw([("timings figure", functools.partial(F.timings_figure, {"timings": timings}))], s.notes)
    rows = [Row([text(k), num(as_object(v).get("median_ms")), num(as_object(v).get("p90_ms")),
                 num(as_object(v).get("mean_ms"))]) for k, v in phases.items()]
    if rows:
        s.tables.append(Table("timings", ["phase", "median ms", "90th percentile ms", "mean ms"], rows))
    s.related = _related(ctx.findings, "timings")
    return s


def section_hooks(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    p = F.probe(record, "hooks")
    counts, changed = as_object(p.get("hook_counts")), as_list(p.get("gradient_changed_by"))
    related = _related(ctx.findings, "hooks")
    if not counts and not changed and not related:
        return None
    s = Section("hooks", "Hooks", gist=f"{len(counts)} place(s) with user hooks")
    if counts:
        s.tables.append(Table("hook-counts", ["where", "hooks at the last sample"],
                              [Row([text(k, mono=True), num(v)]) for k, v in counts.items()], "User hooks"))
    if changed:
        s.tables.append(Table("hook-changed", ["where", "kind", "times"],
                              [Row([text(as_object(c).get("where"), mono=True), text(as_object(c).get("kind")),
                                    num(as_object(c).get("times"))]) for c in changed],
                              "Hooks that replaced a gradient"))
    s.related = related
    return s


def section_update_ratio(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    p = F.probe(record, "update_ratio")
    if not p:
        return None
    s = Section("update-ratio", "Update-to-weight ratio", gist=f"{len(as_list(p.get('steps')))} sampled steps")
    s.figures = _figures(record, (F.update_ratio_figure,), s.notes)
    s.notes.append("||Δw|| / ||w|| per optimizer step, sampled; about 1e-3 is typical for a healthy "
                   "learning rate.")
    s.related = _related(ctx.findings, "update-ratio")
    return s


def section_dead_units(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    p = F.probe(record, "dead_units")
    if not p:
        return None
    rows = []
    for key, v in p.items():
        v = as_object(v)
        frac = as_number(v.get("dead_fraction"))
        rows.append(Row([text(v.get("module", key), mono=True), num(v.get("units")),
                         num(None if frac is None else 100 * frac, "%"), num(v.get("batches"))],
                        css="warn" if frac is not None and frac > 0.5 else ""))
    s = Section("dead-units", "Dead units")
    s.tables.append(Table("dead-units", ["after module", "units", "never active", "batches"], rows))
    s.related = _related(ctx.findings, "dead-units")
    return s


def section_nonfinite(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    p = F.probe(record, "nonfinite")
    related = _related(ctx.findings, "nonfinite")
    if not related and not any(v not in (None, {}, []) for v in p.values()):
        return None
    s = Section("nonfinite", "NaN and Inf")
    for key, label_ in (("first_nonfinite_output_step", "first non-finite forward output at step"),
                        ("first_nonfinite_loss_step", "first non-finite loss at step")):
        if p.get(key) is not None:
            s.facts.append((label_, fmt_number(p[key])))
    for step, where in as_object(p.get("located")).items():
        s.facts.append((f"located at step {step}", str(where)))
    s.related = related
    return s


def _facts_of(p: Mapping[str, Any]) -> list[tuple[str, str]]:
    out = []
    for k, v in p.items():
        name = str(k).replace("_", " ")
        if isinstance(v, (list, tuple)):
            out.append((name, ", ".join(str(x) for x in v) or "none"))
        elif isinstance(v, Mapping):
            out.append((name, ", ".join(f"{a}: {b}" for a, b in v.items()) or "none"))
        else:
            out.append((name, fmt_number(v) if v is not None else "none"))
    return out


def section_loop(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    from gradscope.reports import figures as F

    mode, zero = F.probe(record, "mode"), F.probe(record, "zero_grad")
    related = _related(ctx.findings, "loop")
    if not mode and not zero and not related:
        return None
    s = Section("loop", "Training-loop checks")
    if zero:
        s.facts += [("zero_grad: " + k, v) for k, v in _facts_of(zero)]
    if mode:
        s.facts += [("train/eval mode: " + k, v) for k, v in _facts_of(mode)]
    s.related = related
    return s


KNOWN_PROBES = {"grad_norm", "activation_grad", "tensor_grad", "nonfinite", "hooks", "freeze", "clipping",
                "dead_units", "update_ratio", "mode", "zero_grad", "timing"}


def section_other(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    """Probes this version of the report does not know: shown as data, not lost."""
    probes = as_object(record.get("probes"))
    unknown = {k: v for k, v in probes.items() if k not in KNOWN_PROBES and v not in (None, {}, [])}
    if not unknown:
        return None
    s = Section("other", "Other probes", gist=", ".join(sorted(unknown)), open=False)
    for name, value in sorted(unknown.items()):
        body = json.dumps(_clean(value), indent=1, default=str)
        if len(body) > 4000:
            body = body[:4000] + f"\n… ({len(body):,} characters in all; the rest is in the record)"
        s.blocks.append((name, body))
    return s


def section_lint(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    if "lint" not in record or not isinstance(record.get("lint"), list):
        return None
    views = finding_views(record["lint"])
    source = str(as_object(record.get("run")).get("file") or "")
    if not views and (not source or source.startswith("<")):
        return None  # nothing was linted (the built-in model has no file)
    s = Section("lint", "Lint of the training script", gist=f"{len(views)} finding(s)" if views else "clean")
    s.related = views
    s.related_label, s.compact = "Findings:", False
    if not views:
        s.notes.append("The file passed every static check.")
    return s


def section_environment(record: Mapping[str, Any], ctx: _Context) -> Section | None:
    env = as_object(record.get("environment"))
    if not env:
        return None
    s = Section("environment", "Environment")
    s.facts = [(str(k), "none" if v is None else fmt_number(v) if not isinstance(v, (dict, list))
                else json.dumps(_clean(v), default=str)) for k, v in env.items()]
    s.gist = " · ".join(f"{k} {env[k]}" for k in ("python", "torch") if env.get(k))
    return s


def section_record(record: Mapping[str, Any], ctx: _Context) -> Section:
    s = Section("record", "The record", open=False, download="gradscope-record.json")
    s.facts = [("schema", str(record.get("schema", ""))), ("version", str(record.get("version", "")))]
    s.notes.append("The run's JSON record is embedded in this page (script element #gradscope-record) "
                   "and can be downloaded with the button below.")
    if ctx.trimmed:
        s.notes.append("Trimmed to keep the page small (the figures above used the full data): "
                       + "; ".join(ctx.trimmed) + ".")
    return s


@dataclass
class _Context:
    findings: list[FindingView]
    trimmed: list[str]


SECTIONS: tuple[Callable[[Mapping[str, Any], _Context], Section | None], ...] = (
    section_run, section_models, section_model, section_registration, section_gradients, section_nonfinite,
    section_activations, section_clipping, section_freezing, section_curves, section_update_ratio,
    section_dead_units, section_loop, section_timings, section_hooks, section_other, section_lint,
    section_environment, section_record)


# ---- the page ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def jinja_environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                              autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True)


@functools.lru_cache(maxsize=None)
def asset(name: str) -> str:
    """A CSS or JS file from the templates folder, to be inlined."""
    return (TEMPLATES / name).read_text(encoding="utf-8")


def check_record(record: Any, what: str = "record") -> Mapping[str, Any]:
    """The record, or a clear error when it is not one."""
    if not isinstance(record, Mapping):
        raise GradscopeError(
            f"the {what} to render must be a dict (a gradscope JSON record, as load_record() returns "
            f"it), got {type(record).__name__}")
    return record


def build_page(record: Mapping[str, Any]) -> tuple[Page, dict[str, Any], list[str]]:
    """The page's view model, with the trimmed record to embed and the trimming notes."""
    findings = finding_views(record.get("findings"))
    trimmed, notes = trim_record(record)
    ctx = _Context(findings, notes)
    sections = [s for s in (build(record, ctx) for build in SECTIONS) if s is not None]
    model = as_object(record.get("model"))
    run = as_object(record.get("run"))
    name = str(model.get("class") or "run")
    parts = [name]
    steps = run.get("steps", record.get("steps"))
    if steps is not None:
        parts.append(f"{fmt_number(steps)} steps")
    if run.get("device") or model.get("device"):
        parts.append(str(run.get("device") or model.get("device")))
    status = str(run.get("status", "") or "")
    status_line = ""
    if status:
        status_line = ("Run completed." if status == "completed" else
                       f"Run {status}" + (f": {run['error']}" if run.get("error") else "."))
    page = Page(title=f"gradscope report: {name}", subtitle=" · ".join(parts), findings=findings,
                counts=severity_counts(findings), sections=sections, status=status_line,
                status_ok=status in ("", "completed"), highlights=highlights(record))
    return page, trimmed, notes


def highlights(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The few numbers shown under the verdict: outcome, length, gradients, clipping, speed."""
    curves, probes = as_object(record.get("curves")), as_object(record.get("probes"))
    out: list[tuple[str, str]] = []

    def last(key: str) -> float | None:
        found = [v for v in (as_number(x) for x in as_list(curves.get(key))) if v is not None and math.isfinite(v)]
        return found[-1] if found else None

    for key, label_, suffix in (("test_accuracy_percent", "final test accuracy", "%"),
                                ("test_loss", "final test loss", ""), ("train_loss", "final train loss", "")):
        value = last(key)
        if value is not None:
            out.append((label_, fmt_number(value) + suffix))
    steps = as_object(record.get("run")).get("steps", record.get("steps"))
    if steps is not None:
        out.append(("steps", fmt_number(steps)))
    total = as_object(as_object(probes.get("grad_norm")).get("total_stats"))
    if total.get("max") is not None:
        out.append(("max total gradient norm", fmt_number(total["max"])))
    clipped = as_object(as_object(probes.get("clipping")).get("summary")).get("clipped_fraction")
    if clipped is not None:
        out.append(("steps clipped", pct(clipped)))
    speed = timing_summary(record).get("steps_per_second")
    if as_number(speed) is not None:
        out.append(("steps per second", fmt_number(speed)))
    return out


def render_html(record: dict[str, Any]) -> str:
    """The self-contained HTML report of a run record (as ``Scope.to_record()`` or
    ``load_record()`` gives it). Sections appear only for the data the record holds."""
    from markupsafe import Markup

    check_record(record)
    page, trimmed, _ = build_page(record)
    html = jinja_environment().get_template("report.html").render(
        page=page, css=Markup(asset("report.css")), script=Markup(asset("report.js")),
        record_json=Markup(embed_json(trimmed)))
    return defang(html)


def write_html(record: dict[str, Any], path: str | Path) -> Path:
    """Render the report and write it to ``path`` atomically; returns the path."""
    return write_text_atomic(render_html(record), path)
