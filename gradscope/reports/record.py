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
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; a report is an ordinary file
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
    validate_record(data, str(source))
    return data


_OBJECT_SECTIONS = ("model", "probes", "run", "environment", "registration", "timings", "curves")
_FINDING_TEXT = ("code", "where", "message")
_SEVERITIES = ("error", "warning", "info")
_FIX = "the file was changed by hand or written by another tool; write it again with gradscope"


def validate_record(data: dict[str, Any], source: str = "record") -> None:
    """Check the shape of the parts of a record that reports rely on.

    Every section is optional; a section that is present must have the documented type
    (docs/record.md): objects for ``model``, ``probes``, ``run``, ``environment``,
    ``registration``, ``timings`` and ``curves``, lists of finding objects for ``findings`` and
    ``lint``, lists for each curve, an integer ``steps``.

    Raises:
        RecordError: naming the field, what was expected and what was found.
    """
    def fail(where: str, expected: str, got: Any) -> None:
        raise RecordError(f"{source}: {where} should be {expected}, got {_kind(got)}; {_FIX}")

    for key in _OBJECT_SECTIONS:
        if key in data and not isinstance(data[key], dict):
            fail(f'"{key}"', "an object", data[key])
    if "steps" in data and (not isinstance(data["steps"], int) or isinstance(data["steps"], bool)):
        fail('"steps"', "an integer", data["steps"])
    for key in ("findings", "lint"):
        if key not in data:
            continue
        items = data[key]
        if not isinstance(items, list):
            fail(f'"{key}"', "a list of findings", items)
        for i, item in enumerate(items):
            where = f'"{key}"[{i}]'
            if not isinstance(item, dict):
                fail(where, "an object with code, severity, where, message and hint", item)
            for field in _FINDING_TEXT:
                if not isinstance(item.get(field), str):
                    fail(f"{where}.{field}", "a string", item.get(field))
            if item.get("severity") not in _SEVERITIES:
                fail(f"{where}.severity", "one of error, warning, info", item.get("severity"))
            if "hint" in item and not isinstance(item["hint"], str):
                fail(f"{where}.hint", "a string", item["hint"])
    for name, values in (data.get("curves") or {}).items():
        if not isinstance(values, list):
            fail(f'"curves".{name}', "a list (one value per epoch)", values)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, list) else "an object"
