"""Reference runs on synthetic records (no model, no torch in the judged code): the envelope, the
judge (GS801–GS810), the record, the compare page and `gradscope compare --reference`.

The real training runs (two seeds, bugs injected at step 50) are in test_reference_runs.py."""
from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
from click.testing import CliRunner

from gradscope.cli import main
from gradscope.findings import Finding, Severity, finding
from gradscope.records import (
    ClipCall,
    ClippingRecord,
    ClipSummary,
    Departure,
    FreezeRecord,
    GradNormRecord,
    LossRecord,
    LrRecord,
    ModelInfo,
    NonFiniteRecord,
    ReferenceRecord,
    RunRecord,
    Stats,
    StatsTable,
    TensorState,
    TimingRecord,
    UpdateRatioRecord,
    write_record,
)
from gradscope.reference import (
    at_steps,
    build_envelope,
    departure_findings,
    file_labels,
    judge_against,
    judge_reference,
    running_median,
)
from gradscope.reports.compare import render_compare
from gradscope.thresholds import Thresholds

STEPS = 100
LAYERS = ("fc1", "fc2", "fc3")
HOSTILE = "<script>alert(1)</script>"


# ---- synthetic records ---------------------------------------------------------------------------
def healthy(seed: int, steps: int = STEPS, scale: float = 1.0) -> np.ndarray:
    """A decaying norm with batch-to-batch noise of about 20%, different for each seed."""
    rng = np.random.default_rng(seed)
    k = np.arange(steps)
    return scale * (0.5 + np.exp(-k / 40)) * np.exp(rng.normal(0.0, 0.2, steps))


def grad_record(columns: dict[str, np.ndarray], steps: Sequence[int] | None = None, stride: int = 1,
                first_nonfinite: dict[str, int] | None = None) -> GradNormRecord:
    layers = list(columns)
    table = np.stack([columns[x] for x in layers], axis=1)
    kept = list(steps) if steps is not None else list(range(table.shape[0]))
    finite = np.where(np.isfinite(table), table, np.nan)
    firsts = [(first_nonfinite or {}).get(x) for x in layers]
    stats = StatsTable(count=[int(np.isfinite(table[:, j]).sum()) for j in range(len(layers))],
                       min=np.nanmin(finite, axis=0), max=np.nanmax(finite, axis=0), mean=np.nanmean(finite, axis=0),
                       first_nonfinite_step=firsts)
    total = np.sqrt((table ** 2).sum(axis=1))
    return GradNormRecord(parameters=[f"{x}.weight" for x in layers], layers=layers,
                          parameter_layer=list(range(len(layers))), backward_order=[], steps=kept, stride=stride,
                          total_norm=total, layer_norms=table, parameter_norms=table, parameter_stats=stats,
                          layer_stats=stats, total_stats=Stats(len(kept), None, None, None, None), no_gradient=[],
                          steps_seen=len(kept))


def lr_record(columns: dict[str, Sequence[float]]) -> LrRecord:
    table = np.array([list(v) for v in columns.values()], dtype=float).T
    return LrRecord(groups=list(columns), steps=list(range(table.shape[0])), lr=table)


def clip_record(thresholds: Sequence[float], totals: Sequence[float], kind: str = "norm") -> ClippingRecord:
    calls = [ClipCall(step=i, kind=kind, threshold=float(t), total_norm=float(n),  # type: ignore[arg-type]
                      coefficient=min(1.0, float(t / n)), clipped_norm=float(min(n, t)), acted=bool(n > t))
             for i, (t, n) in enumerate(zip(thresholds, totals))]
    return ClippingRecord(calls=calls, summary=ClipSummary(calls=len(calls), norm_calls=len(calls)))


def freeze_record(tensors: Sequence[TensorState]) -> FreezeRecord:
    total = sum(t.numel for t in tensors)
    trainable = sum(t.numel for t in tensors if t.trainable)
    return FreezeRecord(parameters=total, trainable=trainable, frozen=total - trainable, tensors=list(tensors))


