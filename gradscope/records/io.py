"""Records on disk: strict JSON written atomically, read back safely (plain JSON, never pickle).

A written record is budgeted first (``records.budget``): its per-step arrays keep a fixed number
of values however large the model. A record whose arrays still hold more than
``SIDE_FILE_VALUES`` numbers keeps them in a side file, ``run.npz`` beside ``run.json``: a NumPy
archive (``.npz``, compressed, no pickle, read with ``allow_pickle=False``) that the JSON names in its
``side_file`` key, each array standing in the JSON as ``{"$array": key, "shape": [...]}``. The
two files are written together (both to temporary files first, then renamed, the JSON last), and
a random ``id`` in both tells a reader that they belong together. Smaller records are one
self-contained JSON file, as before.

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
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any, Callable, Mapping, Sequence

import numpy as np

from gradscope.errors import RecordError
from gradscope.records.base import ARRAY_REF, arrays_as_numpy, clean
from gradscope.records.budget import budgeted
from gradscope.records.run import SCHEMA, RunRecord

EXIT_NOT_WRITTEN = 74      # a record, report or JSON file could not be written (sysexits.h's EX_IOERR)
MAX_DEPTH = 100            # gradscope's own records nest about 8 levels; anything deeper is not one
SIDE_FILE_VALUES = 250_000  # numbers in a record's arrays above which they go to a .npz side file
SIDE_ARRAY_MIN = 64        # an array smaller than this stays in the JSON even then (readable, no lookup)
SIDE_FILE_KEY = "side_file"
SIDE_ID = "gradscope.side_file_id"   # the archive's member holding the id its JSON names
_SURROGATES = re.compile("[\ud800-\udfff]")
_TEMP_NAME = 80            # characters of the target's name kept in the temporary file's name
_SAFE_KEY = re.compile(r"[A-Za-z0-9_.\[\]-]{1,200}")


def _write_atomic(files: Sequence[tuple[Path, Callable[[IO[bytes]], Any]]]) -> None:
    """Write each file through a temporary file in its folder, then rename them all in order.

    Every temporary file is complete before the first rename, so a failure while writing (a full
    disk, an error in a writer) leaves every target as it was; the temporary files are removed."""
    temps: list[str] = []
    try:
        umask = os.umask(0)
        os.umask(umask)
        for target, write in files:
            target.parent.mkdir(parents=True, exist_ok=True)
            # the temporary name must stay legal even when the target's name is near the 255-byte limit
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:_TEMP_NAME]}.", suffix=".tmp", dir=target.parent)
            temps.append(tmp)
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; a report is an ordinary file
        for (target, _), tmp in zip(files, temps):
            os.replace(tmp, target)
    except BaseException:
        for tmp in temps:
            Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(text: str, path: str | Path) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename.

    A lone surrogate (what Python makes of a file name that is not valid UTF-8) cannot be encoded;
    it is written as U+FFFD, the replacement character, rather than losing the whole file. On any
    failure the temporary file is removed and ``path`` is left as it was.
    """
    target = Path(path)
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
    data = text.encode("utf-8")
    _write_atomic([(target, lambda fh: fh.write(data))])
    return target


def dumps(data: Any) -> str:
    """Strict JSON (no NaN literals: non-finite numbers as strings), one space indent."""
    return json.dumps(clean(data), indent=1, allow_nan=False) + "\n"


def side_path(path: str | Path) -> Path:
    """Where the side file of the record at ``path`` goes: ``run.json`` -> ``run.npz``."""
    target = Path(path)
    return target.with_name(target.name + ".npz" if target.suffix == ".npz" else target.stem + ".npz")


def _array_values(body: Any) -> int:
    """How many numbers the NumPy arrays in a JSON-like tree hold."""
    if isinstance(body, np.ndarray):
        return int(body.size)
    if isinstance(body, dict):
        return sum(_array_values(v) for v in body.values())
    if isinstance(body, list):
        return sum(_array_values(v) for v in body)
    return 0


def _compact(a: np.ndarray) -> np.ndarray:
    """float32 when that holds every value exactly (norms computed in float32 do), else float64."""
    if a.dtype == np.float64 and a.size:
        with np.errstate(over="ignore", invalid="ignore"):
            small = a.astype(np.float32)
        if np.array_equal(small.astype(np.float64), a, equal_nan=True):
            return small
    return a


