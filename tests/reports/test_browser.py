"""The report in a real browser: headless Chromium opens it from disk, its script runs without
an error (the page marks ``<body data-ready="1">`` only then), tables sort, and the screenshot
of the top of the page is not blank. Skipped when Chromium is not installed."""
from __future__ import annotations

import dataclasses
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gradscope.findings import Finding, Severity
from gradscope.reports.compare import write_compare
from gradscope.reports.html import write_html

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _chromium() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


CHROMIUM = _chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed "
                                "(Debian: apt-get install chromium)")


def _load_test_html() -> Any:
    """The realistic record builder of test_html.py (a real run under watch(), hostile names)."""
    spec = importlib.util.spec_from_file_location("gradscope_test_html", Path(__file__).with_name("test_html.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


def browse(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", "--window-size=1280,2000", *extra, url]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def body_attrs(dom: str) -> str:
    start = dom.index("<body")
    return dom[start:dom.index(">", start)]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    return write_html(_load_test_html().realistic_record(), folder / "report.html")


def test_the_report_loads_without_script_errors_and_sorts(report: Path, tmp_path: Path) -> None:
    done = browse(report.resolve().as_uri() + "#sort=layer-stats:3:desc", tmp_path / "profile", "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    attrs = body_attrs(dom)
    assert 'data-ready="1"' in attrs, f"the page's script did not finish: {attrs}\n{done.stderr[-2000:]}"
    assert 'data-errors="0"' in attrs
    assert "Uncaught" not in done.stderr
    # The layer table was sorted by its max column, descending, in the browser.
    table = dom[dom.index('id="table-layer-stats"'):]
    table = table[:table.index("</table>")]
    assert 'aria-sort="descending"' in table
    import re

    column = [float(v) for v in re.findall(r'<td class="num" data-v="([^"]*)">', table)[2::5]]
    assert len(column) >= 3 and column == sorted(column, reverse=True)


def test_a_script_error_is_caught_and_reported(report: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.html"
    text = report.read_text(encoding="utf-8")
    marker = '<script type="application/json"'
    broken.write_text(text.replace(marker, '<script>throw new Error("boom")</script>' + marker, 1),
                      encoding="utf-8")
    done = browse(broken.resolve().as_uri(), tmp_path / "profile", "--dump-dom")
    attrs = body_attrs(done.stdout)
    assert 'data-ready="1"' not in attrs and 'data-errors="1"' in attrs
    assert "boom" in done.stdout          # shown to the reader too


def test_the_screenshot_is_not_blank(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    done = browse(report.resolve().as_uri(), tmp_path / "profile", f"--screenshot={shot}")
    assert shot.exists(), done.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(str(shot))
    assert pixels.shape[1] == 1280
    top = pixels[:900, :, :3]
    assert float(top.std()) > 0.05                      # text, colours and figures, not a blank page
    assert len(np.unique((top * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def test_the_compare_page_loads_without_script_errors(tmp_path: Path) -> None:
    module = _load_test_html()
    record = module.big_record(blocks=4, per_block=5, steps=300)
    fixed = dataclasses.replace(record, findings=[Finding("GS203", Severity.WARNING, "encoder", "m", "h")])
    page = write_compare(record, fixed, tmp_path / "diff.html", names=("before", "after"))
    done = browse(page.resolve().as_uri(), tmp_path / "profile", "--dump-dom")
    attrs = body_attrs(done.stdout)
    assert 'data-ready="1"' in attrs and 'data-page="compare"' in attrs, done.stderr[-2000:]
