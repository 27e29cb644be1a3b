"""The lint engine: find the files, parse them, run the selected rules, honour ``# noqa``, report.

A file that cannot be read or parsed is reported in ``LintResult.errors`` and the other files are
still linted; nothing in a user's tree makes the engine raise.
"""
from __future__ import annotations

import ast
import errno
import io
import os
import re
import stat
import tokenize
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

from gradscope.errors import GradscopeError
from gradscope.findings import CATALOG, Finding, finding
from gradscope.lint.rules import RULES, Hit
from gradscope.lint.source import SourceFile

_NOQA = re.compile(r"#\s*noqa(?P<colon>\s*:\s*(?P<codes>[A-Za-z]+[0-9]+(?:[\s,]+[A-Za-z]+[0-9]+)*)?)?",
                   re.IGNORECASE)
_ALL = None   # a bare `# noqa`: every code on the line


@dataclass
class LintResult:
    """What ``lint_paths`` found: findings in file/line order, files linted, files it could not read."""

    findings: list[Finding]
    files: int
    errors: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "errors": list(self.errors),
                "findings": [f.to_dict() for f in self.findings]}


def format_line(f: Finding) -> str:
    """``file:line:col: GSxxx message``: the line format editors and CI annotators read."""
    return f"{f.where}: {f.code} {f.message}"


def lint_source(source: str, filename: str = "<string>", *,
                select: Collection[str] | None = None, ignore: Collection[str] = ()) -> list[Finding]:
    """Lint one piece of Python source; ``filename`` is only used in the findings' ``where``.

    Raises:
        GradscopeError: a selected code is not a lint code, or the source does not parse.
    """
    codes = selected_codes(select, ignore)
    try:
        tree = ast.parse(source, filename=filename)
    except SyntaxError as exc:
        raise GradscopeError(_parse_error(filename, exc)) from None
    return [f for _, f in _lint(SourceFile(source, filename, tree), codes, errors=None)]


def lint_paths(paths: Sequence[str | Path], *, select: Collection[str] | None = None,
               ignore: Collection[str] = ()) -> LintResult:
    """Lint files and folders (walked for ``*.py``, skipping hidden folders, ``__pycache__`` and
    virtual environments). Files given explicitly are linted whatever their name or place."""
    codes = selected_codes(select, ignore)
    errors: list[str] = []
    ranked: list[tuple[tuple[str, int, int, str], Finding]] = []
    linted = 0
    for path in _python_files(paths, errors):
        src = _load(path, errors)
        if src is None:
            continue
        linted += 1
        ranked.extend(_lint(src, codes, errors))
    ranked.sort(key=lambda pair: pair[0])
    return LintResult(findings=[f for _, f in ranked], files=linted, errors=errors)


def selected_codes(select: Collection[str] | None, ignore: Collection[str]) -> list[str]:
    """The lint codes to run: ``select`` (codes or prefixes such as ``GS5``; None: all) minus ``ignore``."""
    chosen = set(RULES) if select is None else set().union(*[_expand(s) for s in select])
    dropped = set().union(*[_expand(s) for s in ignore])
    return sorted(chosen - dropped)


def _expand(selector: str) -> set[str]:
    wanted = selector.strip().upper()
    if wanted:
        matches = {code for code in RULES if code.startswith(wanted)}
        if matches:
            return matches
        if any(code.startswith(wanted) for code in CATALOG):
            raise GradscopeError(
                f"{wanted} is found while training, not by lint: lint checks {', '.join(RULES)}; "
                f"leave it out of the codes to select or ignore")
    raise GradscopeError(
        f"unknown finding code {selector!r}: expected a lint code ({', '.join(RULES)}) or a prefix "
        f"of one such as GS5")


# -- files ----------------------------------------------------------------------------------------

