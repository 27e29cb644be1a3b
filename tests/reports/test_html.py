"""The HTML report, checked by structure: sections present for a full record and absent for a
minimal one, every finding with its hint, no URL anywhere, hostile names escaped in tables,
figures and the embedded JSON (which parses back to the record), and large runs kept small."""
from __future__ import annotations

import json
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from gradscope.errors import GradscopeError, RecordError
from gradscope.reports.html import (EMBED_MAX_VALUES, embed_json, render_html, trim_record,
                                    write_html)
from gradscope.reports.record import _clean, load_record, write_record
from gradscope.scope import watch

HOSTILE = "<script>alert(1)</script>"
CLOSER = "</script><b>x</b>"
FULL_SECTIONS = {"verdict", "run", "model", "registration", "gradients", "activations", "clipping",
                 "freezing", "curves", "update-ratio", "dead-units", "loop", "timings", "lint",
                 "environment", "record"}


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


# ---- records -----------------------------------------------------------------------------------
def _hostile_class() -> type[nn.Module]:
    def forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    return type(HOSTILE, (nn.Module,), {"forward": forward})


def realistic_record() -> dict[str, Any]:
    """A short real run under watch(activations="all") with clipping, plus what `gradscope run`
    adds (curves, run, environment, registration, timings, lint), with hostile names."""
    torch.manual_seed(0)
    model = _hostile_class()()
    model.layers = nn.Sequential()
    model.layers.add_module("conv", nn.Conv2d(1, 4, 3))
    model.layers.add_module("relu", nn.ReLU())
    model.layers.add_module("flat", nn.Flatten())
    model.layers.add_module(HOSTILE, nn.Linear(4 * 6 * 6, 16))
    model.layers.add_module(CLOSER, nn.ReLU())
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
                out = model(x[i * 8:(i + 1) * 8])
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
    record["curves"] = curves
    record["run"] = {"command": f"gradscope run model.py --clip-norm 0.5 -- --name '{HOSTILE}'", "file": "model.py",
                     "options": {"epochs": 3, "clip_norm": 0.5, "note": "see https://example.org/x"},
                     "data": "glyphs (1x8x8)", "device": "cpu", "status": "completed", "steps": 24}
    record["environment"] = {"python": "3.11", "torch": torch.__version__, "torchvision": "0.x",
                             "platform": "Linux", "cuda": None, "gradscope": "0.1.0"}
    record["registration"] = {"tree": [
        {"path": "", "class": HOSTILE, "own_parameters": 0, "parameters": 2411, "trainable": 2411,
         "unregistered": [{"attribute": "extra", "kind": "module in a list"}]},
        {"path": "layers", "class": "Sequential", "own_parameters": 0, "parameters": 2411, "trainable": 2411,
         "unregistered": []},
        {"path": f"layers.{HOSTILE}", "class": "Linear", "own_parameters": 592, "parameters": 592,
         "trainable": 592, "unregistered": []}]}
    record["timings"] = {"phases": {"forward": {"median_ms": 0.8, "p90_ms": 1.1},
                                    "backward": {"median_ms": 1.5, "p90_ms": 2.0},
                                    "optimizer": {"median_ms": 0.2, "p90_ms": 0.3}},
                         "steps_per_second": 240.0}
    lint = {"code": "GS508", "severity": "info", "where": "model.py:3",
            "message": f"pretrained=True is deprecated ({HOSTILE}); see https://pytorch.org",
            "hint": "Use weights=None or a weights enum."}
    record["lint"] = [lint]
    record["findings"] = record["findings"] + [lint, {
        "code": "GS101", "severity": "error", "where": HOSTILE,
        "message": f"{CLOSER} holds a submodule in a plain list", "hint": "Use nn.ModuleList & friends."}]
    return record


@pytest.fixture(scope="module")
def record() -> dict[str, Any]:
    return realistic_record()


@pytest.fixture(scope="module")
def page(record: dict[str, Any]) -> str:
    return render_html(record)


@pytest.fixture(scope="module")
def tree(page: str) -> Tree:
    return Tree(page)


MINIMAL = {"schema": "gradscope.record", "version": 1, "findings": []}


# ---- structure ---------------------------------------------------------------------------------
def test_full_record_has_every_section(tree: Tree, record: dict[str, Any]) -> None:
    assert record["probes"]["clipping"]["calls"]          # the run really clipped
    assert sections(tree) == FULL_SECTIONS
    links = {a.attrs["href"] for a in tree.all("a") if a.attrs.get("href", "").startswith("#")}
    assert links == {f"#{s}" for s in FULL_SECTIONS}        # the table of contents matches


