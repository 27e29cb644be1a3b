"""One parsed Python file: its syntax tree, scopes, name bindings and imports, for the rules to query.

The scope model follows Python's own: module, function, lambda, class and comprehension scopes;
names in a class body are not visible inside its methods; ``global``/``nonlocal`` move a binding
to the scope they name. A name is resolved to a torch object only when every binding that could
reach the reference is an import of that same torch/torchvision object (so a parameter called
``F``, a local ``def clip_grad_norm_``, or a ``try: ... except ImportError:`` fallback to another
object all make the name unknown, and unknown names are never flagged).
"""
from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Iterator, TypeGuard

from gradscope.lint import torch_api

FUNCTION_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
DEF_NODES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
LOOP_NODES = (ast.For, ast.AsyncFor, ast.While)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


@dataclass
class Binding:
    """One place that binds a name, with what is known about the value it binds."""

    name: str
    node: ast.AST                       # the statement (or argument, or comprehension) that binds
    kind: str                           # assign, annassign, augassign, for, arg, import, def, class, other
    value: ast.expr | None = None       # the right-hand side of `name = value` (not for unpacking)
    annotation: ast.expr | None = None
    target: str | None = None           # imports: the absolute dotted name bound, else None


@dataclass
class Scope:
    """A namespace: the module, a function, a lambda, a class body or a comprehension."""

    node: ast.AST
    parent: Scope | None
    bindings: dict[str, list[Binding]] = field(default_factory=dict)
    global_names: set[str] = field(default_factory=set)
    nonlocal_names: set[str] = field(default_factory=set)

    @property
    def is_class(self) -> bool:
        return isinstance(self.node, ast.ClassDef)

    @property
    def is_function(self) -> bool:
        return isinstance(self.node, FUNCTION_NODES)


