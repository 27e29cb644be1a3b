"""GS509: a loss tensor accumulated across iterations, keeping every step's autograd graph alive."""
from __future__ import annotations

import ast
from typing import Iterator, NamedTuple

from gradscope.lint import torch_api
from gradscope.lint.roles import is_backward_call, is_loss_call
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import SourceFile, dotted, position, walk_code

CODE = "GS509"
DETACHING_METHODS = frozenset({"item", "detach", "detach_", "tolist", "numpy"})
SCALAR_BUILTINS = ("float", "int", "bool")
_MAX_DEPTH = 6


def check(src: SourceFile) -> Iterator[Hit]:
    """A loss tensor added into an accumulator (or appended to a list) inside a loop.

    Matches, inside a ``for``/``while`` loop: ``acc += E``, ``acc = acc + E`` and
    ``lst.append(E)``, where ``E`` carries a loss tensor: a name bound in the loop from a loss
    call (``loss_fn(...)``, ``criterion(...)``, a ``torch.nn.functional`` loss such as
    ``F.cross_entropy``, an instance of an ``nn.*Loss`` class, any callable named as a loss:
    ``loss_fn``, ``compute_loss``, ``celoss``, ``criterion``), a name that receives ``.backward()``
    in the loop, or such a
    call written inline; through arithmetic and graph-keeping methods (``loss * n``,
    ``loss.cpu()``, ``loss.mean()``) and torch functions. Appending keeps the tensor, and its
    graph, alive exactly like summing does, so ``losses.append(loss)`` is flagged too.

    Does not match: detached values (``loss.item()``, ``loss.detach()``, ``loss.data``,
    ``float(loss)``, ``loss.tolist()``), including a name rebound to one before the sum; values
    passed through a function lint cannot see into (``all_reduce(loss)``); accumulators whose sum
    is meant to be differentiated: one that later reaches a ``.backward()`` (``total.backward()``,
    ``torch.stack(losses).sum().backward()``, also through assignments) or is returned, unless
    each added loss was backwarded already in the loop (``train_loss += loss`` after
    ``loss.backward()``, then ``return train_loss / n``: the caller can only log it); code under
    ``torch.no_grad()``/``torch.inference_mode()`` (a ``with`` around it or a decorator on its
    function), where no graph exists; accumulation outside any loop; non-loss tensors
    (``correct += (pred == y).sum()``).
    """
    for node in src.nodes(ast.AugAssign, ast.Assign, ast.Expr):
        found = _accumulation(node)
        if found is None:
            continue
        accumulator, added, verb = found
        loops = src.enclosing_loops(node)
        if not loops or _without_grad(src, node):
            continue
        if not _carries_loss(src, added, node, loops[-1], 0):
            continue
        if _reaches_backward_or_return(src, node, accumulator, _backwarded_each_iteration(src, added, loops[-1])):
            continue
        yield Hit(node, f"{src.segment(node)} {verb} the loss tensor itself, so each iteration's "
                        f"autograd graph stays alive and memory grows every step: use .item() "
                        f"(or .detach()) on the loss")


def _accumulation(node: ast.AST) -> tuple[str, ast.expr, str] | None:
    """(accumulator, value added, verb) for ``acc += v``, ``acc = acc + v``, ``acc.append(v)``."""
    if isinstance(node, ast.AugAssign) and isinstance(node.op, ast.Add):
        name = dotted(node.target)
        return (name, node.value, "adds") if name else None
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.value, ast.BinOp):
        name = dotted(node.targets[0])
        value = node.value
        if name and isinstance(value.op, ast.Add):
            if dotted(value.left) == name:
                return name, value.right, "adds"
            if dotted(value.right) == name:
                return name, value.left, "adds"
    if (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
            and isinstance(node.value.func, ast.Attribute) and node.value.func.attr == "append"
            and len(node.value.args) == 1):
        name = dotted(node.value.func.value)
        return (name, node.value.args[0], "keeps") if name else None
    return None


def _without_grad(src: SourceFile, node: ast.AST) -> bool:
    """Under ``with torch.no_grad()``/``inference_mode()`` or in a function decorated with one."""
    for a in src.ancestors(node):
        if isinstance(a, (ast.With, ast.AsyncWith)):
            for item in a.items:
                expr = item.context_expr
                func = expr.func if isinstance(expr, ast.Call) else expr
                if torch_api.disables_grad(src.torch_object(func)):
                    return True
        if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for decorator in a.decorator_list:
                func = decorator.func if isinstance(decorator, ast.Call) else decorator
                if torch_api.disables_grad(src.torch_object(func)):
                    return True
            return False
    return False


