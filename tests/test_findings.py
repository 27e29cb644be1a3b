from __future__ import annotations

import re
from pathlib import Path

import pytest

from gradscope.findings import CATALOG, Finding, Severity, fails, finding, sort_findings, worst

DOCS = Path(__file__).resolve().parents[1] / "docs" / "findings.md"


def test_severity_orders_info_warning_error() -> None:
    assert Severity.INFO < Severity.WARNING < Severity.ERROR
    assert max([Severity.WARNING, Severity.ERROR, Severity.INFO], key=lambda s: s.rank) is Severity.ERROR


def test_catalog_codes_are_well_formed_and_grouped() -> None:
    assert len(CATALOG) == 58
    for code, entry in CATALOG.items():
        assert re.fullmatch(r"GS[1-8]\d\d", code), code
        assert entry.code == code
        assert entry.title and entry.hint


def test_finding_takes_catalog_defaults_and_round_trips() -> None:
    f = finding("GS101", "Net.layers", "layers live in a list")
    assert f.severity is Severity.ERROR
    assert f.hint == CATALOG["GS101"].hint
    assert Finding.from_dict(f.to_dict()) == f


def test_unknown_code_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown finding code 'GS999'"):
        finding("GS999", "x", "y")


def test_sort_and_fail_thresholds() -> None:
    info = finding("GS106", "a", "m")
    warn = finding("GS103", "b", "m")
    err = finding("GS101", "c", "m")
    assert sort_findings([info, warn, err]) == [err, warn, info]
    assert worst([info, warn]) is Severity.WARNING
    assert worst([]) is None
    assert fails([warn], "warning") and not fails([warn], "error")
    assert not fails([err], "never")


def test_every_catalog_code_is_documented() -> None:
    text = DOCS.read_text(encoding="utf-8")
    missing = [code for code in CATALOG if f"## {code}" not in text]
    assert not missing, f"docs/findings.md lacks sections for {missing}"
