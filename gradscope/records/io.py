"""Records on disk: strict JSON written atomically, read back safely (plain JSON, never pickle).

Also the checks every command makes before it starts work: can an output path be written at all
(``unwritable_reason``), and is it the same file as an input (``same_file``), so that a bad
``--json`` fails in a second with one line instead of after training with a traceback.
"""
from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Any, Mapping

from gradscope.errors import RecordError
from gradscope.records.base import clean
from gradscope.records.run import SCHEMA, RunRecord

EXIT_NOT_WRITTEN = 74      # a record, report or JSON file could not be written (sysexits.h's EX_IOERR)
MAX_DEPTH = 100            # gradscope's own records nest about 8 levels; anything deeper is not one
_SURROGATES = re.compile("[\ud800-\udfff]")
_TEMP_NAME = 80            # characters of the target's name kept in the temporary file's name


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    A lone surrogate (what Python makes of a file name that is not valid UTF-8) cannot be encoded;
    it is written as U+FFFD, the replacement character, rather than losing the whole file. On any
    failure the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the temporary name must stay legal even when the target's name is near the 255-byte limit
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:_TEMP_NAME]}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; a report is an ordinary file
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def dumps(data: Any) -> str:
    """Strict JSON (no NaN literals: non-finite numbers as strings), one space indent."""
    return json.dumps(clean(data), indent=1, allow_nan=False) + "\n"


def write_record(record: RunRecord | Mapping[str, Any], path: str | Path) -> Path:
    """Write a run record as strict JSON, atomically."""
    body = record.to_json() if isinstance(record, RunRecord) else RunRecord.from_json(
        {"schema": "gradscope.record", "version": 2, **record}).to_json()
    return write_text_atomic(dumps(body), path)


def _too_deep(data: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``data`` nests lists and dicts more than ``limit`` levels deep (walked without
    recursion, so that the check itself cannot overflow the stack)."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > limit:
                    return True
                stack.append((child, depth + 1))
    return False


def read_json(path: str | Path) -> Any:
    """Parse a JSON file, with errors that name the file and the line."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{source}: no such file; expected a JSON record written by gradscope") from None
    except IsADirectoryError:
        raise RecordError(f"{source} is a folder; expected a JSON record written by gradscope") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{source}: cannot read it as text ({exc})") from None
    deep = RecordError(f"{source}: nested more than {MAX_DEPTH} levels deep; a gradscope record is "
                       "a few levels deep, so this file is not one")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise deep from None
    if isinstance(data, (dict, list)) and _too_deep(data):
        raise deep
    return data


def load_record(path: str | Path) -> RunRecord:
    """Read a run record back, with errors naming the file and the field."""
    source = Path(path)
    try:
        return RunRecord.from_json(read_json(source), path=str(source))
    except RecursionError:
        raise RecordError(f"{source}: nested too deeply to be a gradscope record") from None


# ---- output paths --------------------------------------------------------------------------------
def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):  # pragma: no cover - every POSIX system has it
        return 255


def unwritable_reason(path: str | Path, *, folder: bool = False) -> str | None:
    """Why ``path`` cannot be written (a file, or with ``folder`` a folder to write into), or None.

    Nothing is created: the nearest folder that exists must be a folder in which a file can be
    made (checked by making and removing an empty temporary file, which also catches read-only
    file systems and the root user's exceptions to permission bits). A full disk can still fail
    the write itself later.
    """
    target = Path(path)
    try:
        ancestor = target if folder else target.parent
        while not ancestor.exists():
            if os.path.lexists(ancestor):
                return f"{ancestor} is a broken or looping symbolic link"
            if ancestor.parent == ancestor:
                break
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            return f"{ancestor} is a file, not a folder"
        if not folder:
            limit = _name_max(ancestor)
            if len(os.fsencode(target.name)) > limit:
                return f"the file name is longer than the {limit} bytes this file system allows"
            if target.is_dir():
                return f"{target} is a folder; expected the path of a file"
            if os.path.lexists(target) and not target.exists():
                return f"{target} is a broken or looping symbolic link"
            if target.exists() and not stat.S_ISREG(target.stat().st_mode):
                return f"{target} is not a regular file (a device, pipe or socket)"
    except OSError as err:  # a name too long to look up, a folder that cannot be searched
        return f"{err.filename or target}: {err.strerror or err}"
    try:
        fd, probe = tempfile.mkstemp(prefix=".gradscope-check-", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        return f"cannot create files in {ancestor} ({err.strerror or err})"
    return None


def write_error_reason(path: str | Path, err: BaseException) -> str:
    """One line saying why writing ``path`` failed (the folder in the way, or the system's words)."""
    target = Path(path)
    blocker = next((p for p in target.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return f"{type(err).__name__}: {err}"


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether ``a`` and ``b`` name the same file: the same path once symbolic links and ``..``
    are resolved, or (when both exist) the same file on disk, which also catches hard links and
    case-insensitive file systems."""
    first, second = Path(a), Path(b)
    try:
        if first.resolve() == second.resolve():
            return True
        return first.exists() and second.exists() and os.path.samefile(first, second)
    except (OSError, RuntimeError):  # a looping link: it names no file, so it is no input either
        return False


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` lies inside ``folder`` (both resolved)."""
    try:
        return Path(path).resolve().is_relative_to(Path(folder).resolve())
    except (OSError, RuntimeError):
        return False


def previous_path(path: Path) -> Path:
    """Where the record found at ``path`` is kept when a new run writes there: ``run.prev.json``."""
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def is_record_file(path: Path) -> bool:
    """Whether ``path`` is a regular file holding a gradscope run record."""
    try:
        if not path.is_file():
            return False
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def keep_previous(path: str | Path) -> Path | None:
    """Before a new record is written to ``path``, move the record already there (if it is one)
    to ``previous_path(path)``, replacing an older kept record; returns where it went, or None.

    A file there that is not a gradscope record is left for the caller to overwrite; an older
    ``.prev`` file that is not a record is never replaced (then nothing is moved).
    """
    target = Path(path)
    if not is_record_file(target):
        return None
    kept = previous_path(target)
    if os.path.lexists(kept) and not is_record_file(kept):
        return None
    os.replace(target, kept)
    return kept