def test_full_record_draws_its_figures(tree: Tree, page: str) -> None:
    figures = {n.attrs["id"] for n in tree.all("figure")}
    assert figures == {"fig-total-norm", "fig-grad-heatmap", "fig-grad-flow", "fig-activation-flow",
                       "fig-activation-heatmap", "fig-clipping", "fig-curves", "fig-update-ratio",
                       "fig-timings"}
    assert "could not be drawn" not in page
    assert len(tree.all("svg")) == len(figures)


def test_minimal_record_has_only_the_verdict_and_the_record(tree: Tree) -> None:
    page = render_html(dict(MINIMAL))
    small = Tree(page)
    assert sections(small) == {"verdict", "record"}
    assert "No findings" in small.by_id("verdict").text()
    assert not small.all("svg") and not small.all("table")
    assert small.by_id("table-options") is None
    assert embedded(small) == MINIMAL


@pytest.mark.parametrize("present", ["curves", "timings", "environment", "run", "lint"])
def test_each_optional_part_alone_adds_its_section(present: str, record: dict[str, Any]) -> None:
    body = dict(MINIMAL, **{present: record[present]})
    assert sections(Tree(render_html(body))) == {"verdict", "record", present}


def test_every_finding_is_shown_with_its_hint_most_severe_first(tree: Tree, record: dict[str, Any]) -> None:
    listed = [li for li in tree.by_id("verdict").walk() if li.tag == "li"]
    assert len(listed) == len(record["findings"])
    texts = [li.text() for li in listed]
    for f in record["findings"]:
        match = [t for t in texts if f["message"] in t]
        assert match, f"finding {f['code']} missing"
        assert f["hint"] in match[0] and f["code"] in match[0] and f["where"] in match[0]
    severities = [li.attrs["class"] for li in listed]
    rank = {"error": 0, "warning": 1, "info": 2}
    assert severities == sorted(severities, key=rank.__getitem__) and severities[0] == "error"
    counts = tree.by_id("verdict").text()
    assert f"{severities.count('error')} error" in counts and f"{severities.count('warning')} warning" in counts


def test_a_missing_hint_comes_from_the_catalog() -> None:
    from gradscope.findings import CATALOG

    body = dict(MINIMAL, findings=[{"code": "GS204", "severity": "warning", "where": "fc", "message": "big"}])
    assert CATALOG["GS204"].hint in Tree(render_html(body)).by_id("verdict").text()


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
    assert HOSTILE in tree.by_id("findings").text() and CLOSER in tree.by_id("findings").text()
    flow = tree.by_id("fig-grad-flow")
    assert any(HOSTILE in t.text() for t in flow.walk() if t.tag == "text")   # SVG text
    assert escaped in page
    assert HOSTILE in tree.all("title")[0].text()                # <title> is the root class name


def test_embedded_json_parses_back_to_the_record(tree: Tree, record: dict[str, Any]) -> None:
    data = embedded(tree)
    assert "report_trimmed" not in data
    assert data == json.loads(json.dumps(_clean(record)))
    raw = tree.by_id("gradscope-record").text()
    assert "<" not in raw and "://" not in raw and "\\u003c/script\\u003e" in raw


def test_embed_json_round_trips_awkward_strings() -> None:
    value = {"a": "</script><!-- & \u2028 http://x", "b": [float("nan"), float("inf")], "c": "<\\/>"}
    text = embed_json(value)
    assert "</" not in text and "<!--" not in text and "://" not in text
    assert json.loads(text) == {"a": value["a"], "b": ["NaN", "Infinity"], "c": "<\\/>"}


def test_sortable_tables_carry_numeric_sort_keys(tree: Tree) -> None:
    table = tree.by_id("table-layer-stats")
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
    verdict = Tree(render_html(body)).by_id("verdict").text()
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
    assert "NaN/Inf" in tree.by_id("fig-grad-heatmap").text()
    assert any("flag" in r.attrs.get("class", "") for r in tree.by_id("table-layer-stats").walk() if r.tag == "tr")


def test_a_record_from_gradscope_run_renders_every_section_it_has(tmp_path: Path) -> None:
    from gradscope.runner import RunOptions, run

    outcome = run(RunOptions(epochs=1, max_steps=12, train_size=256, test_size=128, clip_norm=1.0,
                             out=tmp_path, command="gradscope run --clip-norm 1"))
    assert outcome.html_path is not None and not outcome.messages
    page = outcome.html_path.read_text(encoding="utf-8")
    tree = Tree(page)
    assert {"run", "model", "registration", "gradients", "clipping", "freezing", "curves", "timings",
            "loop", "environment", "record"} <= sections(tree)
    assert "could not be drawn" not in page and "http://" not in page
    registration = tree.by_id("table-registration").text()
    assert "Conv2d" in registration and "Linear" in registration
    assert {"fig-timings", "fig-curves", "fig-clipping"} <= {n.attrs["id"] for n in tree.all("figure")}
    assert embedded(tree) == json.loads(outcome.json_path.read_text(encoding="utf-8"))


