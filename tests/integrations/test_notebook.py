"""``summary_html``: the notebook summary is self-contained, escaped and shows the run."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import torch
from torch import nn

import gradscope
from gradscope.findings import finding
from gradscope.records import ModelInfo, RunInfo, load_record
from gradscope.reports.notebook import summary_html

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records_v1"
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>'


def watched_record() -> gradscope.RunRecord:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer) as scope:
        for _ in range(6):
            loss = model(torch.randn(16, 4)).square().mean()
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.01)
            optimizer.step()
    return scope.to_record()


def assert_self_contained(page: str) -> None:
    assert not re.search(r"(?i)\b(?:https?|ftp|wss?)://", page)          # no URL left to fetch
    assert not re.search(r"(?i)<(?:script|link|iframe|img|object|embed)\b", page)
    assert "@import" not in page
    for ref in re.findall(r'(?i)\b(?:src|href)\s*=\s*"([^"]*)"', page):   # only the SVG's own ids
        assert ref.startswith("#"), ref
    assert "url(" not in page.replace("url(#", "")


def test_the_summary_shows_the_verdict_numbers_findings_and_figure() -> None:
    record = watched_record()
    page = summary_html(record)
    assert_self_contained(page)
    assert page.startswith('<div class="gradscope-summary"')
    assert "Sequential" in page and "6 steps" in page
    assert "max total gradient norm" in page                  # the key numbers
    assert "<svg" in page and "Total gradient norm" in page   # the figure, inline
    for f in record.findings:
        assert f.code in page
    assert len(page) < 200_000                                # notebook-sized


def test_hostile_names_are_escaped_and_urls_made_inert() -> None:
    record = watched_record()
    record = dataclasses.replace(
        record, model=ModelInfo(class_name=HOSTILE, parameters=1, trainable=1, device="cpu"),
        findings=[finding("GS101", HOSTILE, "see https://evil.example/x.js " + HOSTILE, hint=HOSTILE)],
        run=RunInfo(status="crashed", error="<b>boom</b> http://evil.example"))
    page = summary_html(record)
    assert_self_contained(page)
    assert "&lt;script&gt;" in page and "&lt;b&gt;boom&lt;/b&gt;" in page
    assert "evil.example" in page                              # shown as text, not as a link
    assert "Run crashed" in page


def test_a_record_without_findings_or_norms_still_renders() -> None:
    page = summary_html(gradscope.RunRecord())
    assert_self_contained(page)
    assert "No findings" in page and "<svg" not in page


def test_records_written_by_gradscope_0_1_render(tmp_path: Path) -> None:
    for path in sorted(FIXTURES.glob("*.json")):
        page = summary_html(load_record(path))
        assert_self_contained(page)
        assert "gradscope-summary" in page, path.name


def test_two_summaries_do_not_share_ids() -> None:
    record = watched_record()
    ids = [set(re.findall(r'id="([^"]+)"', summary_html(record))) for _ in range(2)]
    assert ids[0] and not ids[0] & ids[1]


def test_a_cell_ending_in_a_record_or_a_scope_shows_the_summary(tmp_path: Path) -> None:
    record = watched_record()
    path = tmp_path / "run.json"
    path.write_text(json.dumps(record.to_json()), encoding="utf-8")
    loaded = gradscope.load(path)
    assert isinstance(loaded, gradscope.RunRecord) and loaded.steps == record.steps
    page = loaded._repr_html_()   # the summary (its element ids are fresh per rendering)
    assert_self_contained(page)
    assert re.sub(r"gradscope-[0-9a-f]+", "", page) == re.sub(r"gradscope-[0-9a-f]+", "", summary_html(loaded))
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer) as scope:
        model(torch.randn(8, 4)).sum().backward()
        optimizer.step()
        mid = scope._repr_html_()   # in mid-run: the run so far
    assert_self_contained(mid)
    assert "Linear" in mid
    assert "Linear" in scope._repr_html_()