class SourceFile:
    """A parsed file and the lookups every rule shares. Build it with ``SourceFile(text, path)``."""

    def __init__(self, text: str, path: str, tree: ast.Module | None = None) -> None:
        self.path = path
        self.text = text
        self.lines = text.splitlines()
        self.tree = tree if tree is not None else ast.parse(text, filename=path)
        self.parents: dict[ast.AST, ast.AST] = {}
        self._by_type: dict[type, list[ast.AST]] = {}
        stack: list[ast.AST] = [self.tree]
        while stack:   # one pass: parent links and an index by node type, for every rule to share
            node = stack.pop()
            self._by_type.setdefault(type(node), []).append(node)
            for child in ast.iter_child_nodes(node):
                self.parents[child] = node
                stack.append(child)
        self.scopes: dict[ast.AST, Scope] = {}      # scope-owning node -> its scope
        self._scope_at: dict[ast.AST, Scope] = {}   # every node -> the scope its names are looked up in
        self.imported_roots: set[str] = set()       # top-level packages this file imports
        self.module_scope = _ScopeBuilder(self).build()
        self.cache: dict[str, Any] = {}             # per-file memo for the rules' shared analyses

    def nodes(self, *types: type) -> list[Any]:
        """Every node of the given types in the file."""
        found: list[ast.AST] = []
        for node_type in types:
            found.extend(self._by_type.get(node_type, ()))
        return found

    # -- places ---------------------------------------------------------------------------------

    def where(self, node: ast.AST) -> str:
        """``file:line:col`` with a 1-based column counted in characters (ast counts UTF-8 bytes)."""
        line = getattr(node, "lineno", 1)
        offset = getattr(node, "col_offset", 0)
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        column = len(text.encode("utf-8")[:offset].decode("utf-8", errors="replace")) + 1
        return f"{self.path}:{line}:{column}"

    def segment(self, node: ast.AST, limit: int = 60) -> str:
        """The source text of ``node`` on one line, shortened to ``limit`` characters."""
        text = ast.get_source_segment(self.text, node) or ast.unparse(node)
        text = " ".join(text.split())
        return text if len(text) <= limit else text[: limit - 3] + "..."

    # -- scopes and names -----------------------------------------------------------------------

    def scope_at(self, node: ast.AST) -> Scope:
        return self._scope_at.get(node, self.module_scope)

    def lookup(self, name: str, node: ast.AST) -> list[Binding] | None:
        """The bindings a reference to ``name`` at ``node`` can see; None for a builtin/undefined name."""
        scope: Scope | None = self.scope_at(node)
        start = scope
        while scope is not None:
            if scope.is_class and scope is not start:
                scope = scope.parent
                continue
            if name in scope.global_names:
                return self.module_scope.bindings.get(name)
            if name in scope.bindings and name not in scope.nonlocal_names:
                return scope.bindings[name]
            scope = scope.parent
        return None

    def is_builtin(self, node: ast.expr, name: str) -> bool:
        """Whether ``node`` is the bare name ``name`` and nothing in the file rebinds it."""
        return isinstance(node, ast.Name) and node.id == name and self.lookup(name, node) is None

    def qualname(self, expr: ast.AST) -> str | None:
        """The dotted torch/torchvision name an expression certainly refers to, else None."""
        if isinstance(expr, ast.Attribute):
            base = self.qualname(expr.value)
            return f"{base}.{expr.attr}" if base else None
        if not isinstance(expr, ast.Name):
            return None
        bindings = self.lookup(expr.id, expr)
        if not bindings:
            return None
        targets = {b.target if b.kind == "import" else None for b in bindings}
        if len(targets) != 1:
            return None
        target = targets.pop()
        if target is None or target.split(".")[0] not in torch_api.ROOTS:
            return None
        return target

    def torch_object(self, expr: ast.AST) -> Any:
        """The installed torch/torchvision object ``expr`` names, or None."""
        name = self.qualname(expr)
        return torch_api.resolve(name) if name else None

    def local_def(self, expr: ast.AST) -> ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | None:
        """The function or class defined in this file that a bare name certainly refers to."""
        if not isinstance(expr, ast.Name):
            return None
        bindings = self.lookup(expr.id, expr) or []
        if len(bindings) == 1 and bindings[0].kind in ("def", "class"):
            node = bindings[0].node
            assert isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
            return node
        return None

    # -- navigation -----------------------------------------------------------------------------

    def ancestors(self, node: ast.AST) -> Iterator[ast.AST]:
        while node in self.parents:
            node = self.parents[node]
            yield node

    def enclosing_function(self, node: ast.AST) -> ast.AST | None:
        return next((a for a in self.ancestors(node) if isinstance(a, FUNCTION_NODES)), None)

    def enclosing_class(self, node: ast.AST) -> ast.ClassDef | None:
        """The class whose method (directly) contains ``node``."""
        for a in self.ancestors(node):
            if isinstance(a, (ast.FunctionDef, ast.AsyncFunctionDef)):
                parent = self.parents.get(a)
                return parent if isinstance(parent, ast.ClassDef) else None
            if isinstance(a, (ast.ClassDef, ast.Lambda)):
                return None
        return None

    def enclosing_loops(self, node: ast.AST) -> list[ast.AST]:
        """The loops around ``node`` inside its own function (or module), innermost first."""
        loops: list[ast.AST] = []
        for a in self.ancestors(node):
            if isinstance(a, DEF_NODES):
                break
            if isinstance(a, LOOP_NODES) and node_in_body(self, node, a):
                loops.append(a)
        return loops


def node_in_body(src: SourceFile, node: ast.AST, loop: ast.AST) -> bool:
    """Whether ``node`` sits in the repeated part of ``loop`` (its body, or a while's test)."""
    child = node
    for a in src.ancestors(node):
        if a is loop:
            body = list(getattr(loop, "body", []))
            if isinstance(loop, ast.While):
                body.append(loop.test)
            return any(child is b for b in body)
        child = a
    return False


def walk_code(nodes: ast.AST | list[ast.stmt], *, into_defs: bool = False) -> Iterator[ast.AST]:
    """Every node under ``nodes``; nested functions, lambdas and classes only with ``into_defs``."""
    stack: list[ast.AST] = list(nodes) if isinstance(nodes, list) else [nodes]
    stack.reverse()
    while stack:
        node = stack.pop()
        yield node
        if not into_defs and isinstance(node, DEF_NODES):
            continue
        stack.extend(reversed(list(ast.iter_child_nodes(node))))


def dotted(expr: ast.AST) -> str | None:
    """``a.b.c`` for a chain of names and attributes, else None."""
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        base = dotted(expr.value)
        return f"{base}.{expr.attr}" if base else None
    return None


def terminal_name(expr: ast.AST) -> str | None:
    """The last identifier of a name, attribute or subscript base: ``opt`` in ``self.opts[0]``."""
    while isinstance(expr, ast.Subscript):
        expr = expr.value
    if isinstance(expr, ast.Name):
        return expr.id
    if isinstance(expr, ast.Attribute):
        return expr.attr
    return None


