"""Comparing two runs: the findings diff, the key numbers, the verdict, and a safe page."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from gradscope.errors import GradscopeError
from gradscope.findings import Finding, Severity
from gradscope.records import (
    ClipCall,
    ClippingRecord,
    ClipSummary,
    Curves,
    GradNormRecord,
    ModelInfo,
    RunInfo,
    RunRecord,
    Stats,
    StatsTable,
)
from gradscope.reports.compare import diff_findings, judge, key_numbers, render_compare, write_compare

HOSTILE = "<script>alert(1)</script>"


def _finding(code: str, where: str, severity: str = "warning", message: str = "m") -> Finding:
    return Finding(code, Severity(severity), where, message, f"fix {code}")


def _grad_norm(norms: list[float]) -> GradNormRecord:
    """A consistent grad-norm record: one layer ``fc`` with one parameter, a row per step."""
    n = len(norms)
    column = StatsTable(count=[n], min=np.array([min(norms)]), max=np.array([max(norms)]),
                        mean=np.array([sum(norms) / n]), first_nonfinite_step=[None])
    return GradNormRecord(parameters=["fc.weight"], layers=["fc"], parameter_layer=[0], backward_order=["fc.weight"],
                          steps=list(range(n)), total_norm=np.array(norms), layer_norms=np.array(norms).reshape(n, 1),
                          parameter_stats=column, layer_stats=column,
                          total_stats=Stats(n, min(norms), max(norms), sum(norms) / n, None),
                          no_gradient=[], steps_seen=n)


def _clipping(norms: list[float], clipped: float) -> ClippingRecord:
    calls = [ClipCall(step=i, kind="norm", threshold=1.0, total_norm=n, coefficient=min(1.0, 1.0 / n),
                      clipped_norm=min(n, 1.0), acted=n > 1.0) for i, n in enumerate(norms)]
    return ClippingRecord(calls=calls, summary=ClipSummary(calls=len(calls), norm_calls=len(calls),
                                                           clipped_fraction=clipped))


def _run(accuracy: list[float], loss: list[float], findings: list[Finding], norms: list[float],
         clipped: float | None = None) -> RunRecord:
    probes = {"grad_norm": _grad_norm(norms)}
    if clipped is not None:
        probes["clipping"] = _clipping(norms, clipped)
    return RunRecord(
        steps=len(norms), findings=findings, model=ModelInfo("Net", 100, 100, "cpu"),
        curves=Curves(epoch=list(range(-1, len(accuracy) - 1)), train_loss=[None] + loss[1:],
                      train_accuracy_percent=[None] + accuracy[1:], test_loss=loss, test_accuracy_percent=accuracy),
        probes=probes, run=RunInfo(status="completed", steps=len(norms)))  # type: ignore[arg-type]


@pytest.fixture()
def before() -> RunRecord:
    return _run([10.0, 11.0, 10.5], [2.30, 2.29, 2.30],
                [_finding("GS401", "clip_grad_norm_"), _finding("GS203", "features.0"),
                 _finding("GS209", "Net", "warning", "the loss did not fall (2.30 → 2.30)")],
                [50.0, 80.0, 120.0], clipped=1.0)


@pytest.fixture()
def after() -> RunRecord:
    return _run([10.0, 80.0, 95.0], [2.30, 0.6, 0.2],
                [_finding("GS203", "features.0", message="a different number"),
                 _finding("GS208", "fc", "info")],
                [3.0, 2.0, 0.8], clipped=0.34)


def test_findings_are_matched_by_code_and_place(before: RunRecord, after: RunRecord) -> None:
    diff = diff_findings(before, after)
    assert [(f.code, f.where) for f in diff.only_a] == [("GS401", "clip_grad_norm_"), ("GS209", "Net")]
    assert [(f.code, f.where) for f in diff.only_b] == [("GS208", "fc")]
    assert [(a.code, b.message) for a, b in diff.both] == [("GS203", "a different number")]
    same = diff_findings(before, before)
    assert not same.only_a and not same.only_b and len(same.both) == 3


def test_key_numbers_and_the_change(before: RunRecord, after: RunRecord) -> None:
    numbers = {n.name: n for n in key_numbers(before, after)}
    acc = numbers["final test accuracy"]
    assert (acc.a, acc.b, acc.change, acc.verdict) == (10.5, 95.0, 84.5, "better")
    assert numbers["final test loss"].verdict == "better" and numbers["warnings"].verdict == "better"
    assert numbers["clipped fraction"].a == 100.0 and round(numbers["clipped fraction"].b, 6) == 34.0
    assert numbers["steps"].change == 0
    assert numbers["max total gradient norm"].a == 120.0
    assert numbers["mean total gradient norm"].b == pytest.approx(5.8 / 3)


def test_verdict_better_worse_and_no_change(before: RunRecord, after: RunRecord) -> None:
    names = ("before", "after")
    headline, tone, reasons = judge(key_numbers(before, after), diff_findings(before, after), names)
    assert tone == "better" and headline == "after looks better than before"
    assert any("final test accuracy 10.5 → 95" in r for r in reasons)
    assert any("2 finding(s) of before gone in after" in r for r in reasons)
    _, tone, _ = judge(key_numbers(after, before), diff_findings(after, before), names)
    assert tone == "worse"
    headline, tone, _ = judge(key_numbers(before, before), diff_findings(before, before), names)
    assert tone == "" and headline.startswith("No clear difference")


def test_mixed_when_accuracy_rises_but_an_error_appears(before: RunRecord, after: RunRecord) -> None:
    worse = dataclasses.replace(after, findings=after.findings + [_finding("GS205", "fc", "error"),
                                                                  _finding("GS302", "fc", "error"),
                                                                  _finding("GS303", "fc", "error")])
    headline, tone, _ = judge(key_numbers(before, worse), diff_findings(before, worse), ("a", "b"))
    assert tone == "" and headline.startswith("Mixed")


def test_page_shows_both_names_the_diff_and_no_url(before: RunRecord, after: RunRecord) -> None:
    before = dataclasses.replace(before, findings=before.findings
                                 + [_finding("GS101", HOSTILE, "error", "see https://pytorch.org")])
    page = render_compare(before, after.to_json(), names=(f"base {HOSTILE}", "fixed"))   # a record or its JSON
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
    assert raw is not None
    data = json.loads(raw.group(1))
    assert data["names"] == [f"base {HOSTILE}", "fixed"]
    assert data["a"]["findings"][-1]["where"] == HOSTILE and data["b"] == after.to_json()
    assert RunRecord.from_json(data["a"]).to_json() == before.to_json()


def test_same_names_are_told_apart_and_bad_names_rejected(before: RunRecord) -> None:
    page = render_compare(before, before, names=("run", "run"))
    assert "run (A)" in page and "run (B)" in page
    with pytest.raises(GradscopeError, match="two labels"):
        render_compare(before, before, names=("only one",))
    with pytest.raises(GradscopeError, match="second record to render must be a RunRecord or its JSON"):
        render_compare(before, "x", names=("a", "b"))  # type: ignore[arg-type]


def test_records_without_curves_or_norms_still_compare(tmp_path: Path) -> None:
    minimal = {"schema": "gradscope.record", "version": 2,
               "findings": [{"code": "GS106", "severity": "info", "where": "emb", "message": "m", "hint": "h"}]}
    path = write_compare(minimal, {"schema": "gradscope.record", "version": 2, "findings": []},
                         tmp_path / "diff.html", names=("old", "new"))
    page = path.read_text(encoding="utf-8")
    assert "<svg" not in page and "GS106" in page and "1 gone, 0 new, 0 in both" in page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["diff.html"]
