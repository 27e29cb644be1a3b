"""Gradient histograms: every bin against a plain NumPy count of the same gradients (zeros, bin
edges, NaN/Inf, bf16 autocast, half parameters, a GradScaler), the sampling schedule, bounded rows,
training unchanged, and the sharpened GS202/GS203 on real training with their healthy twins."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest
import torch
from torch import nn

import gradscope
from gradscope.probes import histogram as H
from gradscope.probes.histogram import HistogramProbe, exponent_counts, log_spaced
from gradscope.records import HistogramRecord
from gradscope.records.histogram import ABOVE, BELOW, BINS, FIRST_OCTAVE, NONFINITE, ZERO, octave_edges
from gradscope.scope import watch

HOSTILE = "<script>alert(1)</script>"


def numpy_histogram(grads: list[torch.Tensor | None], scale: float = 1.0) -> np.ndarray:
    """The record's BINS columns for the concatenated ``grads`` (None: no gradient, nothing to
    count), the plain way: float64 |g| / scale counted with ``np.histogram`` over the octave edges
    (its last bin is closed, so values at the top edge are counted apart)."""
    parts = [g.detach().double().numpy().ravel() for g in grads if g is not None]
    a = np.abs(np.concatenate(parts)) / scale if parts else np.zeros(0)
    edges = octave_edges()
    out = np.zeros(BINS)
    out[ZERO] = np.count_nonzero(a == 0)
    out[NONFINITE] = np.count_nonzero(~np.isfinite(a))
    finite = a[np.isfinite(a) & (a > 0)]
    out[BELOW] = np.count_nonzero(finite < edges[0])
    out[ABOVE] = np.count_nonzero(finite >= edges[-1])
    out[FIRST_OCTAVE:ABOVE] = np.histogram(finite[finite < edges[-1]], bins=edges)[0]
    return out


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))


def _train(model: nn.Module, steps: int, *, every: int = 1, amp: torch.dtype | None = None,
           loss_scale: float = 1.0, scaler: bool = False, accumulate: int = 1,
           data: Callable[[torch.Generator], torch.Tensor] | None = None,
           **options: Any) -> tuple[Any, dict[int, list[torch.Tensor | None]], dict[int, float]]:
    """Train with the histogram probe; return the scope, each step's gradients as the probe saw
    them (after the whole backward, before the optimizer) and each step's loss scale."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    amp_scaler = torch.amp.GradScaler("cpu") if scaler else None
    g = torch.Generator().manual_seed(0)
    seen: dict[int, list[torch.Tensor | None]] = {}
    scales: dict[int, float] = {}
    dtype = next(model.parameters()).dtype
    with watch(model, opt, probes=["default", HistogramProbe(every=every)], **options) as scope:
        for step in range(steps):
            opt.zero_grad()
            for _ in range(accumulate):
                x = data(g) if data is not None else torch.randn(16, 8, generator=g)
                x = x.to(dtype)
                with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
                    loss = nn.functional.mse_loss(model(x).float(), x[:, :1].float()) * loss_scale
                (amp_scaler.scale(loss) if amp_scaler else loss).backward()
            seen[step] = [p.grad.clone() if p.grad is not None else None for p in model.parameters()]
            scales[step] = float(amp_scaler.get_scale()) if amp_scaler else 1.0
            if amp_scaler:
                amp_scaler.step(opt)
                amp_scaler.update()
            else:
                opt.step()
    return scope, seen, scales


def _layer_params(model: nn.Module, rec: HistogramRecord) -> list[list[int]]:
    """Positions in ``model.parameters()`` of each recorded layer's parameters."""
    names = [n for n, _ in model.named_parameters()]
    return [[i for i, n in enumerate(names) if (n.rpartition(".")[0] or type(model).__name__) == layer]
            for layer in rec.layers]


def _assert_equal_to_numpy(scope: Any, model: nn.Module, seen: dict[int, list[torch.Tensor | None]],
                           scales: dict[int, float] | None = None) -> HistogramRecord:
    rec = scope.records["histogram"]
    members = _layer_params(model, rec)
    counts = rec.layer_counts()
    for i, step in enumerate(rec.steps):
        for j, layer in enumerate(rec.layers):
            want = numpy_histogram([seen[step][p] for p in members[j]], (scales or {}).get(step, 1.0))
            np.testing.assert_array_equal(counts[i, j], want, err_msg=f"step {step}, layer {layer}")
    return rec