def test_timing_probe_rows_and_the_newer_registration_fields() -> None:
    timing = {"phases": ["forward", "backward", "step"], "steps": [0, 1, 2, 3],
              "ms": [[1.0, 2.0, 4.0], [1.0, 3.0, 5.0], [2.0, 2.0, 5.0], [1.0, 2.0, 4.0]], "clock": "perf_counter_ns"}
    tree_rows = [{"path": "", "name": "Net", "depth": 0, "class_name": "Net", "own_params": 0,
                  "total_params": 30, "trainable_params": 30,
                  "unregistered": [{"attribute": "blocks", "kind": "module", "count": 2, "code": "GS101",
                                    "severity": "error"}]},
                 {"path": "fc", "name": "fc", "depth": 1, "class_name": "Linear", "own_params": 30,
                  "total_params": 30, "trainable_params": 30, "unregistered": []}]
    body = dict(MINIMAL, probes={"timing": timing}, registration={"tree": tree_rows})
    tree = Tree(render_html(body))
    assert {"timings", "registration"} <= sections(tree)
    rows = [r for r in tree.by_id("table-timings").walk() if r.tag == "tr"][1:]
    medians = {r.children[0].text(): float(r.children[1].attrs["data-v"]) for r in rows}
    assert medians == {"forward": 1.0, "backward": 2.0, "step": 4.5}     # medians of the rows
    flagged = [r for r in tree.by_id("table-registration").walk() if r.tag == "tr" and r.attrs.get("class") == "flag"]
    assert len(flagged) == 1 and "blocks: 2 modules, GS101" in flagged[0].text()
    assert "Net" in flagged[0].text() and "30" in tree.by_id("table-registration").text()


def test_lint_section_says_clean_only_when_a_file_was_linted() -> None:
    linted = Tree(render_html(dict(MINIMAL, lint=[], run={"file": "train.py", "status": "completed"})))
    assert "lint" in sections(linted) and "passed every static check" in linted.by_id("lint").text()
    builtin = Tree(render_html(dict(MINIMAL, lint=[], run={"file": "<notes: Full Loop CNN>"})))
    assert "lint" not in sections(builtin)


def test_unknown_probes_are_shown_not_lost() -> None:
    body = dict(MINIMAL, probes={"future_probe": {"answer": 42, "name": HOSTILE}})
    tree = Tree(render_html(body))
    assert "other" in sections(tree)
    assert '"answer": 42' in tree.by_id("other").text() and HOSTILE in tree.by_id("other").text()


def test_malformed_sections_still_give_a_page() -> None:
    body = dict(MINIMAL, probes={"grad_norm": {"layers": "x", "layer_norms": [[1, "a"]], "total_norm": "bad"},
                                 "clipping": {"calls": ["junk", {"kind": "norm"}]}},
                curves={"epoch": "x"}, timings={"phases": []}, model=[1, 2])
    tree = Tree(render_html(body))
    assert "verdict" in sections(tree) and embedded(tree)["curves"] == {"epoch": "x"}


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(GradscopeError, match="must be a dict"):
        render_html([1, 2])  # type: ignore[arg-type]


def test_write_html_is_atomic_and_reads_a_loaded_record(tmp_path: Path, record: dict[str, Any]) -> None:
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
    with pytest.raises(RecordError, match=r'"findings"\[0\]\.severity should be one of error'):
        load_record(path)
    path.write_text(json.dumps(dict(MINIMAL, curves={"test_loss": 3})), encoding="utf-8")
    with pytest.raises(RecordError, match='"curves".test_loss should be a list'):
        load_record(path)


