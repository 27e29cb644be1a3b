"""GradscopeCallback on a real HF Trainer (CPU, a tiny custom nn.Module, nothing from the hub)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"          # no hub access, ever: the models are built here
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
transformers = pytest.importorskip("transformers")

from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments  # noqa: E402

from gradscope.integrations.transformers import GradscopeCallback  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Tiny(nn.Module):
    """What the Trainer needs from a model: keyword inputs and a dict with the loss."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 1)
        self.calls = 0
        self.fail_at = fail_at

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("a corrupt sample reached the model")
        out = self.fc2(torch.relu(self.fc1(x)))
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


class Pairs(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(64, 8, generator=g)
        self.y = 3 * torch.randn(64, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "labels": self.y[i]}


def arguments(tmp_path: Path, **options: Any) -> TrainingArguments:
    settings: dict[str, Any] = dict(
        output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=4, gradient_accumulation_steps=2,
        max_grad_norm=0.1, logging_steps=1, learning_rate=1e-2, lr_scheduler_type="constant", report_to=[],
        use_cpu=True, save_strategy="no", disable_tqdm=True, seed=0, dataloader_num_workers=0)
    settings.update(options)
    return TrainingArguments(**settings)


def test_recorded_norms_equal_the_logged_pre_clip_grad_norm(tmp_path: Path) -> None:
    torch.manual_seed(0)
    callback = GradscopeCallback()
    trainer = Trainer(model=Tiny(), args=arguments(tmp_path), train_dataset=Pairs(), callbacks=[callback])
    trainer.train()
    record = callback.record
    assert record is not None
    logged = [(h["step"], h["grad_norm"]) for h in trainer.state.log_history if "grad_norm" in h]
    assert [s for s, _ in logged] == [1, 2, 3, 4]
    totals = record.probes["grad_norm"].total_norm.tolist()
    assert totals == pytest.approx([g for _, g in logged], rel=1e-6)
    assert max(totals) > 0.1                        # clipped: the logged and recorded norms are pre-clip
    assert record.steps == trainer.args.max_steps == 4 and record.backwards == 8
    assert record.optimizers == ["AdamW"]           # the torch optimizer, not AcceleratedOptimizer
    assert record.probes["clipping"].summary.norm_calls == 4
    ratios = record.probes["update_ratio"]           # begin_step() at on_pre_optimizer_step
    assert ratios.steps == [0, 1, 2] and (ratios.ratios > 0).all()   # sampled at 0, 1, 2, 4, ...
    assert record.probes["zero_grad"].steps_checked == 3   # the Trainer zeroes before on_step_end
    assert callback.json_path == tmp_path / "gradscope" / "run.json"
    written = json.loads(callback.json_path.read_text(encoding="utf-8"))
    assert written["run"]["options"]["gradient_accumulation_steps"] == 2
    assert callback.html_path is not None and callback.html_path.exists()
    assert [f.code for f in record.findings if f.severity.value != "info"] == []   # healthy: no alarm


def test_frozen_parameters_in_the_optimizer_get_gs301(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = Tiny()
    model.fc1.requires_grad_(False)                               # frozen ...
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2)      # ... but handed to the optimizer
    callback = GradscopeCallback(html_name=None)
    trainer = Trainer(model=model, args=arguments(tmp_path), train_dataset=Pairs(), callbacks=[callback],
                      optimizers=(optimizer, None))
    trainer.train()
    gs301 = [f for f in callback.findings if f.code == "GS301"]
    assert gs301 and "fc1" in gs301[0].where


def test_deepspeed_turns_the_callback_off_with_a_warning(tmp_path: Path) -> None:
    callback = GradscopeCallback()
    args = SimpleNamespace(deepspeed="ds_config.json", output_dir=str(tmp_path))
    state, control = TrainerState(), TrainerControl()
    model = Tiny()
    with pytest.warns(RuntimeWarning, match=r"off for this run: DeepSpeed \(ZeRO\).*\.grad"):
        callback.on_train_begin(args, state, control, model=model,  # type: ignore[arg-type]
                                optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert callback.scope is None and callback.disabled is not None
    callback.on_step_end(args, state, control)                      # type: ignore[arg-type]
    callback.on_train_end(args, state, control)                     # type: ignore[arg-type]
    assert callback.record is None and not (tmp_path / "gradscope").exists()


def test_close_after_train_raised_keeps_the_crashed_run(tmp_path: Path) -> None:
    torch.manual_seed(0)
    callback = GradscopeCallback(html_name=None)
    model = Tiny(fail_at=4)
    trainer = Trainer(model=model, args=arguments(tmp_path), train_dataset=Pairs(), callbacks=[callback])
    with pytest.raises(RuntimeError, match="corrupt sample") as failure:
        trainer.train()
    record = callback.close(failure.value)
    assert record is not None and record.run is not None
    assert record.run.status == "crashed" and "corrupt sample" in (record.run.error or "")
    assert record.steps == 2 and record.backwards == 3      # one full step, and the cut-short one kept
    assert callback.close() is record                        # safe twice
    assert json.loads((tmp_path / "gradscope" / "run.json").read_text(encoding="utf-8"))["run"]["status"] == "crashed"
    for p in model.parameters():
        assert not getattr(p, "_post_accumulate_grad_hooks", None)
