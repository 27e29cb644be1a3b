"""What an expression stands for in a training script: a module, a tensor, an optimizer, a loss.

Evidence comes first, names last:

1. **Bindings in scope.** A name assigned from ``nn.X(...)``, a torchvision model builder, or a
   class defined in the file that subclasses ``nn.Module`` is a module; one assigned from a torch
   tensor factory (``torch.zeros``, ``torch.tensor``, ``nn.Parameter``...) is a tensor; so is a loop
   variable over a DataLoader (``for data, target in loader``). Annotations (``x: torch.Tensor``,
   ``m: nn.Module``) count. ``self`` in a method of an ``nn.Module`` subclass is a module.
   Conflicting evidence (a tensor here, a module there) means unknown.
2. **An opaque binding vetoes the name.** A name assigned from a call lint cannot see into
   (``inputs = tokenizer(...)``) is unknown, whatever it is called.
3. **Names, only without any binding evidence.** A function parameter or global called ``data``,
   ``inputs``, ``x``, ``target(s)``, ``labels``, ``images`` or ``batch`` is taken as a tensor.
   Module-like names (``model``, ``net``, ``*_model``) are never taken as tensors.

Files that import PyTorch Geometric or Hugging Face ``transformers`` skip the loader and name
evidence: their batch objects (``Data``/``Batch``, ``BatchEncoding``) implement ``.to()`` in place.
"""
from __future__ import annotations

import ast
import enum
import re
from typing import Any

from gradscope.lint import torch_api
from gradscope.lint.source import Binding, SourceFile, dotted, method_call, position, terminal_name

TENSOR_NAMES = frozenset({
    "data", "input", "inputs", "x", "target", "targets", "label", "labels", "image", "images", "batch",
})
IN_PLACE_TO_LIBRARIES = frozenset({"torch_geometric", "transformers"})
# Methods that return an object of the receiver's kind (a module stays a module, a tensor a tensor).
SAME_KIND_METHODS = frozenset({
    "to", "cuda", "cpu", "float", "half", "double", "bfloat16", "type", "train", "eval", "requires_grad_",
})
_LOADER_WRAPPERS = frozenset({"tqdm", "iter"})
_OPTIMIZER_NAME = re.compile(r"^(opt|optim|optimizer|optimiser)s?(_\w*)?$|_(opt|optim|optimizer|optimiser)s?$")
_MAX_DEPTH = 8


class Role(enum.Enum):
    MODULE = "module"
    TENSOR = "tensor"
    UNKNOWN = "unknown"


# -- modules ------------------------------------------------------------------------------------

def module_classes(src: SourceFile) -> set[ast.ClassDef]:
    """Classes defined in the file that subclass ``nn.Module`` (directly, or via each other)."""
    if "module_classes" in src.cache:
        return src.cache["module_classes"]
    classes = sorted(src.nodes(ast.ClassDef), key=position)
    found: set[ast.ClassDef] = set()
    changed = True
    while changed:
        changed = False
        for cls in classes:
            if cls in found:
                continue
            for base in cls.bases:
                local = src.local_def(base)
                if (local in found) or torch_api.is_module_class(src.torch_object(base)):
                    found.add(cls)
                    changed = True
                    break
    src.cache["module_classes"] = found
    return found


def constructs_module(src: SourceFile, call: ast.AST) -> bool:
    """A call that certainly builds an ``nn.Module``: torch classes, torchvision builders, file classes."""
    if not isinstance(call, ast.Call):
        return False
    obj = src.torch_object(call.func)
    if obj is not None:
        return torch_api.is_module_class(obj) or torch_api.returns_module(obj)
    return src.local_def(call.func) in module_classes(src)


def constructs(src: SourceFile, call: ast.AST, predicate: Any) -> bool:
    """A call of a torch object for which ``predicate(obj)`` holds (``is_loss_class``...)."""
    return isinstance(call, ast.Call) and bool(predicate(src.torch_object(call.func)))


# -- the role of an expression ------------------------------------------------------------------

def role(src: SourceFile, expr: ast.AST, depth: int = 0) -> Role:
    """MODULE, TENSOR or UNKNOWN for ``expr``, following the module docstring's rules."""
    if depth > _MAX_DEPTH:
        return Role.UNKNOWN
    if isinstance(expr, ast.Call):
        if isinstance(expr.func, ast.Attribute) and expr.func.attr in SAME_KIND_METHODS:
            if src.torch_object(expr.func) is None:
                return role(src, expr.func.value, depth + 1)
        obj = src.torch_object(expr.func)
        if obj is not None:
            if torch_api.makes_tensor(obj):
                return Role.TENSOR
            if torch_api.is_module_class(obj) or torch_api.returns_module(obj):
                return Role.MODULE
            return Role.UNKNOWN
        return Role.MODULE if constructs_module(src, expr) else Role.UNKNOWN
    if isinstance(expr, ast.Name):
        return _name_role(src, expr, depth)
    if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
        if _name_role(src, expr.value, depth) is Role.MODULE and expr.value.id == "self":
            return _self_attribute_role(src, expr, depth)
        return Role.UNKNOWN
    if isinstance(expr, ast.Subscript):
        return Role.TENSOR if role(src, expr.value, depth + 1) is Role.TENSOR else Role.UNKNOWN
    return Role.UNKNOWN