# ---- large runs --------------------------------------------------------------------------------
def big_record(blocks: int = 40, per_block: int = 25, steps: int = 20_000) -> dict[str, Any]:
    """2,000 parameter tensors (1,000 layers) and 20,000 undecimated steps. Rows cycle through a
    few distinct lists so the test builds fast; the renderer still reads every row it needs."""
    import numpy as np

    rng = np.random.default_rng(0)
    layers = [f"encoder.blocks.{b}.layers.{i}" for b in range(blocks) for i in range(per_block)]
    params = [f"{layer}.{k}" for layer in layers for k in ("weight", "bias")]
    depth = np.linspace(-4, 0, len(layers))
    rows = [(10 ** (depth + rng.normal(0, 0.3, len(layers)))).tolist() for _ in range(31)]
    rows[3][7] = "NaN"
    prow = [(10 ** (np.repeat(depth, 2) + rng.normal(0, 0.3, len(params)))).tolist() for _ in range(31)]
    stats = {n: {"count": steps, "min": 1e-5, "max": 2.0, "mean": 0.1, "first_nonfinite_step": None}
             for n in params + layers}
    total = (1 + rng.gamma(2, 1, steps)).tolist()
    return {
        "schema": "gradscope.record", "version": 1, "model": {"class": "BigNet", "parameters": 10**7,
                                                              "trainable": 10**7, "device": "cuda:0"},
        "steps": steps, "findings": [],
        "probes": {
            "grad_norm": {"parameters": params, "layers": layers, "steps": list(range(steps)), "stride": 1,
                          "total_norm": total, "layer_norms": [rows[s % 31] for s in range(steps)],
                          "parameter_norms": [prow[s % 31] for s in range(steps)],
                          "parameter_stats": {p: stats[p] for p in params},
                          "layer_stats": {n: stats[n] for n in layers}},
            "activation_grad": {"modules": layers, "steps": list(range(steps)),
                                "norms": [rows[s % 31] for s in range(steps)],
                                "stats": {n: stats[n] for n in layers}},
            "clipping": {"calls": [{"step": s, "kind": "norm", "threshold": 2.0, "total_norm": t,
                                    "clipped_norm": min(t, 2.0), "acted": t > 2.0} for s, t in enumerate(total)],
                         "summary": {"calls": steps, "clipped_fraction": 0.6,
                                     "rolling_clipped_fraction": [0.6] * steps}},
            "update_ratio": {"layers": layers, "steps": list(range(0, steps, 50)),
                             "ratios": [rows[s % 31] for s in range(steps // 50)]},
            "freeze": {"parameters": 10**7, "trainable": 10**7, "frozen": 0, "frozen_subtrees": [],
                       "table": [{"module": n, "trainable": 10, "frozen": 0, "in_optimizer": 10,
                                  "not_in_optimizer": 0, "lr": [1e-3], "weight_decay": [0.0], "changed": 2,
                                  "tensors": 2} for n in layers]},
        },
        "registration": {"tree": [{"path": n, "class": "Linear", "own_parameters": 10, "parameters": 10,
                                   "trainable": 10, "unregistered": []} for n in layers]},
    }


def test_a_large_run_renders_quickly_into_a_small_page(tmp_path: Path) -> None:
    record = big_record()
    started = time.perf_counter()
    path = write_html(record, tmp_path / "big.html")
    seconds = time.perf_counter() - started
    size = path.stat().st_size
    assert seconds < 60, f"rendering took {seconds:.1f} s"
    assert size < 10 * 1024 * 1024, f"the page is {size / 1e6:.1f} MB"
    tree = Tree(path.read_text(encoding="utf-8"))
    data = embedded(tree)
    grad = data["probes"]["grad_norm"]
    assert "parameter_norms" not in grad and len(grad["parameter_stats"]) == 2000
    assert len(grad["layer_norms"]) * 1000 <= EMBED_MAX_VALUES and len(grad["steps"]) == len(grad["total_norm"])
    assert len(data["probes"]["clipping"]["calls"]) <= 2048
    assert any("parameter_norms: dropped" in note for note in data["report_trimmed"])
    assert "40 groups" in tree.by_id("fig-grad-heatmap").text()
    assert "could not be drawn" not in tree.root.text()


def test_trim_record_leaves_the_input_alone_and_small_runs_whole(record: dict[str, Any]) -> None:
    trimmed, notes = trim_record(record)
    assert notes == [] and trimmed == record
    big = big_record(blocks=4, per_block=5, steps=5000)
    rows_before = len(big["probes"]["grad_norm"]["layer_norms"])
    trimmed, notes = trim_record(big)
    assert len(big["probes"]["grad_norm"]["layer_norms"]) == rows_before      # input unchanged
    kept = trimmed["probes"]["grad_norm"]
    assert kept["steps"][0] == 0 and kept["steps"][-1] == 4999            # ends kept
    assert kept["layer_norms"][-1] == big["probes"]["grad_norm"]["layer_norms"][-1]
    assert len(kept["steps"]) == len(kept["layer_norms"]) == len(kept["total_norm"])
