"""Records on disk: strict JSON written atomically, read back safely (plain JSON, never pickle)."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from gradscope.errors import RecordError
from gradscope.records.base import clean
from gradscope.records.run import RunRecord


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
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
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except RecursionError:
        raise RecordError(f"{source}: nested too deeply to be a gradscope record") from None


def load_record(path: str | Path) -> RunRecord:
    """Read a run record back, with errors naming the file and the field."""
    source = Path(path)
    try:
        return RunRecord.from_json(read_json(source), path=str(source))
    except RecursionError:
        raise RecordError(f"{source}: nested too deeply to be a gradscope record") from None
