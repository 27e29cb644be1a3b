"""The page kit: the small dataclasses the Jinja2 templates render, and how numbers are shown.

A page is a list of ``Section`` objects built from a typed run record; each section holds facts,
blocks of preformatted text, figures (inline SVG), tables and the findings that concern it. The
templates are autoescaped, so everything here is plain text except the figures' SVG, which the
chart writer sanitises. Shared by the report (``html.py``) and the compare page (``compare.py``).
"""
from __future__ import annotations

import functools
import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from gradscope.findings import CATALOG, Finding
from gradscope.records.base import clean

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gradscope.records.run import RunRecord
    from gradscope.records.stats import StatsTable

SEVERITIES = ("error", "warning", "info")
MAX_TABLE_ROWS = 2000          # rows of one table on the page (the rest stay in the record)
TEMPLATES = Path(__file__).with_name("templates")


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


@dataclass
class SectionContext:
    """What a section sees besides its own record: the whole run and the findings to show."""

    run: RunRecord
    findings: list[FindingView]
    trimmed: list[str] = field(default_factory=list)

    def related(self, codes: Iterable[str]) -> list[FindingView]:
        """The findings whose code is one of ``codes`` (a code may be a prefix: "GS1")."""
        prefixes = tuple(codes)
        return [f for f in self.findings if f.code.startswith(prefixes)] if prefixes else []


