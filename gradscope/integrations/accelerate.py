"""``watch()`` for a loop written with Hugging Face accelerate.

accelerate has no callback API: the loop is the user's, so ``with watch(...)`` wraps it as usual.
What ``Accelerator.prepare`` returns needs two things to be right, which this module does:

- the torch optimizer inside ``AcceleratedOptimizer`` (``optimizer.optimizer``) is the one to
  hook. ``AcceleratedOptimizer.step`` calls it only when ``accelerator.sync_gradients`` is true, so
  under ``accelerator.accumulate(model)`` its step hooks mark exactly one step per real update;
  the wrapper's ``step`` runs on every micro-batch.
- the model goes to ``watch()`` as prepared: ``watch()`` peels DDP and ``torch.compile`` off
  itself and keeps an FSDP wrapper, which it needs to find FSDP's flat parameters.
  (``accelerator.unwrap_model(model)`` is the same for one process and for DDP; under FSDP it would
  take away the wrapper.)

Gradients are read at the end of each backward, after DDP's all-reduce, and a micro-batch under
``no_sync`` adds its backward to the step without ending it: the step's row holds the accumulated
gradient, before ``accelerator.clip_grad_norm_`` (which calls torch's ``clip_grad_norm_`` and is
seen by the clipping probe). A step a GradScaler skips (fp16) never reaches the torch optimizer:
it is not a step of its own, its backward passes join the next one.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from gradscope.errors import GradscopeError
from gradscope.integrations._common import require, unwrap_optimizer

require(("accelerate",), "gradscope.integrations.accelerate")

if TYPE_CHECKING:  # pragma: no cover - typing only
    import torch
    from torch import nn

    from gradscope.scope import Scope

UNSUPPORTED = {
    "DEEPSPEED": "DeepSpeed (ZeRO) keeps the gradients in its own flattened, partitioned buffers and steps its "
                 "own engine, so after backward there is no per-parameter .grad for gradscope to read; "
                 "accelerator.clip_grad_norm_ returns DeepSpeed's engine.get_global_grad_norm() instead",
    "MEGATRON_LM": "Megatron-LM keeps the gradients in its own distributed buffers and steps its own optimizer",
}


def watch(accelerator: Any, model: nn.Module, optimizer: Any = None, **options: Any) -> Scope:
    """``gradscope.watch`` on what ``accelerator.prepare`` returned.

    Args:
        accelerator: the ``accelerate.Accelerator``.
        model: the prepared model.
        optimizer: the prepared optimizer (an ``AcceleratedOptimizer``), or a list of them.
        **options: ``watch()`` options.

    Use it as ``watch()`` itself: ``with gradscope.integrations.accelerate.watch(accelerator,
    model, optimizer) as scope: ...``.
    """
    from gradscope.scope import watch as watch_model

    kind = getattr(accelerator, "distributed_type", None)
    name = str(getattr(kind, "name", kind) or "")
    if name in UNSUPPORTED:
        raise GradscopeError(f"gradscope cannot watch an accelerate run with distributed_type={name}: "
                             f"{UNSUPPORTED[name]}.")
    given: Sequence[Any] = optimizer if isinstance(optimizer, (list, tuple)) else \
        ([] if optimizer is None else [optimizer])
    inner: list[torch.optim.Optimizer] = [unwrap_optimizer(o) for o in given]
    return watch_model(model, inner, **options)
