"""GS403: gradient clipping placed before the backward pass whose gradients it should clip."""
from __future__ import annotations

import ast
from typing import Iterator

from gradscope.lint.roles import is_backward_call, is_optimizer_step
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import LOOP_NODES, SourceFile, position, terminal_name, walk_code

CODE = "GS403"
CLIP_FUNCTIONS = frozenset({"clip_grad_norm_", "clip_grad_value_", "clip_grad_norm"})


def check(src: SourceFile) -> Iterator[Hit]:
    """A clip call with nothing fresh to clip: before its step's backward, or after the step.

    Matches: in a ``for``/``while`` body (nested blocks and nested loops included, in source
    order), a call of ``clip_grad_norm_``/``clip_grad_value_``/``clip_grad_norm`` (any receiver:
    ``torch.nn.utils.``, ``nn.utils.``, an imported name, ``accelerator.``) after which the next
    event is a backward pass (``loss.backward()``, ``scaler.scale(loss).backward()``) rather than an
    optimizer step: the clip acts on stale or zeroed gradients and the fresh ones go unclipped.
    Also a clip that is the last event of the body and comes right after an optimizer step (which
    came after the backward): it clips gradients that were already applied.

    Does not match: clipping after the backward and before the step (also in an accumulation
    branch that runs every k steps); clip and step of the previous iteration's gradients placed
    before this iteration's backward (``clip; step; backward`` in source order); clipping outside
    any loop. Helpers called from the loop are not followed for this rule, so a clip after the
    backward whose step sits in a helper is not flagged.
    """
    reported: set[ast.AST] = set()
    for loop in sorted(src.nodes(*LOOP_NODES), key=position):
        events = sorted(_events(src, loop), key=lambda e: position(e[1]))
        kinds = [k for k, _ in events]
        for i, (kind, node) in enumerate(events):
            if kind != "clip" or node in reported:
                continue
            following = next((k for k in kinds[i + 1:] if k != "clip"), None)
            preceding = next((k for k in reversed(kinds[:i]) if k != "clip"), None)
            if following == "backward":
                problem = ("runs before the backward pass that follows it in this loop: it clips "
                           "gradients that are stale or already zeroed, and the new gradients reach "
                           "the optimizer unclipped")
            elif following is None and preceding == "step" and "backward" in kinds:
                problem = ("runs after the optimizer step and before the next iteration's backward: "
                           "the gradients it clips were already applied, unclipped")
            else:
                continue
            reported.add(node)
            yield Hit(node, f"{src.segment(node.func)}(...) {problem}")


def _events(src: SourceFile, loop: ast.AST) -> Iterator[tuple[str, ast.Call]]:
    for node in walk_code(list(getattr(loop, "body", []))):
        if not isinstance(node, ast.Call):
            continue
        if terminal_name(node.func) in CLIP_FUNCTIONS:
            yield "clip", node
        elif is_backward_call(src, node):
            yield "backward", node
        elif is_optimizer_step(src, node):
            yield "step", node
