"""GS202 and GS203 from the gradient histograms, on synthetic records (no model, no torch)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pytest

from gradscope.errors import RecordError
from gradscope.findings import Finding, Severity
from gradscope.judges.histogram import UNDERFLOW_HINT, judge_histogram
from gradscope.records import GradNormRecord, HistogramRecord, ModelInfo, RunRecord, StatsTable
from gradscope.records.histogram import BINS, ZERO, octave_column
from gradscope.thresholds import Thresholds

ELEMENTS = 10_000.0


def layer_row(zero: float = 0.01, below: float = 0.0, at: int = -8) -> tuple[np.ndarray, float]:
    """One layer's BINS counts: ``zero`` of the elements exactly zero, ``below`` of the nonzero at
    2**-23 (about 1.2e-7, under float16's smallest normal), the rest in the octave ``2**at``."""
    row = np.zeros(BINS)
    row[ZERO] = round(ELEMENTS * zero)
    nonzero = ELEMENTS - row[ZERO]
    row[octave_column(-23)] += round(nonzero * below)
    row[octave_column(at)] += nonzero - round(nonzero * below)
    return row, (round(nonzero * below) / nonzero if nonzero else float("nan"))


def record(layers: dict[str, Sequence[tuple[float, float]]], low_precision: str | None = "float16",
           modules: Sequence[str] | None = None, scale: float = 1.0) -> HistogramRecord:
    """A record from, per layer, (zero share, below-normal share of the nonzero) at each sample."""
    names = list(layers)
    n = len(next(iter(layers.values())))
    counts = np.zeros((n, len(names), BINS))
    below = np.zeros((n, len(names)))
    for j, name in enumerate(names):
        for i, (zero, share) in enumerate(layers[name]):
            counts[i, j], below[i, j] = layer_row(zero, share)
    total = counts.sum(axis=2)
    return HistogramRecord(layers=names, modules=list(modules) if modules else ["Linear"] * len(names),
                           steps=[0, 1, 2, 4, 8, 16][:n] + [100 * k for k in range(1, n - 5)],
                           samples_seen=n, counts=counts.reshape(n, -1), zero_fraction=counts[:, :, ZERO] / total,
                           below_normal=below, dtype="bfloat16" if low_precision == "bfloat16" else "float16",
                           low_precision=low_precision, loss_scale=np.full(n, scale))


def judge(rec: HistogramRecord, grad: GradNormRecord | None = None) -> list[Finding]:
    probes = {"histogram": rec} | ({"grad_norm": grad} if grad is not None else {})
    run = RunRecord(model=ModelInfo(class_name="Net"), steps=100, backwards=100, optimizers=["SGD"], probes=probes)
    return judge_histogram(rec, run, Thresholds())


HEALTHY = [(0.01, 0.02)] * 6


def test_healthy_histograms_have_no_finding() -> None:
    assert judge(record({"enc": HEALTHY, "head": HEALTHY})) == []


def test_an_empty_record_has_no_finding() -> None:
    assert judge(HistogramRecord()) == []


# ---- GS203: underflow --------------------------------------------------------------------------------
def test_gs203_float16_gradients_near_1e_minus_7_are_named_as_underflow() -> None:
    (f,) = judge(record({"enc": [(0.2, 1.0)] * 6, "head": HEALTHY}))
    assert (f.code, f.severity, f.where, f.hint) == ("GS203", Severity.WARNING, "enc", UNDERFLOW_HINT)
    assert f.message.startswith("100% of the nonzero gradient elements of enc are below float16's smallest "
                                "normal (6.1e-05) at a typical sampled step (median of 6 samples), and 20% "
                                "are exactly zero")
    assert "underflow" in f.message


@pytest.mark.parametrize(("low_precision", "fires"), [
    pytest.param(None, False, id="a float32 run is not judged: it does not underflow there"),
    pytest.param("bfloat16", False, id="bf16: 1.2e-7 is far above its smallest normal"),
    pytest.param("float16", True, id="float16 underflows"),
])
def test_gs203_only_where_the_run_computes_in_float16(low_precision: str | None, fires: bool) -> None:
    rec = record({"enc": [(0.2, 1.0)] * 6, "head": HEALTHY}, low_precision=low_precision)
    if low_precision == "bfloat16":  # what the probe records there: the share under bf16's normal
        rec = HistogramRecord.from_json({**rec.to_json(), "below_normal": np.zeros((6, 2)).tolist()})
    assert bool(judge(rec)) is fires


@pytest.mark.parametrize(("share", "fires"), [
    pytest.param(0.49, False, id="just under half below normal is not flagged"),
    pytest.param(0.5, True, id="half below normal is flagged"),
])
def test_gs203_edge_of_the_share(share: float, fires: bool) -> None:
    assert bool(judge(record({"enc": [(0.0, share)] * 5}))) is fires


def test_gs203_the_median_ignores_a_transient() -> None:
    assert judge(record({"enc": [(0.0, 1.0)] + [(0.0, 0.1)] * 5})) == []


def test_gs203_one_sample_is_not_enough() -> None:
    assert judge(record({"enc": [(0.0, 1.0)]})) == []


def test_gs203_says_the_loss_scale_did_not_help() -> None:
    (f,) = judge(record({"enc": [(0.0, 0.9)] * 4}, scale=65536.0))
    assert "even with the GradScaler's loss scale of 65536" in f.message


def test_gs203_many_layers_become_one_finding() -> None:
    found = judge(record({f"blocks.{i}": [(0.0, 0.6 + 0.05 * i)] * 4 for i in range(5)}))
    (f,) = found
    assert f.where == "blocks.4, blocks.3, blocks.2 and 2 more"
    assert f.message.startswith("in 5 layers (blocks.4, blocks.3, blocks.2, blocks.1 and 1 more) 60% to 80% of")


# ---- GS202: mostly exact zeros ------------------------------------------------------------------------
def test_gs202_a_layer_mostly_exact_zeros() -> None:
    (f,) = judge(record({"enc": [(0.95, 0.0)] * 5 + [(0.92, 0.0)], "head": HEALTHY}, low_precision=None))
    assert (f.code, f.where) == ("GS202", "enc")
    assert f.message.startswith("95% of the gradient elements of enc were exactly zero at a typical sampled "
                                "step (median of 6 samples, lowest 92%)")
    assert "float16" not in f.message


@pytest.mark.parametrize(("zero", "fires"), [
    pytest.param(0.89, False, id="89 percent zeros is not flagged"),
    pytest.param(0.9, True, id="90 percent zeros is flagged"),
])
def test_gs202_edge_of_the_share(zero: float, fires: bool) -> None:
    assert bool(judge(record({"enc": [(zero, 0.0)] * 4}, low_precision=None))) is fires


def test_gs202_embeddings_are_sparse_by_design() -> None:
    rec = record({"embed": [(0.99, 0.0)] * 4, "head": HEALTHY[:4]}, modules=["Embedding", "Linear"],
                 low_precision=None)
    assert judge(rec) == []


def test_gs202_in_a_float16_run_names_underflow_as_a_suspect() -> None:
    (f,) = judge(record({"enc": [(0.97, 0.0)] * 4}))
    assert f.code == "GS202" and "underflow flush to zero" in f.message and "GradScaler" in f.message


def test_gs202_an_underflowing_layer_is_reported_once_as_underflow() -> None:
    (f,) = judge(record({"enc": [(0.95, 0.9)] * 4}))
    assert f.code == "GS203"


def _grad_record(max_weight: float) -> GradNormRecord:
    """Norm statistics for enc.weight, enc.bias and head.weight; enc.weight's max given."""
    stats = StatsTable(count=[10, 10, 10], min=np.array([0.0, 0.1, 0.1]), max=np.array([max_weight, 1.0, 1.0]),
                       mean=np.array([max_weight / 2, 0.5, 0.5]), first_nonfinite_step=[None, None, None])
    return GradNormRecord(parameters=["enc.weight", "enc.bias", "head.weight"], layers=["enc", "head"],
                          parameter_layer=[0, 0, 1], parameter_stats=stats, layer_stats=StatsTable(),
                          no_gradient=[])


def test_gs202_a_layer_the_norm_judge_reports_as_all_zero_is_not_reported_again() -> None:
    rec = record({"enc": [(0.99, 0.0)] * 4, "head": HEALTHY[:4]}, low_precision=None)
    assert judge(rec, _grad_record(max_weight=0.0)) == []
    (f,) = judge(rec, _grad_record(max_weight=1.0))  # the healthy twin: enc.weight did get a gradient
    assert (f.code, f.where) == ("GS202", "enc")


# ---- the record -------------------------------------------------------------------------------------
def test_a_record_with_the_wrong_width_is_refused() -> None:
    data = record({"enc": HEALTHY}).to_json()
    data["counts"] = [row[:-1] for row in data["counts"]]
    with pytest.raises(RecordError, match=r"probes\.histogram\.counts should be 6 x 58 values"):
        HistogramRecord.from_json(data, "probes.histogram")
