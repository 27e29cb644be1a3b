"""Train/eval mode (GS504), judged from what each forward of the root module really does.

Mode matters only for modules that behave differently in training: Dropout and BatchNorm-family
layers. A forward under ``no_grad``/``inference_mode`` is evaluation: any such layer still in
train mode there changes the result (dropout) or the running statistics (BatchNorm). A forward
with gradients enabled whose output is backpropagated is training: the root in eval mode there
freezes dropout and BatchNorm statistics for the whole model. (A frozen backbone kept in eval mode
under a root in train mode is the recommended fine-tuning pattern and is not flagged.)
The checks are host-side attribute reads, done in a forward pre-hook on the root.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from gradscope.distributed import clean_name
from gradscope.judges.mode import judge_mode
from gradscope.probes.base import Probe
from gradscope.records.mode import ModeRecord
from gradscope.reports.sections.loop import section_mode

MODE_SENSITIVE: tuple[type[nn.Module], ...] = (
    nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)


class ModeProbe(Probe):
    """GS504: evaluation in train mode, or training in eval mode."""

    name = "mode"
    codes = ("GS504",)
    record_type = ModeRecord
    judge = staticmethod(judge_mode)
    section = staticmethod(section_mode)
    report_order = 750

    def __init__(self) -> None:
        super().__init__()
        self.sensitive: list[tuple[str, nn.Module]] = []
        self.eval_in_train: dict[str, int] = {}   # module -> evaluation forwards seen in train mode
        self.eval_forwards = 0
        self.train_in_eval = 0
        self.first_eval_step: int | None = None
        self.first_train_step: int | None = None
        self._pending_eval_root = False

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.sensitive = [(clean_name(n) or run.root_name, m) for n, m in run.model.named_modules()
                          if isinstance(m, MODE_SENSITIVE)]
        if self.sensitive:
            self.handles.append(run.wrapper.register_forward_pre_hook(self._on_forward))

    def _on_forward(self, module: nn.Module, _args: Any) -> None:
        run = self._state()
        if run.locating:
            return
        if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
            self.eval_forwards += 1
            for name, m in self.sensitive:
                if m.training:
                    self.eval_in_train[name] = self.eval_in_train.get(name, 0) + 1
                    if self.first_eval_step is None:
                        self.first_eval_step = run.step
        else:
            self._pending_eval_root = not run.model.training  # the module, not its wrapper

    def on_backward_end(self) -> None:
        if self._pending_eval_root:
            self.train_in_eval += 1
            if self.first_train_step is None:
                self.first_train_step = self._state().step
        self._pending_eval_root = False

    def record(self) -> ModeRecord | None:
        if not self.sensitive:
            return None
        return ModeRecord(evaluation_forwards=self.eval_forwards,
                          evaluation_in_train_mode=dict(self.eval_in_train),
                          training_steps_in_eval_mode=self.train_in_eval,
                          first_evaluation_in_train_mode_step=self.first_eval_step,
                          first_training_in_eval_mode_step=self.first_train_step)