def _name_role(src: SourceFile, name: ast.Name, depth: int) -> Role:
    bindings = src.lookup(name.id, name)
    trust_names = not (src.imported_roots & IN_PLACE_TO_LIBRARIES)
    named = Role.TENSOR if trust_names and name.id.lower() in TENSOR_NAMES else Role.UNKNOWN
    if bindings is None:
        return named
    memo: dict[tuple[str, int], Role | None] = src.cache.setdefault("name-roles", {})
    key = (name.id, id(bindings))
    if key in memo:
        found = memo[key]
        return Role.UNKNOWN if found is None else found   # None: a cycle, still being worked out
    memo[key] = None
    known: set[Role] = set()
    opaque = False
    for binding in bindings:
        evidence = _binding_role(src, binding, depth, trust_names)
        if evidence is None:
            continue
        if evidence is Role.UNKNOWN:
            opaque = True
        else:
            known.add(evidence)
    if len(known) == 1:
        result = known.pop()
    elif known or opaque:
        result = Role.UNKNOWN
    else:
        result = named
    memo[key] = result
    return result


def _binding_role(src: SourceFile, binding: Binding, depth: int, trust_loaders: bool) -> Role | None:
    """What one binding says: a role, UNKNOWN for an opaque value, None for no evidence either way."""
    if binding.annotation is not None:
        annotated = _annotation_role(src, binding.annotation)
        if annotated is not Role.UNKNOWN:
            return annotated
    if binding.kind in ("assign", "annassign") and binding.value is not None:
        if _same_kind_of(binding.value, binding.name):
            return None   # x = x.to(device): the same kind as x already was
        return role(src, binding.value, depth + 1)
    if binding.kind == "arg":
        return Role.MODULE if _is_module_self(src, binding) else None
    if binding.kind == "for":
        if trust_loaders and isinstance(binding.node, (ast.For, ast.AsyncFor)):
            if binding.name in {n.id for n in loop_tensor_names(src, binding.node)}:
                return Role.TENSOR
        return None
    if binding.kind in ("augassign", "annassign"):
        return None
    return Role.UNKNOWN


def _same_kind_of(value: ast.expr, name: str) -> bool:
    """``value`` is ``name`` through same-kind methods only: ``x.float().to(device)``."""
    while isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute) \
            and value.func.attr in SAME_KIND_METHODS:
        value = value.func.value
    return isinstance(value, ast.Name) and value.id == name


def _annotation_role(src: SourceFile, annotation: ast.expr) -> Role:
    obj = src.torch_object(annotation)
    if torch_api.is_tensor_class(obj) or (obj is not None and torch_api.makes_tensor(obj) and isinstance(obj, type)):
        return Role.TENSOR
    if torch_api.is_module_class(obj):
        return Role.MODULE
    return Role.UNKNOWN


def _is_module_self(src: SourceFile, binding: Binding) -> bool:
    """The first parameter of a plain method of an ``nn.Module`` subclass."""
    arguments = src.parents.get(binding.node)
    function = src.parents.get(arguments) if arguments is not None else None
    if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    params = function.args.posonlyargs + function.args.args
    if not params or params[0] is not binding.node:
        return False
    cls = src.parents.get(function)
    decorators = {terminal_name(d) for d in function.decorator_list}
    return (isinstance(cls, ast.ClassDef) and cls in module_classes(src)
            and not decorators & {"staticmethod", "classmethod"})


def _self_attribute_role(src: SourceFile, attr: ast.Attribute, depth: int) -> Role:
    """``self.x`` in a module class: what every ``self.x = ...`` in the class's methods assigns."""
    cls = src.enclosing_class(attr)
    if cls is None:
        return Role.UNKNOWN
    roles = {role(src, value, depth + 1) for value in self_attribute_values(src, cls, attr.attr)}
    return roles.pop() if len(roles) == 1 else Role.UNKNOWN


def self_attribute_values(src: SourceFile, cls: ast.ClassDef, name: str) -> list[ast.expr]:
    """Values assigned to ``self.<name>`` in the methods of ``cls`` (and ``register_buffer``)."""
    key = f"self-attributes:{id(cls)}"
    if key not in src.cache:
        src.cache[key] = _self_attributes(cls)
    return src.cache[key].get(name, [])


