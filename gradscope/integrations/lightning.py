"""``GradscopeCallback``: gradscope for a Lightning ``Trainer``.

    trainer = L.Trainer(callbacks=[GradscopeCallback()], ...)
    trainer.fit(module, data)      # then <default_root_dir>/gradscope/run.json and report.html

What it does, hook by hook (Lightning's order, as measured in docs/integrations.md):

- ``setup("fit")``: refuses ``DeepSpeedStrategy``; runs ``gradscope.check`` on the module (GS101
  to GS106: before the strategy wraps or shards anything) and keeps those findings for the record.
- ``on_fit_start``: ``watch(pl_module, trainer.optimizers, step_on="manual")``. The optimizers do
  not exist before this hook (the strategy builds them after ``setup``); the module is the one
  the user wrote, so names have no ``_forward_module.`` or ``module.`` prefix.
- ``on_before_optimizer_step``: notes that the trainer steps, and ``scope.begin_step()``: the weights
  before the update, for the update ratios. Lightning calls it once per
  optimizer step after the last micro-batch's backward (with a GradScaler: after unscaling), also
  for a step the GradScaler will skip.
- ``on_train_batch_end``: ``scope.step()`` when an optimizer step happened in that batch. The torch
  step hooks cannot be the clock here: with automatic optimization the pre-hook fires before the
  last micro-batch's forward (the closure runs inside ``optimizer.step``), and a step the
  GradScaler skips never reaches the optimizer at all. Lightning's own count has neither problem,
  so ``scope.steps`` equals ``trainer.global_step`` and the per-step norms are those of the
  accumulated, pre-clip gradient Lightning passes to the optimizer.
- ``on_exception``: closes the scope with the error (its cut-short step kept) and writes the
  record on global rank zero, since Lightning calls no teardown hook after an exception.
- ``teardown("fit")``: closes the scope and writes the record and report on global rank zero.

Scalars logged with ``pl_module.log`` (``gradscope/grad_norm``, ``gradscope/grad_norm_max``,
``gradscope/clip_rate``) come from the host copy of the last flush, passed as CPU tensors, so
Lightning keeps them on the host: no device sync per step, no host-to-device copy.

``lightning.pytorch`` is used when installed, else ``pytorch_lightning``; Lightning calls callback
hooks by name, so the class works with either package's ``Trainer``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from gradscope.errors import GradscopeError
from gradscope.integrations._common import ReportFiles, SessionResults, WatchSession, require, watch_options

_lightning = require(("lightning.pytorch", "pytorch_lightning"), "gradscope.integrations.lightning")

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from lightning.pytorch import Callback, LightningModule, Trainer

else:
    Callback = _lightning.Callback

UNSUPPORTED_STRATEGIES = {
    "DeepSpeedStrategy": (
        "DeepSpeed (ZeRO) keeps the gradients in its own flattened, partitioned buffers and steps its "
        "own engine, so after backward there is no per-parameter .grad for gradscope to read and no "
        "torch optimizer step to follow. Use strategy='ddp' or 'fsdp' for a run with gradscope, or "
        "drop the callback and read DeepSpeed's engine.get_global_grad_norm()."),
}


class GradscopeCallback(SessionResults, Callback):
    """Watch a Lightning fit with gradscope and write its record and report.

    Args:
        report_dir: where the files go (default ``<trainer.default_root_dir>/gradscope``).
        json_name: the JSON record's file name there; None writes no record.
        html_name: the HTML report's file name there; None writes no report.
        log_scalars: log ``gradscope/*`` scalars through ``pl_module.log`` (host values of the last
            flush: set ``flush_every`` to ``log_every_n_steps`` for a fresh value at each log).
        check: run ``gradscope.check`` on the module in ``setup``.
        check_forward: also run one forward pass of the check (GS104, GS105) on the module's
            ``example_input_array``.
        **options: ``watch()`` options: activations, flush_every, max_kept_steps, strict,
            dead_units_every, thresholds, probes (for example
            ``probes=["default", TensorBoardExporter(log_dir)]``).

    After ``fit``: ``record`` (the ``RunRecord``), ``findings``, ``json_path``, ``html_path``.
    """

    def __init__(self, *, report_dir: str | Path | None = None, json_name: str | None = "run.json",
                 html_name: str | None = "report.html", log_scalars: bool = True, check: bool = True,
                 check_forward: bool = False, **options: Any) -> None:
        super().__init__()
        self.files = ReportFiles(Path(report_dir) if report_dir is not None else None, json_name, html_name)
        self.options = watch_options(options, "GradscopeCallback")
        self.log_scalars = log_scalars
        self.check = check
        self.check_forward = check_forward
        self.session = WatchSession(self.options, "lightning")
        self.json_path: Path | None = None
        self.html_path: Path | None = None
        self._stepped = False   # an optimizer step happened in the current batch

    # ---- hooks -------------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        refuse_strategy(trainer.strategy)
        self.session = WatchSession(self.options, "lightning")  # one session per fit
        self.json_path = self.html_path = None
        if self.check:
            example = getattr(pl_module, "example_input_array", None) if self.check_forward else None
            self.session.check(pl_module, example)

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        optimizers: list[torch.optim.Optimizer] = list(trainer.optimizers)
        self.session.facts.update(trainer_facts(trainer))
        self.session.start(pl_module, optimizers)
        self._stepped = False

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        self._stepped = True
        self.session.begin_step()

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._stepped:
            self._stepped = False
            self.session.step()
        if self.log_scalars and self.session.scalars:
            import torch

            for key, value in self.session.scalars.items():
                # a CPU tensor: Lightning keeps a logged tensor where it is (a float would become a
                # tensor on the module's device, a host-to-device copy per step)
                pl_module.log(f"gradscope/{key}", torch.tensor(value, dtype=torch.float32), on_step=True,
                              on_epoch=False, batch_size=1)

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if not self.session.active:
            return
        if self.session.finish_quietly(exception) is not None and trainer.is_global_zero:
            self.json_path, self.html_path = self.session.write_quietly(self.files, default_folder(trainer))

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage != "fit" or not self.session.active:
            return
        self.session.finish()
        if trainer.is_global_zero:
            self.json_path, self.html_path = self.session.write(self.files, default_folder(trainer))


def refuse_strategy(strategy: object) -> None:
    """Raise for a strategy whose gradients gradscope cannot read, saying why."""
    for kind in type(strategy).__mro__:
        why = UNSUPPORTED_STRATEGIES.get(kind.__name__)
        if why is not None:
            raise GradscopeError(f"GradscopeCallback does not support {kind.__name__}: {why}")


def default_folder(trainer: Trainer) -> Path:
    return Path(trainer.default_root_dir) / "gradscope"


def trainer_facts(trainer: Trainer) -> dict[str, Any]:
    """What the report shows about the Trainer (``run.options`` of the record)."""
    facts: dict[str, Any] = {"strategy": type(trainer.strategy).__name__,
                             "precision": str(getattr(trainer.precision_plugin, "precision", "")),
                             "accumulate_grad_batches": trainer.accumulate_grad_batches,
                             "world_size": trainer.world_size}
    if trainer.gradient_clip_val:
        facts["gradient_clip_val"] = trainer.gradient_clip_val
        facts["gradient_clip_algorithm"] = str(trainer.gradient_clip_algorithm or "norm")  # Lightning's default
    if trainer.max_steps is not None and trainer.max_steps >= 0:
        facts["max_steps"] = trainer.max_steps
    return facts