# ---- the kernel --------------------------------------------------------------------------------
EDGES = [0.0, -0.0, 2.0 ** -149, 1e-40, 2.0 ** -126, 2.0 ** -40, 2.0 ** -40 * (1 - 2 ** -24), 2.0 ** -14,
         2.0 ** -14 * (1 - 2 ** -24), 1.0, -1.0, 2.0 ** 14, 2.0 ** 14 * (1 - 2 ** -24), 3e38, float("inf"),
         -float("inf"), float("nan")]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16],
                         ids=["float32", "float64", "bfloat16", "float16"])
def test_exponent_counts_bin_every_edge_exactly(dtype: torch.dtype) -> None:
    values = torch.tensor(EDGES, dtype=torch.float64).to(dtype)
    counts, zeros = exponent_counts(values)
    as32 = values.float()
    want = np.bincount(((as32.view(torch.int32) & 0x7FFFFFFF) >> 23).numpy(), minlength=256)
    np.testing.assert_array_equal(counts.numpy(), want)
    assert int(zeros) == int((as32 == 0).sum())
    fold = H.fold_matrix(0).numpy()
    bins = counts.double().numpy() @ fold
    bins[ZERO], bins[BELOW] = float(zeros), bins[BELOW] - float(zeros)
    np.testing.assert_array_equal(bins, numpy_histogram([as32]))


def test_a_loss_scale_shifts_the_octaves_exactly() -> None:
    g = torch.randn(1000) * 1e-3
    scaled = g * 2.0 ** 16
    counts, zeros = exponent_counts(scaled)
    bins = counts.double().numpy() @ H.fold_matrix(16).numpy()
    bins[ZERO], bins[BELOW] = float(zeros), bins[BELOW] - float(zeros)
    np.testing.assert_array_equal(bins, numpy_histogram([g]))


@pytest.mark.parametrize(("step", "sampled"), [(0, True), (1, True), (2, True), (3, False), (4, True), (6, False),
                                               (8, True), (9, False), (10, True), (16, False), (20, True)],
                         ids=lambda v: str(v))
def test_log_spaced_steps(step: int, sampled: bool) -> None:
    assert log_spaced(step, 10) is sampled


def test_a_bad_every_is_explained() -> None:
    from gradscope.errors import GradscopeError

    with pytest.raises(GradscopeError, match=r"must be an integer >= 1, got 0"):
        HistogramProbe(every=0)


