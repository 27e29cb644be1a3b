"""GS503: a training loop that steps an optimizer after backward but never clears the gradients."""
from __future__ import annotations

import ast
from typing import Callable, Iterator

from gradscope.lint.roles import is_backward_call, is_optimizer_step
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import SourceFile, terminal_name, walk_code

CODE = "GS503"


def check(src: SourceFile) -> Iterator[Hit]:
    """An optimizer step in a loop that runs backward but never zeroes gradients.

    Matches: ``opt.step()`` on an optimizer (a receiver built from ``torch.optim.*`` or named
    ``opt``/``optim``/``optimizer``/``*_opt``...) or ``scaler.step(opt)`` on a gradient scaler, inside
    a loop, where the outermost loop around it in the same function runs a backward pass
    (``x.backward()``, ``scaler.scale(loss).backward()``, ``torch.autograd.backward``) and
    nothing in that loop clears gradients. Also a ``zero_grad()`` made only once before the loop.

    Does not match: any clearing anywhere in the loop, including nested blocks, branches and the
    enclosing loops (``opt.zero_grad()``, ``model.zero_grad()``, any call named ``*zero_grad*``,
    ``p.grad = None``,
    ``p.grad.zero_()``, ``del p.grad``), so accumulation that zeroes every k steps and zeroing
    after the step are fine; clearing inside a helper the loop calls, followed one level (a
    function of the same file called by name, or ``self.method()`` of the same class), or inside
    a closure defined in the loop (``optimizer.step(closure)``); steps of things that are not
    optimizers (``scheduler.step()``, ``env.step(action)``); loops without a backward; steps
    outside any loop.
    """
    for node in src.nodes(ast.Call):
        if not is_optimizer_step(src, node):
            continue
        loops = src.enclosing_loops(node)
        if not loops:
            continue
        outer = loops[-1]
        if not _runs(src, outer, lambda n: is_backward_call(src, n)) or _runs(src, outer, _clears_grad):
            continue
        yield Hit(node, f"{src.segment(node)} runs in a loop that calls backward() but never zero_grad(): "
                        f"gradients add up across iterations, so every step applies the sum of all "
                        f"earlier gradients")


def _runs(src: SourceFile, loop: ast.AST, predicate: Callable[[ast.AST], bool]) -> bool:
    """Whether ``predicate`` holds for a node in the loop or in a same-file helper it calls."""
    body = list(getattr(loop, "body", []))
    for node in walk_code(body, into_defs=True):
        if predicate(node):
            return True
        if isinstance(node, ast.Call):
            helper = _helper(src, node)
            if helper is not None and any(predicate(n) for n in walk_code(helper.body, into_defs=True)):
                return True
    return False


def _helper(src: SourceFile, call: ast.Call) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The function of this file a call certainly runs: ``f(...)`` or ``self.f(...)`` of the class."""
    func = call.func
    local = src.local_def(func)
    if isinstance(local, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return local
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "self":
        cls = src.enclosing_class(call)
        if cls is not None:
            for item in cls.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == func.attr:
                    return item
    return None


def _clears_grad(node: ast.AST) -> bool:
    """A call named ``*zero_grad*``, ``p.grad = ...``, ``del p.grad``, ``p.grad.zero_()``/``fill_(...)``."""
    if isinstance(node, ast.Call):
        func = node.func
        name = terminal_name(func)
        if name is not None and "zero_grad" in name:   # opt.zero_grad(), zero_grads(model)...
            return True
        if isinstance(func, ast.Attribute) and func.attr in ("zero_", "fill_"):
            return any(isinstance(n, ast.Attribute) and n.attr == "grad" for n in ast.walk(func.value))
        return False
    if isinstance(node, (ast.Assign, ast.Delete)):
        targets = node.targets
    elif isinstance(node, ast.AugAssign):
        targets = [node.target]
    else:
        return False
    return any(isinstance(t, ast.Attribute) and t.attr == "grad" for t in targets)
