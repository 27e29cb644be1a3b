"""GradscopeCallback on a real Lightning Trainer (CPU): the step clock, the norms against
Lightning's own ``grad_norm``, AMP, registration findings, logging, errors and strategies."""
from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

L = pytest.importorskip("lightning.pytorch")

from lightning.pytorch.plugins import MixedPrecision  # noqa: E402
from lightning.pytorch.utilities import grad_norm  # noqa: E402

from gradscope.errors import GradscopeError  # noqa: E402
from gradscope.integrations.lightning import GradscopeCallback  # noqa: E402

# Lightning's own advice (data loader workers, logging intervals) and deprecations inside it
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:.*LeafSpec.*")]


class Regressor(L.LightningModule):
    """Two linear layers; records Lightning's own pre-clip total norm before each optimizer step."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        self.pre_clip: list[float] = []
        self.fail_at = fail_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if batch_idx == self.fail_at:
            raise RuntimeError("the data loader handed over a broken batch")
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # Lightning's hook order: after the accumulated (and unscaled) backward, before clipping
        self.pre_clip.append(float(grad_norm(self, norm_type=2)["grad_2.0_norm_total"]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


class ListHeld(Regressor):
    """A block kept in a plain list: PyTorch never registers it (GS101)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = [nn.Linear(8, 8)]
        self.example_input_array = torch.randn(2, 8)   # what check_forward=True runs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.relu(self.blocks[0](x)))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)


def loader() -> torch.utils.data.DataLoader:
    g = torch.Generator().manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=g), 3 * torch.randn(64, 1, generator=g))
    return torch.utils.data.DataLoader(data, batch_size=8)


def fit(module: L.LightningModule, callback: GradscopeCallback, tmp_path: Path, **options: Any) -> Any:
    torch.manual_seed(0)
    settings: dict[str, Any] = dict(max_steps=4, accumulate_grad_batches=2, gradient_clip_val=0.1,
                                    accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                                    enable_progress_bar=False, enable_model_summary=False,
                                    default_root_dir=str(tmp_path))
    settings.update(options)
    trainer = L.Trainer(callbacks=[callback], **settings)
    trainer.fit(module, loader())
    return trainer


