"""Reference runs on real training (CPU, a tiny MLP, 100 steps): two seeds of a healthy run stay
inside each other's envelope, and the same run with a bug injected at step 50 is reported at that
step and layer with what changed, online through ``ReferenceProbe`` and offline through
``gradscope run --reference`` and ``gradscope compare --reference``.

Step times (GS810) depend on the machine and its load: they are never what a test here decides on
(their envelope is tested on synthetic numbers in test_reference.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest
import torch
from click.testing import CliRunner
from torch import nn

import gradscope
from gradscope.cli import main
from gradscope.findings import Finding
from gradscope.probes.base import Probe
from gradscope.probes.reference import ReferenceProbe
from gradscope.records import GradNormRecord, ReferenceRecord, RunRecord, load_record, write_record
from gradscope.reference import build_envelope, judge_against

STEPS = 100
AT = 50                     # the step at which a bug is injected
KEPT = 32                   # max_kept_steps of the runs with a bug: rows thinned to one step in 4
MODELS = Path(__file__).resolve().parent / "models"
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(2048, 16, generator=g)
    w = torch.randn(16, 4, generator=g)
    return x, (x @ w + 0.3 * torch.randn(2048, 4, generator=g)).argmax(1)


X, Y = _data()


def train(seed: int, bug: str | None = None, probes: Sequence[str | Probe] | None = None,
          max_kept_steps: int = 2048, check: dict[int, list[str]] | None = None) -> RunRecord:
    """Adam on an MLP, clipping at max_norm 1; ``bug`` is injected right before step ``AT``.
    ``check``: the departures' codes the reference probe holds after each of these steps."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    max_norm = 1.0
    with gradscope.watch(model, optimizer, update_ratio_every=5, flush_every=20, max_kept_steps=max_kept_steps,
                         probes=probes) as scope:
        for step in range(STEPS):
            if step == AT and bug == "lr x100":
                for group in optimizer.param_groups:
                    group["lr"] *= 100
            elif step == AT and bug == "layer frozen":
                model[2].requires_grad_(False)
            elif step == AT and bug == "clip threshold":
                max_norm = 0.05
            elif step == AT and bug == "NaN source":
                with torch.no_grad():
                    model[2].weight[0, 0] = float("nan")   # a corrupt weight: its output is NaN from here
            idx = torch.randint(0, len(X), (32,), generator=g)
            loss = nn.functional.cross_entropy(model(X[idx]), Y[idx])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            optimizer.step()
            if check and step in check:
                probe = scope.get_probe("reference")
                assert isinstance(probe, ReferenceProbe)
                check[step] = [d.code for d in probe.departures]
    return scope.to_record()


def reference_findings(record: RunRecord) -> list[Finding]:
    return [f for f in record.findings if f.code.startswith("GS8") and f.code != "GS810"]


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("good")
    paths = []
    for seed in (0, 1):
        paths.append(write_record(train(seed), folder / f"good{seed}.json"))
    return paths


def test_two_seeds_of_a_healthy_run_are_within_each_others_envelope(good: list[Path]) -> None:
    one, two = load_record(good[0]), load_record(good[1])
    for run, ref in ((two, one), (one, two)):   # one reference: its tolerance
        found = [d for d in judge_against(run, build_envelope([ref])).departures if d.code != "GS810"]
        assert found == [], [d.message for d in found]
    # a third seed, online, against both
    record = train(2, probes=["default", ReferenceProbe(good)])
    assert reference_findings(record) == [], [f.message for f in reference_findings(record)]
    ref = record.probe(ReferenceRecord)
    assert ref is not None and ref.references == ["good0.json", "good1.json"] and ref.compared_until == STEPS - 1


@pytest.mark.parametrize("bug, code, where, said", [
    pytest.param("lr x100", "GS806", "Adam#0.0", "0.1 where the references had 0.001 (100x theirs)", id="lr x100"),
    pytest.param("layer frozen", "GS801", "2", "it fell to 0 (no gradient reached it: frozen or detached)",
                 id="a layer frozen"),
    pytest.param("clip threshold", "GS804", "clip_grad_norm_", "clipping changed at step 50: threshold 0.05",
                 id="a clip threshold changed"),
    pytest.param("NaN source", "GS801", "2", "became non-finite (NaN/Inf) at step 50", id="a NaN source"),
])
def test_a_bug_at_step_50_is_reported_at_its_step_and_layer(good: list[Path], bug: str, code: str, where: str,
                                                           said: str) -> None:
    seen: dict[int, list[str]] = {AT - 1: [], AT + 11: []}
    record = train(2, bug, probes=["default", ReferenceProbe(good)], max_kept_steps=KEPT, check=seen)
    grad = record.probe(GradNormRecord)
    assert grad is not None and grad.stride == 4      # the rows were thinned: one step in 4 kept
    ref = record.probe(ReferenceRecord)
    assert ref is not None
    first = {}
    for d in ref.departures:
        first.setdefault(d.code, d)
    assert code in first, [d.message for d in ref.departures]
    d = first[code]
    assert d.where == where and d.step is not None and AT <= d.step < AT + grad.stride, d.message
    assert said in d.message
    assert any(f.code == code and f.where == where for f in record.findings)   # the run's findings carry it
    # judged at flushes (every 20 steps): nothing before the bug, the departure by the flush at step 60
    assert [c for c in seen[AT - 1] if c != "GS810"] == []
    assert code in seen[AT + 11]
    # what else changed, said by the other departures
    said_all = " | ".join(x.message for x in ref.departures)
    if bug == "layer frozen":
        assert "2 was frozen during the run (requires_grad False, 2 parameter tensors)" in said_all
        assert "2 has had no gradient since step" in said_all
    if bug == "NaN source":
        assert "GS205 (non-finite (NaN/Inf) gradient) is new" in said_all
        assert "the loss became non-finite at step 50" in said_all