# ---- numbers and cells ---------------------------------------------------------------------------
def fmt_number(value: Any) -> str:
    """A number as every page and figure shows it: integers with thousands separators, 4
    significant digits in the everyday range, scientific notation outside it, and NaN/Inf
    spelled out. Strings and None pass through as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if value is None:
        return ""
    if isinstance(value, str):
        if value not in ("NaN", "Infinity", "-Infinity"):
            return value
        value = float(value)
    number = float(value)
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


def num(value: float | int | None, suffix: str = "") -> Cell:
    """A numeric cell that sorts by value (missing and NaN values sort first)."""
    sort = "" if value is None or (isinstance(value, float) and math.isnan(value)) else repr(value)
    shown = fmt_number(value)
    return Cell(shown + (suffix if shown and suffix else ""), sort=sort, css="num")


def text(value: Any, mono: bool = False, title: str = "") -> Cell:
    return Cell("" if value is None else str(value), css="mono" if mono else "", title=title)


def pct(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def capped(rows: list[Row], what: str) -> tuple[list[Row], str]:
    """At most ``MAX_TABLE_ROWS`` rows, and a note saying how many were left out."""
    if len(rows) <= MAX_TABLE_ROWS:
        return rows, ""
    return rows[:MAX_TABLE_ROWS], (f"Showing the first {MAX_TABLE_ROWS:,} of {len(rows):,} {what}; "
                                   "all of them are in the JSON record.")


def stats_facts(count: int, minimum: float | None, maximum: float | None, mean: float | None,
                first_nonfinite: int | None) -> list[tuple[str, str]]:
    return [("mean", fmt_number(mean)), ("min", fmt_number(minimum)), ("max", fmt_number(maximum)),
            ("values seen", fmt_number(count)),
            ("first non-finite step", fmt_number(first_nonfinite) or "none")]


def stats_table(table_id: str, title: str, first: str, names: Sequence[str], stats: StatsTable,
                extra: Callable[[int], list[Cell]] | None = None,
                extra_columns: Sequence[str] = ()) -> Table | None:
    """Per-name statistics as a sortable table; rows that saw NaN/Inf are red, empty ones yellow."""
    if not len(stats):
        return None
    rows = []
    for i, name in enumerate(names[: len(stats)]):
        s = stats.row(i)
        rows.append(Row([text(name, mono=True), num(s.mean), num(s.min), num(s.max), num(s.count),
                         num(s.first_nonfinite_step)] + (extra(i) if extra else []),
                        css="flag" if s.first_nonfinite_step is not None else ("warn" if s.count == 0 else "")))
    rows, note = capped(rows, "rows")
    return Table(table_id, [first, "mean", "min", "max", "values", "first non-finite step", *extra_columns],
                 rows, title, note)


# ---- findings ------------------------------------------------------------------------------------
def finding_views(items: Iterable[Finding]) -> list[FindingView]:
    """Findings as the page shows them, most severe first (the record's order within a severity)."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    views = []
    for f in items:
        entry = CATALOG.get(f.code)
        views.append(FindingView(f.severity.value, f.code, f.where, f.message, f.hint,
                                 entry.title if entry else ""))
    return sorted(views, key=lambda v: rank[v.severity])


def severity_counts(views: Iterable[FindingView]) -> dict[str, int]:
    counts = {s: 0 for s in SEVERITIES}
    for f in views:
        counts[f.severity] += 1
    return counts


# ---- safe embedding ------------------------------------------------------------------------------
def defang(page: str) -> str:
    """Make URLs in user text inert: ``http://`` is written ``http&#58;//`` (same text on screen,
    no link, and no request), so the page holds no ``http://`` or ``https://`` string."""
    return re.sub(r"(?i)\b(https?|ftp|wss?)://", r"\1&#58;//", page)


def embed_json(data: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">``: ``<``, ``>`` and ``&`` are
    written as ``\\u003c``-style escapes (so no ``</script>`` or ``<!--`` can appear), ``://``
    as ``\\u003a//``, and every control, format or lone surrogate character as a ``\\u`` escape
    (so the page holds none raw); ``JSON.parse`` gives back exactly the same data."""
    raw = json.dumps(clean(data), ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=str)
    raw = _UNUSUAL.sub(lambda m: _json_escape(m.group()) if _hidden(m.group()) else m.group(), raw)
    return (raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("://", "\\u003a//"))


_UNUSUAL = re.compile(r"[^\x20-\x7e\n\r\t]")   # what is not printable ASCII or ordinary whitespace


def _hidden(ch: str) -> bool:
    """A character that does not show as itself: control, format, surrogate, line separators."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp")


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000   # outside the BMP: JSON spells it as a UTF-16 surrogate pair
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def visible_controls(page: str) -> str:
    """Write the control and format characters left in a rendered page (ESC, DEL, C1 controls,
    bidi overrides, zero-width characters, lone surrogates from undecodable file names) as
    visible codes such as ``\\x1b``, as ``textreport.printable`` does for the terminal: user text
    (class names, messages, file names) then cannot hide or reorder what the page says. Line
    breaks and tabs stay. Run on the whole page, so chart labels are covered too; the embedded
    record needs nothing, ``embed_json`` escapes them in JSON's own way."""
    from gradscope.textreport import printable

    return _UNUSUAL.sub(lambda m: printable(m.group()) if _hidden(m.group()) else m.group(), page)


# ---- figures -------------------------------------------------------------------------------------
def draw(builds: Sequence[tuple[str, Callable[[], Any]]], notes: list[str]) -> list[FigureView]:
    """Run each named chart builder and turn its chart into inline SVG; a builder that returns
    None has no data; one that fails leaves a note on the page instead of losing the page."""
    from markupsafe import Markup

    from gradscope.reports.charts import to_svg

    out = []
    for name, build in builds:
        try:
            chart = build()
            if chart is None:
                continue
            svg = to_svg(chart, f"{chart.key}-")
        except Exception as exc:  # a figure that cannot be drawn must not cost the page
            notes.append(f"The figure '{name}' could not be drawn ({type(exc).__name__}: {exc}).")
            continue
        out.append(FigureView(chart.key, chart.title, Markup(svg), chart.caption))
    return out


# ---- templates -----------------------------------------------------------------------------------
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


def json_text(value: Any) -> str:
    """A value as one line of JSON for a table cell (strings as they are)."""
    return value if isinstance(value, str) else json.dumps(clean(value), default=str)
