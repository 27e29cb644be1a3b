"""The HTML report, checked by structure: sections present for a full record and absent for a
minimal one, every finding with its hint, no URL anywhere, hostile names escaped in tables,
figures and the embedded JSON (which parses back to the record), and large runs kept small."""
from __future__ import annotations

import dataclasses
import json
import statistics
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from gradscope.errors import GradscopeError, RecordError
from gradscope.findings import Finding, Severity
from gradscope.records import (
    ActivationGradRecord,
    ClipCall,
    ClippingRecord,
    ClipSummary,
    Curves,
    Environment,
    FreezeRecord,
    FreezeRow,
    GradNormRecord,
    ModelInfo,
    ModuleNode,
    Registration,
    RunInfo,
    RunRecord,
    Stats,
    StatsTable,
    TimingRecord,
    Unregistered,
    UpdateRatioRecord,
    load_record,
    write_record,
)
from gradscope.reports.html import EMBED_MAX_CALLS, EMBED_MAX_VALUES, render_html, trim_record, write_html
from gradscope.reports.page import embed_json
from gradscope.scope import watch

HOSTILE = "<script>alert(1)</script>"
CLOSER = "</script><b>x</b>"
FULL_SECTIONS = {"verdict", "run", "model", "registration", "gradients", "activations", "tensors", "clipping",
                 "freezing", "curves", "loss", "loss-inputs", "lr", "update-ratio", "dead-units", "mode",
                 "zero-grad", "timings", "lint", "environment", "record"}


# ---- a small HTML tree to inspect pages with ----------------------------------------------------
class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node] = []
        self.parts: list[str] = []

    def text(self) -> str:
        return "".join(self.parts) + "".join(c.text() for c in self.children)

    def walk(self) -> list[Node]:
        out = [self]
        for c in self.children:
            out += c.walk()
        return out


