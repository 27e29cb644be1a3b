"""gradscope inside other people's training loops: Lightning, the HF Trainer, accelerate, TensorBoard.

Each integration is its own module and imports its framework when it is imported, never before:
``import gradscope`` and ``import gradscope.integrations`` import none of them. A module whose
framework is missing raises ``MissingIntegrationError`` (a ``ModuleNotFoundError``) naming the
package and the extra that installs it, ``pip install 'gradscope[integrations]'``.

- ``gradscope.integrations.lightning.GradscopeCallback``: a ``lightning.pytorch.Callback``
  (``pytorch_lightning`` works too).
- ``gradscope.integrations.transformers.GradscopeCallback``: a ``transformers.TrainerCallback``.
- ``gradscope.integrations.accelerate.watch``: ``watch()`` on what ``Accelerator.prepare`` returned.
- ``gradscope.integrations.tensorboard.TensorBoardExporter``: a probe that writes TensorBoard
  events at flushes; ``export_tensorboard`` does the same for a finished record.

See docs/integrations.md.
"""
from __future__ import annotations

from gradscope.integrations._common import EXTRA_INSTALL, MissingIntegrationError

__all__ = ["EXTRA_INSTALL", "MissingIntegrationError"]
