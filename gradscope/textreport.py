"""Findings as a terminal table, and long messages wrapped for an 80-column terminal.

Everything shown comes from user code (module names, class names, exception messages), so every
control character is escaped before it reaches the terminal: a name holding an ANSI sequence or a
newline shows up as ``\\x1b[31m`` or ``\\n`` and cannot recolour, clear or break the table.
"""
from __future__ import annotations

import re
import shutil
import textwrap
import unicodedata
from typing import Sequence

import click

from gradscope.findings import Finding, Severity, sort_findings
from gradscope.records.freeze import FreezeRow

_SEVERITY_WIDTH = len("severity")
_CODE_WIDTH = len("GS101")
_GAP = "  "
_COLOURS = {Severity.ERROR: ("red", True), Severity.WARNING: ("yellow", True),
            Severity.INFO: ("cyan", False)}
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_ESCAPED = ("Cc", "Cf", "Cs", "Zl", "Zp")   # control, format, surrogate, line and paragraph separators


def terminal_width(preferred: int | None = None) -> int:
    """The width to lay text out in: the terminal's, kept between 50 and 100 columns."""
    width = preferred or shutil.get_terminal_size(fallback=(80, 24)).columns
    return max(50, min(width, 100))


def printable(text: str) -> str:
    """``text`` with control and format characters (ANSI escapes, newlines, bidi overrides)
    written as visible escapes, so it shows as one line and cannot drive the terminal. Lone
    surrogates (Python's stand-ins for the bytes of a file name that is not UTF-8) are escaped
    too: no terminal can print them."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in _ESCAPED:
            code = ord(ch)
            if ch in _SHORT_ESCAPES:
                out.append(_SHORT_ESCAPES[ch])
            elif code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _prose(text: str) -> str:
    """A message as one paragraph: line breaks and tabs become spaces, other controls escaped."""
    return printable(re.sub(r"\r\n|[\n\t]", " ", text))


def _style(text: str, color: bool, **styles: object) -> str:
    return click.style(text, **styles) if color and text else text  # type: ignore[arg-type]


def render_findings(findings: Sequence[Finding], *, width: int = 80, color: bool = False) -> str:
    """The findings as a table, most severe first: severity, code, where, message, and the hint
    on its own line under the message. Fits in ``width`` columns, except for nothing."""
    rows = [(f, printable(f.where), _prose(f.message), _prose(f.hint))
            for f in sort_findings(findings)]
    where_cap = max(12, (width - _SEVERITY_WIDTH - _CODE_WIDTH - 3 * len(_GAP)) // 3)
    # The column fits the names that fit the cap; a longer one spills onto its own line.
    where_width = max([len("where"), *(len(w) for _, w, _, _ in rows if len(w) <= where_cap)])
    where_col = _SEVERITY_WIDTH + len(_GAP) + _CODE_WIDTH + len(_GAP)
    message_col = where_col + where_width + len(_GAP)
    message_width = max(width - message_col, 20)
    pad = " " * message_col

    header = ("severity".ljust(_SEVERITY_WIDTH) + _GAP + "code".ljust(_CODE_WIDTH) + _GAP
              + "where".ljust(where_width) + _GAP + "message")
    lines = [_style(header, color, bold=True)]
    for f, where, message, hint in rows:
        colour, bold = _COLOURS[f.severity]
        lead = (_style(f.severity.value, color, fg=colour, bold=bold)
                + " " * (_SEVERITY_WIDTH - len(f.severity.value)) + _GAP
                + _style(f.code, color, bold=True) + _GAP)
        body = textwrap.wrap(message, message_width, break_on_hyphens=False) or [""]
        if len(where) <= where_width:
            lines.append((lead + where.ljust(where_width) + _GAP + body[0]).rstrip())
            rest = body[1:]
        else:
            # A long name keeps its row (broken across lines if it must); the message goes under it.
            pieces = textwrap.wrap(where, width - where_col, break_on_hyphens=False)
            lines.append(lead + pieces[0])
            lines.extend(" " * where_col + piece for piece in pieces[1:])
            rest = body
        lines.extend(pad + line for line in rest)
        hint_lines = textwrap.wrap("hint: " + hint, message_width, subsequent_indent="      ",
                                   break_on_hyphens=False)
        lines.extend(pad + _style(line, color, dim=True) for line in hint_lines)
    return "\n".join(lines)


def summary_line(findings: Sequence[Finding]) -> str:
    """``"2 errors, 1 warning, 0 info"``, or ``"no findings"``."""
    if not findings:
        return "no findings"
    counts = {level: sum(f.severity is level for f in findings) for level in Severity}
    errors, warnings = counts[Severity.ERROR], counts[Severity.WARNING]
    return (f"{errors} error{'' if errors == 1 else 's'}, "
            f"{warnings} warning{'' if warnings == 1 else 's'}, {counts[Severity.INFO]} info")


def wrap_message(text: str, width: int = 80, first_offset: int = 0) -> str:
    """Wrap the prose lines of an error message to ``width`` columns.

    Indented lines (quoted source, traceback frames, carets) are kept as they are, so code stays
    copyable and carets stay under their column. ``first_offset`` leaves room on the first line
    for a prefix such as ``"Error: "``. Control characters are escaped line by line.
    """
    out: list[str] = []
    for raw in text.expandtabs(4).split("\n"):
        line = printable(raw.rstrip("\r"))
        if not line or line[0].isspace():
            out.append(line)
            continue
        offset = first_offset if not out else 0
        wrapped = textwrap.wrap(line, width - offset, break_on_hyphens=False,
                                break_long_words=False)
        out.extend(wrapped or [""])
    return "\n".join(out)


def format_freeze_table(rows: Sequence[FreezeRow]) -> str:
    """The freeze table as aligned text for a terminal (``scope.freeze_table()``)."""
    header = ("module", "trainable", "frozen", "in optimizer", "lr", "changed")
    lines = [header]
    for r in rows:
        lines.append((printable(r.module), f"{r.trainable:,}", f"{r.frozen:,}",
                      "all" if not r.not_in_optimizer else ("none" if not r.in_optimizer else "some"),
                      ",".join(f"{x:g}" for x in r.lr) or "-", f"{r.changed}/{r.tensors}"))
    widths = [max(len(str(line[c])) for line in lines) for c in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines)
