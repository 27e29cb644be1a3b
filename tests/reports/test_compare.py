"""Comparing two runs: the findings diff, the key numbers, the verdict, and a safe page."""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest

from gradscope.errors import GradscopeError
from gradscope.reports.compare import diff_findings, judge, key_numbers, render_compare, write_compare

HOSTILE = "<script>alert(1)</script>"


def _finding(code: str, where: str, severity: str = "warning", message: str = "m") -> dict[str, str]:
    return {"code": code, "severity": severity, "where": where, "message": message, "hint": f"fix {code}"}


def _run(accuracy: list[float], loss: list[float], findings: list[dict[str, str]], norms: list[float],
         clipped: float | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "schema": "gradscope.record", "version": 1, "steps": len(norms), "findings": findings,
        "model": {"class": "Net", "parameters": 100, "trainable": 100, "device": "cpu"},
        "curves": {"epoch": list(range(-1, len(accuracy) - 1)), "train_loss": [None] + loss[1:],
                   "train_accuracy_percent": [None] + accuracy[1:], "test_loss": loss,
                   "test_accuracy_percent": accuracy},
        "probes": {"grad_norm": {"steps": list(range(len(norms))), "total_norm": norms,
                                 "total_stats": {"mean": sum(norms) / len(norms), "max": max(norms)}}},
        "run": {"status": "completed", "steps": len(norms)},
    }
    if clipped is not None:
        record["probes"]["clipping"] = {
            "calls": [{"step": i, "kind": "norm", "threshold": 1.0, "total_norm": n, "clipped_norm": min(n, 1.0),
                       "acted": n > 1.0} for i, n in enumerate(norms)],
            "summary": {"clipped_fraction": clipped}}
    return record


@pytest.fixture()
def before() -> dict[str, Any]:
    return _run([10.0, 11.0, 10.5], [2.30, 2.29, 2.30],
                [_finding("GS401", "clip_grad_norm_"), _finding("GS203", "features.0"),
                 _finding("GS209", "Net", "warning", "the loss did not fall (2.30 → 2.30)")],
                [50.0, 80.0, 120.0], clipped=1.0)


@pytest.fixture()
def after() -> dict[str, Any]:
    return _run([10.0, 80.0, 95.0], [2.30, 0.6, 0.2],
                [_finding("GS203", "features.0", message="a different number"),
                 _finding("GS208", "fc", "info")],
                [3.0, 2.0, 0.8], clipped=0.34)


def test_findings_are_matched_by_code_and_place(before: dict[str, Any], after: dict[str, Any]) -> None:
    diff = diff_findings(before, after)
    assert [(f.code, f.where) for f in diff.only_a] == [("GS401", "clip_grad_norm_"), ("GS209", "Net")]
    assert [(f.code, f.where) for f in diff.only_b] == [("GS208", "fc")]
    assert [(a.code, b.message) for a, b in diff.both] == [("GS203", "a different number")]
    same = diff_findings(before, before)
    assert not same.only_a and not same.only_b and len(same.both) == 3


def test_key_numbers_and_the_change(before: dict[str, Any], after: dict[str, Any]) -> None:
    numbers = {n.name: n for n in key_numbers(before, after)}
    acc = numbers["final test accuracy"]
    assert (acc.a, acc.b, acc.change, acc.verdict) == (10.5, 95.0, 84.5, "better")
    assert numbers["final test loss"].verdict == "better" and numbers["warnings"].verdict == "better"
    assert numbers["clipped fraction"].a == 100.0 and round(numbers["clipped fraction"].b, 6) == 34.0
    assert numbers["steps"].change == 0


def test_verdict_better_worse_and_no_change(before: dict[str, Any], after: dict[str, Any]) -> None:
    names = ("before", "after")
    headline, tone, reasons = judge(key_numbers(before, after), diff_findings(before, after), names)
    assert tone == "better" and headline == "after looks better than before"
    assert any("final test accuracy 10.5 → 95" in r for r in reasons)
    assert any("2 finding(s) of before gone in after" in r for r in reasons)
    _, tone, _ = judge(key_numbers(after, before), diff_findings(after, before), names)
    assert tone == "worse"
    headline, tone, _ = judge(key_numbers(before, before), diff_findings(before, before), names)
    assert tone == "" and headline.startswith("No clear difference")


def test_mixed_when_accuracy_rises_but_an_error_appears(before: dict[str, Any], after: dict[str, Any]) -> None:
    worse = copy.deepcopy(after)
    worse["findings"].append(_finding("GS205", "fc", "error"))
    worse["findings"].append(_finding("GS302", "fc", "error"))
    worse["findings"].append(_finding("GS303", "fc", "error"))
    headline, tone, _ = judge(key_numbers(before, worse), diff_findings(before, worse), ("a", "b"))
    assert tone == "" and headline.startswith("Mixed")


def test_page_shows_both_names_the_diff_and_no_url(before: dict[str, Any], after: dict[str, Any]) -> None:
    before["findings"].append(_finding("GS101", HOSTILE, "error", "see https://pytorch.org"))
    page = render_compare(before, after, names=(f"base {HOSTILE}", "fixed"))
    assert "http://" not in page and "https://" not in page
    assert HOSTILE not in page and page.count("<script") == 3 and page.count("</script") == 3
    assert "base &lt;script&gt;alert(1)&lt;/script&gt;" in page and "fixed" in page
    only_a = page[page.index('id="only-a"'):page.index('id="only-b"')]
    only_b = page[page.index('id="only-b"'):page.index('id="in-both"')]
    assert "GS401" in only_a and "GS209" in only_a and "GS101" in only_a and "GS208" not in only_a
    assert "GS208" in only_b and "GS401" not in only_b
    assert "fixed looks better than base" in page
    assert 'id="fig-compare-curves"' in page and 'id="fig-compare-total-norm"' in page
    assert "could not be drawn" not in page
    raw = re.search(r'<script type="application/json" id="gradscope-record">(.*?)</script>', page, re.S)
    data = json.loads(raw.group(1))
    assert data["names"] == [f"base {HOSTILE}", "fixed"]
    assert data["a"]["findings"][-1]["where"] == HOSTILE and data["b"] == after


def test_same_names_are_told_apart_and_bad_names_rejected(before: dict[str, Any]) -> None:
    page = render_compare(before, before, names=("run", "run"))
    assert "run (A)" in page and "run (B)" in page
    with pytest.raises(GradscopeError, match="two labels"):
        render_compare(before, before, names=("only one",))
    with pytest.raises(GradscopeError, match="must be a dict"):
        render_compare(before, "x", names=("a", "b"))  # type: ignore[arg-type]


def test_records_without_curves_or_norms_still_compare(tmp_path: Path) -> None:
    minimal = {"schema": "gradscope.record", "version": 1, "findings": [_finding("GS106", "emb", "info")]}
    path = write_compare(minimal, {"schema": "gradscope.record", "version": 1, "findings": []},
                         tmp_path / "diff.html", names=("old", "new"))
    page = path.read_text(encoding="utf-8")
    assert "<svg" not in page and "GS106" in page and "1 gone, 0 new, 0 in both" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff.html"]