def _set_aside(body: Any, path: str, arrays: dict[str, np.ndarray]) -> Any:
    """``body`` with each array of ``SIDE_ARRAY_MIN`` values or more replaced by a reference
    ``{"$array": key, "shape": [...]}`` and put in ``arrays`` under ``key`` (its path in the record
    where that makes a safe member name, such as ``probes.grad_norm.layer_norms``)."""
    if isinstance(body, np.ndarray):
        if body.size < SIDE_ARRAY_MIN:
            return body
        safe = _SAFE_KEY.fullmatch(path) and path not in arrays and path not in (SIDE_ID, "file", "allow_pickle")
        key = path if safe else f"array{len(arrays)}"
        arrays[key] = _compact(body)
        return {ARRAY_REF: key, "shape": list(body.shape)}
    if isinstance(body, dict):
        return {k: _set_aside(v, f"{path}.{k}" if path else str(k), arrays) for k, v in body.items()}
    if isinstance(body, list):
        return [_set_aside(v, f"{path}[{i}]", arrays) for i, v in enumerate(body)]
    return body


def write_npz(fh: IO[bytes], arrays: Mapping[str, np.ndarray]) -> None:
    """What ``np.savez_compressed`` writes (one ``.npy`` member per array, deflated), with pickling
    refused and the fastest compression level: real norms shrink several times over (exact zeros,
    repeated values) already at level 1, and a record of millions of values is written in a second,
    not three."""
    with zipfile.ZipFile(fh, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for key, value in arrays.items():
            with archive.open(f"{key}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(value), allow_pickle=False)


def write_record(record: RunRecord | Mapping[str, Any], path: str | Path) -> Path:
    """Write a run record, budgeted (``records.budget``), as strict JSON, atomically; a large one
    with its arrays in a side file beside it (``side_path``). Returns the JSON's path."""
    run = record if isinstance(record, RunRecord) else RunRecord.from_json(
        {"schema": "gradscope.record", "version": 2, **record})
    with arrays_as_numpy():
        body = budgeted(run).to_json()
    target = Path(path)
    values = _array_values(body)
    if values <= SIDE_FILE_VALUES:
        return write_text_atomic(dumps(body), target)
    side = side_path(target)
    ident = uuid.uuid4().hex
    arrays: dict[str, np.ndarray] = {}
    rest = _set_aside(body, "", arrays)
    head = {k: rest.pop(k) for k in ("schema", "version") if k in rest}
    rest = {**head, SIDE_FILE_KEY: {"file": side.name, "id": ident, "arrays": len(arrays), "values": values},
            **rest}
    text = dumps(rest)
    if not text.isascii():
        text = _SURROGATES.sub("\ufffd", text)
    data = text.encode("utf-8")
    # the JSON is renamed last: a reader that finds it finds its side file
    members = {**arrays, SIDE_ID: np.array(ident)}
    _write_atomic([(side, lambda fh: write_npz(fh, members)), (target, lambda fh: fh.write(data))])
    return target


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


# ---- the side file -------------------------------------------------------------------------------
_DAMAGED = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


def _side_id(archive: Path) -> str | None:
    """The id a gradscope side file carries, or None for a file that is not one (or unreadable)."""
    try:
        if not zipfile.is_zipfile(archive):
            return None
        with np.load(archive, allow_pickle=False) as npz:
            if SIDE_ID not in npz.files:
                return None
            value = npz[SIDE_ID]
    except _DAMAGED:
        return None
    return str(value[()]) if value.dtype.kind == "U" and value.ndim == 0 else None


def _side_reference(data: Mapping[str, Any], source: Path) -> tuple[str, str]:
    ref = data.get(SIDE_FILE_KEY)
    name = ref.get("file") if isinstance(ref, Mapping) else None
    ident = ref.get("id") if isinstance(ref, Mapping) else None
    if not isinstance(name, str) or not isinstance(ident, str) or name in ("", ".", "..") or \
            "/" in name or "\\" in name:
        raise RecordError(f"{source}: \"{SIDE_FILE_KEY}\" should name a file beside the record and its id "
                          f"({{\"file\": \"{side_path(source).name}\", \"id\": \"...\"}}), got {ref!r:.80}; "
                          "the record was changed by hand: write it again with gradscope")
    return name, ident


def _find_side_file(source: Path, name: str, ident: str) -> Path:
    """The side file of the record at ``source``: the file it names, or the one its own name gives
    (a record kept as ``run.prev.json`` has ``run.prev.npz``), whichever carries its id."""
    candidates = [source.parent / name]
    if side_path(source) != candidates[0]:
        candidates.append(side_path(source))
    present = [c for c in candidates if c.is_file()]
    for candidate in present:
        if _side_id(candidate) == ident:
            return candidate
    if not present:
        also = f" (nor {candidates[1].name})" if len(candidates) > 1 else ""
        raise RecordError(f"{source}: its arrays are kept in the side file {candidates[0]}, which is missing"
                          f"{also}; copy or move the .json and the .npz file together")
    found = present[0]
    if not zipfile.is_zipfile(found):
        raise RecordError(f"{found}: the side file of {source} is not a NumPy .npz archive (it is damaged or "
                          "was replaced); write the record again")
    raise RecordError(f"{found}: this side file does not belong to {source} (its id differs: it was written "
                      "with another record, or it is damaged); find the .npz written with this record")


def _bring_back(data: Any, npz: Any, archive: Path, source: Path, path: str) -> Any:
    """``data`` with every ``{"$array": key}`` reference replaced by its array from ``npz``."""
    if isinstance(data, dict):
        if ARRAY_REF in data:
            key = data[ARRAY_REF]
            if not isinstance(key, str) or key not in npz.files or key == SIDE_ID:
                raise RecordError(f"{archive}: has no array {key!r}, which {source} refers to at {path}; "
                                  "the side file is not the one written with this record")
            try:
                value = npz[key]
            except ValueError as exc:
                if "pickle" in str(exc):
                    raise RecordError(f"{archive}: array {key!r} holds Python objects (pickle), which gradscope "
                                      "never loads; a gradscope side file holds plain numbers only") from None
                raise RecordError(f"{archive}: array {key!r} cannot be read ({exc}); the side file is "
                                  "damaged: write the record again") from None
            shape = data.get("shape")
            if isinstance(shape, list) and list(value.shape) != shape:
                raise RecordError(f"{archive}: array {key!r} has shape {list(value.shape)} where {source} "
                                  f"expects {shape} at {path}; the two files do not belong together")
            return value
        return {k: _bring_back(v, npz, archive, source, f"{path}.{k}") for k, v in data.items()}
    if isinstance(data, list):
        return [_bring_back(v, npz, archive, source, f"{path}[{i}]") for i, v in enumerate(data)]
    return data


def _with_side_file(data: dict[str, Any], source: Path) -> dict[str, Any]:
    name, ident = _side_reference(data, source)
    archive = _find_side_file(source, name, ident)
    body = {k: v for k, v in data.items() if k != SIDE_FILE_KEY}
    try:
        with np.load(archive, allow_pickle=False) as npz:
            out: dict[str, Any] = _bring_back(body, npz, archive, source, str(source))
            return out
    except _DAMAGED as exc:
        raise RecordError(f"{archive}: the side file of {source} cannot be read ({type(exc).__name__}: {exc}); "
                          "it is damaged: write the record again") from None


def load_record(path: str | Path) -> RunRecord:
    """Read a run record back (with its side file, when it has one), with errors naming the file
    and the field. Nothing is ever unpickled."""
    source = Path(path)
    try:
        data = read_json(source)
        if isinstance(data, dict) and data.get("schema") == SCHEMA and SIDE_FILE_KEY in data:
            data = _with_side_file(data, source)
        return RunRecord.from_json(data, path=str(source))
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


def _record_json(path: Path) -> dict[str, Any] | None:
    """The parsed JSON of a gradscope run record at ``path``, or None if it is not one."""
    try:
        if not path.is_file():
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def is_record_file(path: Path) -> bool:
    """Whether ``path`` is a regular file holding a gradscope run record."""
    return _record_json(path) is not None


def keep_previous(path: str | Path) -> Path | None:
    """Before a new record is written to ``path``, move the record already there (if it is one)
    to ``previous_path(path)``, replacing an older kept record; returns where it went, or None.
    Its side file goes with it (``run.npz`` to ``run.prev.npz``), so that the new record's cannot
    replace it.

    A file there that is not a gradscope record is left for the caller to overwrite; an older
    ``.prev`` file that is not a record is never replaced (then nothing is moved).
    """
    target = Path(path)
    data = _record_json(target)
    if data is None:
        return None
    kept = previous_path(target)
    if os.path.lexists(kept) and not is_record_file(kept):
        return None
    side: Path | None = None
    if SIDE_FILE_KEY in data:
        try:
            name, ident = _side_reference(data, target)
            side = _find_side_file(target, name, ident)
        except RecordError:  # a record already missing its side file moves alone
            side = None
    # the JSON first: until the side file follows, the kept record still finds it by the name it holds
    os.replace(target, kept)
    if side is not None and side != side_path(kept):
        os.replace(side, side_path(kept))
    return kept
