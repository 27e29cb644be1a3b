"""The lint rules, one module per catalog code, and the registry the engine runs."""
from __future__ import annotations

from gradscope.lint.rules import (
    accumulation,
    clipping,
    deprecated,
    devices,
    keywords,
    loss_accumulation,
    registration,
    softmax,
    zero_grad,
)
from gradscope.lint.rules.base import Hit, Rule

RULES: dict[str, Rule] = {
    module.CODE: Rule(module.CODE, module.check)
    for module in sorted(
        (registration, clipping, softmax, zero_grad, devices, keywords, deprecated, loss_accumulation,
         accumulation),
        key=lambda m: m.CODE,
    )
}

__all__ = ["RULES", "Hit", "Rule"]
