"""docs/record.md is the record's documentation: every record type has a table there, and the
table lists exactly the keys the type writes."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

import gradscope.records as records
from gradscope.records.base import Record, field_names

DOC = Path(__file__).resolve().parents[2] / "docs" / "record.md"
# kept in memory but written under other keys: unknown probes go back into "probes", unknown
# top-level keys back to the top level
NOT_KEYS = {"RunRecord": {"other_probes", "extra"}, "WatchedModel": {"other_probes"}}


def documented() -> dict[str, list[str]]:
    tables: dict[str, list[str]] = {}
    current = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^### `(\w+)`", line)
        if heading:
            current = heading.group(1)
            tables[current] = []
        elif current and (row := re.match(r"^\| `(\w+)` \|", line)):
            tables[current].append(row.group(1))
    return tables


TYPES = sorted((getattr(records, name) for name in records.__all__
                if isinstance(getattr(records, name), type) and issubclass(getattr(records, name), Record)
                and getattr(records, name) not in (Record, records.ProbeRecord)),
               key=lambda t: t.__name__)


@pytest.mark.parametrize("kind", TYPES, ids=lambda t: t.__name__)
def test_every_record_type_is_documented_with_exactly_its_keys(kind: type[Record]) -> None:
    tables = documented()
    assert kind.__name__ in tables, f"docs/record.md has no table for {kind.__name__}"
    keys = [k for k in field_names(kind) if k not in NOT_KEYS.get(kind.__name__, set())]
    assert tables[kind.__name__] == keys


def test_every_documented_table_is_a_record_type() -> None:
    names = {t.__name__ for t in TYPES}
    assert set(documented()) <= names