def _python_files(paths: Iterable[str | Path], errors: list[str]) -> list[Path]:
    """Every file to lint, each once, in the order given (folders walked in name order)."""
    found: list[Path] = []
    seen: set[Path] = set()

    def add(path: Path) -> None:
        try:
            key = path.resolve()
            kind = path.stat().st_mode
        except (OSError, RuntimeError) as exc:  # a symbolic link that loops or leads nowhere
            errors.append(f"{path}: could not be read: {_reason(exc)}")
            return
        if not stat.S_ISREG(kind):  # a pipe named x.py would block the read for ever
            errors.append(f"{path}: could not be read: not a regular file")
            return
        if key not in seen:
            seen.add(key)
            found.append(path)

    for given in paths:
        root = Path(given)
        try:
            is_dir = stat.S_ISDIR(root.stat().st_mode)
        except OSError as exc:
            errors.append(f"{root}: could not be read: {_reason(exc)}" if os.path.lexists(root)
                          else f"{root}: no such file or directory")
            continue
        if not is_dir:
            add(root)
            continue
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: errors.append(
                f"{e.filename}: could not be read: {e.strerror}")):
            dirnames[:] = sorted(d for d in dirnames if not _skipped_folder(Path(dirpath, d)))
            for name in sorted(filenames):
                if name.endswith(".py") and not name.startswith("."):
                    add(Path(dirpath, name))
    return found


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RuntimeError) or (isinstance(exc, OSError) and exc.errno == errno.ELOOP):
        return "a symbolic link that loops back on itself"
    if isinstance(exc, OSError) and exc.errno == errno.ENOENT:
        return "a symbolic link to a file that does not exist"
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def _skipped_folder(path: Path) -> bool:
    """Hidden folders, byte-code caches and virtual environments (they hold a ``pyvenv.cfg``)."""
    return path.name.startswith(".") or path.name == "__pycache__" or (path / "pyvenv.cfg").is_file()


def _load(path: Path, errors: list[str]) -> SourceFile | None:
    display = str(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        errors.append(f"{display}: could not be read: {exc.strerror or exc}")
        return None
    try:
        tree = ast.parse(data, filename=display)   # bytes, so a coding cookie is honoured
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
        if text.startswith("\ufeff"):
            text = text[1:]
    except SyntaxError as exc:
        errors.append(_parse_error(display, exc))
        return None
    except (ValueError, UnicodeDecodeError) as exc:   # a bad coding cookie, undecodable bytes
        errors.append(f"{display}: could not be parsed: {exc}")
        return None
    except RecursionError:
        errors.append(f"{display}: could not be parsed: nested too deeply")
        return None
    try:
        return SourceFile(text, display, tree)
    except RecursionError:
        errors.append(f"{display}: could not be analysed: nested too deeply")
        return None


def _parse_error(display: str, exc: SyntaxError) -> str:
    place = f"{display}:{exc.lineno}:{exc.offset or 1}" if exc.lineno else display
    return f"{place}: could not be parsed ({exc.msg}); lint reads Python source files only"


# -- rules and noqa ---------------------------------------------------------------------------------

def _lint(src: SourceFile, codes: list[str],
          errors: list[str] | None) -> list[tuple[tuple[str, int, int, str], Finding]]:
    """Run the rules on one file. With ``errors`` a failing rule is reported there, else it raises."""
    noqa = _noqa_lines(src.text)
    found: list[tuple[tuple[str, int, int, str], Finding]] = []
    for code in codes:
        try:
            hits = list(RULES[code].check(src))
        except Exception as exc:
            if errors is None:
                raise
            errors.append(f"{src.path}: {code} could not check this file ({type(exc).__name__}: {exc}); "
                          f"this is a gradscope bug: please report it with the file")
            continue
        for hit in hits:
            if _silenced(hit, code, noqa):
                continue
            where = src.where(hit.node)
            _, line, column = where.rsplit(":", 2)
            found.append(((src.path, int(line), int(column), code),
                          finding(code, where, " ".join(hit.message.split()), hit.hint)))
    found.sort(key=lambda pair: pair[0])
    return found


def _noqa_lines(text: str) -> dict[int, set[str] | None]:
    """Line -> the codes its ``# noqa`` comment names (None: all). Only real comments count."""
    if "noqa" not in text.lower():
        return {}
    comments: list[tuple[int, str]] = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type == tokenize.COMMENT:
                comments.append((token.start[0], token.string))
    except (tokenize.TokenError, SyntaxError):
        comments = [(i, line[line.index("#"):]) for i, line in enumerate(text.splitlines(), 1) if "#" in line]
    lines: dict[int, set[str] | None] = {}
    for line, comment in comments:
        match = _NOQA.search(comment)
        if match is None:
            continue
        codes = match.group("codes")
        lines[line] = _ALL if not codes else {c.upper() for c in re.split(r"[\s,]+", codes) if c}
    return lines


def _silenced(hit: Hit, code: str, noqa: dict[int, set[str] | None]) -> bool:
    first = getattr(hit.node, "lineno", 0)
    last = getattr(hit.node, "end_lineno", None) or first
    for line in range(first, last + 1):
        if line in noqa:
            codes = noqa[line]
            if codes is _ALL or code in codes:
                return True
    return False
