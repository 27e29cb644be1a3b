"""Train/eval mode (GS504), judged from what each forward of the root module really does.

Mode matters only for modules that behave differently in training: Dropout and BatchNorm-family
layers. A forward under ``no_grad``/``inference_mode`` is evaluation: any such layer still in
train mode there changes the result (dropout) or the running statistics (BatchNorm). A forward
with gradients enabled whose output is backpropagated is training: the root in eval mode there
freezes dropout and BatchNorm statistics for the whole model. (A frozen backbone kept in eval mode
under a root in train mode is the recommended fine-tuning pattern and is not flagged.)
The checks are host-side attribute reads, done in a forward pre-hook on the root.

Two ways around those modules are seen too. ``F.dropout`` (and its 1d/2d/3d/alpha variants) does
not follow ``model.eval()``: a call from one of the model's modules with ``training=True`` during
evaluation is recorded with the module that made it. And an evaluation written as training (no
``no_grad``, no ``eval()``): forwards with gradients enabled whose output never reaches a backward
pass. The root's forward hook puts a gradient hook on the output; an output freed before it fired
was never trained on. Forwards before the first backward (a summary, a lazy-module warm-up) are
not counted.
"""
from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from gradscope.distributed import clean_name
from gradscope.judges.mode import judge_mode
from gradscope.probes.base import Probe, grad_outputs
from gradscope.probes.patches import FunctionPatch, argument, calling_module
from gradscope.records.mode import ModeRecord
from gradscope.reports.sections.loop import section_mode

MODE_SENSITIVE: tuple[type[nn.Module], ...] = (
    nn.modules.dropout._DropoutNd, nn.modules.batchnorm._BatchNorm)
DROPOUTS = ("dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout")
PATCHES = {name: FunctionPatch(F, name) for name in DROPOUTS}
ATTENTION = FunctionPatch(F, "scaled_dot_product_attention")   # dropout_p > 0 is dropout on
_PENDING_LIMIT = 64   # training forwards whose outputs are still alive, not yet backpropagated


class _Forward:
    """One training-mode forward: did a gradient reach its output?"""

    __slots__ = ("step", "reached", "outputs")

    def __init__(self, step: int, outputs: list[torch.Tensor]) -> None:
        self.step = step
        self.reached = False
        self.outputs = [weakref.ref(t) for t in outputs]

    def hook(self, grad: torch.Tensor) -> None:
        self.reached = True

    def freed(self) -> bool:
        return all(ref() is None for ref in self.outputs)


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
        self.functional: dict[str, int] = {}     # module -> F.dropout(training=True) calls in evaluation
        self.first_functional_step: int | None = None
        self.modules: dict[int, str] = {}
        self.pending: list[_Forward] = []
        self.unbackwarded = 0
        self.unbackwarded_in_train: set[str] = set()
        self.first_unbackwarded_step: int | None = None
        self.backwards = 0

    def attach(self, run: Any) -> None:
        super().attach(run)
        self.sensitive = [(clean_name(n) or run.root_name, m) for n, m in run.model.named_modules()
                          if isinstance(m, MODE_SENSITIVE)]
        self.modules = {id(m): clean_name(n) or run.root_name for n, m in run.model.named_modules()
                        if not isinstance(m, MODE_SENSITIVE)}
        if self.sensitive:
            self.handles.append(run.wrapper.register_forward_pre_hook(self._on_forward))
            self.handles.append(run.wrapper.register_forward_hook(self._after_forward))
        for patch in PATCHES.values():
            patch.add(self._on_dropout)
        ATTENTION.add(self._on_attention)

    def detach(self) -> None:
        super().detach()
        for patch in PATCHES.values():
            patch.remove(self._on_dropout)
        ATTENTION.remove(self._on_attention)
        self.pending.clear()

    def _on_dropout(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        run = self.run
        if run is not None and run.model.training and torch.is_grad_enabled():
            return   # the common case first, in training, hundreds of times a step in a transformer
        p = argument(args, kwargs, 1, "p", 0.5)
        if argument(args, kwargs, 2, "training", True) and not (isinstance(p, (int, float)) and p == 0):
            self._dropout_on("F.dropout")

    def _on_attention(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        run = self.run
        if run is not None and run.model.training and torch.is_grad_enabled():
            return
        p = argument(args, kwargs, 4, "dropout_p", 0.0)
        if isinstance(p, (int, float)) and p > 0:
            self._dropout_on("scaled_dot_product_attention")

    def _dropout_on(self, function: str) -> None:
        """A dropout that is on, called from the model: wrong during evaluation."""
        run = self.run
        if run is None or run.locating or torch.compiler.is_compiling():
            return
        if torch.is_grad_enabled() and not torch.is_inference_mode_enabled() and run.model.training:
            return   # training: dropout on is right
        where = calling_module(self.modules, depth=7)
        if where is None:
            return   # another model's dropout, or nn.Dropout (judged by its own mode)
        key = where if function == "F.dropout" else f"{where} ({function})"
        self.functional[key] = self.functional.get(key, 0) + 1
        if self.first_functional_step is None:
            self.first_functional_step = run.step

    def _after_forward(self, _module: nn.Module, _args: Any, output: Any) -> None:
        run = self._state()
        if (run.locating or not self.backwards or not torch.is_grad_enabled()
                or torch.is_inference_mode_enabled() or torch.compiler.is_compiling()):
            return
        if not any(m.training for _, m in self.sensitive):
            return   # nothing here behaves differently in training
        outputs = grad_outputs(output)
        if not outputs:
            return
        forward = _Forward(run.step, outputs)
        for t in outputs:
            t.register_hook(forward.hook)
        self._settle()
        self.pending.append(forward)
        if len(self.pending) > _PENDING_LIMIT:
            self.pending.pop(0)   # kept alive that long: a list of outputs, not an evaluation

    def _settle(self) -> None:
        """Count the forwards whose outputs were freed without a gradient ever reaching them."""
        keep: list[_Forward] = []
        for forward in self.pending:
            if forward.reached:
                continue
            if forward.freed():
                self.unbackwarded += 1
                self.unbackwarded_in_train.update(name for name, m in self.sensitive if m.training)
                if self.first_unbackwarded_step is None:
                    self.first_unbackwarded_step = forward.step
            else:
                keep.append(forward)
        self.pending = keep

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
        self.backwards += 1
        if self.pending:
            self._settle()
        if self._pending_eval_root:
            self.train_in_eval += 1
            if self.first_train_step is None:
                self.first_train_step = self._state().step
        self._pending_eval_root = False

    def flush(self, steps: list[int]) -> None:
        if self.pending:
            self._settle()

    def record(self) -> ModeRecord | None:
        if not self.sensitive and not self.functional:
            return None
        return ModeRecord(evaluation_forwards=self.eval_forwards,
                          evaluation_in_train_mode=dict(self.eval_in_train),
                          training_steps_in_eval_mode=self.train_in_eval,
                          first_evaluation_in_train_mode_step=self.first_eval_step,
                          first_training_in_eval_mode_step=self.first_train_step,
                          functional_dropout_in_evaluation=dict(self.functional),
                          first_functional_dropout_step=self.first_functional_step,
                          unbackwarded_training_forwards=self.unbackwarded,
                          unbackwarded_in_train_mode=sorted(self.unbackwarded_in_train),
                          first_unbackwarded_step=self.first_unbackwarded_step)