# ---- against NumPy on real training ---------------------------------------------------------------
class _Edges(nn.Module):
    """A linear layer whose weight gradient is replaced, through a user hook, by one that holds
    zeros, values on and next to bin edges, a subnormal, Inf, -Inf and NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 4)
        self.head = nn.Linear(4, 1)
        special = torch.tensor(EDGES[:16] + [float("nan")] * 16, dtype=torch.float32).reshape(4, 8)
        self.fc.weight.register_hook(lambda g: torch.where(special == 1.0, g, special))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.fc(x)))


@pytest.mark.parametrize("case", ["mlp", "zeros-edges-and-non-finite", "unused-layer", "accumulation"])
def test_histograms_equal_numpy_on_the_same_gradients(case: str) -> None:
    torch.manual_seed(0)
    model: nn.Module
    if case == "zeros-edges-and-non-finite":
        model = _Edges()
    elif case == "unused-layer":
        model = nn.ModuleDict({"used": nn.Linear(8, 1), "unused": nn.Linear(8, 1)})
        model.forward = lambda x: model["used"](x)  # type: ignore[method-assign]
    else:
        model = _mlp()
    scope, seen, _ = _train(model, 5, accumulate=2 if case == "accumulation" else 1)
    rec = _assert_equal_to_numpy(scope, model, seen)
    assert rec.steps == [0, 1, 2, 3, 4]
    counts = rec.layer_counts()
    if case == "zeros-edges-and-non-finite":
        j = rec.layers.index("fc")
        assert counts[0, j, ZERO] == 2 and counts[0, j, NONFINITE] == 18  # then NaN weights spread it
        assert counts[:, j, ABOVE].min() >= 2 and np.isfinite(rec.zero_fraction[:, j]).all()
    if case == "unused-layer":
        j = rec.layers.index("unused")
        assert counts[:, j].sum() == 0 and np.isnan(rec.zero_fraction[:, j]).all()
        assert np.isnan(rec.below_normal[:, j]).all()
    back = HistogramRecord.from_json(rec.to_json())
    np.testing.assert_array_equal(back.counts, rec.counts)
    np.testing.assert_array_equal(back.zero_fraction, rec.zero_fraction)  # NaN survives JSON, in place


def test_under_bf16_autocast_the_threshold_is_bfloat16s() -> None:
    torch.manual_seed(0)
    model = _mlp()
    scope, seen, _ = _train(model, 4, amp=torch.bfloat16)
    rec = _assert_equal_to_numpy(scope, model, seen)
    assert (rec.low_precision, rec.dtype) == ("bfloat16", "bfloat16")
    assert rec.smallest_normal == 2.0 ** -126
    assert np.nanmax(rec.below_normal) == 0.0  # nothing near 1e-38


def test_bf16_parameters_are_counted_exactly_and_set_the_dtype() -> None:
    torch.manual_seed(0)
    model = _mlp().to(torch.bfloat16)
    scope, seen, _ = _train(model, 3)
    rec = _assert_equal_to_numpy(scope, model, seen)
    assert (rec.low_precision, rec.dtype) == ("bfloat16", "bfloat16")


def test_without_half_precision_the_float16_threshold_is_the_default() -> None:
    torch.manual_seed(0)
    model = _mlp()
    scope, seen, _ = _train(model, 3)
    rec = _assert_equal_to_numpy(scope, model, seen)
    assert (rec.low_precision, rec.dtype, rec.smallest_normal) == (None, "float16", 2.0 ** -14)
    below = []
    for step in rec.steps:
        a = np.abs(np.concatenate([seen[step][p].numpy().ravel() for p in (0, 1)]))  # type: ignore[union-attr]
        below.append(np.count_nonzero((a > 0) & (a < 2.0 ** -14)) / np.count_nonzero(a))
    np.testing.assert_allclose(rec.below_normal[:, 0], below)


def test_a_grad_scaler_is_divided_out_of_the_bins_and_kept_in_the_underflow_share() -> None:
    torch.manual_seed(0)
    model = _mlp()
    scope, seen, scales = _train(model, 4, amp=torch.float16, scaler=True, loss_scale=1e-3)
    rec = _assert_equal_to_numpy(scope, model, seen, scales)
    assert rec.low_precision == "float16" and rec.loss_scale.tolist() == [scales[s] for s in rec.steps]
    assert rec.loss_scale[0] == 2.0 ** 16
    assert np.nanmax(rec.below_normal) < 0.5  # the scaled gradients sit well above 6.1e-5
    assert not [f for f in scope.findings if f.code == "GS203"]


# ---- schedule, bounds, a flush in mid-step ----------------------------------------------------------
def test_sampled_at_log_spaced_steps_then_every_k() -> None:
    torch.manual_seed(0)
    scope, _, _ = _train(_mlp(), 23, every=5)
    rec = scope.records["histogram"]
    assert rec.steps == [0, 1, 2, 4, 5, 10, 15, 20] and rec.every == 5 and rec.samples_seen == 8


def test_rows_stay_bounded_and_evenly_thinned() -> None:
    torch.manual_seed(0)
    scope, _, _ = _train(_mlp(), 40, max_kept_steps=4, flush_every=7)
    rec = scope.records["histogram"]
    assert rec.samples_seen == 40 and len(rec.steps) <= 4 and rec.stride >= 8
    assert len(set(np.diff(rec.steps))) == 1, rec.steps  # evenly spaced


def test_many_layers_keep_at_most_the_cell_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(H, "CELL_BUDGET", 20 * 2 * BINS)
    torch.manual_seed(0)
    scope, _, _ = _train(_mlp(), 60)
    rec = scope.records["histogram"]
    assert rec.samples_seen == 60 and len(rec.steps) <= 20 and rec.counts.size <= 20 * 2 * BINS
    monkeypatch.setattr(H, "CELL_BUDGET", 1)  # never fewer than MIN_KEPT samples
    scope, _, _ = _train(_mlp(), 60)
    assert H.MIN_KEPT // 2 < len(scope.records["histogram"].steps) <= H.MIN_KEPT


def test_a_read_in_mid_step_keeps_the_step_in_progress() -> None:
    torch.manual_seed(0)
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(16, 8)
    with watch(model, opt, probes=["grad_norm", HistogramProbe(every=1)]) as scope:
        for step in range(3):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), x[:, :1]).backward()
            if step == 1:
                assert scope.records["histogram"].steps == [0]  # step 1 is still being built
                nn.functional.mse_loss(model(x), x[:, :1]).backward()  # a second micro-batch
                grads: list[torch.Tensor | None] = [p.grad.clone() for p in model.parameters()]
            opt.step()
    rec = scope.records["histogram"]
    assert rec.steps == [0, 1, 2]
    np.testing.assert_array_equal(rec.layer_counts()[1, 0], numpy_histogram(grads[:2]))


# ---- training is unchanged ------------------------------------------------------------------------
def _cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


@pytest.mark.parametrize("amp", [None, torch.bfloat16], ids=["float32", "bf16-autocast"])
def test_training_is_bitwise_identical_with_and_without_the_probe(amp: torch.dtype | None) -> None:
    torch.manual_seed(0)
    base = _cnn()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    finals = []
    for probes in (None, [HistogramProbe(every=1)], ["default", HistogramProbe(every=2)]):
        model = _cnn()
        model.load_state_dict(base.state_dict())
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        scope = watch(model, opt, probes=probes) if probes is not None else None
        if scope is not None:
            scope.__enter__()
        try:
            for _ in range(5):
                opt.zero_grad()
                with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
                    loss = nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
        finally:
            if scope is not None:
                scope.close()
        finals.append([p.detach().clone() for p in model.parameters()])
    for other in finals[1:]:
        assert all(torch.equal(a, b) for a, b in zip(finals[0], other))


# ---- findings on real training ----------------------------------------------------------------------
def _codes(scope: Any, code: str) -> list[Any]:
    return [f for f in scope.findings if f.code == code]


@pytest.mark.parametrize(("amp", "loss_scale", "fires"), [
    pytest.param(torch.float16, 1e-5, True, id="float16-autocast-gradients-near-1e-7-underflow"),
    pytest.param(torch.float16, 1.0, False, id="float16-autocast-healthy-gradients"),
    pytest.param(None, 1e-5, False, id="float32-run-with-the-same-tiny-gradients"),
    pytest.param(torch.bfloat16, 1e-5, False, id="bf16-autocast-with-the-same-tiny-gradients"),
])
def test_gs203_names_underflow_only_where_the_run_computes_in_float16(
        amp: torch.dtype | None, loss_scale: float, fires: bool) -> None:
    torch.manual_seed(0)
    scope, _, _ = _train(_mlp(), 6, amp=amp, loss_scale=loss_scale)
    found = [f for f in _codes(scope, "GS203") if "underflow" in f.message]
    if not fires:
        assert not found
        return
    assert {f.where for f in found} == {"0", "2"}
    assert all("below float16's smallest normal (6.1e-05)" in f.message and "GradScaler" in f.hint for f in found)


def _one_live_feature(g: torch.Generator) -> torch.Tensor:
    x = torch.zeros(16, 32)
    x[:, 0] = torch.randn(16, generator=g)  # 31 of 32 inputs are always zero: their weight columns get none
    return x


def test_gs202_a_layer_whose_gradient_is_mostly_exact_zeros() -> None:
    torch.manual_seed(0)
    scope, _, _ = _train(nn.Sequential(nn.Linear(32, 16), nn.Linear(16, 1)), 6, data=_one_live_feature)
    zero = [f for f in _codes(scope, "GS202") if "exactly zero at a typical sampled step" in f.message]
    assert [f.where for f in zero] == ["0"]
    assert "94% of the gradient elements of 0 were exactly zero" in zero[0].message
    assert "float16" not in zero[0].message  # a float32 run: underflow is not a suspect


def test_gs202_a_healthy_twin_with_dense_inputs_has_no_finding() -> None:
    torch.manual_seed(0)
    scope, _, _ = _train(nn.Sequential(nn.Linear(32, 16), nn.Linear(16, 1)), 6,
                         data=lambda g: torch.randn(16, 32, generator=g))
    assert not _codes(scope, "GS202") and not _codes(scope, "GS203")


def test_gs202_an_all_zero_layer_is_left_to_the_norm_judge() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        model[0].bias.fill_(-100.0)  # the first ReLU never fires: layer 2 sees only zeros
    scope, _, _ = _train(model, 4)
    found = _codes(scope, "GS202")
    assert found and all("at all" in f.message for f in found)  # the norm judge's, per parameter
    assert not [f for f in found if "typical sampled step" in f.message]


def test_a_healthy_torchvision_model_has_no_histogram_finding() -> None:
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(4, 3, 64, 64), torch.randint(0, 10, (4,))
    with watch(model, opt, probes=["grad_norm", HistogramProbe(every=1)]) as scope:
        for _ in range(3):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    rec = scope.records["histogram"]
    assert len(rec.layers) == 41 and rec.modules[0] == "Conv2d"
    assert not _codes(scope, "GS202") and not _codes(scope, "GS203")


# ---- the report ---------------------------------------------------------------------------------------
def test_the_report_shows_the_section_figure_and_table_with_names_escaped() -> None:
    from gradscope.reports.html import render_html

    torch.manual_seed(0)
    model = nn.Sequential()
    model.add_module(HOSTILE, nn.Linear(8, 4))
    model.add_module("head", nn.Linear(4, 1))
    scope, _, _ = _train(model, 4)
    page = render_html(scope.to_record())
    assert 'id="histograms"' in page and 'id="fig-grad-histogram"' in page
    assert 'id="table-histogram-layers"' in page and HOSTILE not in page


def test_the_figure_shows_the_worst_layers_first_and_caps_them() -> None:
    from gradscope.reports import figures as F

    layers, steps = 120, 30
    rng = np.random.default_rng(0)
    counts = rng.integers(0, 50, size=(steps, layers, BINS)).astype(float)
    counts[:, :, NONFINITE] = 0.0
    counts[:, 77, ZERO] = 1e6                                   # layer 77: nearly all zeros
    counts[3, 5, NONFINITE] = 2                                 # layer 5: a NaN once
    total = counts.sum(axis=2)
    rec = HistogramRecord(layers=[f"block.{i}" for i in range(layers)], modules=["Linear"] * layers,
                          steps=list(range(steps)), samples_seen=steps, counts=counts.reshape(steps, -1),
                          zero_fraction=counts[:, :, ZERO] / total,
                          below_normal=counts[:, :, BELOW:FIRST_OCTAVE + 26].sum(axis=2) / (total - counts[:, :, ZERO]),
                          loss_scale=np.ones(steps))
    assert rec.worst_first()[:2] == [5, 77]
    chart = F.histogram_figure(rec)
    assert chart is not None
    shown = [t.get_text() for t in chart.figure.axes[0].get_yticklabels()]
    assert shown[:2] == ["block.5", "block.77"] and len(shown) == F.MAX_HISTOGRAM_LAYERS
    assert "24 of 120 layers" in chart.caption and "averaged into 8 rows" in chart.caption
    assert "red: NaN/Inf present" in chart.caption


# ---- CUDA ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_counts_equal_the_cpu_and_make_no_sync_between_flushes() -> None:
    torch.manual_seed(0)
    g = torch.randn(3_000_000) * 1e-3
    g[::7] = 0.0
    g[5] = float("nan")
    cpu = exponent_counts(g)
    gpu = exponent_counts(g.cuda())
    assert torch.equal(cpu[0], gpu[0].cpu()) and int(cpu[1]) == int(gpu[1])
    model = _cnn().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(8, 1, 8, 8, device="cuda"), torch.randint(0, 3, (8,), device="cuda")
    with watch(model, opt, flush_every=1000, probes=["default", HistogramProbe(every=1)]) as scope:
        for i in range(20):
            if i == 4:
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
            try:
                opt.zero_grad()
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
            except Exception:
                torch.cuda.set_sync_debug_mode("default")
                raise
        torch.cuda.set_sync_debug_mode("default")
    assert scope.records["histogram"].steps == list(range(20))


def test_the_histogram_probe_is_named_in_probes_and_off_by_default() -> None:
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, opt, probes=["default", "histogram"]) as scope:
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
    assert isinstance(scope.get_probe("histogram"), HistogramProbe)
    with gradscope.watch(model, opt) as plain:
        pass
    assert plain.get_probe("histogram") is None
