"""GS501: a model that ends in softmax, trained with a loss that applies (log-)softmax itself."""
from __future__ import annotations

import ast
from typing import Iterator

from gradscope.lint import torch_api
from gradscope.lint.roles import constructs, module_classes, self_attribute_values
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import SourceFile, dotted, position, walk_code

CODE = "GS501"


def check(src: SourceFile) -> Iterator[Hit]:
    """A softmax-ending model in a file that trains with ``CrossEntropyLoss``/``F.cross_entropy``.

    Matches, when the file calls ``nn.CrossEntropyLoss(...)`` (or a subclass) or
    ``F.cross_entropy(...)`` anywhere: the last layer of an ``nn.Sequential(...)`` call being
    ``nn.Softmax(...)`` (also in the ``OrderedDict`` form); a ``forward`` of an ``nn.Module``
    subclass of the file whose every ``return`` gives a softmax: ``F.softmax``/``torch.softmax``/
    ``x.softmax(...)``, ``nn.Softmax(...)(x)``, ``self.<attr>(x)`` where ``self.<attr>`` is an
    ``nn.Softmax``, or a name last assigned one of these before the ``return``.

    Does not match: softmax used elsewhere (probabilities for reporting after the loss); softmax
    inside a Sequential but not last; a ``forward`` with any return that is not a softmax
    (``if self.training: return logits``); ``LogSoftmax``/``log_softmax`` (with ``NLLLoss`` that
    is the intended pairing, and with ``CrossEntropyLoss`` it is harmless: log-softmax is
    idempotent); files without a cross-entropy loss (inference code); classes that are not
    ``nn.Module`` subclasses.
    """
    loss = _cross_entropy_call(src)
    if loss is None:
        return
    uses = f"this file trains with {src.segment(loss.func, 40)} (line {loss.lineno})"
    twice = "which applies log-softmax itself: softmax runs twice and the gradients flatten"
    for node in src.nodes(ast.Call, ast.ClassDef):
        if isinstance(node, ast.Call) and constructs(src, node, _is_sequential):
            last = _last_layer(node)
            if last is not None and constructs(src, last, torch_api.is_softmax_class):
                yield Hit(last, f"nn.Sequential ends in {src.segment(last, 30)} and {uses}, {twice}")
        elif isinstance(node, ast.ClassDef) and node in module_classes(src):
            forward = next((f for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                            and f.name == "forward"), None)
            if forward is None:
                continue
            returns = [r for r in walk_code(forward.body) if isinstance(r, ast.Return)]
            if returns and all(r.value is not None and _is_softmax(src, r.value, forward, node, r, 0)
                               for r in returns):
                yield Hit(returns[-1], f"{node.name}.forward returns softmax probabilities and {uses}, {twice}")


def _cross_entropy_call(src: SourceFile) -> ast.Call | None:
    calls = [n for n in src.nodes(ast.Call)
             if torch_api.is_cross_entropy(src.torch_object(n.func))]
    return min(calls, key=position) if calls else None


def _is_sequential(obj: object) -> bool:
    sequential = torch_api.resolve("torch.nn.Sequential")
    return sequential is not None and isinstance(obj, type) and issubclass(obj, sequential)


def _last_layer(call: ast.Call) -> ast.expr | None:
    args = call.args
    if not args or isinstance(args[-1], ast.Starred):
        return None
    if len(args) == 1 and isinstance(args[0], ast.Call) and dotted(args[0].func) in (
            "OrderedDict", "collections.OrderedDict") and args[0].args:
        items = args[0].args[0]
        if isinstance(items, (ast.List, ast.Tuple)) and items.elts:
            pair = items.elts[-1]
            if isinstance(pair, ast.Tuple) and len(pair.elts) == 2:
                return pair.elts[1]
        return None
    return args[-1]


def _is_softmax(src: SourceFile, expr: ast.AST, forward: ast.AST, cls: ast.ClassDef,
                at: ast.AST, depth: int) -> bool:
    if depth > 4:
        return False
    if isinstance(expr, ast.Name):
        assigned = [n for n in walk_code(getattr(forward, "body", [])) if isinstance(n, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == expr.id for t in n.targets)
                    and position(n) < position(at)]
        if not assigned:
            return False
        last = max(assigned, key=position)
        return _is_softmax(src, last.value, forward, cls, last, depth + 1)
    if not isinstance(expr, ast.Call):
        return False
    func = expr.func
    obj = src.torch_object(func)
    if obj is not None:
        return torch_api.is_softmax_function(obj)
    if isinstance(func, ast.Call):
        return constructs(src, func, torch_api.is_softmax_class)   # nn.Softmax(dim=1)(x)
    if isinstance(func, ast.Attribute):
        if dotted(func) == f"self.{func.attr}":
            values = self_attribute_values(src, cls, func.attr)
            return bool(values) and all(constructs(src, v, torch_api.is_softmax_class) for v in values)
        return func.attr == "softmax"   # x.softmax(dim)
    return False