class Tree(HTMLParser):
    VOID = {"meta", "br", "img", "input", "link", "hr", "wbr", "col", "source"}

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", {}, None)
        self.current = self.root
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in self.VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, {k: v or "" for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.parts.append(data)

    def by_id(self, ident: str) -> Node | None:
        return next((n for n in self.root.walk() if n.attrs.get("id") == ident), None)

    def all(self, tag: str) -> list[Node]:
        return [n for n in self.root.walk() if n.tag == tag]


def sections(tree: Tree) -> set[str]:
    return {n.attrs["id"] for n in tree.root.walk()
            if (n.tag == "details" and "section" in n.attrs.get("class", "")) or n.attrs.get("class") == "verdict"}


def embedded(tree: Tree) -> Any:
    node = tree.by_id("gradscope-record")
    assert node is not None and node.tag == "script" and node.attrs["type"] == "application/json"
    return json.loads(node.text())


def find(tree: Tree, ident: str) -> Node:
    node = tree.by_id(ident)
    assert node is not None, f"no element #{ident}"
    return node


# ---- records -----------------------------------------------------------------------------------
def _hostile_class() -> type[nn.Module]:
    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    return type(HOSTILE, (nn.Module,), {"forward": forward})


def realistic_record() -> RunRecord:
    """A short real run under watch(activations="all") with clipping and a named tensor, plus what
    `gradscope run` adds (curves, run, environment, registration, lint), with hostile names."""
    torch.manual_seed(0)
    model = _hostile_class()()
    model.layers = nn.Sequential()
    model.layers.add_module("conv", nn.Conv2d(1, 4, 3))
    model.layers.add_module("relu", nn.ReLU())
    model.layers.add_module("flat", nn.Flatten())
    model.layers.add_module(HOSTILE, nn.Linear(4 * 6 * 6, 16))
    model.layers.add_module(CLOSER, nn.ReLU())
    model.layers.add_module("drop", nn.Dropout(0.1))      # a mode-sensitive layer: the mode section
    model.layers.add_module("head", nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 3, (64,))
    curves: dict[str, list[Any]] = {"epoch": [], "train_loss": [], "train_accuracy_percent": [],
                                    "test_loss": [], "test_accuracy_percent": []}

    def evaluate() -> tuple[float, float]:
        model.eval()
        with torch.no_grad():
            out = model(x)
        model.train()
        return float(nn.functional.cross_entropy(out, y)), float((out.argmax(1) == y).float().mean() * 100)

    with watch(model, opt, activations="all", flush_every=10) as scope:
        loss0, acc0 = evaluate()
        for k, v in zip(curves, (-1, None, None, loss0, acc0)):
            curves[k].append(v)
        for epoch in range(3):
            losses = []
            for i in range(8):
                out = scope.probe(model(x[i * 8:(i + 1) * 8]), f"logits {HOSTILE}")
                loss = nn.functional.cross_entropy(out, y[i * 8:(i + 1) * 8])
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
                opt.step()
                losses.append(float(loss.detach()))
            test_loss, test_acc = evaluate()
            for k, v in zip(curves, (epoch, sum(losses) / len(losses), 50.0 + 10 * epoch, test_loss, test_acc)):
                curves[k].append(v)
    record = scope.to_record()
    lint = Finding("GS508", Severity.INFO, "model.py:3",
                   f"pretrained=True is deprecated ({HOSTILE}); see https://pytorch.org",
                   "Use weights=None or a weights enum.")
    hostile = Finding("GS101", Severity.ERROR, HOSTILE, f"{CLOSER} holds a submodule in a plain list",
                      "Use nn.ModuleList & friends.")
    tree = [ModuleNode(path="", name="", depth=0, class_name=HOSTILE, own_params=0, total_params=2411,
                       trainable_params=2411,
                       unregistered=[Unregistered(attribute="extra", kind="module", count=1, code="GS101",
                                                  severity="error")]),
            ModuleNode(path="layers", name="layers", depth=1, class_name="Sequential", own_params=0,
                       total_params=2411, trainable_params=2411),
            ModuleNode(path=f"layers.{HOSTILE}", name=HOSTILE, depth=2, class_name="Linear", own_params=2320,
                       total_params=2320, trainable_params=2320)]
    return dataclasses.replace(
        record, curves=Curves(**curves),
        run=RunInfo(command=f"gradscope run model.py --clip-norm 0.5 -- --name '{HOSTILE}'", file="model.py",
                    options={"epochs": 3, "clip_norm": 0.5, "note": "see https://example.org/x"},
                    data="glyphs (1x8x8)", device="cpu", status="completed", steps=24),
        environment=Environment(python="3.11", torch=torch.__version__, torchvision="0.x", platform="Linux",
                                cuda=None, gradscope="0.1.0"),
        registration=Registration(tree=tree), lint=[lint], findings=record.findings + [lint, hostile])


@pytest.fixture(scope="module")
def record() -> RunRecord:
    return realistic_record()


@pytest.fixture(scope="module")
def page(record: RunRecord) -> str:
    return render_html(record)


@pytest.fixture(scope="module")
def tree(page: str) -> Tree:
    return Tree(page)


MINIMAL = {"schema": "gradscope.record", "version": 2, "findings": []}


# ---- structure ---------------------------------------------------------------------------------
def test_full_record_has_every_section(tree: Tree, record: RunRecord) -> None:
    clip = record.probe(ClippingRecord)
    assert clip is not None and clip.calls                  # the run really clipped
    assert sections(tree) == FULL_SECTIONS
    links = {a.attrs["href"] for a in tree.all("a") if a.attrs.get("href", "").startswith("#")}
    assert links == {f"#{s}" for s in FULL_SECTIONS}        # the table of contents matches


def test_full_record_draws_its_figures(tree: Tree, page: str) -> None:
    figures = {n.attrs["id"] for n in tree.all("figure")}
    assert figures == {"fig-total-norm", "fig-grad-heatmap", "fig-grad-flow", "fig-activation-flow",
                       "fig-activation-heatmap", "fig-tensor-grad", "fig-clipping", "fig-curves",
                       "fig-loss", "fig-lr",
                       "fig-update-ratio", "fig-timings"}
    assert "could not be drawn" not in page
    assert len(tree.all("svg")) == len(figures)


def test_minimal_record_has_only_the_verdict_and_the_record() -> None:
    page = render_html(dict(MINIMAL))
    small = Tree(page)
    assert sections(small) == {"verdict", "record"}
    assert "No findings" in find(small, "verdict").text()
    assert not small.all("svg") and not small.all("table")
    assert small.by_id("table-options") is None
    data = embedded(small)
    assert data == RunRecord.from_json(MINIMAL).to_json()
    assert {k: data[k] for k in MINIMAL} == MINIMAL


@pytest.mark.parametrize(("present", "section"), [
    ("curves", "curves"), ("environment", "environment"), ("run", "run"), ("lint", "lint"),
    ("registration", "registration"), ("timing", "timings"), ("grad_norm", "gradients"),
    ("activation_grad", "activations"), ("tensor_grad", "tensors"), ("clipping", "clipping"),
    ("freeze", "freezing"), ("update_ratio", "update-ratio"), ("dead_units", "dead-units"), ("mode", "mode"),
    ("zero_grad", "zero-grad")])
def test_each_optional_part_alone_adds_its_section(present: str, section: str, record: RunRecord) -> None:
    whole = record.to_json()
    if present in whole["probes"]:
        body = dict(MINIMAL, probes={present: whole["probes"][present]})
    else:
        body = dict(MINIMAL, **{present: whole[present]})
    assert sections(Tree(render_html(body))) == {"verdict", "record", section}


def test_every_finding_is_shown_with_its_hint_most_severe_first(tree: Tree, record: RunRecord) -> None:
    listed = [li for li in find(tree, "verdict").walk() if li.tag == "li"]
    assert len(listed) == len(record.findings)
    texts = [li.text() for li in listed]
    for f in record.findings:
        match = [t for t in texts if f.message in t]
        assert match, f"finding {f.code} missing"
        assert f.hint in match[0] and f.code in match[0] and f.where in match[0]
    severities = [li.attrs["class"] for li in listed]
    rank = {"error": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=rank.__getitem__) and severities[0] == "error"
    counts = find(tree, "verdict").text()
    assert f"{severities.count('error')} error" in counts and f"{severities.count('warning')} warning" in counts


def test_a_missing_hint_comes_from_the_catalog() -> None:
    from gradscope.findings import CATALOG

    body = dict(MINIMAL, findings=[{"code": "GS204", "severity": "warning", "where": "fc", "message": "big"}])
    assert CATALOG["GS204"].hint in find(Tree(render_html(body)), "verdict").text()


def test_the_page_makes_no_request(page: str) -> None:
    assert "http://" not in page.lower() and "https://" not in page.lower()
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    tree = Tree(page)
    for node in tree.root.walk():
        for attr in ("src", "href", "xlink:href", "action"):
            value = node.attrs.get(attr, "")
            assert value == "" or value.startswith(("#", "data:")), (node.tag, attr, value)
    assert "https&#58;//example.org" in page      # the user's URL is still readable


def test_hostile_names_are_escaped_everywhere(page: str, tree: Tree) -> None:
    assert HOSTILE not in page and "<b>x</b>" not in page
    # Only the page's own three script elements exist, and each closes once.
    assert [s.attrs.get("type", "") or s.attrs.get("id", "") for s in tree.all("script")] == \
        ["", "application/json", ""]
    assert page.count("<script") == 3 and page.count("</script") == 3
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    table_text = {n.attrs["id"]: n for n in tree.all("table")}
    assert HOSTILE in table_text["table-layer-stats"].text()        # shown as text, not markup
    assert HOSTILE in table_text["table-registration"].text()
    assert HOSTILE in table_text["table-tensor-stats"].text()
    assert HOSTILE in find(tree, "findings").text() and CLOSER in find(tree, "findings").text()
    flow = find(tree, "fig-grad-flow")
    assert any(HOSTILE in t.text() for t in flow.walk() if t.tag == "text")   # SVG text
    assert escaped in page
    assert HOSTILE in tree.all("title")[0].text()                # <title> is the root class name


def test_embedded_json_parses_back_to_the_record(tree: Tree, record: RunRecord) -> None:
    data = embedded(tree)
    assert "report_trimmed" not in data
    assert data == json.loads(json.dumps(record.to_json()))
    assert RunRecord.from_json(data).to_json() == data
    raw = find(tree, "gradscope-record").text()
    assert "<" not in raw and "://" not in raw and "\\u003c/script\\u003e" in raw


def test_embed_json_round_trips_awkward_strings() -> None:
    value = {"a": "</script><!-- & \u2028 http://x", "b": [float("nan"), float("inf")], "c": "<\\/>"}
    text = embed_json(value)
    assert "</" not in text and "<!--" not in text and "://" not in text
    assert json.loads(text) == {"a": value["a"], "b": ["NaN", "Infinity"], "c": "<\\/>"}


def test_sortable_tables_carry_numeric_sort_keys(tree: Tree) -> None:
    table = find(tree, "table-layer-stats")
    assert "sortable" in table.attrs["class"]
    cells = [td for td in table.walk() if td.tag == "td" and "num" in td.attrs.get("class", "")]
    assert cells and all(float(td.attrs["data-v"]) >= 0 for td in cells if td.attrs.get("data-v"))


def test_sections_are_collapsible_and_hover_values_exist(tree: Tree, page: str) -> None:
    details = [n for n in tree.all("details") if "section" in n.attrs.get("class", "")]
    assert all(d.children[0].tag == "summary" for d in details)
    titles = [t for t in tree.all("title") if t.parent is not None and t.parent.tag == "g"]
    assert len(titles) > 10
    assert any("mean" in t.text() and "max" in t.text() for t in titles)


def test_crashed_run_shows_its_status_and_error() -> None:
    body = dict(MINIMAL, run={"command": "gradscope run m.py", "status": "crashed",
                              "error": "RuntimeError in fc: mat1 and mat2 shapes cannot be multiplied"})
    verdict = find(Tree(render_html(body)), "verdict").text()
    assert "Run crashed" in verdict and "mat1 and mat2" in verdict


def test_nonfinite_run_renders_and_flags_the_layer() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with watch(model, opt) as scope:
        for step in range(6):
            if step == 3:
                with torch.no_grad():
                    model[2].weight[0, 0] = float("inf")
            opt.zero_grad()
            model(torch.randn(5, 3)).pow(2).mean().backward()
            opt.step()
    page = render_html(scope.to_record())
    tree = Tree(page)
    assert {"gradients", "nonfinite"} <= sections(tree)
    assert "could not be drawn" not in page
    assert "NaN/Inf" in find(tree, "fig-grad-heatmap").text()
    assert any("flag" in r.attrs.get("class", "") for r in find(tree, "table-layer-stats").walk() if r.tag == "tr")


def test_a_record_from_gradscope_run_renders_every_section_it_has(tmp_path: Path) -> None:
    from gradscope.runner import RunOptions, run

    # 12 steps of 64 samples: steps past the timing probe's warm-up (5 steps), so timings are summarised
    outcome = run(RunOptions(epochs=1, max_steps=12, train_size=768, test_size=128, clip_norm=1.0,
                             out=tmp_path, command="gradscope run --clip-norm 1"))
    assert outcome.html_path is not None and outcome.json_path is not None and not outcome.messages
    page = outcome.html_path.read_text(encoding="utf-8")
    tree = Tree(page)
    assert {"run", "model", "registration", "gradients", "clipping", "freezing", "curves", "timings",
            "zero-grad", "environment", "record"} <= sections(tree)   # the built-in CNN has no dropout: no "mode"
    assert "could not be drawn" not in page and "http://" not in page
    registration = find(tree, "table-registration").text()
    assert "Conv2d" in registration and "Linear" in registration
    assert {"fig-timings", "fig-curves", "fig-clipping"} <= {n.attrs["id"] for n in tree.all("figure")}
    assert embedded(tree) == json.loads(outcome.json_path.read_text(encoding="utf-8"))


def test_timing_probe_rows_and_the_newer_registration_fields() -> None:
    columns = ["forward", "backward", "step"]
    ms = [[1.0, 2.0, 4.0], [1.0, 3.0, 5.0], [2.0, 2.0, 5.0], [1.0, 2.0, 4.0]]
    by_column = {c: sorted(row[j] for row in ms) for j, c in enumerate(columns)}
    # the probe's summary of these rows (no warm-up): median, 90th percentile, mean
    phases = {c: {"median_ms": statistics.median(v), "p90_ms": v[min(len(v) - 1, int(0.9 * len(v)))],
                  "mean_ms": sum(v) / len(v)} for c, v in by_column.items()}
    timing = {"columns": columns, "steps": [0, 1, 2, 3], "ms": ms, "clock": "perf_counter_ns", "warmup_steps": 0,
              "summary": {"steps_measured": 4, "phases": phases, "steps_per_second": 1000 / 4.5}}
    tree_rows = [{"path": "", "name": "Net", "depth": 0, "class_name": "Net", "own_params": 0,
                  "total_params": 30, "trainable_params": 30,
                  "unregistered": [{"attribute": "blocks", "kind": "module", "count": 2, "code": "GS101",
                                    "severity": "error"}]},
                 {"path": "fc", "name": "fc", "depth": 1, "class_name": "Linear", "own_params": 30,
                  "total_params": 30, "trainable_params": 30, "unregistered": []}]
    body = dict(MINIMAL, probes={"timing": timing}, registration={"tree": tree_rows})
    tree = Tree(render_html(body))
    assert {"timings", "registration"} <= sections(tree)
    rows = [r for r in find(tree, "table-timings").walk() if r.tag == "tr"][1:]
    medians = {r.children[0].text(): float(r.children[1].attrs["data-v"]) for r in rows}
    assert medians == {"forward": 1.0, "backward": 2.0, "step": 4.5}     # medians of the rows
    flagged = [r for r in find(tree, "table-registration").walk() if r.tag == "tr" and r.attrs.get("class") == "flag"]
    assert len(flagged) == 1 and "blocks: 2 modules, GS101" in flagged[0].text()
    assert "Net" in flagged[0].text() and "30" in find(tree, "table-registration").text()


def test_a_version_1_timing_record_still_in_its_warm_up_has_rows_but_no_summary() -> None:
    # before version 2 "phases" held the column names until the warm-up was over
    timing = {"phases": ["forward", "backward", "step"], "steps": [0, 1, 2, 3],
              "ms": [[1.0, 2.0, 4.0], [1.0, 3.0, 5.0], [2.0, 2.0, 5.0], [1.0, 2.0, 4.0]], "clock": "perf_counter_ns"}
    body = dict(MINIMAL, version=1, probes={"timing": timing})
    rec = RunRecord.from_json(body).probe(TimingRecord)
    assert rec is not None and rec.columns == ["forward", "backward", "step"] and rec.summary is None
    assert rec.column("step") == [4.0, 5.0, 5.0, 4.0]
    assert "timings" in sections(Tree(render_html(body)))


def test_lint_section_says_clean_only_when_a_file_was_linted() -> None:
    linted = Tree(render_html(dict(MINIMAL, lint=[], run={"file": "train.py", "status": "completed"})))
    assert "lint" in sections(linted) and "passed every static check" in find(linted, "lint").text()
    builtin = Tree(render_html(dict(MINIMAL, lint=[], run={"file": "<notes: Full Loop CNN>"})))
    assert "lint" not in sections(builtin)


def test_unknown_probes_are_shown_not_lost() -> None:
    body = dict(MINIMAL, probes={"future_probe": {"answer": 42, "name": HOSTILE}})
    tree = Tree(render_html(body))
    assert "other" in sections(tree)
    assert '"answer": 42' in find(tree, "other").text() and HOSTILE in find(tree, "other").text()
    assert embedded(tree)["probes"] == {"future_probe": {"answer": 42, "name": HOSTILE}}


# Malformed parts no longer give a page with a note: reading the record stops, naming the field.
@pytest.mark.parametrize(("part", "value", "message"), [
    ("probes", {"grad_norm": {"layers": "x", "layer_norms": [[1, "a"]], "total_norm": "bad"}},
     r"record\.probes\.grad_norm\.layers should be a list, got the string 'x'"),
    ("probes", {"grad_norm": {"layers": ["a", "b"], "steps": [0], "total_norm": [1.0], "layer_norms": [[1, "a"]]}},
     r"record\.probes\.grad_norm\.layer_norms\[0\]\[1\] should be a number, got the string 'a'"),
    ("probes", {"grad_norm": {"layers": ["a"], "steps": [0], "total_norm": "bad", "layer_norms": [[1.0]]}},
     r"record\.probes\.grad_norm\.total_norm should be a list of numbers, got the string 'bad'"),
    ("probes", {"clipping": {"calls": ["junk", {"kind": "norm"}]}},
     r"record\.probes\.clipping\.calls\[0\] should be an object, got the string 'junk'"),
    ("probes", {"clipping": {"calls": [{"kind": "norm"}, {"kind": "sideways"}]}},
     r"record\.probes\.clipping\.calls\[1\]\.kind should be one of 'norm', 'value', 'with_norm'"),
    ("curves", {"epoch": "x"}, r"record\.curves\.epoch should be a list, got the string 'x'"),
    ("model", [1, 2], r"record\.model should be an object, got a list"),
], ids=["layers", "layer-norms", "total-norm", "clip-call", "clip-kind", "curves", "model"])
def test_malformed_parts_are_a_record_error_naming_the_field(part: str, value: object, message: str) -> None:
    with pytest.raises(RecordError, match=message):
        render_html(dict(MINIMAL, **{part: value}))


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(GradscopeError, match="must be a RunRecord or its JSON"):
        render_html([1, 2])  # type: ignore[arg-type]
    with pytest.raises(RecordError, match="not a gradscope record"):
        render_html({"findings": []})


def test_write_html_is_atomic_and_reads_a_loaded_record(tmp_path: Path, record: RunRecord) -> None:
    json_path = write_record(record, tmp_path / "run.json")
    out = write_html(load_record(json_path), tmp_path / "out" / "report.html")
    assert out == tmp_path / "out" / "report.html"
    assert sorted(p.name for p in out.parent.iterdir()) == ["report.html"]
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "gradscope-record" in text


def test_load_record_rejects_findings_of_the_wrong_shape(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text(json.dumps(dict(MINIMAL, findings=[{"code": "GS101", "severity": "fatal", "where": "x",
                                                        "message": "m"}])), encoding="utf-8")
    with pytest.raises(RecordError, match=r"r\.json\.findings\[0\]\.severity should be one of error"):
        load_record(path)
    path.write_text(json.dumps(dict(MINIMAL, curves={"test_loss": 3})), encoding="utf-8")
    with pytest.raises(RecordError, match=r"r\.json\.curves\.test_loss should be a list"):
        load_record(path)


# ---- large runs --------------------------------------------------------------------------------
def _stats_table(n: int, count: int) -> StatsTable:
    return StatsTable(count=[count] * n, min=np.full(n, 1e-5), max=np.full(n, 2.0), mean=np.full(n, 0.1),
                      first_nonfinite_step=[None] * n)


def big_record(blocks: int = 40, per_block: int = 25, steps: int = 20_000) -> RunRecord:
    """2,000 parameter tensors (1,000 layers) and 20,000 undecimated steps. The per-step rows are
    read-only windows over one long series (row s starts at value s), so the test builds fast and
    light; the renderer still reads every row it needs."""
    rng = np.random.default_rng(0)
    layers = [f"encoder.blocks.{b}.layers.{i}" for b in range(blocks) for i in range(per_block)]
    params = [f"{layer}.{k}" for layer in layers for k in ("weight", "bias")]
    series = 10 ** rng.normal(-2, 0.5, steps + len(params))
    series[10] = np.nan
    layer_norms = np.lib.stride_tricks.sliding_window_view(series[: steps + len(layers) - 1], len(layers))
    parameter_norms = np.lib.stride_tricks.sliding_window_view(series[: steps + len(params) - 1], len(params))
    total = 1 + rng.gamma(2, 1, steps)
    grad = GradNormRecord(parameters=params, layers=layers, parameter_layer=[i // 2 for i in range(len(params))],
                          backward_order=params[::-1], steps=list(range(steps)), stride=1, total_norm=total,
                          layer_norms=layer_norms, parameter_norms=parameter_norms,
                          parameter_stats=_stats_table(len(params), steps),
                          layer_stats=_stats_table(len(layers), steps),
                          total_stats=Stats(steps, float(total.min()), float(total.max()), float(total.mean()), None),
                          no_gradient=[], steps_seen=steps)
    act = ActivationGradRecord(modules=layers, steps=list(range(steps)), norms=layer_norms,
                               stats=_stats_table(len(layers), steps))
    acted = total > 2.0
    rolling = np.convolve(acted.astype(float), np.ones(50))[:steps] / np.minimum(np.arange(1, steps + 1), 50)
    calls = [ClipCall(step=s, kind="norm", threshold=2.0, total_norm=t, coefficient=min(1.0, 2.0 / t),
                      clipped_norm=min(t, 2.0), acted=t > 2.0) for s, t in enumerate(total.tolist())]
    clip = ClippingRecord(calls=calls,
                          summary=ClipSummary(calls=steps, norm_calls=steps, clipped_fraction=float(acted.mean()),
                                              rolling_clipped_fraction=rolling))
    update = UpdateRatioRecord(layers=layers, steps=list(range(0, steps, 50)), ratios=1e-2 * layer_norms[: steps // 50])
    per_layer = 10**7 // len(layers)
    freeze = FreezeRecord(parameters=10**7, trainable=10**7, frozen=0, frozen_subtrees=[],
                          table=[FreezeRow(module=n, tensors=2, trainable=per_layer, frozen=0,
                                           in_optimizer=per_layer, not_in_optimizer=0, lr=[1e-3], weight_decay=[0.0],
                                           changed=2) for n in layers])
    tree = [ModuleNode(path="", name="", depth=0, class_name="BigNet", total_params=10**7, trainable_params=10**7)]
    tree += [ModuleNode(path=n, name=n.rpartition(".")[2], depth=n.count(".") + 1, class_name="Linear",
                        own_params=per_layer, total_params=per_layer, trainable_params=per_layer) for n in layers]
    for rec, where in ((grad, "probes.grad_norm"), (act, "probes.activation_grad"), (update, "probes.update_ratio")):
        rec.validate(where)                                    # a consistent record
    for table in (grad.parameter_stats, grad.layer_stats, act.stats):
        table.validate("stats")
    return RunRecord(model=ModelInfo("BigNet", 10**7, 10**7, "cuda:0"), steps=steps, backwards=steps, findings=[],
                     probes={"grad_norm": grad, "activation_grad": act, "clipping": clip, "update_ratio": update,
                             "freeze": freeze},
                     registration=Registration(tree=tree))


def test_a_large_run_renders_into_a_small_page(tmp_path: Path) -> None:
    record = big_record()
    path = write_html(record, tmp_path / "big.html")
    size = path.stat().st_size
    assert size < 10 * 1024 * 1024, f"the page is {size / 1e6:.1f} MB"
    tree = Tree(path.read_text(encoding="utf-8"))
    data = embedded(tree)
    grad = data["probes"]["grad_norm"]
    assert grad.get("parameter_norms") is None                     # dropped, too large to embed
    assert len(grad["parameter_stats"]["count"]) == 2000 and len(grad["parameters"]) == 2000
    assert len(grad["layer_norms"]) * 1000 <= EMBED_MAX_VALUES and len(grad["steps"]) == len(grad["total_norm"])
    assert len(grad["steps"]) == len(grad["layer_norms"]) and grad["steps"][0] == 0 and grad["steps"][-1] == 19_999
    assert len(data["probes"]["clipping"]["calls"]) <= EMBED_MAX_CALLS
    assert len(data["probes"]["activation_grad"]["norms"]) * 1000 <= EMBED_MAX_VALUES
    assert len(data["probes"]["update_ratio"]["ratios"]) * 1000 <= EMBED_MAX_VALUES
    assert any("parameter_norms: dropped" in note for note in data["report_trimmed"])
    assert "40 groups" in find(tree, "fig-grad-heatmap").text()
    assert "could not be drawn" not in tree.root.text()
    trimmed = RunRecord.from_json(data)                         # the trimmed record is still a record
    assert trimmed.probe(GradNormRecord) is not None and trimmed.extra["report_trimmed"] == data["report_trimmed"]


def test_trim_record_leaves_the_input_alone_and_small_runs_whole(record: RunRecord) -> None:
    trimmed, notes = trim_record(record)
    assert notes == [] and trimmed.to_json() == record.to_json()
    assert trimmed.probe(GradNormRecord) is record.probe(GradNormRecord)
    big = big_record(blocks=4, per_block=5, steps=5000)
    grad = big.probe(GradNormRecord)
    assert grad is not None and grad.parameter_norms is not None
    rows_before = grad.layer_norms.shape[0]
    trimmed, notes = trim_record(big)
    assert notes and trimmed.extra["report_trimmed"] == notes
    after = big.probe(GradNormRecord)
    assert after is grad and after.layer_norms.shape[0] == rows_before     # input unchanged
    assert after.parameter_norms is not None and "report_trimmed" not in big.extra
    kept = trimmed.probe(GradNormRecord)
    assert kept is not None and kept.parameter_norms is None
    assert kept.steps[0] == 0 and kept.steps[-1] == 4999            # ends kept
    np.testing.assert_array_equal(kept.layer_norms[-1], grad.layer_norms[-1])
    assert len(kept.steps) == len(kept.layer_norms) == len(kept.total_norm) < 5000
    assert kept.parameter_stats.to_json() == grad.parameter_stats.to_json()   # summaries stay whole
