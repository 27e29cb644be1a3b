"""Typed records: frozen dataclasses that read and write themselves as JSON.

Every record type is a frozen dataclass deriving from ``Record``. ``to_json()`` gives plain JSON
values (non-finite floats as the strings "NaN", "Infinity", "-Infinity", since JSON has none);
``from_json()`` is the one tolerant reader: it is the only place where old spellings are mapped
(``upgrade``), missing fields take their defaults, unknown fields are ignored, and a value of
the wrong type raises ``RecordError`` naming the field by its path (``probes.grad_norm.steps[3]``)
with what was expected and what was found.

Field types understood by the reader: ``int``, ``float``, ``str``, ``bool``, ``Any``,
``X | None``, ``list[X]``, ``dict[str, X]``, ``Literal[...]``, nested ``Record`` types, and the
numeric arrays ``Vector`` (1-D) and ``Matrix`` (2-D, rows by columns), held as float64 NumPy
arrays so that large per-step tables are read and written in bulk.

Nothing here imports torch: records, judges and reports run without it.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import types
import typing
from typing import Annotated, Any, ClassVar, Iterator, Literal, Mapping, TypeVar, Union

import numpy as np

from gradscope.errors import RecordError


@dataclasses.dataclass(frozen=True)
class Dims:
    """The number of dimensions of a numeric array field."""

    n: int


Vector = Annotated[np.ndarray, Dims(1)]
Matrix = Annotated[np.ndarray, Dims(2)]

R = TypeVar("R", bound="Record")
_FIX = "the file was changed by hand or written by another tool; write it again with gradscope"
#: inside ``arrays_as_numpy()``: ``to_json`` leaves numeric arrays as NumPy arrays
_KEEP_ARRAYS: contextvars.ContextVar[bool] = contextvars.ContextVar("gradscope_keep_arrays", default=False)
#: the key of the JSON object that stands for an array kept in a record's side file
ARRAY_REF = "$array"


@contextlib.contextmanager
def arrays_as_numpy() -> Iterator[None]:
    """Within this block ``to_json()`` leaves numeric arrays as NumPy arrays instead of lists, so
    that a writer can store the large ones in bulk (``records.io``'s side file) without turning
    millions of numbers into Python floats and back."""
    token = _KEEP_ARRAYS.set(True)
    try:
        yield
    finally:
        _KEEP_ARRAYS.reset(token)


def empty_vector() -> np.ndarray:
    return np.zeros(0)


def empty_matrix() -> np.ndarray:
    return np.zeros((0, 0))


def as_vector(values: Any) -> np.ndarray:
    """A float64 1-D array from numbers, a list or a tensor's ``.tolist()``."""
    return np.asarray(values, dtype=float).reshape(-1)


def as_matrix(rows: Any, width: int) -> np.ndarray:
    """A float64 (rows x ``width``) array; an empty input gives (0 x width)."""
    out = np.asarray(rows, dtype=float)
    return out.reshape(-1, width) if out.size or width else np.zeros((0, width))


def describe(value: Any) -> str:
    """A short description of a JSON value for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    return "a list" if isinstance(value, (list, tuple)) else "an object"


def fail(path: str, expected: str, got: Any) -> RecordError:
    return RecordError(f"{path} should be {expected}, got {describe(got)}; {_FIX}")


_NONFINITE = {"NaN": math.nan, "nan": math.nan, "Infinity": math.inf, "inf": math.inf,
              "-Infinity": -math.inf, "-inf": -math.inf}


def read_float(value: Any, path: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value in _NONFINITE:
        return _NONFINITE[value]
    raise fail(path, "a number", value)


def clean_float(value: float) -> float | str:
    """JSON has no NaN/Infinity: write them as the strings "NaN", "Infinity", "-Infinity"."""
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def clean(value: Any) -> Any:
    """Any JSON-like value with non-finite floats written as strings."""
    if isinstance(value, float):
        return clean_float(value)
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return value if _KEEP_ARRAYS.get() else array_json(value)
    if hasattr(value, "to_json"):  # records and findings
        return value.to_json()
    return value


def array_json(a: np.ndarray) -> list[Any]:
    out = a.tolist()
    if a.size and not np.isfinite(a).all():
        cleaned: list[Any] = clean(out)
        return cleaned
    return list(out)


def read_array(value: Any, dims: int, path: str) -> np.ndarray:
    """A float64 array of ``dims`` dimensions; ``null`` entries become NaN.

    Read row by row: a row of plain numbers converts in one NumPy call, and only a row holding
    ``null``, ``"NaN"`` or ``"Infinity"`` (or something wrong, which is then named) is read entry
    by entry. A NumPy array (what ``records.io`` read from a side file) is taken as it is once its
    dimensions and number type are checked."""
    if isinstance(value, np.ndarray):
        return _from_numpy(value, dims, path)
    if isinstance(value, Mapping) and ARRAY_REF in value:
        raise RecordError(f"{path} is kept in the record's side file (.npz) and was not read with it; "
                          "read the record with gradscope.load_record(path), which opens both files")
    if not isinstance(value, (list, tuple)):
        raise fail(path, "a list of numbers" if dims == 1 else "a list of rows of numbers", value)
    if dims == 1:
        return _numbers(value, path)
    if not value:
        return np.zeros((0, 0))
    rows = []
    width = None
    for i, row in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(row, (list, tuple)):
            raise fail(where, "a row (a list of numbers)", row)
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise RecordError(f"{where} has {len(row)} values where the rows before it have {width}; {_FIX}")
        rows.append(_numbers(row, where))
    return np.stack(rows) if width else np.zeros((len(rows), 0))


def _from_numpy(value: np.ndarray, dims: int, path: str) -> np.ndarray:
    if value.dtype.kind not in "fiu":
        raise RecordError(f"{path} should be an array of numbers, got an array of {value.dtype} values; {_FIX}")
    if value.ndim != dims:
        raise RecordError(f"{path} should be an array of {dims} dimension{'s' if dims > 1 else ''}, got "
                          f"{value.ndim} (shape {tuple(value.shape)}); {_FIX}")
    return value.astype(float, copy=False)


def _has_bool(values: list[Any] | tuple[Any, ...], read: np.ndarray) -> bool:
    """JSON true/false among numbers (NumPy reads them as 1 and 0): only the entries that read as
    0 or 1 can be one, so only those are looked at."""
    return any(values[i] is True or values[i] is False for i in np.flatnonzero((read == 0) | (read == 1)))


def _numbers(values: list[Any] | tuple[Any, ...], path: str) -> np.ndarray:
    """One list of JSON numbers as a float64 vector (null as NaN, non-finite spellings allowed)."""
    try:
        out = np.array(values)
    except (TypeError, ValueError):
        out = None
    if out is not None and out.ndim == 1 and out.dtype.kind in "fiu" and not _has_bool(values, out):
        return out.astype(float)  # the fast path: nothing but numbers
    return np.array([math.nan if v is None else read_float(v, f"{path}[{i}]") for i, v in enumerate(values)],
                    dtype=float)


class Record:
    """Base of every record type: JSON in and out through the dataclass fields' types."""

    #: JSON keys of earlier versions and the field each now fills (``{"class": "class_name"}``)
    renamed: ClassVar[dict[str, str]] = {}

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """Map an older layout of this record onto the current one (after ``renamed``)."""
        return data

    def validate(self, path: str) -> None:
        """Check what types alone cannot (widths that must agree); raise ``RecordError``."""

    @classmethod
    def from_json(cls: type[R], data: Any, path: str = "record") -> R:
        """Read a record from parsed JSON, tolerant of missing and unknown fields."""
        if not isinstance(data, Mapping):
            raise fail(path, "an object", data)
        raw = dict(data)
        for old, new in cls.renamed.items():
            if old in raw and new not in raw:
                raw[new] = raw.pop(old)
        raw = cls.upgrade(raw)
        values: dict[str, Any] = {}
        for f, hint in _fields(cls):
            if f.name in raw:
                values[f.name] = read_value(raw[f.name], hint, f"{path}.{f.name}")
        try:
            record = cls(**values)
        except TypeError as exc:  # a required field is missing
            raise RecordError(f"{path}: {exc}; {_FIX}") from None
        record.validate(path)
        return record

    def to_json(self) -> dict[str, Any]:
        """The record as plain JSON values (non-finite floats as strings)."""
        return {f.name: clean(getattr(self, f.name)) for f, _ in _fields(type(self))}


_FIELDS: dict[type, tuple[tuple[dataclasses.Field[Any], Any], ...]] = {}


def _fields(cls: type) -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    """The init fields of a record type with their resolved types (computed once per type)."""
    found = _FIELDS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls, include_extras=True)
        found = _FIELDS[cls] = tuple((f, hints[f.name]) for f in dataclasses.fields(cls) if f.init)
    return found


