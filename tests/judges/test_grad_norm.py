"""GS201-GS205: the grad-norm judge on synthetic records (no model, no torch, milliseconds).

Each record is built from per-step parameter norms the way the probe builds it: layer norms and
the total are the L2 combination of the parameter norms, and the statistics count finite values
only (``first_nonfinite_step`` marks the first NaN/Inf of each column).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.grad_norm import GROWTH_MIN_STEPS, judge_grad_norm
from gradscope.records import GradNormRecord, ModelInfo, ProbeRecord, RunRecord, Stats, StatsTable, load_record
from gradscope.thresholds import Thresholds

ROOT = "Net"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records_v1"


# ---- builders ------------------------------------------------------------------------------------
def stats_of(columns: np.ndarray, steps: Sequence[int]) -> StatsTable:
    """Statistics of each column of a (steps x columns) array, counting finite values only."""
    finite = np.isfinite(columns)
    count = finite.sum(axis=0).astype(int).tolist()
    with np.errstate(invalid="ignore"):
        masked = np.where(finite, columns, np.nan)
        lo = np.array([np.nanmin(c) if f.any() else np.nan for c, f in zip(masked.T, finite.T)])
        hi = np.array([np.nanmax(c) if f.any() else np.nan for c, f in zip(masked.T, finite.T)])
        mean = np.array([np.nanmean(c) if f.any() else np.nan for c, f in zip(masked.T, finite.T)])
    first = [next((steps[r] for r in range(len(steps)) if not f[r]), None) for f in finite.T]
    return StatsTable(count=count, min=lo, max=hi, mean=mean, first_nonfinite_step=first)


def grad_record(norms: Mapping[str, Sequence[float]], *, layer_of: dict[str, str] | None = None,
                backward_order: Sequence[str] | None = None, no_gradient: Sequence[str] | None = (),
                steps_seen: int | None | str = "all") -> GradNormRecord:
    """A consistent record from per-step norms of each parameter (a parameter's layer is its
    owning module unless ``layer_of`` says otherwise; backward order is output side first, by
    default the parameters in reverse)."""
    params = list(norms)
    layer_of = layer_of or {}
    layer_names: list[str] = []
    for p in params:
        layer = layer_of.get(p, p.rpartition(".")[0] or ROOT)
        if layer not in layer_names:
            layer_names.append(layer)
    parameter_layer = [layer_names.index(layer_of.get(p, p.rpartition(".")[0] or ROOT)) for p in params]
    columns = np.array([list(norms[p]) for p in params], dtype=float).T  # steps x params
    n = columns.shape[0]
    steps = list(range(n))
    layer_norms = np.zeros((n, len(layer_names)))
    for j, index in enumerate(parameter_layer):
        layer_norms[:, index] += columns[:, j] ** 2
    layer_norms = np.sqrt(layer_norms)
    total = np.sqrt((columns ** 2).sum(axis=1))
    return GradNormRecord(
        parameters=params, layers=layer_names, parameter_layer=parameter_layer,
        backward_order=list(backward_order) if backward_order is not None else params[::-1],
        steps=steps, total_norm=total, layer_norms=layer_norms, parameter_norms=columns,
        parameter_stats=stats_of(columns, steps), layer_stats=stats_of(layer_norms, steps),
        total_stats=stats_of(total.reshape(-1, 1), steps).row(0),
        no_gradient=list(no_gradient) if no_gradient is not None else None,
        steps_seen=n if steps_seen == "all" else steps_seen)  # type: ignore[arg-type]


def run_record(rec: GradNormRecord | None = None, *, backwards: int = 10, grad_scaler: bool | None = False,
               ) -> RunRecord:
    probes: dict[str, ProbeRecord] = {"grad_norm": rec} if rec is not None else {}
    return RunRecord(model=ModelInfo(class_name=ROOT, parameters=100, trainable=100), steps=backwards,
                     backwards=backwards, optimizers=["SGD"], grad_scaler=grad_scaler, probes=probes)


def judge(rec: GradNormRecord, th: Thresholds | None = None, **run: object) -> list[Finding]:
    return judge_grad_norm(rec, run_record(rec, **run), th or Thresholds())  # type: ignore[arg-type]


def codes(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def steady(value: float, n: int = 10) -> list[float]:
    return [value] * n


def layered(means: dict[str, float], n: int = 10) -> GradNormRecord:
    """One parameter per layer with a constant norm, listed input side first."""
    return grad_record({f"{layer}.weight": steady(m, n) for layer, m in means.items()})


HEALTHY = {"enc.weight": steady(0.5), "enc.bias": steady(0.1), "head.weight": steady(0.8),
           "head.bias": steady(0.2)}


# ---- the whole judge -----------------------------------------------------------------------------
def test_a_healthy_run_has_no_finding() -> None:
    assert judge(grad_record(HEALTHY)) == []


def test_a_run_without_backward_passes_is_not_judged() -> None:
    rec = grad_record({"enc.weight": steady(0.0), "head.weight": steady(float("nan"))},
                      no_gradient=["enc.weight"])
    assert judge(rec, backwards=0) == []


def test_a_record_without_parameters_is_not_judged() -> None:
    assert judge(GradNormRecord(no_gradient=[], steps_seen=0)) == []


# ---- GS201 ---------------------------------------------------------------------------------------
def test_gs201_names_the_layer_and_every_parameter_that_got_no_gradient() -> None:
    norms = {**HEALTHY, "enc.weight": steady(0.0), "enc.bias": steady(0.0)}
    (f,) = judge(grad_record(norms, no_gradient=["enc.weight", "enc.bias"]))
    assert (f.code, f.severity, f.where) == ("GS201", Severity.WARNING, "enc")
    assert "enc.weight, enc.bias (2 trainable parameters) never received a gradient" in f.message
    assert "in 10 backward passes" in f.message


def test_gs201_gives_one_finding_per_layer_and_names_the_root_for_its_own_parameters() -> None:
    norms = {"scale": steady(0.0), **HEALTHY, "enc.weight": steady(0.0)}
    found = codes(judge(grad_record(norms, no_gradient=["enc.weight", "scale"]), backwards=1), "GS201")
    assert {f.where: f.message.split(" never")[0] for f in found} == {
        "enc": "enc.weight (1 trainable parameter)", ROOT: "scale (1 trainable parameter)"}
    assert all("in 1 backward pass:" in f.message for f in found)


def test_gs201_is_quiet_when_every_parameter_got_a_gradient() -> None:
    assert codes(judge(grad_record(HEALTHY, no_gradient=[])), "GS201") == []


# ---- GS202 ---------------------------------------------------------------------------------------
def test_gs202_names_a_parameter_whose_gradient_was_always_exactly_zero() -> None:
    (f,) = judge(grad_record({**HEALTHY, "head.bias": steady(0.0)}))
    assert (f.code, f.severity, f.where) == ("GS202", Severity.WARNING, "head.bias")
    assert "exactly zero at all 10 observed steps" in f.message


@pytest.mark.parametrize("norms", [
    pytest.param(steady(1e-30), id="a tiny but non-zero gradient is not exactly zero"),
    pytest.param([0.0] * 9 + [0.3], id="one non-zero step is enough to stay quiet"),
])
def test_gs202_is_quiet_for_a_gradient_that_was_not_always_zero(norms: list[float]) -> None:
    assert codes(judge(grad_record({**HEALTHY, "head.bias": norms})), "GS202") == []


def test_gs202_leaves_a_parameter_that_got_no_gradient_to_gs201() -> None:
    found = judge(grad_record({**HEALTHY, "head.bias": steady(0.0)}, no_gradient=["head.bias"]))
    assert [(f.code, f.where) for f in found] == [("GS201", "head")]


def test_gs202_is_quiet_for_a_parameter_with_no_finite_observation() -> None:
    found = judge(grad_record({**HEALTHY, "head.bias": steady(float("nan"))}))
    assert codes(found, "GS202") == [] and codes(found, "GS205")


def test_gs202_for_many_parameters_is_one_finding_at_the_root() -> None:
    """A dead sub-network of 12 layers is one finding naming the first few, not 24."""
    dead = {f"block{i}.{kind}": steady(0.0) for i in range(12) for kind in ("weight", "bias")}
    (f,) = [f for f in judge(grad_record({**HEALTHY, **dead})) if f.code == "GS202"]
    assert f.where == ROOT
    assert "the gradients of 24 parameters (block0.weight, block0.bias, block1.weight, block1.bias, " \
           "block2.weight and 19 more) were exactly zero" in f.message


def test_gs201_for_many_layers_is_one_finding_at_the_root() -> None:
    unused = [f"block{i}.weight" for i in range(11)]
    norms = {**HEALTHY, **{name: steady(0.0) for name in unused}}
    (f,) = [f for f in judge(grad_record(norms, no_gradient=unused)) if f.code == "GS201"]
    assert f.where == ROOT and "11 trainable parameters in 11 layers (block0, block1" in f.message


# ---- GS203 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("input_side", "expected"), [
    pytest.param(0.99e-4, True, id="a fall by just over 1e4 is vanishing"),
    pytest.param(1e-4, False, id="a fall by exactly 1e4 is not"),
    pytest.param(1.01e-4, False, id="a fall by just under 1e4 is not"),
])
def test_gs203_by_ratio_from_the_output_side_to_the_input_side(input_side: float, expected: bool) -> None:
    found = codes(judge(layered({"inp": input_side, "mid": 0.1, "out": 1.0})), "GS203")
    assert bool(found) is expected
    if expected:
        (f,) = found
        assert f.where == "inp" and f.severity is Severity.WARNING
        assert "falls from 1 at out (output side) to 9.9e-05 at inp (input side)" in f.message
        assert "a factor of 1.01e+04 (threshold 10000)" in f.message


def test_gs203_ratio_edge_moves_with_the_threshold() -> None:
    rec = layered({"inp": 0.99e-4, "out": 1.0})
    assert codes(judge(rec), "GS203")
    assert codes(judge(rec, Thresholds(vanishing_ratio=1e5)), "GS203") == []
    assert codes(judge(layered({"inp": 1e-3, "out": 1.0}), Thresholds(vanishing_ratio=999.0)), "GS203")


def test_gs203_ratio_follows_the_backward_order_not_the_order_of_parameters() -> None:
    # listed output side first: the backward order says which end is the input side
    rec = grad_record({"out.weight": steady(1.0), "inp.weight": steady(1e-6)},
                      backward_order=["out.weight", "inp.weight"])
    (f,) = judge(rec)
    assert (f.code, f.where) == ("GS203", "inp")
    reversed_rec = dataclasses.replace(rec, backward_order=["inp.weight", "out.weight"])
    assert codes(judge(reversed_rec), "GS203") == [], "the gradient grows towards the input side"


def test_gs203_ratio_without_backward_order_takes_the_parameters_in_reverse() -> None:
    rec = dataclasses.replace(layered({"inp": 1e-6, "out": 1.0}), backward_order=[])
    (f,) = judge(rec)
    assert (f.code, f.where) == ("GS203", "inp")


@pytest.mark.parametrize(("tiny", "expected"), [
    pytest.param(0.99e-8, True, id="a layer just under the 1e-8 floor while others are not is vanishing"),
    pytest.param(1e-8, False, id="a layer exactly at the floor is not"),
    pytest.param(1.01e-8, False, id="a layer just over the floor is not"),
])
def test_gs203_by_floor_names_each_tiny_layer(tiny: float, expected: bool) -> None:
    # the ends are equal, so the ratio rule stays quiet and only the floor can speak
    found = codes(judge(layered({"inp": 1e-3, "mid": tiny, "out": 1e-3})), "GS203")
    assert bool(found) is expected
    if expected:
        (f,) = found
        assert f.where == "mid"
        assert "the mean gradient norm of mid is 9.9e-09, below 1e-08 while other layers reach 0.001" in f.message


def test_gs203_floor_gives_one_finding_per_tiny_layer() -> None:
    found = codes(judge(layered({"inp": 1e-3, "a": 1e-9, "b": 2e-9, "out": 1e-3})), "GS203")
    assert sorted(f.where for f in found) == ["a", "b"]


def test_gs203_floor_edge_moves_with_the_threshold() -> None:
    rec = layered({"inp": 1e-3, "mid": 1e-9, "out": 1e-3})
    assert codes(judge(rec), "GS203")
    assert codes(judge(rec, Thresholds(vanishing_floor=1e-10)), "GS203") == []
    assert codes(judge(layered({"inp": 1e-3, "mid": 1e-6, "out": 1e-3}), Thresholds(vanishing_floor=1e-5)),
                 "GS203")


def test_gs203_floor_is_quiet_when_every_layer_is_tiny() -> None:
    assert codes(judge(layered({"inp": 4e-9, "mid": 3e-9, "out": 5e-9})), "GS203") == []


def test_gs203_the_ratio_rule_speaks_before_the_floor() -> None:
    (f,) = codes(judge(layered({"inp": 1e-9, "out": 1.0})), "GS203")
    assert f.where == "inp" and "a factor of" in f.message and "below" not in f.message


@pytest.mark.parametrize("means", [
    pytest.param({"inp": 0.0, "out": 1.0}, id="an all-zero input layer belongs to GS202 not GS203"),
    pytest.param({"out": 1.0}, id="a single layer cannot vanish"),
])
def test_gs203_needs_two_layers_with_a_non_zero_gradient(means: dict[str, float]) -> None:
    assert codes(judge(layered(means)), "GS203") == []


# ---- GS204 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("peak", "expected"), [
    pytest.param(1001.0, True, id="a total norm just over 1e3 is exploding"),
    pytest.param(1000.0, False, id="a total norm of exactly 1e3 is not"),
    pytest.param(999.0, False, id="a total norm just under 1e3 is not"),
])
def test_gs204_by_peak_of_the_total_norm(peak: float, expected: bool) -> None:
    found = codes(judge(grad_record({"fc.weight": [1.0] * 5 + [peak] + [1.0] * 4})), "GS204")
    assert bool(found) is expected
    if expected:
        (f,) = found
        assert (f.where, f.severity) == (ROOT, Severity.WARNING)
        assert "the total gradient norm reached 1e+03 (threshold 1000)" in f.message


def test_gs204_peak_edge_moves_with_the_threshold() -> None:
    rec = grad_record({"fc.weight": [1.0, 1500.0, 1.0]})
    assert codes(judge(rec), "GS204")
    assert codes(judge(rec, Thresholds(exploding_norm=2000.0)), "GS204") == []
    assert codes(judge(grad_record({"fc.weight": [1.0, 60.0]}), Thresholds(exploding_norm=50.0)), "GS204")


def test_gs204_peak_is_read_from_the_statistics_over_every_step_not_the_kept_ones() -> None:
    rec = grad_record({"fc.weight": steady(1.0)})
    between_kept_steps = dataclasses.replace(rec, total_stats=Stats(count=100, min=1.0, max=5e3, mean=3.0))
    (f,) = judge(between_kept_steps)
    assert f.code == "GS204" and "reached 5e+03" in f.message


def growth(early: float, late: float, n: int) -> list[float]:
    """``n`` steps: the first tenth at ``early``, the last tenth at ``late``, 1.0 between."""
    k = max(1, n // 10)
    return [early] * k + [1.0] * (n - 2 * k) + [late] * k


@pytest.mark.parametrize(("series", "expected"), [
    pytest.param(growth(0.01, 5.0, 20), True, id="growth by 500 over 20 finite steps is exploding"),
    pytest.param(growth(0.01, 5.0, 19), False, id="the same growth over 19 steps is too short to tell"),
    pytest.param(growth(0.01, 5.0, 20) + [float("nan")], True,
                 id="a NaN step is not counted but 20 finite steps remain"),
    pytest.param(growth(0.01, 5.0, 19)[:10] + [float("nan")] + growth(0.01, 5.0, 19)[10:], False,
                 id="a NaN step among 20 leaves only 19 finite steps"),
    pytest.param(growth(0.01, 1.01, 20), True, id="growth by just over 1e2 is exploding"),
    pytest.param(growth(0.01, 1.0, 20), False, id="growth by exactly 1e2 is not"),
    pytest.param(growth(0.01, 0.99, 20), False, id="growth by just under 1e2 is not"),
    pytest.param(growth(0.0, 5.0, 20), False, id="growth from an exact zero is not measured"),
])
def test_gs204_by_growth_needs_enough_finite_kept_steps(series: list[float], expected: bool) -> None:
    assert GROWTH_MIN_STEPS == 20
    found = codes(judge(grad_record({"fc.weight": series})), "GS204")
    assert bool(found) is expected


def test_gs204_by_growth_reports_the_early_and_late_norms() -> None:
    (f,) = codes(judge(grad_record({"fc.weight": growth(0.01, 5.0, 40)})), "GS204")
    assert f.where == ROOT
    assert "grew from 0.01 (first tenth of the run) to 5 (last tenth), a factor of 500 (threshold 100)" in f.message


def test_gs204_growth_edge_moves_with_the_threshold() -> None:
    rec = grad_record({"fc.weight": growth(0.01, 5.0, 20)})
    assert codes(judge(rec, Thresholds(exploding_growth=1e3)), "GS204") == []
    assert codes(judge(grad_record({"fc.weight": growth(0.1, 5.0, 20)}), Thresholds(exploding_growth=10.0)),
                 "GS204")


def test_gs204_the_peak_rule_speaks_before_the_growth_rule() -> None:
    (f,) = codes(judge(grad_record({"fc.weight": growth(0.01, 5000.0, 20)})), "GS204")
    assert "reached" in f.message and "grew" not in f.message


# ---- GS205 ---------------------------------------------------------------------------------------
NAN, INF = float("nan"), float("inf")


def test_gs205_names_the_first_nonfinite_parameter_in_backward_order() -> None:
    rec = grad_record({"enc.weight": [1.0] * 3 + [NAN] * 7, "head.weight": [1.0] * 3 + [INF] * 7},
                      backward_order=["head.weight", "enc.weight"])
    (f,) = codes(judge(rec), "GS205")
    assert (f.where, f.severity) == ("head.weight", Severity.ERROR)
    assert "the gradient of head.weight (module head) was the first to become non-finite, at step 3" in f.message
    assert "2 parameter gradients were non-finite at that step" in f.message


def test_gs205_the_earliest_step_wins_over_the_backward_order() -> None:
    rec = grad_record({"enc.weight": [1.0] * 2 + [NAN] * 8, "head.weight": [1.0] * 5 + [NAN] * 5},
                      backward_order=["head.weight", "enc.weight"])
    (f,) = codes(judge(rec), "GS205")
    assert f.where == "enc.weight"
    assert "at step 2" in f.message and "1 parameter gradient was non-finite at that step" in f.message


def test_gs205_without_backward_order_takes_the_parameters_in_reverse() -> None:
    rec = grad_record({"enc.weight": [NAN] * 10, "scale": [NAN] * 10}, backward_order=[])
    (f,) = codes(judge(rec), "GS205")
    assert f.where == "scale" and f"(module {ROOT})" in f.message


def test_gs205_is_quiet_when_every_gradient_stayed_finite() -> None:
    assert codes(judge(grad_record(HEALTHY)), "GS205") == []


def test_gs205_one_nonfinite_step_is_enough_without_a_grad_scaler() -> None:
    rec = grad_record({**HEALTHY, "enc.weight": [NAN] + steady(0.5, 9)})
    assert codes(judge(rec, grad_scaler=False), "GS205")
    assert codes(judge(rec, grad_scaler=None), "GS205")


@pytest.mark.parametrize(("bad_steps", "expected"), [
    pytest.param(1, False, id="one overflow in ten under a GradScaler is the scaler at work"),
    pytest.param(5, False, id="non-finite at exactly half the steps is still tolerated"),
    pytest.param(6, True, id="non-finite at just over half the steps is a fault"),
    pytest.param(10, True, id="non-finite at every step is a fault"),
])
def test_gs205_under_a_grad_scaler_needs_most_observed_steps_to_be_nonfinite(bad_steps: int,
                                                                              expected: bool) -> None:
    rec = grad_record({**HEALTHY, "enc.weight": [INF] * bad_steps + steady(0.5, 10 - bad_steps)})
    assert rec.steps_seen == 10
    assert bool(codes(judge(rec, grad_scaler=True), "GS205")) is expected


def test_gs205_under_a_grad_scaler_counts_every_step_seen_not_only_the_kept_ones() -> None:
    # 6 non-finite of the 10 kept steps, but 100 steps were seen: 94 finite values of 100
    rec = grad_record({**HEALTHY, "enc.weight": [INF] * 6 + steady(0.5, 4)})
    stats = rec.parameter_stats
    seen_more = dataclasses.replace(rec, steps_seen=100, parameter_stats=dataclasses.replace(
        stats, count=[c + 90 for c in stats.count]))
    assert codes(judge(rec, grad_scaler=True), "GS205")
    assert codes(judge(seen_more, grad_scaler=True), "GS205") == []


# ---- records from an older gradscope -------------------------------------------------------------
def older(rec: GradNormRecord) -> GradNormRecord:
    """``rec`` as read back from a file written before the evidence fields existed."""
    data = rec.to_json()
    for fields in GradNormRecord.evidence.values():
        for name in fields:
            data.pop(name, None)
    return GradNormRecord.from_json(data)


def test_a_current_record_holds_the_evidence_for_every_code() -> None:
    assert grad_record(HEALTHY).unjudged() == frozenset()


def test_an_older_record_lists_the_codes_it_cannot_judge() -> None:
    rec = older(grad_record(HEALTHY))
    assert (rec.no_gradient, rec.steps_seen) == (None, None)
    assert rec.unjudged() == {"GS201", "GS202", "GS205"}


def test_an_older_record_yields_no_gs201_or_gs202() -> None:
    specimen = grad_record({**HEALTHY, "enc.weight": steady(0.0), "head.bias": steady(0.0)},
                           no_gradient=["enc.weight"])
    assert {f.code for f in judge(specimen)} == {"GS201", "GS202"}
    assert judge(older(specimen)) == []


@pytest.mark.parametrize("grad_scaler", [
    pytest.param(True, id="under a GradScaler an older record cannot tell overflow from fault"),
    pytest.param(False, id="without a GradScaler the record still lacks the declared evidence"),
])
def test_an_older_record_yields_no_gs205(grad_scaler: bool) -> None:
    # one overflow in ten steps: the scaler at work, which a current record tolerates
    rec = older(grad_record({**HEALTHY, "enc.weight": [INF] + steady(0.5, 9)}))
    assert "GS205" in rec.unjudged()
    assert codes(judge(rec, grad_scaler=grad_scaler), "GS205") == []


def test_a_version_1_file_yields_none_of_the_codes_it_holds_no_evidence_for() -> None:
    run = load_record(FIXTURES / "watch_full.json")
    rec = run.probe(GradNormRecord)
    assert rec is not None and rec.unjudged() == {"GS201", "GS202", "GS205"}
    assert "GS201" in {f.code for f in run.findings}, "the finding recorded at the time"
    assert codes(judge_grad_norm(rec, run, Thresholds()), "GS201") == []
