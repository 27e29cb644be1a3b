"""The JSON record: the source of truth a run leaves behind, written atomically, read back safely."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from gradscope.errors import RecordError

SCHEMA = "gradscope.record"
VERSION = 1


def _clean(value: Any) -> Any:
    """JSON has no NaN/Infinity: write them as the strings "NaN", "Infinity", "-Infinity"."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write a run record as JSON (strict: no NaN literals), atomically."""
    body = dict(record)
    body.setdefault("schema", SCHEMA)
    body.setdefault("version", VERSION)
    return write_text_atomic(json.dumps(_clean(body), indent=1, allow_nan=False) + "\n", path)


def load_record(path: str | Path) -> dict[str, Any]:
    """Read a record back (plain JSON, no pickle), rejecting anything that is not one we can read."""
    source = Path(path)
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{source}: no such file; expected a JSON record written by gradscope") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecordError(f"{source}: cannot read it as text ({exc})") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{source}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise RecordError(f"{source}: not a gradscope record (expected \"schema\": \"{SCHEMA}\")")
    version = data.get("version")
    if not isinstance(version, int) or version < 1:
        raise RecordError(f"{source}: \"version\" must be a positive integer, got {version!r}")
    if version > VERSION:
        raise RecordError(
            f"{source}: record version {version} is newer than this gradscope reads ({VERSION}); "
            "upgrade gradscope to read it")
    return data