def same(a: float, b: float) -> bool:
    """Equal within 1e-6 (relative), or both non-finite (a step the GradScaler skipped)."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return not math.isfinite(a) and not math.isfinite(b)
    return a == pytest.approx(b, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_steps_follow_lightning_and_norms_equal_its_pre_clip_grad_norm(tmp_path: Path, precision: str) -> None:
    callback = GradscopeCallback()
    module = Regressor()
    trainer = fit(module, callback, tmp_path, precision=precision)
    record = callback.record
    assert record is not None
    assert trainer.global_step == 4
    assert record.steps == 4 and record.backwards == 8
    totals = record.probes["grad_norm"].total_norm.tolist()
    assert len(module.pre_clip) == 4
    assert all(same(a, b) for a, b in zip(totals, module.pre_clip)), (totals, module.pre_clip)
    assert max(totals) > 0.1  # clipping acted, and the record kept the norms from before it
    clip = record.probes["clipping"]
    assert clip.summary.norm_calls == 4 and clip.calls[0].threshold == 0.1
    assert record.run is not None and record.run.status == "completed"
    assert record.run.options["precision"] == precision and record.run.options["accumulate_grad_batches"] == 2
    assert record.step_on == "manual"
    # begin_step() before each update: the update ratios compare the weights around it
    ratios = record.probes["update_ratio"]
    assert ratios.steps == [0, 1, 2] and (ratios.ratios > 0).all()   # sampled at 0, 1, 2, 4, ...
    # a healthy fit raises no alarm through the callback
    assert [f.code for f in record.findings if f.severity.value != "info"] == []


def test_a_step_the_grad_scaler_skips_is_still_a_step(tmp_path: Path) -> None:
    # fp16 autocast on the CPU, with a loss scale so large the first backward overflows fp16:
    # the scaler skips that optimizer step and lowers the scale so the next ones go through
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**24, backoff_factor=2.0**-16)
    callback = GradscopeCallback()
    module = Regressor()
    trainer = fit(module, callback, tmp_path, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    record = callback.record
    assert record is not None
    assert scaler.get_scale() < 2.0**24           # a step really was skipped
    assert trainer.global_step == 4 and record.steps == 4 and record.backwards == 8
    assert record.grad_scaler is True
    totals = record.probes["grad_norm"].total_norm.tolist()
    assert not math.isfinite(totals[0]) and all(math.isfinite(t) for t in totals[1:])
    assert all(same(a, b) for a, b in zip(totals, module.pre_clip)), (totals, module.pre_clip)


def test_registration_findings_from_setup_are_in_the_record(tmp_path: Path) -> None:
    callback = GradscopeCallback()
    fit(ListHeld(), callback, tmp_path)
    gs101 = [f for f in callback.findings if f.code == "GS101"]
    assert gs101 and "blocks" in gs101[0].where
    assert "GS104" not in [f.code for f in callback.findings]      # no forward pass unless asked
    assert callback.record is not None and callback.record.registration is not None   # the module tree
    assert callback.json_path == tmp_path / "gradscope" / "run.json"
    written = json.loads(callback.json_path.read_text(encoding="utf-8"))
    assert "GS101" in [f["code"] for f in written["findings"]]
    assert callback.html_path is not None and "GS101" in callback.html_path.read_text(encoding="utf-8")


def test_check_forward_runs_the_example_input_array(tmp_path: Path) -> None:
    callback = GradscopeCallback(check_forward=True, json_name=None, html_name=None)
    fit(ListHeld(), callback, tmp_path, max_steps=1, accumulate_grad_batches=1)
    assert {"GS101", "GS104"} <= {f.code for f in callback.findings}   # GS104: called in forward, unregistered
    assert not (tmp_path / "gradscope").exists()


def test_scalars_are_logged_from_flushed_host_data(tmp_path: Path) -> None:
    callback = GradscopeCallback(flush_every=2, report_dir=tmp_path / "out", html_name=None)
    trainer = fit(Regressor(), callback, tmp_path)
    record = callback.record
    assert record is not None
    logged = trainer.callback_metrics
    assert logged["gradscope/grad_norm"].device.type == "cpu"
    # the last flush came after step 3: the value logged last is that step's total norm
    assert float(logged["gradscope/grad_norm"]) == pytest.approx(record.probes["grad_norm"].total_norm[-1], rel=1e-6)
    assert float(logged["gradscope/grad_norm_max"]) == pytest.approx(max(record.probes["grad_norm"].total_norm),
                                                                     rel=1e-6)
    assert float(logged["gradscope/clip_rate"]) == 1.0
    assert callback.json_path == tmp_path / "out" / "run.json" and callback.html_path is None


def test_an_exception_closes_the_scope_and_still_writes_the_record(tmp_path: Path) -> None:
    callback = GradscopeCallback()
    module = Regressor(fail_at=3)
    with pytest.raises(RuntimeError, match="broken batch"):
        fit(module, callback, tmp_path)
    record = callback.record
    assert record is not None and record.run is not None
    assert record.run.status == "crashed" and "broken batch" in (record.run.error or "")
    assert record.steps == 2 and record.backwards == 3   # one full step, and the cut-short one kept
    assert json.loads((tmp_path / "gradscope" / "run.json").read_text(encoding="utf-8"))["run"]["status"] == "crashed"
    for p in module.parameters():  # every hook of the scope is gone
        assert not getattr(p, "_post_accumulate_grad_hooks", None)


def test_deepspeed_strategy_is_refused_with_the_reason() -> None:
    class DeepSpeedStrategy:  # stands in for lightning's own: only the class name is looked at
        pass

    class Tuned(DeepSpeedStrategy):
        pass

    callback = GradscopeCallback()
    with pytest.raises(GradscopeError, match=r"does not support DeepSpeedStrategy: DeepSpeed \(ZeRO\).*\.grad"):
        callback.setup(SimpleNamespace(strategy=Tuned()), Regressor(), "fit")  # type: ignore[arg-type]


def test_options_are_checked_when_the_callback_is_made() -> None:
    with pytest.raises(GradscopeError, match="step_on=...\\) is not available: the callback owns the step clock"):
        GradscopeCallback(step_on="optimizer")
    with pytest.raises(GradscopeError, match="unknown option 'flush_evry'"):
        GradscopeCallback(flush_evry=10)


def test_the_pytorch_lightning_trainer_runs_the_callback_too(tmp_path: Path) -> None:
    PL = pytest.importorskip("pytorch_lightning")

    class Small(PL.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = nn.Linear(8, 1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.05)

    callback = GradscopeCallback(html_name=None)
    trainer = PL.Trainer(max_steps=3, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         callbacks=[callback])
    trainer.fit(Small(), loader())
    assert callback.record is not None and callback.record.steps == 3 and callback.record.backwards == 3


def test_only_pytorch_lightning_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``lightning`` absent, the module builds its callback on ``pytorch_lightning``."""
    import importlib
    import sys

    PL = pytest.importorskip("pytorch_lightning")
    monkeypatch.setitem(sys.modules, "lightning", None)  # None in sys.modules: "import lightning" fails
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.delitem(sys.modules, "gradscope.integrations.lightning")
    fresh = importlib.import_module("gradscope.integrations.lightning")
    assert issubclass(fresh.GradscopeCallback, PL.Callback)