def tensors(trainable: dict[str, bool] | None = None, end: dict[str, bool] | None = None,
            numel: dict[str, int] | None = None, decay: float = 0.0) -> list[TensorState]:
    out = []
    for layer in LAYERS:
        for part in ("weight", "bias"):
            name = f"{layer}.{part}"
            start = (trainable or {}).get(layer, True)
            out.append(TensorState(name=name, numel=(numel or {}).get(name, 64 if part == "weight" else 8),
                                   trainable=start, requires_grad=(end or {}).get(layer, start), in_optimizer=True,
                                   lr=1e-3, weight_decay=decay))
    return out


def run_record(seed: int, *, grad: GradNormRecord | None = None, loss: np.ndarray | None = None,
               lrs: LrRecord | None = None, clip: ClippingRecord | None = None,
               freeze: FreezeRecord | None = None, timing: TimingRecord | None = None,
               update: UpdateRatioRecord | None = None, findings: Sequence[Finding] = (),
               optimizers: Sequence[str] = ("Adam",), nonfinite: NonFiniteRecord | None = None,
               steps: int = STEPS) -> RunRecord:
    """A healthy run of ``steps`` steps by default: every probe the envelope reads, with noise of its seed."""
    probes = {
        "grad_norm": grad or grad_record({x: healthy(seed * 10 + i, steps, 1.0 / (i + 1))
                                          for i, x in enumerate(LAYERS)}),
        "loss": LossRecord(steps=list(range(steps)),
                           loss=loss if loss is not None else 2.3 * healthy(seed + 99, steps)),
        "lr": lrs or lr_record({"Adam#0.0": [1e-3] * steps}),
        "clipping": clip or clip_record([1.0] * steps, 0.9 * healthy(seed + 7, steps)),
        "freeze": freeze or freeze_record(tensors()),
        "update_ratio": update or UpdateRatioRecord(
            layers=list(LAYERS), steps=list(range(0, steps, 5)),
            ratios=np.stack([1e-3 * healthy(seed + 50 + i, len(range(0, steps, 5))) for i in range(3)], axis=1)),
    }
    if timing is not None:
        probes["timing"] = timing
    if nonfinite is not None:
        probes["nonfinite"] = nonfinite
    return RunRecord(model=ModelInfo("Net", 216, 216, "cpu"), steps=steps, backwards=steps,
                     optimizers=list(optimizers), findings=list(findings), probes=probes)


def departures(run: RunRecord, refs: Sequence[RunRecord], th: Thresholds | None = None) -> list[Departure]:
    return judge_against(run, build_envelope(refs), th).departures


def codes(found: Sequence[Departure]) -> list[str]:
    return [d.code for d in found]


def with_probe(run: RunRecord, name: str, record: object) -> RunRecord:
    return dataclasses.replace(run, probes={**run.probes, name: record})


def changed_from(seed: int, layer: str, at: int, factor: float) -> GradNormRecord:
    columns = {x: healthy(seed * 10 + i, STEPS, 1.0 / (i + 1)) for i, x in enumerate(LAYERS)}
    columns[layer] = columns[layer].copy()
    columns[layer][at:] *= factor
    return grad_record(columns)


# ---- the maths -----------------------------------------------------------------------------------
def test_the_running_median_removes_a_spike_and_keeps_the_step_of_a_change() -> None:
    spike = np.ones(20)
    spike[7] = 100.0
    assert np.allclose(running_median(spike), 1.0)
    step = np.r_[np.ones(10), 10 * np.ones(10)]
    smooth = running_median(step)
    assert np.flatnonzero(smooth > 5)[0] == 10
    last = np.ones(10)
    last[-1] = 100.0   # one odd last point: the window shrinks, it does not repeat the point
    assert np.allclose(running_median(last), 1.0)


def test_alignment_interpolates_inside_and_says_nothing_outside() -> None:
    steps = np.array([0.0, 4.0, 8.0])
    values = np.array([0.0, 4.0, -math.inf])
    got = at_steps(steps, values, np.array([2.0, 4.0, 6.0, 9.0]), "linear", np.minimum)
    assert got[0] == 2.0 and got[1] == 4.0
    assert got[2] == -math.inf          # between finite and -inf the low edge takes -inf: it only widens
    assert math.isnan(got[3])           # past the references' last step: no verdict
    previous = at_steps(steps, np.array([1.0, 2.0, 3.0]), np.array([5.0]), "previous")
    assert previous[0] == 2.0