def _self_attributes(cls: ast.ClassDef) -> dict[str, list[ast.expr]]:
    found: dict[str, list[ast.expr]] = {}
    for node in ast.walk(cls):
        if isinstance(node, ast.Assign):
            pairs = [(t, node.value) for t in node.targets]
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            pairs = [(node.target, node.value)]
        elif (method_call(node, "register_buffer", "register_parameter") and len(node.args) >= 2
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            found.setdefault(node.args[0].value, []).append(node.args[1])
            continue
        else:
            continue
        for target, value in pairs:
            name = dotted(target)
            if name and name.startswith("self.") and name.count(".") == 1:
                found.setdefault(name[5:], []).append(value)
    return found


# -- loaders, optimizers, losses ------------------------------------------------------------------

def is_loader(src: SourceFile, expr: ast.AST) -> bool:
    """A DataLoader: built by ``DataLoader(...)`` or named ``*loader*``."""
    if isinstance(expr, ast.Call):
        return constructs(src, expr, torch_api.is_dataloader_class)
    name = terminal_name(expr)
    if name and "loader" in name.lower():
        return True
    if isinstance(expr, ast.Name):
        for binding in src.lookup(expr.id, expr) or []:
            if binding.value is not None and constructs(src, binding.value, torch_api.is_dataloader_class):
                return True
    return False


def loop_tensor_names(src: SourceFile, loop: ast.For | ast.AsyncFor) -> list[ast.Name]:
    """The loop variables that hold batches from a DataLoader (not ``enumerate``'s counter)."""
    pairs = [(loop.iter, loop.target)]
    found: list[ast.Name] = []
    while pairs:
        iterable, target = pairs.pop()
        if isinstance(iterable, ast.Call) and iterable.args:
            func = iterable.func
            if terminal_name(func) in _LOADER_WRAPPERS:
                pairs.append((iterable.args[0], target))
                continue
            if src.is_builtin(func, "enumerate") and isinstance(target, ast.Tuple) and len(target.elts) == 2:
                pairs.append((iterable.args[0], target.elts[1]))
                continue
            if (src.is_builtin(func, "zip") and isinstance(target, ast.Tuple)
                    and len(target.elts) == len(iterable.args)):
                pairs.extend(zip(iterable.args, target.elts))
                continue
        if is_loader(src, iterable):
            found.extend(n for n in ast.walk(target) if isinstance(n, ast.Name))
    return found


def is_optimizer(src: SourceFile, expr: ast.AST) -> bool:
    """An optimizer: built from ``torch.optim.*`` in scope, or named ``opt``/``optimizer``/``*_opt``..."""
    name = terminal_name(expr)
    if name and _OPTIMIZER_NAME.search(name.lower()):
        return True
    return _bound_from(src, expr, torch_api.is_optimizer_class)


def is_grad_scaler(src: SourceFile, expr: ast.AST) -> bool:
    """A gradient scaler (``scaler.step(optimizer)`` steps the optimizer)."""
    name = terminal_name(expr)
    if name and "scaler" in name.lower():
        return True
    return _bound_from(src, expr, torch_api.is_grad_scaler_class)


def is_optimizer_step(src: SourceFile, node: ast.AST) -> bool:
    """``opt.step(...)`` on an optimizer, or ``scaler.step(opt)`` on a gradient scaler."""
    if not method_call(node, "step"):
        return False
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
    receiver = node.func.value
    return is_optimizer(src, receiver) or (is_grad_scaler(src, receiver) and bool(node.args))


def _bound_from(src: SourceFile, expr: ast.AST, predicate: Any) -> bool:
    values: list[ast.expr] = []
    if isinstance(expr, ast.Name):
        values = [b.value for b in src.lookup(expr.id, expr) or [] if b.value is not None]
    elif isinstance(expr, ast.Attribute) and dotted(expr) == f"self.{expr.attr}":
        cls = src.enclosing_class(expr)
        values = self_attribute_values(src, cls, expr.attr) if cls is not None else []
    return any(constructs(src, v, predicate) for v in values)


def is_backward_call(src: SourceFile, node: ast.AST) -> bool:
    """``x.backward()``, ``scaler.scale(loss).backward()``, ``torch.autograd.backward(...)``."""
    if not isinstance(node, ast.Call):
        return False
    if isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
        return True
    return torch_api.is_backward_function(src.torch_object(node.func))


_LOSS_WORDS = frozenset({"criterion", "crit"})
_CALLABLE_SUFFIXES = frozenset({"fn", "func", "function", "fcn", "module", "layer", "op"})


def is_loss_name(identifier: str) -> bool:
    """``loss_fn``, ``criterion``, ``compute_loss``, ``celoss``, ``self.loss``: named as a loss.

    The name must end in "loss" once a callable suffix (``_fn``, ``_func``, ``_function``...) is
    dropped, or contain the word ``criterion``/``crit``; ``get_loss_weight`` and ``loss_scale``
    are not losses.
    """
    words = [w for w in identifier.lower().split("_") if w]
    if any(w in _LOSS_WORDS for w in words):
        return True
    while len(words) > 1 and words[-1] in _CALLABLE_SUFFIXES:
        words.pop()
    if not words:
        return False
    last = words[-1]
    return last.endswith("loss") or (last.startswith("loss") and last[4:] in _CALLABLE_SUFFIXES)


def is_loss_call(src: SourceFile, call: ast.AST) -> bool:
    """A call that returns a loss: an ``F`` loss, an ``nn.*Loss`` instance, or a loss-named callable."""
    if not isinstance(call, ast.Call):
        return False
    obj = src.torch_object(call.func)
    if obj is not None:
        return torch_api.is_loss_function(obj)
    if _bound_from(src, call.func, torch_api.is_loss_class):
        return True
    name = terminal_name(call.func)
    return name is not None and is_loss_name(name)
