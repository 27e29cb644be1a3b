"""GS101: submodules held in a plain list, tuple, dict or set attribute of an ``nn.Module``."""
from __future__ import annotations

import ast
from typing import Iterator

from gradscope.lint.roles import constructs_module, module_classes
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import SourceFile, dotted, walk_code

CODE = "GS101"
_CONTAINERS = {ast.List: "list", ast.ListComp: "list", ast.Tuple: "tuple", ast.Set: "set",
               ast.SetComp: "set", ast.Dict: "dict", ast.DictComp: "dict", ast.GeneratorExp: "list"}
_CONTAINER_BUILTINS = ("list", "tuple", "dict", "set")
_GROWERS = ("append", "extend", "insert", "add", "update", "setdefault")
_HINTS = {"dict": "Hold them in nn.ModuleDict({...}): it registers each value as a submodule.",
          "list": "Hold them in nn.ModuleList([...]) (or nn.Sequential when they run in order).",
          "tuple": "Hold them in nn.ModuleList([...]) (or nn.Sequential when they run in order).",
          "set": "Hold them in nn.ModuleList([...]): sets also lose the order of the layers."}


def check(src: SourceFile) -> Iterator[Hit]:
    """``self.x = <plain container of new submodules>`` in a method of an ``nn.Module`` subclass.

    Matches, in any method of a class of the file that subclasses ``nn.Module``: ``self.x = V``
    (or ``self.x: T = V``) where ``V`` is a list, tuple, dict or set display or comprehension, or
    ``list(...)``/``tuple(...)``/``dict(...)``/``set(...)`` of one, holding at any depth a call
    that certainly builds a module (``nn.X(...)``, a torchvision builder, a module class of the
    file); or a local name that is such a container, or a plain container grown with such calls
    (``layers = []; layers.append(nn.Linear(...))``); or ``self.x = []`` later grown with
    ``self.x.append(nn.Linear(...))`` in the class.

    Does not match: ``nn.ModuleList``/``nn.ModuleDict``/``nn.Sequential`` (also of a star-list);
    containers of numbers, strings or existing modules (``[m for m in self.modules()]``);
    constructors lint cannot resolve (classes imported from your other files); classes that are
    not ``nn.Module`` subclasses.
    """
    for cls in module_classes(src):
        for node in _method_code(cls):
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            else:
                continue
            for target in targets:
                name = dotted(target)
                if not (name and name.startswith("self.") and name.count(".") == 1):
                    continue
                kind = _module_container(src, value, node, cls)
                if kind is None and _container_kind(src, value) is not None:
                    kind = _grown_with_modules(src, cls, name)
                if kind is not None:
                    yield Hit(node, f"{name} holds submodules in a plain {kind}: nn.Module does not "
                                    f"register them, so parameters(), .to(), state_dict(), "
                                    f"train()/eval() and the optimizer never see them",
                              hint=_HINTS[kind])


def _container_kind(src: SourceFile, value: ast.AST) -> str | None:
    """"list", "tuple", "dict" or "set" for a plain container expression, else None."""
    for node_type, kind in _CONTAINERS.items():
        if isinstance(value, node_type):
            return kind
    if isinstance(value, ast.Call) and len(value.args) <= 1:
        for builtin in _CONTAINER_BUILTINS:
            if src.is_builtin(value.func, builtin):
                return builtin
    return None


def _module_container(src: SourceFile, value: ast.AST, at: ast.AST, cls: ast.ClassDef) -> str | None:
    """The container kind when ``value`` is a plain container holding freshly built modules."""
    kind = _container_kind(src, value)
    if kind is not None:
        return kind if _holds_modules(src, value) else None
    if isinstance(value, ast.Name):
        return _local_container(src, value, at)
    return None


def _holds_modules(src: SourceFile, value: ast.AST) -> bool:
    """Whether a module-building call sits in the container (or nested containers), not inside one."""
    stack = [value]
    while stack:
        node = stack.pop()
        if constructs_module(src, node):
            return True
        if isinstance(node, ast.Call) and _container_kind(src, node) is None:
            continue   # nn.ModuleList([...]) or any other call: its arguments are not our elements
        if isinstance(node, (ast.Lambda, ast.FunctionDef)):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


def _local_container(src: SourceFile, name: ast.Name, at: ast.AST) -> str | None:
    """A local name of the method that is a plain container built or grown with modules."""
    bindings = src.lookup(name.id, name) or []
    if not bindings or any(b.kind not in ("assign", "annassign") or b.value is None for b in bindings):
        return None
    kinds = {_container_kind(src, b.value) for b in bindings if b.value is not None}
    if len(kinds) != 1 or None in kinds:
        return None
    kind = kinds.pop()
    if any(_holds_modules(src, b.value) for b in bindings if b.value is not None):
        return kind
    function = src.enclosing_function(at)
    return kind if function is not None and _grows_with_modules(src, function, name.id) else None


def _grown_with_modules(src: SourceFile, cls: ast.ClassDef, attribute: str) -> str | None:
    kinds = {_container_kind(src, v) for v in _assigned_values(cls, attribute)}
    if len(kinds) != 1 or None in kinds:
        return None
    return kinds.pop() if _grows_with_modules(src, cls, attribute) else None


def _assigned_values(cls: ast.ClassDef, attribute: str) -> list[ast.expr]:
    values = []
    for node in _method_code(cls):
        if isinstance(node, ast.Assign) and any(dotted(t) == attribute for t in node.targets):
            values.append(node.value)
    return values


def _method_code(cls: ast.ClassDef) -> Iterator[ast.AST]:
    """Every node in the methods of ``cls`` (not in nested classes)."""
    for item in cls.body:
        if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield from walk_code(item.body)


def _grows_with_modules(src: SourceFile, scope: ast.AST, name: str) -> bool:
    """``name.append(nn.X(...))``, ``name[k] = nn.X(...)``, ``name += [nn.X(...)]`` in ``scope``."""
    nodes = _method_code(scope) if isinstance(scope, ast.ClassDef) else walk_code(list(getattr(scope, "body", [])))
    for node in nodes:
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in _GROWERS and dotted(node.func.value) == name):
            if any(constructs_module(src, a) or _holds_modules(src, a) for a in node.args):
                return True
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Subscript) and dotted(t.value) == name for t in node.targets):
            if constructs_module(src, node.value):
                return True
        elif isinstance(node, ast.AugAssign) and dotted(node.target) == name:
            if _holds_modules(src, node.value):
                return True
    return False