# ---- healthy runs: no departure ------------------------------------------------------------------
def test_a_run_is_inside_its_own_envelope() -> None:
    run = run_record(0)
    assert departures(run, [run]) == []


@pytest.mark.parametrize("refs", [[1], [1, 2], [1, 2, 3]], ids=["one reference", "two", "three"])
def test_another_seed_of_a_healthy_run_is_inside_the_envelope(refs: list[int]) -> None:
    found = departures(run_record(0), [run_record(s) for s in refs])
    assert found == [], [d.message for d in found]


# ---- GS801 ---------------------------------------------------------------------------------------
def test_gs801_names_the_first_layer_and_step_where_the_norm_left() -> None:
    run = run_record(0, grad=changed_from(0, "fc2", 50, 20.0))
    (d,) = [d for d in departures(run, [run_record(1), run_record(2)]) if d.code == "GS801"]
    assert (d.where, d.step, d.severity) == ("fc2", 50, "warning")
    assert "the gradient norm of fc2 left the envelope of the 2 reference runs at step 50" in d.message
    assert "the other 2 layers stayed inside" in d.message
    assert d.value is not None and d.high is not None and d.value > d.high


def test_gs801_leaving_by_more_than_the_references_differ() -> None:
    """Two references a factor 3 apart: a run 2.5x above the higher one is inside (their spread
    widens the band by another factor 3), one 4x above it is outside."""
    ones = {x: np.ones(STEPS) for x in LAYERS}
    low = run_record(1, grad=grad_record(ones))
    high = run_record(2, grad=grad_record({x: 3 * v for x, v in ones.items()}))
    inside = run_record(0, grad=grad_record({x: 7.5 * v for x, v in ones.items()}))
    outside = run_record(0, grad=grad_record({x: 12.0 * v for x, v in ones.items()}))
    assert "GS801" not in codes(departures(inside, [low, high]))
    assert "GS801" in codes(departures(outside, [low, high]))
    # one reference: a band of / 4 .. x 4 (reference_tolerance), whatever the other seeds did
    assert "GS801" in codes(departures(inside, [low]))
    assert "GS801" not in codes(departures(inside, [low], Thresholds(reference_tolerance=8.0)))


def test_gs801_a_layer_that_stops_getting_a_gradient() -> None:
    run = run_record(0, grad=changed_from(0, "fc1", 60, 0.0))
    (d,) = [d for d in departures(run, [run_record(1)]) if d.code == "GS801"]
    assert (d.where, d.step, d.value) == ("fc1", 60, 0.0)
    assert "fell to 0 (no gradient reached it: frozen or detached)" in d.message


def test_gs801_a_nan_is_dated_exactly_and_names_the_module_that_produced_it() -> None:
    columns = {x: healthy(i, STEPS) for i, x in enumerate(LAYERS)}
    for x in LAYERS:
        columns[x][53:] = math.nan
    # thinned to every 4th step, the NaN shows from kept step 56; the statistics saw step 53
    kept = list(range(0, STEPS, 4))
    grad = grad_record({x: v[kept] for x, v in columns.items()}, steps=kept, stride=4,
                       first_nonfinite={x: 53 for x in LAYERS})
    run = run_record(0, grad=grad, nonfinite=NonFiniteRecord(first_nonfinite_output_step=53, located={"53": "fc2"}))
    (d,) = [d for d in departures(run, [run_record(1)]) if d.code == "GS801"]
    assert (d.where, d.step) == ("fc2", 53)
    assert "became non-finite (NaN/Inf) at step 53" in d.message and "2 other layers left it too" in d.message


def test_gs801_on_thinned_records_is_within_the_stride() -> None:
    """Records thin their rows evenly: a run that kept one step in 4 and references that kept
    every step, or every second, are aligned by step."""
    full = changed_from(0, "fc3", 50, 30.0)
    kept = list(range(0, STEPS, 4))
    thinned = grad_record({x: full.layer_norms[kept, j] for j, x in enumerate(full.layers)}, steps=kept, stride=4)
    ref_half = run_record(2)
    half = list(range(0, STEPS, 2))
    g = ref_half.probe(GradNormRecord)
    assert g is not None
    ref_half = with_probe(ref_half, "grad_norm", grad_record({x: g.layer_norms[half, j] for j, x in enumerate(LAYERS)},
                                                             steps=half, stride=2))
    (d,) = [d for d in departures(run_record(0, grad=thinned), [run_record(1), ref_half]) if d.code == "GS801"]
    assert d.where == "fc3" and 50 <= d.step < 50 + 4   # type: ignore[operator]
    assert "keeps one step in 4, so within 4 steps" in d.message


