"""Reading tensors out of module outputs, which may be tensors, tuples, lists or dicts."""
from __future__ import annotations

from typing import Any

import torch


def first_grad_tensor(output: Any) -> torch.Tensor | None:
    """The first tensor in a module output that requires grad (a dict output may start with an
    argmax or a mask that does not), or None."""
    if isinstance(output, torch.Tensor):
        return output if output.requires_grad else None
    if isinstance(output, dict):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        for item in output:
            found = first_grad_tensor(item)
            if found is not None:
                return found
    return None


def floating_tensors(obj: Any) -> list[torch.Tensor]:
    """Every floating (or complex) tensor in a module output or its arguments."""
    if isinstance(obj, torch.Tensor):
        return [obj] if obj.is_floating_point() or obj.is_complex() else []
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (tuple, list)):
        return [t for item in obj for t in floating_tensors(item)]
    return []
