"""GS512: gradient accumulation whose micro-batch losses are not divided by the number of steps."""
from __future__ import annotations

import ast
from typing import Iterator

from gradscope.lint import torch_api
from gradscope.lint.roles import is_backward_call, is_loss_call, is_optimizer_step
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import SourceFile, walk_code

CODE = "GS512"
_SCALING = (ast.Div, ast.Mult, ast.FloorDiv)


def check(src: SourceFile) -> Iterator[Hit]:
    """A loss backwarded every iteration, with the optimizer stepped only every N of them, undivided.

    Matches, inside a ``for``/``while`` loop: ``loss.backward()``, ``scaler.scale(loss).backward()``
    or ``torch.autograd.backward(loss)`` on a loss (a loss call such as ``criterion(out, y)`` or
    ``F.cross_entropy(...)``, a ``.loss`` attribute or ``["loss"]`` item of a model's output, or a
    name bound in the loop to one), where the same loop steps an optimizer under an ``if`` whose
    test takes a remainder (``if (i + 1) % accumulation_steps == 0:``) and nothing along the way
    divides or multiplies the loss.

    Does not match: a loss divided or scaled anywhere between its computation and ``backward()``
    (``loss / k``, ``loss = loss / k``, ``loss /= k``, ``loss * scale``, ``criterion(...) / k``);
    ``accelerator.backward(loss)``, ``model_engine.backward(loss)`` and other framework backward
    methods, which divide by their own accumulation setting; steps every iteration; a remainder
    by the constant 1; values lint cannot see into (``loss = compute(batch)`` of another file).
    """
    for node in src.nodes(ast.Call):
        if not is_backward_call(src, node):
            continue
        loops = src.enclosing_loops(node)
        if not loops:
            continue
        loss = _backwarded(src, node)
        if loss is None:
            continue
        loop = loops[0]
        divisor = _accumulation_divisor(src, loop)
        if divisor is None or not _undivided_loss(src, loss, loop, 0):
            continue
        yield Hit(node, f"{src.segment(node)} runs on every micro-batch while the optimizer steps only every "
                        f"{ast.unparse(divisor)} iterations, and the loss is not divided by it: each step "
                        f"applies the sum of {ast.unparse(divisor)} mean gradients, as if the learning rate "
                        f"were that many times larger")


def _backwarded(src: SourceFile, call: ast.Call) -> ast.expr | None:
    """The tensor a plain backward call differentiates; None for a framework's ``x.backward(loss)``."""
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "backward":
        if call.args:
            return None   # accelerator.backward(loss), engine.backward(loss), loss.backward(gradient)
        receiver = func.value
        if (isinstance(receiver, ast.Call) and isinstance(receiver.func, ast.Attribute)
                and receiver.func.attr == "scale" and len(receiver.args) == 1):
            return receiver.args[0]   # scaler.scale(loss).backward()
        return receiver
    if torch_api.is_backward_function(src.torch_object(func)) and call.args:
        first = call.args[0]
        return first if not isinstance(first, (ast.List, ast.Tuple)) else None
    return None


def _accumulation_divisor(src: SourceFile, loop: ast.AST) -> ast.expr | None:
    """N of an ``if ... % N ...:`` in ``loop`` whose body steps an optimizer."""
    for node in walk_code(list(getattr(loop, "body", []))):
        if not isinstance(node, ast.If):
            continue
        if not any(is_optimizer_step(src, n) for n in walk_code(node.body)):
            continue
        for part in ast.walk(node.test):
            if isinstance(part, ast.BinOp) and isinstance(part.op, ast.Mod):
                divisor = part.right
                if isinstance(divisor, ast.Constant) and (not isinstance(divisor.value, int) or divisor.value <= 1):
                    continue
                return divisor
    return None


def _undivided_loss(src: SourceFile, expr: ast.expr, loop: ast.AST, depth: int) -> bool:
    """Whether ``expr`` is certainly a loss that nothing divided or scaled."""
    if depth > 4:
        return False
    if any(isinstance(n, ast.BinOp) and isinstance(n.op, _SCALING) for n in ast.walk(expr)):
        return False
    if isinstance(expr, ast.Call):
        if is_loss_call(src, expr):
            return True
        func = expr.func
        if isinstance(func, ast.Attribute) and func.attr in ("mean", "sum") and not expr.args:
            return _undivided_loss(src, func.value, loop, depth + 1)   # loss.mean()
        return False
    if isinstance(expr, ast.Attribute):
        return expr.attr == "loss"   # outputs.loss
    if isinstance(expr, ast.Subscript):
        key = expr.slice
        return isinstance(key, ast.Constant) and key.value == "loss"   # outputs["loss"]
    if isinstance(expr, ast.Name):
        bindings = _bindings(loop, expr.id)
        if not bindings:
            return False
        for stmt in bindings:
            if isinstance(stmt, ast.AugAssign):
                if isinstance(stmt.op, _SCALING):
                    return False   # loss /= k
                continue
            value = stmt.value
            if value is None:
                return False
            if any(isinstance(n, ast.Name) and n.id == expr.id for n in ast.walk(value)):
                if any(isinstance(n, ast.BinOp) and isinstance(n.op, _SCALING) for n in ast.walk(value)):
                    return False   # loss = loss / k
                continue           # loss = loss.mean(): judged by its other bindings
            if not _undivided_loss(src, value, loop, depth + 1):
                return False
        return True
    return False


def _bindings(loop: ast.AST, name: str) -> list[ast.Assign | ast.AnnAssign | ast.AugAssign]:
    found: list[ast.Assign | ast.AnnAssign | ast.AugAssign] = []
    for node in walk_code(list(getattr(loop, "body", []))):
        if isinstance(node, ast.Assign):
            if any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                found.append(node)
            elif any(isinstance(n, ast.Name) and n.id == name for t in node.targets for n in ast.walk(t)):
                return []   # unpacked from something lint cannot read
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            if isinstance(node.target, ast.Name) and node.target.id == name:
                found.append(node)
    return found