# ---- GS802, GS803 --------------------------------------------------------------------------------
def test_gs802_a_loss_that_diverges_or_goes_nan() -> None:
    loss = 2.3 * healthy(99, STEPS)
    up = loss.copy()
    up[70:] = 10.0
    (d,) = [d for d in departures(run_record(0, loss=up), [run_record(1)]) if d.code == "GS802"]
    assert (d.where, d.step) == ("loss", 70)
    nan = loss.copy()
    nan[40:] = math.nan
    (d,) = [d for d in departures(run_record(0, loss=nan), [run_record(1)]) if d.code == "GS802"]
    assert d.step == 40 and "the loss became non-finite at step 40" in d.message


def test_gs803_update_ratios_a_hundred_times_the_reference() -> None:
    steps = list(range(0, STEPS, 5))
    ratios = np.stack([1e-3 * healthy(60 + i, len(steps)) for i in range(3)], axis=1)
    ratios[10:, 0] *= 100   # from step 50
    run = run_record(0, update=UpdateRatioRecord(layers=list(LAYERS), steps=steps, ratios=ratios))
    (d,) = [d for d in departures(run, [run_record(1)]) if d.code == "GS803"]
    assert (d.where, d.step) == ("fc1", 50)


# ---- GS804 ---------------------------------------------------------------------------------------
def test_gs804_a_clip_threshold_changed_at_a_step() -> None:
    norms = 0.9 * healthy(7, STEPS)
    clip = clip_record([1.0] * 50 + [0.05] * 50, norms)
    (d,) = [d for d in departures(run_record(0, clip=clip), [run_record(1)]) if d.code == "GS804"]
    assert (d.where, d.step, d.value, d.low) == ("clip_grad_norm_", 50, 0.05, 1.0)
    assert "clipping changed at step 50: threshold 0.05 where the reference run (reference 1) clipped" in d.message


def test_gs804_clipping_missing_added_or_stopped() -> None:
    plain = run_record(0)
    none = with_probe(plain, "clipping", ClippingRecord())
    (d,) = [d for d in departures(none, [run_record(1)]) if d.code == "GS804"]
    assert "this run never clipped" in d.message
    unclipped = with_probe(run_record(1), "clipping", ClippingRecord())
    (d,) = [d for d in departures(plain, [unclipped]) if d.code == "GS804"]
    assert d.step == 0 and "where the reference run (reference 1) never clipped" in d.message
    stopped = clip_record([1.0] * 40, 0.9 * healthy(7, 40))
    (d,) = [d for d in departures(run_record(0, clip=stopped), [run_record(1)]) if d.code == "GS804"]
    assert d.step == 40 and "clipping stopped after step 39" in d.message


def test_gs804_the_clip_rate_left_the_references_range() -> None:
    low = clip_record([1.0] * STEPS, [0.5] * STEPS)                     # never acts
    always = clip_record([1.0] * STEPS, [0.5] * 60 + [2.0] * 40)        # acts on every call from step 60
    (d,) = [d for d in departures(run_record(0, clip=always), [run_record(1, clip=low)]) if d.code == "GS804"]
    assert d.quantity == "clip_rate" and 60 <= d.step < 60 + 50      # type: ignore[operator]


# ---- GS805, GS806 --------------------------------------------------------------------------------
def test_gs805_another_start_and_gs806_the_same_schedule_is_no_schedule_change() -> None:
    run = run_record(0, lrs=lr_record({"Adam#0.0": [1e-2] * STEPS}))
    found = departures(run, [run_record(1)])
    assert codes(found) == ["GS805"]
    assert found[0].where == "Adam#0.0" and "starts at 0.01 where the reference run (reference 1) started at 0.001" \
        in found[0].message


