"""``GradscopeCallback``: gradscope for the Hugging Face ``Trainer``.

    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[GradscopeCallback()])
    trainer.train()                # then <output_dir>/gradscope/run.json and report.html

What it does, event by event (the Trainer's order, as measured in docs/integrations.md):

- ``on_train_begin``: ``watch(model, optimizer.optimizer, step_on="manual")``. The Trainer passes
  its optimizer wrapped in accelerate's ``AcceleratedOptimizer``; gradscope hooks the torch
  optimizer inside it, whose step runs once per real update. The model is the Trainer's own
  (unwrapped) model. DeepSpeed is refused with a warning and the run goes on unwatched.
- ``on_pre_optimizer_step``: ``scope.begin_step()``, after the Trainer clipped and right before the
  update: the update ratios' "before".
- ``on_step_end``: ``scope.step()``, once per optimizer step on the Trainer's count
  (``state.global_step``), also for a step a GradScaler skipped. The gradient norms are read at
  the end of the last micro-batch's backward, before ``clip_grad_norm_``: the per-step total norm
  is the ``grad_norm`` the Trainer logs (its pre-clip norm), not the clipped one.
- ``on_train_end``: closes the scope and writes the record and report on the main process.

The Trainer has no event for an exception: when ``trainer.train()`` raises, call
``callback.close(error)`` (a ``try``/``except`` around ``train``) to keep the record of the
crashed run; otherwise the scope's hooks stay on the model until the process ends.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradscope.integrations._common import (
    ReportFiles,
    SessionResults,
    WatchSession,
    require,
    unwrap_optimizer,
    watch_options,
)

_transformers = require(("transformers",), "gradscope.integrations.transformers")

if TYPE_CHECKING:  # pragma: no cover - typing only
    from torch import nn
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

    from gradscope.records import RunRecord
else:
    TrainerCallback = _transformers.TrainerCallback

DEEPSPEED = ("DeepSpeed (ZeRO) keeps the gradients in its own flattened, partitioned buffers and steps its "
             "own engine, so after backward there is no per-parameter .grad for gradscope to read and no "
             "torch optimizer step to follow. Training goes on unwatched; the Trainer's logged grad_norm is "
             "DeepSpeed's own engine.get_global_grad_norm().")


class GradscopeCallback(SessionResults, TrainerCallback):
    """Watch a ``Trainer.train()`` run with gradscope and write its record and report.

    Args:
        report_dir: where the files go (default ``<args.output_dir>/gradscope``).
        json_name: the JSON record's file name there; None writes no record.
        html_name: the HTML report's file name there; None writes no report.
        check: run ``gradscope.check`` (the static registration checks) on the model.
        **options: ``watch()`` options: activations, flush_every, max_kept_steps, strict,
            dead_units_every, thresholds, probes.

    After training: ``record`` (the ``RunRecord``), ``findings``, ``json_path``, ``html_path``;
    ``disabled`` says why nothing was watched (DeepSpeed), or is None.
    """

    def __init__(self, *, report_dir: str | Path | None = None, json_name: str | None = "run.json",
                 html_name: str | None = "report.html", check: bool = True, **options: Any) -> None:
        self.files = ReportFiles(Path(report_dir) if report_dir is not None else None, json_name, html_name)
        self.options = watch_options(options, "GradscopeCallback")
        self.check = check
        self.session = WatchSession(self.options, "transformers")
        self.disabled: str | None = None
        self.json_path: Path | None = None
        self.html_path: Path | None = None
        self._output_dir = Path(".")
        self._main_process = True

    # ---- events ------------------------------------------------------------------------------------
    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, optimizer: Any = None, **kwargs: Any) -> None:
        if self.session.active:  # the last train() raised and nobody called close(): its hooks go now
            self.close(RuntimeError("train() ended without on_train_end (it raised?) and close() was not "
                                    "called; this record was closed when the next train() began"))
        self.session = WatchSession(self.options, "transformers")  # one session per train()
        self.json_path = self.html_path = None
        self._output_dir = Path(str(args.output_dir))
        self._main_process = bool(state.is_world_process_zero)
        self.disabled = deepspeed_in_use(args, model, optimizer)
        if self.disabled is not None:
            warnings.warn(f"GradscopeCallback is off for this run: {self.disabled}", RuntimeWarning, stacklevel=2)
            return
        if model is None:
            self.disabled = "the Trainer passed no model to the callback"
            warnings.warn(f"GradscopeCallback is off for this run: {self.disabled}", RuntimeWarning, stacklevel=2)
            return
        self.session.facts.update(arguments_facts(args))
        if self.check:
            self.session.check(model)
        self.session.start(model, [] if optimizer is None else [unwrap_optimizer(optimizer)])

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                              **kwargs: Any) -> None:
        self.session.begin_step()   # after the Trainer clipped, right before the update

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self.session.step()

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self.close()

    def close(self, error: BaseException | None = None) -> RunRecord | None:
        """Finish the record (with ``error`` when ``train()`` raised) and write the files on the main
        process. Safe to call twice; ``on_train_end`` calls it for a run that completed."""
        if not self.session.active:
            return self.session.record
        record = self.session.finish(error) if error is None else self.session.finish_quietly(error)
        if record is not None and self._main_process:
            folder = self._output_dir / "gradscope"
            if error is None:
                self.json_path, self.html_path = self.session.write(self.files, folder)
            else:
                self.json_path, self.html_path = self.session.write_quietly(self.files, folder)
        return record


def deepspeed_in_use(args: Any, model: Any, optimizer: Any) -> str | None:
    """Why gradscope cannot watch this run, when DeepSpeed trains it."""
    names = [type(model).__name__, type(optimizer).__name__, type(getattr(optimizer, "optimizer", None)).__name__]
    if getattr(args, "deepspeed", None) or getattr(args, "hf_deepspeed_config", None) or \
            any("DeepSpeed" in n for n in names):
        return DEEPSPEED
    return None


def arguments_facts(args: Any) -> dict[str, Any]:
    """What the report shows about the TrainingArguments (``run.options`` of the record)."""
    facts: dict[str, Any] = {}
    for key in ("gradient_accumulation_steps", "max_grad_norm", "max_steps", "learning_rate", "fp16", "bf16",
                "per_device_train_batch_size"):
        value = getattr(args, key, None)
        if isinstance(value, (int, float, str)) and not (key in ("fp16", "bf16") and value is False):
            facts[key] = value
    return facts