def _carries_loss(src: SourceFile, expr: ast.AST, at: ast.AST, region: ast.AST, depth: int) -> bool:
    """Whether ``expr``, evaluated at ``at``, is a loss tensor that still has its graph."""
    if depth > _MAX_DEPTH:
        return False
    if isinstance(expr, ast.Name):
        return _name_carries_loss(src, expr.id, at, region, depth)
    if isinstance(expr, ast.BinOp):
        return any(_carries_loss(src, side, at, region, depth + 1) for side in (expr.left, expr.right))
    if isinstance(expr, ast.UnaryOp):
        return _carries_loss(src, expr.operand, at, region, depth + 1)
    if isinstance(expr, ast.Subscript):
        return _carries_loss(src, expr.value, at, region, depth + 1)
    if not isinstance(expr, ast.Call):
        return False   # attributes (loss.data), constants, comprehensions...
    if is_loss_call(src, expr):
        return True
    func = expr.func
    if isinstance(func, ast.Attribute) and src.torch_object(func) is None:
        if func.attr in DETACHING_METHODS:
            return False
        return _carries_loss(src, func.value, at, region, depth + 1)   # loss.mean(), loss.cpu()
    if src.torch_object(func) is not None:   # torch.mean(loss): torch functions keep the graph
        return any(_carries_loss(src, a, at, region, depth + 1) for a in expr.args)
    return False   # float(loss), or a function lint cannot see into


def _name_carries_loss(src: SourceFile, name: str, at: ast.AST, region: ast.AST, depth: int) -> bool:
    """Judge ``name`` by its last binding in the loop before ``at`` (or the last one at all)."""
    bindings = sorted(_bindings_in(region, name), key=lambda b: position(b.stmt))
    if not bindings:
        return False
    before = [b for b in bindings if position(b.stmt) < position(at)]
    last = (before or bindings)[-1]
    if last.value is None:
        return False   # a loop variable, with-target or unpacking: no evidence
    if _carries_loss(src, last.value, last.stmt, region, depth + 1):
        return True
    if last.augmented:
        return _is_backwarded(src, region, name)
    return _is_backwarded(src, region, name) and not _detached(src, last.value)


class _Bind(NamedTuple):
    stmt: ast.stmt
    value: ast.expr | None      # what `name = value` binds (None when unknown)
    augmented: bool             # `name += value`


def _bindings_in(region: ast.AST, name: str) -> list[_Bind]:
    found: list[_Bind] = []
    for node in walk_code(region):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    found.append(_Bind(node, node.value, False))
                elif _binds(target, name):
                    found.append(_Bind(node, None, False))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and _binds(node.target, name):
            found.append(_Bind(node, node.value, isinstance(node, ast.AugAssign)))
        elif isinstance(node, (ast.For, ast.AsyncFor)) and _binds(node.target, name):
            found.append(_Bind(node, None, False))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            if any(i.optional_vars is not None and _binds(i.optional_vars, name) for i in node.items):
                found.append(_Bind(node, None, False))
    return found


def _binds(target: ast.AST, name: str) -> bool:
    return any(isinstance(t, ast.Name) and t.id == name for t in ast.walk(target))


def _is_backwarded(src: SourceFile, region: ast.AST, name: str) -> bool:
    """Whether ``name.backward()`` (or ``scaler.scale(name).backward()``) runs in ``region``."""
    for node in walk_code(region):
        if is_backward_call(src, node):
            assert isinstance(node, ast.Call)
            receiver = node.func.value if isinstance(node.func, ast.Attribute) else None
            parts = ([receiver] if receiver is not None else []) + list(node.args)
            if any(isinstance(n, ast.Name) and n.id == name for p in parts for n in ast.walk(p)):
                return True
    return False


def _detached(src: SourceFile, value: ast.AST) -> bool:
    if isinstance(value, ast.Call):
        if isinstance(value.func, ast.Attribute) and value.func.attr in DETACHING_METHODS:
            return True
        return any(src.is_builtin(value.func, b) for b in SCALAR_BUILTINS)
    return isinstance(value, ast.Attribute) and value.attr == "data"


def _backwarded_each_iteration(src: SourceFile, added: ast.AST, loop: ast.AST) -> bool:
    """Whether a name in ``added`` receives ``.backward()`` in the loop: its graph is spent already."""
    return any(isinstance(n, ast.Name) and _is_backwarded(src, loop, n.id) for n in ast.walk(added))


def _reaches_backward_or_return(src: SourceFile, at: ast.AST, accumulator: str, spent: bool) -> bool:
    """Whether the accumulated value is differentiated or handed back: then keeping graphs is the point.

    A returned sum of losses that were each backwarded already (``spent``) is for logging: the caller
    cannot differentiate it again, so returning it is no reason to keep every graph."""
    owner = src.enclosing_function(at) or src.tree
    found = getattr(owner, "body", [])
    body = found if isinstance(found, list) else [found]
    nodes = list(walk_code(body))
    names = {accumulator}
    changed = True
    while changed:   # follow assignments: total = sum(losses); total.backward()
        changed = False
        for node in nodes:
            if isinstance(node, ast.Assign) and _mentions(node.value, names):
                for target in node.targets:
                    name = dotted(target)
                    if name and name not in names:
                        names.add(name)
                        changed = True
    for node in nodes:
        if isinstance(node, (ast.Return, ast.Yield, ast.YieldFrom)) and node.value is not None and not spent:
            if _mentions(node.value, names):
                return True
        if is_backward_call(src, node):
            assert isinstance(node, ast.Call)
            parts = ([node.func.value] if isinstance(node.func, ast.Attribute) else []) + list(node.args)
            if any(_mentions(p, names) for p in parts):
                return True
    return False


def _mentions(expr: ast.AST, names: set[str]) -> bool:
    return any(isinstance(n, (ast.Name, ast.Attribute)) and dotted(n) in names for n in ast.walk(expr))