def test_gs806_a_learning_rate_multiplied_at_step_50() -> None:
    run = run_record(0, lrs=lr_record({"Adam#0.0": [1e-3] * 50 + [0.1] * 50}))
    (d,) = [d for d in departures(run, [run_record(1), run_record(2)]) if d.code.startswith("GS80")
            and d.quantity == "lr"]
    assert (d.code, d.where, d.step) == ("GS806", "Adam#0.0", 50)
    assert "0.1 where the references had 0.001 (100x theirs)" in d.message


def test_gs806_another_schedule_shape_from_another_start() -> None:
    decay = [1e-2 * 0.1 ** (k // 30) for k in range(STEPS)]
    ref = run_record(1, lrs=lr_record({"SGD#0.0": [1e-3 * 0.1 ** (k // 60) for k in range(STEPS)]}), optimizers=["SGD"])
    found = departures(run_record(0, lrs=lr_record({"SGD#0.0": decay}), optimizers=["SGD"]), [ref])
    assert [(d.code, d.step) for d in found if d.quantity == "lr"] == [("GS805", None), ("GS806", 30)]
    assert "schedule of SGD#0.0 differs" in found[-1].message


def test_gs805_optimizer_groups_and_weight_decay() -> None:
    run = run_record(0, optimizers=["SGD"], freeze=freeze_record(tensors(decay=0.01)),
                     lrs=lr_record({"SGD#0.0": [1e-3] * STEPS, "SGD#0.1": [1e-3] * STEPS}))
    found = [d for d in departures(run, [run_record(1)]) if d.code == "GS805"]
    said = " | ".join(d.message for d in found)
    assert "trains with SGD where the reference run (reference 1) used Adam" in said
    assert "2 param groups where the reference run (reference 1) had 1" in said
    assert "weight decay 0.01 where the reference run (reference 1) had 0, for 6 parameter tensors" in said
    # the first group is matched by position, not by the optimizer's name: its lr is the same
    assert not [d for d in found if d.quantity == "lr"]


# ---- GS807, GS808 --------------------------------------------------------------------------------
def test_gs807_parameters_added_removed_or_resized() -> None:
    states = [t for t in tensors(numel={"fc1.weight": 128}) if t.name != "fc3.bias"]
    states.append(TensorState(name="head.weight", numel=40))
    (d,) = [d for d in departures(run_record(0, freeze=freeze_record(states)), [run_record(1)]) if d.code == "GS807"]
    assert "1 parameter tensor no reference has (head.weight)" in d.message
    assert "1 parameter tensor of every reference missing (fc3.bias)" in d.message
    assert "fc1.weight: 128 values where the reference run (reference 1) had 64" in d.message


@pytest.mark.parametrize("start, end, ref_start, said", [
    pytest.param({"fc2": False}, None, None, "fc2 was frozen from the start", id="frozen from the start"),
    pytest.param(None, {"fc2": False}, None, "fc2 was frozen during the run", id="frozen during the run"),
    pytest.param(None, None, {"fc2": False}, "fc2 is trained here but frozen in", id="trained but frozen there"),
])
def test_gs808_frozen_layers(start: dict[str, bool] | None, end: dict[str, bool] | None,
                             ref_start: dict[str, bool] | None, said: str) -> None:
    run = run_record(0, freeze=freeze_record(tensors(trainable=start, end=end)))
    ref = run_record(1, freeze=freeze_record(tensors(trainable=ref_start)))
    (d,) = [d for d in departures(run, [ref]) if d.code == "GS808"]
    assert d.where == "fc2" and said in d.message


def test_gs808_says_since_when_a_layer_had_no_gradient() -> None:
    run = run_record(0, grad=changed_from(0, "fc2", 50, 0.0), freeze=freeze_record(tensors(end={"fc2": False})))
    (d,) = [d for d in departures(run, [run_record(1)]) if d.code == "GS808"]
    assert "fc2 has had no gradient since step 50" in d.message


# ---- GS809 ---------------------------------------------------------------------------------------
def test_gs809_findings_no_reference_had_with_their_severity() -> None:
    shared = finding("GS208", "fc1", "update ratio small")
    run = run_record(0, findings=[shared, finding("GS205", "fc2.weight", "NaN at step 3"),
                                  finding("GS801", "fc1", "a departure of its own")])
    found = [d for d in departures(run, [run_record(1, findings=[shared])]) if d.code == "GS809"]
    assert [(d.where, d.severity) for d in found] == [("fc2.weight", "error")]
    assert "GS205 (non-finite (NaN/Inf) gradient) is new: no reference run had it" in found[0].message
    (f,) = departure_findings(ReferenceRecord(departures=found))
    assert f.severity is Severity.ERROR and f.code == "GS809"


# ---- GS810: step times, on synthetic numbers only -------------------------------------------------
def timing_record(ms: dict[str, Sequence[float]]) -> TimingRecord:
    columns = list(ms)
    table = np.array([list(v) for v in ms.values()], dtype=float).T
    return TimingRecord(columns=columns, steps=list(range(table.shape[0])), ms=table, warmup_steps=5)


def test_gs810_a_phase_three_times_slower() -> None:
    ref = run_record(1, timing=timing_record({"data": [4.0] * STEPS, "forward": [10.0] * STEPS, "clip": [0.1] * STEPS}))
    slow = timing_record({"data": [4.0] * 30 + [12.0] * 70, "forward": [14.0] * STEPS, "clip": [0.4] * STEPS})
    found = [d for d in departures(run_record(0, timing=slow), [ref]) if d.code == "GS810"]
    # 1.4x forward is inside x/2..x2; 0.1 -> 0.4 ms is 4x, but less than 1 ms: noise, not a change
    assert [(d.where, d.step, d.severity) for d in found] == [("data", 30, "info")]
    assert "the data phase took 12 ms per step from step 30" in found[0].message
    assert not [d for d in departures(run_record(0, timing=slow), [ref], Thresholds(reference_time_factor=4.0))
                if d.code == "GS810"]


# ---- what cannot be compared, and the record ------------------------------------------------------
def test_notes_say_what_was_not_compared() -> None:
    long = run_record(0, steps=150)
    rec = judge_against(long, build_envelope([run_record(1)], ["good.json"]))
    assert rec.references == ["good.json"] and rec.reference_steps == [STEPS] and rec.compared_until == 99
    assert any("steps after 99 were not compared" in n for n in rec.notes)
    assert rec.departures == []


def test_the_record_round_trips_and_its_judge_gives_the_findings() -> None:
    run = run_record(0, grad=changed_from(0, "fc2", 50, 20.0))
    rec = judge_against(run, build_envelope([run_record(1)], ["good.json"]))
    again = ReferenceRecord.from_json(json.loads(json.dumps(rec.to_json())))
    assert again == rec
    findings = judge_reference(again, run, Thresholds())
    assert [f.code for f in findings] == codes(rec.departures) and findings[0].where == "fc2"
    whole = RunRecord.from_json(json.loads(json.dumps(with_probe(run, "reference", rec).to_json())))
    assert whole.probe(ReferenceRecord) == rec


def test_file_labels_are_names_unless_two_are_the_same() -> None:
    assert file_labels(["runs/good.json", "other.json"]) == ["good.json", "other.json"]
    assert file_labels(["a/run.json", "b/run.json"]) == ["a/run.json", "b/run.json"]


# ---- the compare page ----------------------------------------------------------------------------
def test_the_compare_page_has_the_section_with_the_bands_and_stays_safe() -> None:
    ref = run_record(1)
    run = run_record(0, grad=changed_from(0, "fc2", 50, 20.0), findings=[finding("GS101", HOSTILE, "see https://x.y")])
    envelope = build_envelope([ref], [f"good {HOSTILE}.json"])
    rec = judge_against(run, envelope)
    page = render_compare(ref, run, names=("good", "new"), reference=rec, envelope=envelope, thresholds=Thresholds())
    assert 'id="reference"' in page and 'href="#reference"' in page
    section = page[page.index('id="reference"'):page.index('id="numbers"')]
    assert "GS801" in section and "GS809" in section and "table-departures" in section
    assert 'id="fig-reference-grad-norm"' in section and 'id="fig-reference-loss"' in section
    assert "could not be drawn" not in page
    assert HOSTILE not in page and "http://" not in page and "https://" not in page
    raw = re.search(r'<script type="application/json" id="gradscope-record">(.*?)</script>', page, re.S)
    assert raw is not None and json.loads(raw.group(1))["reference"]["departures"][0]["code"] == "GS801"
    plain = render_compare(ref, run, names=("good", "new"))
    assert 'id="reference"' not in plain


def test_the_report_shows_the_reference_section() -> None:
    from gradscope.probes.reference import ReferenceProbe  # noqa: F401  declares the section
    from gradscope.reports.html import render_html

    run = run_record(0, grad=changed_from(0, "fc2", 50, 20.0))
    rec = judge_against(run, build_envelope([run_record(1)], ["good.json"]))
    page = render_html(dataclasses.replace(with_probe(run, "reference", rec), findings=departure_findings(rec)))
    section = page[page.index('id="reference"'):]
    assert "Against the reference runs" in section and "good.json" in section and "GS801" in section


# ---- gradscope compare --reference ---------------------------------------------------------------
def invoke(*args: str | Path):
    return CliRunner().invoke(main, [str(a) for a in args], terminal_width=100)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {"good": tmp_path / "good.json", "good2": tmp_path / "good2.json", "new": tmp_path / "new.json",
             "same": tmp_path / "same.json"}
    write_record(run_record(1), paths["good"])
    write_record(run_record(2), paths["good2"])
    write_record(run_record(0, grad=changed_from(0, "fc2", 50, 20.0)), paths["new"])
    write_record(run_record(3), paths["same"])
    return paths


def test_cli_compare_reference_prints_the_departures_and_writes_the_page(files: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    page = tmp_path / "cmp.html"
    result = invoke("compare", "--reference", files["good"], "--reference", files["good2"], files["new"], "-o", page)
    assert result.exit_code == 0, result.output
    assert "new.json against good.json, good2.json: 1 departure(s)" in " ".join(result.output.split())
    assert "GS801" in result.output and "fc2" in result.output and f"wrote {page}" in result.output
    assert 'id="reference"' in page.read_text(encoding="utf-8")
    failing = invoke("compare", "--reference", files["good"], files["new"], "-o", page, "--fail-on", "warning")
    assert failing.exit_code == 1
    quiet = invoke("compare", "--reference", files["good"], files["same"], "-o", page, "--fail-on", "warning")
    assert quiet.exit_code == 0 and "same.json against good.json: no departure" in " ".join(quiet.output.split())
    wide = invoke("compare", "--reference", files["good"], files["new"], "-o", page,
                  "--thresholds", "reference_tolerance=100")
    assert wide.exit_code == 0 and "no departure" in " ".join(wide.output.split())


@pytest.mark.parametrize("args, said", [
    pytest.param(["--reference", "{missing}", "{new}"], "--reference {missing}: no such file",
                 id="a missing reference"),
    pytest.param(["--reference", "{broken}", "{new}"], "--reference {broken}:1: not valid JSON", id="a broken one"),
    pytest.param(["{new}"], "compare needs two records", id="one record without a reference"),
    pytest.param(["--reference", "{good}", "{new}", "{good}"], "give the one record to judge",
                 id="two and a reference"),
    pytest.param(["{good}", "{new}", "--fail-on", "warning"], "--fail-on judges departures", id="fail-on alone"),
    pytest.param(["--reference", "{good}", "{new}", "-o", "{good}"], "would overwrite a reference record",
                 id="the page over the reference"),
])
def test_cli_compare_reference_bad_input_is_one_line_and_exit_2(files: dict[str, Path], tmp_path: Path,
                                                                args: list[str], said: str) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json", encoding="utf-8")
    names = {**{k: str(v) for k, v in files.items()}, "missing": str(tmp_path / "missing.json"), "broken": str(broken)}
    result = invoke("compare", *[a.format(**names) for a in args])
    assert result.exit_code == 2, result.output
    assert said.format(**names) in " ".join(result.output.split()) and "Traceback" not in result.output
    assert json.loads(files["good"].read_text())["schema"] == "gradscope.record"


def test_cli_plain_compare_is_unchanged(files: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "plain.html"
    result = invoke("compare", files["good"], files["new"], "-o", page)
    assert result.exit_code == 0 and result.output == f"wrote {page}\n"
    assert 'id="reference"' not in page.read_text(encoding="utf-8")