def read_value(value: Any, hint: Any, path: str) -> Any:
    """Read one JSON value as the type ``hint`` describes."""
    if hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin is Annotated:
        base, *meta = typing.get_args(hint)
        dims = next((m.n for m in meta if isinstance(m, Dims)), None)
        if dims is not None:
            return read_array(value, dims, path)
        return read_value(value, base, path)
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return read_value(value, rest[0], path)
        errors = []
        for option in rest:
            try:
                return read_value(value, option, path)
            except RecordError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise fail(path, "a list", value)
        return [read_value(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, Mapping):
            raise fail(path, "an object", value)
        return {str(k): read_value(v, item, f"{path}.{k}") for k, v in value.items()}
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise fail(path, "one of " + ", ".join(repr(c) for c in choices), value)
        return value
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.from_json(value, path)
    if hint is float:
        return read_float(value, path)
    if hint is bool:
        if not isinstance(value, bool):
            raise fail(path, "true or false", value)
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise fail(path, "an integer", value)
        return int(value)
    if hint is str:
        if not isinstance(value, str):
            raise fail(path, "a string", value)
        return value
    reader = getattr(hint, "from_json", None) or getattr(hint, "from_dict", None)
    if reader is not None:
        return reader(value, path)
    raise TypeError(f"record field {path}: no reader for type {hint!r}")  # a bug in a record type


def field_names(cls: type[Record]) -> list[str]:
    """The JSON keys a record type writes, in order."""
    return [f.name for f, _ in _fields(cls)]


def _array_hint(hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin is Annotated:
        return any(isinstance(m, Dims) for m in typing.get_args(hint)[1:])
    return origin in (Union, types.UnionType) and any(_array_hint(a) for a in typing.get_args(hint))


def array_fields(cls: type[Record]) -> list[str]:
    """The fields of a record type that hold numeric arrays (``Vector``, ``Matrix``, or one or None)."""
    return [f.name for f, hint in _fields(cls) if _array_hint(hint)]


class ProbeRecord(Record):
    """What one probe captured. Subclasses name their probe: ``class X(ProbeRecord, probe="x")``.

    The name is the key under ``probes`` in the run record; reading a record looks the type up
    by that key, so a probe's record type is declared once, on the type itself.
    """

    probe: ClassVar[str] = ""
    #: fields a code's judgement needs, for codes whose evidence older records may lack
    evidence: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: per-parameter per-step arrays (a row per step, a column per parameter tensor) and the
    #: field that lists their rows' steps when it differs from ``steps`` (None there: the same);
    #: a written record thins them to a fixed budget of values (``records.budget``)
    per_parameter: ClassVar[dict[str, str]] = {}
    _types: ClassVar[dict[str, type[ProbeRecord]]] = {}

    def __init_subclass__(cls, probe: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if probe:
            cls.probe = probe
            ProbeRecord._types[probe] = cls

    def unjudged(self) -> frozenset[str]:
        """Codes this record holds no evidence for (a record written by an older gradscope)."""
        return frozenset(code for code, needs in self.evidence.items()
                         if any(getattr(self, name) is None for name in needs))


def probe_record_type(name: str) -> type[ProbeRecord] | None:
    """The record type declared for probe ``name``, if its module has been imported."""
    return ProbeRecord._types.get(name)
