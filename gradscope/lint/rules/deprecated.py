"""GS508: deprecated PyTorch and torchvision APIs, each reported with its replacement."""
from __future__ import annotations

import ast
import inspect
from typing import Any, Iterator

from gradscope.lint import torch_api
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import SourceFile

CODE = "GS508"
LEGACY_REDUCTION = ("size_average", "reduce")
LEGACY_WEIGHTS = {"pretrained": "weights", "pretrained_backbone": "weights_backbone"}


def check(src: SourceFile) -> Iterator[Hit]:
    """A use of an API the installed torch or torchvision marks deprecated.

    Matches: calls (and decorator uses) of any torch/torchvision object carrying the library's
    own ``__deprecated__`` mark (``torch.cuda.amp.GradScaler()``/``autocast()`` -> ``torch.amp``,
    ``torch.nn.utils.clip_grad_norm`` -> ``clip_grad_norm_``, ``custom_fwd``, ``NLLLoss2d``...),
    with the library's message; subclassing such a class (``nn.Container``);
    ``torch.autograd.Variable(...)`` (a no-op since PyTorch 0.4); ``size_average=``/``reduce=`` on
    torch losses (-> the equivalent ``reduction=``); torchvision model builders called with
    ``pretrained=``/``pretrained_backbone=`` (-> ``weights=``/``weights_backbone=``, naming the
    weights enum) or with positional arguments (``resnet18(True)``).

    Does not match: current APIs (``weights=None``, ``torch.amp.GradScaler('cuda')``,
    ``reduction='sum'``); a class deprecated only to construct used in ``isinstance``; names lint
    cannot pin to one torch object (``try: from torch.amp import GradScaler`` / ``except
    ImportError: from torch.cuda.amp import GradScaler``); your own functions with a
    ``pretrained`` parameter.
    """
    for node in src.nodes(ast.Call, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef):
        if isinstance(node, ast.Call):
            yield from _call(src, node)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for decorator in node.decorator_list:
                if not isinstance(decorator, ast.Call):
                    yield from _marked(src, decorator, called=True)
            if isinstance(node, ast.ClassDef):
                for base in node.bases:
                    yield from _marked(src, base, called=False)


def _marked(src: SourceFile, expr: ast.AST, *, called: bool) -> Iterator[Hit]:
    name = src.qualname(expr)
    obj = torch_api.resolve(name) if name else None
    if name is None or obj is None:
        return
    message = torch_api.deprecation(obj, called=called)
    if message is not None:
        root = name.split(".")[0]
        version = getattr(torch_api.resolve(root), "__version__", "")
        yield Hit(expr, f"{name} is deprecated in the installed {root} {version}: {message}")


def _call(src: SourceFile, call: ast.Call) -> Iterator[Hit]:
    yield from _marked(src, call.func, called=True)
    obj = src.torch_object(call.func)
    if obj is None:
        return
    if torch_api.is_variable(obj):
        yield Hit(call, "Variable(...) has been a no-op since PyTorch 0.4 and returns a plain tensor: "
                        "use the tensor itself, with torch.tensor(..., requires_grad=True) or "
                        "x.requires_grad_() where it needs a gradient")
    sig = torch_api.signature(obj)
    if sig is None:
        return
    if torch_api.is_loss_class(obj) or torch_api.is_loss_function(obj):
        yield from _legacy_reduction(call, sig)
    if torch_api.in_torchvision_models(obj) and "weights" in sig.parameters:
        yield from _legacy_weights(src, call, obj, sig)


def _legacy_reduction(call: ast.Call, sig: inspect.Signature) -> Iterator[Hit]:
    given = {k.arg: k for k in call.keywords if k.arg in LEGACY_REDUCTION and k.arg in sig.parameters}
    if not given:
        return
    values = {name: _literal_bool(k.value) for name, k in given.items()}
    if any(v is None for v in values.values()):
        replacement = "reduction='mean', 'sum' or 'none'"
    else:
        size_average = values.get("size_average", True)
        reduce = values.get("reduce", True)
        replacement = "reduction=" + repr("mean" if size_average and reduce else "sum" if reduce else "none")
    names = " and ".join(f"{n}=" for n in given)
    yield Hit(next(iter(given.values())), f"{names} is deprecated (torch warns on every call): use {replacement}")


def _legacy_weights(src: SourceFile, call: ast.Call, builder: Any, sig: inspect.Signature) -> Iterator[Hit]:
    short = src.segment(call.func, 40)
    for keyword in call.keywords:
        new = LEGACY_WEIGHTS.get(keyword.arg or "")
        if new is None or new not in sig.parameters:
            continue
        enum = torch_api.weights_enum_name(builder, new)
        flag = _literal_bool(keyword.value)
        pretrained = f"{new}={enum}.DEFAULT" if enum else f"{new}=<the model's Weights enum>.DEFAULT"
        if flag is False:
            replacement = f"{new}=None"
        elif flag is True:
            replacement = f"{pretrained} (pretrained weights)"
        else:
            replacement = f"{pretrained} for pretrained weights or {new}=None"
        yield Hit(keyword, f"{keyword.arg}= in {short}(...) is deprecated since torchvision 0.13: "
                           f"use {replacement}")
    positional = [p for p in sig.parameters.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if call.args and not positional:
        yield Hit(call, f"positional arguments to {short}(...) are deprecated since torchvision 0.13 "
                        f"(the first one was pretrained): pass weights=... by keyword")


def _literal_bool(expr: ast.AST) -> bool | None:
    if isinstance(expr, ast.Constant) and isinstance(expr.value, (bool, int)):
        return bool(expr.value)
    return None