def method_call(node: ast.AST, *names: str) -> TypeGuard[ast.Call]:
    """Whether ``node`` is a call ``<anything>.name(...)`` for one of ``names``."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in names)


def position(node: ast.AST) -> tuple[int, int]:
    return (getattr(node, "lineno", 0), getattr(node, "col_offset", 0))


class _ScopeBuilder:
    """Walks the tree once, creating scopes and recording every binding in the right one."""

    def __init__(self, src: SourceFile) -> None:
        self.src = src

    def build(self) -> Scope:
        self.declared: dict[ast.AST | None, list[ast.Global | ast.Nonlocal]] = {}
        for statement in self.src.nodes(ast.Global, ast.Nonlocal):
            owner = next((a for a in self.src.ancestors(statement) if isinstance(a, DEF_NODES)), None)
            self.declared.setdefault(owner, []).append(statement)
        module = Scope(self.src.tree, None)
        self.src.scopes[self.src.tree] = module
        for stmt in self.src.tree.body:
            self.visit(stmt, module)
        return module

    def new_scope(self, node: ast.AST, parent: Scope) -> Scope:
        scope = Scope(node, parent)
        self.src.scopes[node] = scope
        return scope

    def bind(self, scope: Scope, binding: Binding) -> None:
        target = scope
        if binding.name in scope.global_names:
            target = _root(scope)
        elif binding.name in scope.nonlocal_names:
            parent = scope.parent
            while parent is not None and not (parent.is_function and binding.name in parent.bindings):
                parent = parent.parent
            target = parent or scope
        target.bindings.setdefault(binding.name, []).append(binding)

    def bind_target(self, target: ast.AST, scope: Scope, stmt: ast.AST, kind: str,
                    value: ast.expr | None = None, annotation: ast.expr | None = None) -> None:
        """Bind every name in an assignment target. A bare name keeps the value, and so does each
        name of ``a, b = x, y`` (same length, no starred part): each gets its own element."""
        if isinstance(target, ast.Name):
            self.bind(scope, Binding(target.id, stmt, kind, value, annotation))
        elif isinstance(target, (ast.Tuple, ast.List)):
            pairs = (isinstance(value, (ast.Tuple, ast.List)) and len(value.elts) == len(target.elts)
                     and not any(isinstance(e, ast.Starred) for e in (*target.elts, *value.elts)))
            for i, elt in enumerate(target.elts):
                if pairs and isinstance(elt, ast.Name):
                    assert isinstance(value, (ast.Tuple, ast.List))
                    self.bind(scope, Binding(elt.id, stmt, kind, value.elts[i]))
                    continue
                self.bind_target(elt, scope, stmt, "unpack" if kind == "assign" else kind)
        elif isinstance(target, ast.Starred):
            self.bind_target(target.value, scope, stmt, "unpack" if kind == "assign" else kind)
        self.visit(target, scope)

    def visit_all(self, nodes: list[Any], scope: Scope) -> None:
        for node in nodes:
            if node is not None:
                self.visit(node, scope)

    def visit(self, node: ast.AST, scope: Scope) -> None:
        self.src._scope_at[node] = scope
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            self.visit_all(node.decorator_list, scope)
            self.visit_arguments_outer(node.args, scope)
            if node.returns is not None:
                self.visit(node.returns, scope)
            self.bind(scope, Binding(node.name, node, "def"))
            inner = self.new_scope(node, scope)
            self.bind_arguments(node.args, inner)
            self.declare(node, inner)
            self.visit_all(node.body, inner)
        elif isinstance(node, ast.Lambda):
            self.visit_arguments_outer(node.args, scope)
            inner = self.new_scope(node, scope)
            self.bind_arguments(node.args, inner)
            self.visit(node.body, inner)
        elif isinstance(node, ast.ClassDef):
            self.visit_all(node.decorator_list, scope)
            self.visit_all(node.bases, scope)
            self.visit_all([k.value for k in node.keywords], scope)
            self.bind(scope, Binding(node.name, node, "class"))
            inner = self.new_scope(node, scope)
            self.declare(node, inner)
            self.visit_all(node.body, inner)
        elif isinstance(node, _COMPREHENSIONS):
            generators = node.generators
            self.visit(generators[0].iter, scope)
            inner = self.new_scope(node, scope)
            for i, gen in enumerate(generators):
                self.src._scope_at[gen] = inner
                if i:
                    self.visit(gen.iter, inner)
                self.bind_target(gen.target, inner, node, "for")
                self.visit_all(gen.ifs, inner)
            if isinstance(node, ast.DictComp):
                self.visit_all([node.key, node.value], inner)
            else:
                self.visit(node.elt, inner)
        elif isinstance(node, ast.Assign):
            self.visit(node.value, scope)
            for target in node.targets:
                self.bind_target(target, scope, node, "assign", node.value)
        elif isinstance(node, ast.AnnAssign):
            self.visit_all([node.value, node.annotation], scope)
            self.bind_target(node.target, scope, node, "annassign", node.value, node.annotation)
        elif isinstance(node, ast.AugAssign):
            self.visit(node.value, scope)
            self.bind_target(node.target, scope, node, "augassign", node.value)
        elif isinstance(node, ast.NamedExpr):
            self.visit(node.value, scope)
            self.bind_target(node.target, scope, node, "assign", node.value)
        elif isinstance(node, (ast.For, ast.AsyncFor)):
            self.visit(node.iter, scope)
            self.bind_target(node.target, scope, node, "for")
            self.visit_all(node.body + node.orelse, scope)
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                self.visit(item.context_expr, scope)
                if item.optional_vars is not None:
                    self.bind_target(item.optional_vars, scope, node, "other")
            self.visit_all(node.body, scope)
        elif isinstance(node, ast.ExceptHandler):
            if node.type is not None:
                self.visit(node.type, scope)
            if node.name:
                self.bind(scope, Binding(node.name, node, "other"))
            self.visit_all(node.body, scope)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            self.bind_import(node, scope)
        elif type(node).__name__ in ("MatchAs", "MatchStar", "MatchMapping"):
            name = getattr(node, "name", None) or getattr(node, "rest", None)
            if name:
                self.bind(scope, Binding(name, node, "other"))
            self.visit_children(node, scope)
        else:
            self.visit_children(node, scope)

    def visit_children(self, node: ast.AST, scope: Scope) -> None:
        for child in ast.iter_child_nodes(node):
            self.visit(child, scope)

    def visit_arguments_outer(self, args: ast.arguments, scope: Scope) -> None:
        """Defaults and annotations are evaluated in the scope around the function."""
        self.visit_all(list(args.defaults) + list(args.kw_defaults), scope)
        for arg in _all_args(args):
            self.src._scope_at[arg] = scope
            if arg.annotation is not None:
                self.visit(arg.annotation, scope)

    def bind_arguments(self, args: ast.arguments, scope: Scope) -> None:
        for arg in _all_args(args):
            self.bind(scope, Binding(arg.arg, arg, "arg", annotation=arg.annotation))

    def declare(self, owner: ast.AST, scope: Scope) -> None:
        """Collect ``global``/``nonlocal`` names first: they apply to the whole scope."""
        for node in self.declared.get(owner, ()):
            if isinstance(node, ast.Global):
                scope.global_names.update(node.names)
            elif isinstance(node, ast.Nonlocal):
                scope.nonlocal_names.update(node.names)

    def bind_import(self, node: ast.Import | ast.ImportFrom, scope: Scope) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                self.src.imported_roots.add(alias.name.split(".")[0])
                if alias.asname:
                    self.bind(scope, Binding(alias.asname, node, "import", target=alias.name))
                else:
                    root = alias.name.split(".")[0]
                    self.bind(scope, Binding(root, node, "import", target=root))
            return
        module = node.module or ""
        if node.level == 0 and module:
            self.src.imported_roots.add(module.split(".")[0])
        for alias in node.names:
            if alias.name == "*":
                continue  # cannot know what it binds; names it might shadow stay as they are
            target = f"{module}.{alias.name}" if node.level == 0 and module else None
            self.bind(scope, Binding(alias.asname or alias.name, node, "import", target=target))


def _all_args(args: ast.arguments) -> list[ast.arg]:
    found = list(args.posonlyargs) + list(args.args) + list(args.kwonlyargs)
    if args.vararg is not None:
        found.append(args.vararg)
    if args.kwarg is not None:
        found.append(args.kwarg)
    return found


def _root(scope: Scope) -> Scope:
    while scope.parent is not None:
        scope = scope.parent
    return scope