def test_the_probe_has_no_per_step_work() -> None:
    """It reads only host data, at flushes: no hook of its own runs inside a step."""
    for method in ("on_backward_end", "on_step_begin", "on_step_end"):
        assert getattr(ReferenceProbe, method) is getattr(Probe, method)


def test_a_missing_reference_fails_before_training(tmp_path: Path) -> None:
    with pytest.raises(gradscope.GradscopeError, match="missing.json: no such file"):
        ReferenceProbe(tmp_path / "missing.json")
    with pytest.raises(gradscope.GradscopeError, match="expected a path to a JSON record"):
        ReferenceProbe(3)  # type: ignore[arg-type]


def test_watch_reference_is_the_reference_probe(good: list[Path], tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 4))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, optimizer, reference=good[0]) as scope:
        pass
    assert isinstance(scope.get_probe("reference"), ReferenceProbe)
    with pytest.raises(gradscope.GradscopeError, match="reference= and a ReferenceProbe"):
        gradscope.watch(model, optimizer, reference=good[0], probes=["default", ReferenceProbe(good[0])])
    with pytest.raises(gradscope.GradscopeError, match="missing.json: no such file"):
        gradscope.watch(model, optimizer, reference=tmp_path / "missing.json")


# ---- gradscope run --reference -------------------------------------------------------------------
def invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args], terminal_width=100)


def test_gradscope_run_reference_puts_the_departures_in_the_record_and_report(tmp_path: Path) -> None:
    common = ["--train-size", "256", "--test-size", "32", "--max-steps", "24", "-q"]
    result = invoke("run", MODELS / "healthy_mlp.py", "--out", tmp_path / "good", *common)
    assert result.exit_code == 0, result.output
    good = tmp_path / "good.json"
    (tmp_path / "good" / "run.json").rename(good)
    result = invoke("run", MODELS / "healthy_mlp.py", "--out", tmp_path / "new", "--lr", "0.05",
                    "--reference", good, *common)
    assert result.exit_code == 0, result.output
    record = load_record(tmp_path / "new" / "run.json")
    ref = record.probe(ReferenceRecord)
    assert ref is not None and ref.references == ["good.json"]
    (gs805,) = [f for f in record.findings if f.code == "GS805"]
    assert "starts at 0.05 where the reference run (good.json) started at 0.001" in gs805.message
    assert record.run is not None and record.run.options["reference"] == [str(good)]
    assert "--reference" in record.run.command
    page = (tmp_path / "new" / "report.html").read_text(encoding="utf-8")
    assert 'id="reference"' in page and "Against the reference runs" in page
    # the same record judged again by compare --reference says the same
    out = invoke("compare", "--reference", good, tmp_path / "new" / "run.json", "-o", tmp_path / "cmp.html")
    assert out.exit_code == 0 and "GS805" in out.output


def test_gradscope_run_reference_refuses_bad_references_before_training(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"schema": "gradscope.record", "version": 99}', encoding="utf-8")
    result = invoke("run", MODELS / "healthy_mlp.py", "--out", tmp_path / "out", "--reference", broken, "-q")
    assert result.exit_code == 2 and "--reference" in result.output and "broken.json" in result.output
    assert "newer" in result.output and not (tmp_path / "out").exists()
    kept = invoke("run", MODELS / "healthy_mlp.py", "--out", tmp_path, "--reference", broken, "-q")
    assert kept.exit_code == 2 and "would overwrite the reference record" not in kept.output
    same = tmp_path / "run.json"
    same.write_text(broken.read_text(), encoding="utf-8")
    over = invoke("run", MODELS / "healthy_mlp.py", "--out", tmp_path, "--reference", same, "-q")
    assert over.exit_code == 2 and "would overwrite the reference record" in " ".join(over.output.split())


def test_gradscope_run_reference_of_a_script(tmp_path: Path) -> None:
    (tmp_path / "_common.py").write_text((SCRIPTS / "_common.py").read_text())
    script = tmp_path / "train.py"
    script.write_text((SCRIPTS / "healthy.py").read_text())
    result = invoke("run", script, "--out", tmp_path / "good", "-q", "--", "--steps", "30")
    assert result.exit_code == 0, result.output
    good = tmp_path / "good.json"
    (tmp_path / "good" / "run.json").rename(good)
    script.write_text((SCRIPTS / "healthy.py").read_text().replace(
        "max_norm=5.0)", "max_norm=5.0 if step < 15 else 0.5)"))
    result = invoke("run", script, "--out", tmp_path / "new", "--reference", good, "-q", "--", "--steps", "30")
    assert result.exit_code == 0, result.output
    record = load_record(tmp_path / "new" / "run.json")
    (gs804,) = [f for f in record.findings if f.code == "GS804"]
    assert "clipping changed at step 15: threshold 0.5" in gs804.message
