"""Registration checks (GS101-GS107): can PyTorch see every layer, parameter and tensor of a model?

``check(model)`` reads the model's structure (GS101, GS102, GS103, GS106); given an input it also
runs one forward pass (GS104, GS105). ``build_error_finding`` turns the error of a model that
could not be built into GS107, and ``registration_tree`` feeds the report's registration section.

What counts as unregistered
    Every module of ``model.modules()`` is searched: its instance ``__dict__`` (without the
    bookkeeping that ``nn.Module.__init__`` itself creates: the registries and the hook dicts) and
    the plain containers in it (``list``, ``tuple``, ``dict`` values, ``set``, ``frozenset``,
    ``deque``, nested to any depth). Dict keys and other objects are not opened.

    An object is lost only when nothing registered in the tree holds it: a module in
    ``model.modules()``, a parameter in ``model.parameters()``, a tensor in ``model.buffers()``.
    That one rule, rather than a list of names, keeps PyTorch's own references quiet: an RNN's
    ``_flat_weights`` (its own registered parameters, in a list for the fused kernel), a plain list
    of registered layers kept for iteration order, DistributedDataParallel's lists of buffers.
    A lost module is reported only when it loses something: parameters or buffers that nothing
    registered holds, or its train/eval mode because its ``forward`` reads ``self.training``
    (Dropout). A list of ``nn.ReLU()``, or TorchScript's twin of a traced module (whose weights
    are the registered ones), loses nothing.

    Derived tensors: ``weight_norm``, ``spectral_norm`` and ``torch.nn.utils.prune`` keep a plain
    tensor attribute (``weight``) that a forward pre-hook recomputes from registered parameters
    before every call, and the hook object records that attribute's name. A tensor attribute named
    by a string attribute of one of the module's own forward pre-hooks is derived, not lost.

Severities
    A module (GS101) or a parameter (GS102) in a plain container is an error. A plain tensor held
    directly as an attribute (GS103) is a warning: the classic mask or constant that stays on the
    CPU after ``.to("cuda")``. Plain tensors inside a container get GS103 at severity *info*: a list
    cannot be a buffer, and such lists are in practice caches that the module rebuilds or moves
    itself (torchvision's ``AnchorGenerator.cell_anchors`` and ``DefaultBoxGenerator._wh_pairs``,
    RAFT's ``CorrBlock.corr_pyramid``); the finding still says how to register them if they are
    state.

The forward pass (GS104, GS105)
    One call of the model, under ``torch.no_grad()`` and in eval mode, on ``example_input`` (a
    tuple is positional arguments, a dict keyword arguments, anything else the one argument) or on
    a batch of two ``torch.randn`` samples of ``input_shape``. The global forward hooks of
    ``torch.nn.modules.module`` see every module call, registered or not; a
    ``TorchFunctionMode`` records which parameters took part in a computation, so a layer whose
    weights are used without calling it (``nn.MultiheadAttention.out_proj``) counts as used.
    Afterwards every hook is removed and the model is as it was, also when the forward raises:
    each module's ``__dict__``, class, registries, train/eval flag and the contents of its plain
    lists, dicts and sets (caches a forward fills), every buffer's values, and the global random
    state (torch CPU and CUDA, Python's ``random``). Models with uninitialised lazy parameters run
    on a copy, so their parameters stay uninitialised. The model's own hooks run as in any forward,
    so what they do outside the model (a log line, a list they append to) cannot be undone, and
    parameters are not copied (that would double the model's memory): a forward that edits its
    own weights in place under ``no_grad`` keeps the edit.
    Modules inside a called TorchScript module run in the TorchScript interpreter, unseen by hooks,
    and count as used.

    GS104 is not raised for an unregistered module that holds no parameters or buffers (an
    ``nn.ReLU()`` built in ``forward`` loses nothing), unless its ``forward`` reads
    ``self.training`` (Dropout): ``model.eval()`` never reaches it. GS105 reports the topmost
    unused module of a subtree only; a container counts as used when any child is. The pass runs
    in eval mode, so a head used only in training (an auxiliary classifier) is reported, and the
    message says so.

    When the forward raises, ``check`` raises :class:`ForwardPassError` naming the module that
    failed and the input's shape, with the static findings attached as ``.findings``: an input
    the model cannot take is a mistake in the call, and the static findings often explain a
    crash. ``check(model)`` without an input never runs the model.

GS106 is static: one Parameter (or one module with parameters) registered under several names,
reported once where it is shared, not again for everything inside a shared module.
"""
from __future__ import annotations

import copy
import linecache
import os
import random
import re
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_api
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy
from torch.overrides import TorchFunctionMode

from gradscope.errors import GradscopeError
from gradscope.findings import CATALOG, Finding, Severity, finding

__all__ = ["ForwardPassError", "build_error_finding", "check", "registration_tree"]

# What nn.Module.__init__ puts into every instance: PyTorch's registries and hook dicts, never user state.
_BOOKKEEPING = frozenset(vars(nn.Module()))
_MAX_DEPTH = 32          # nesting of plain containers searched
_SHOWN = 4               # places listed in a message before "..."
_BATCH = 2               # samples in the batch made from input_shape (BatchNorm needs more than one)
_TORCH_DIR = str(Path(torch.__file__).resolve().parent) + os.sep  # the sep keeps torchvision out
_KIND_CODE = {"module": "GS101", "parameter": "GS102", "tensor": "GS103"}


class ForwardPassError(GradscopeError):
    """The model's forward raised on the input ``check`` was given; ``findings`` holds the static findings."""

    def __init__(self, message: str, findings: list[Finding], module: str, input_description: str) -> None:
        super().__init__(message)
        self.findings = findings
        self.module = module
        self.input_description = input_description


# --------------------------------------------------------------------------- small helpers


def _numel(t: torch.Tensor) -> int:
    return 0 if is_lazy(t) else t.numel()


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _display(path: str, root: nn.Module) -> str:
    """A module's dotted path, or the root's class name for the root."""
    return path or type(root).__name__


def _parent(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def _places(locations: list[str]) -> str:
    unique = list(dict.fromkeys(locations))
    shown = ", ".join(unique[:_SHOWN])
    return shown if len(unique) <= _SHOWN else f"{shown}, ... ({len(unique)} in all)"


def _classes(objs: list[Any]) -> str:
    counts = Counter(type(o).__name__ for o in objs)
    return ", ".join(f"{n} {name}" for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _values(params: list[torch.Tensor]) -> str:
    return f"{sum(_numel(p) for p in params):,} values"


# --------------------------------------------------------------------------- the static scan


@dataclass(frozen=True)
class _Lost:
    """An object on a module that nothing registered in the tree holds."""

    owner: str        # dotted path of the module whose attribute holds it ("" for the root)
    attribute: str
    location: str     # inside the attribute, e.g. "[0]['conv']"; "" when the attribute holds it directly
    kind: str         # "module", "parameter" or "tensor"
    obj: Any
    container: Any    # the attribute's value


@dataclass
class _Scan:
    tree: list[tuple[str, nn.Module]]
    index: dict[str, int]                 # path -> position in tree order
    known: set[int]                       # ids of everything registered in the tree (and derived tensors)
    held: list[_Lost]                     # every unregistered object: tree, attribute, position order
    lost: list[_Lost]                     # those worth a finding (modules that lose nothing are left out)


def _walk(value: Any, location: str, depth: int, seen: set[int]) -> Iterator[tuple[str, Any]]:
    """Every module and tensor inside plain containers of ``value``, with its location."""
    if isinstance(value, (nn.Module, torch.Tensor)):
        yield location, value
        return
    if depth >= _MAX_DEPTH or id(value) in seen:
        return
    if isinstance(value, dict):
        seen.add(id(value))
        for key, item in list(value.items()):
            yield from _walk(item, f"{location}[{key!r}]", depth + 1, seen)
    elif isinstance(value, (list, tuple, deque)) and not isinstance(value, torch.Size):
        seen.add(id(value))
        for i, item in enumerate(list(value)):
            yield from _walk(item, f"{location}[{i}]", depth + 1, seen)
    elif isinstance(value, (set, frozenset)):
        seen.add(id(value))
        for item in list(value):  # no stable order: every element gets the same location
            yield from _walk(item, f"{location}{{...}}", depth + 1, seen)


def _recomputed_tensors(module: nn.Module) -> set[int]:
    """Plain tensor attributes that a forward pre-hook of this module recomputes (weight_norm & co)."""
    names: set[str] = set()
    for hook in module._forward_pre_hooks.values():
        state = getattr(hook, "__dict__", None)
        if isinstance(state, dict):
            names.update(v for v in state.values() if isinstance(v, str))
    return {id(v) for k, v in vars(module).items() if k in names and isinstance(v, torch.Tensor)}


def _scan(model: nn.Module) -> _Scan:
    tree = list(model.named_modules())
    known: set[int] = {id(m) for _, m in tree}
    known.update(id(p) for p in model.parameters())
    known.update(id(b) for b in model.buffers())
    for _, module in tree:
        known |= _recomputed_tensors(module)
    lost: list[_Lost] = []
    for path, module in tree:
        for attribute, value in list(vars(module).items()):
            if attribute in _BOOKKEEPING:
                continue
            for location, obj in _walk(value, "", 0, set()):
                if id(obj) in known:
                    continue
                kind = ("module" if isinstance(obj, nn.Module)
                        else "parameter" if isinstance(obj, nn.Parameter) else "tensor")
                lost.append(_Lost(path, attribute, location, kind, obj, value))
    worth = [i for i in lost if i.kind != "module" or _matters(i.obj, known)]
    return _Scan(tree=tree, index={p: i for i, (p, _) in enumerate(tree)}, known=known, held=lost, lost=worth)


def _unregistered_state(module: nn.Module, known: set[int]) -> list[torch.Tensor]:
    """The parameters and buffers of ``module`` that nothing registered holds."""
    return _unique([t for t in (*module.parameters(), *module.buffers()) if id(t) not in known])


def _reads_training(module: nn.Module) -> bool:
    """Whether the forward of this module (or a submodule) reads ``self.training``, as Dropout does."""
    for sub in module.modules():
        code = getattr(getattr(type(sub), "forward", None), "__code__", None)
        if code is not None and "training" in code.co_names:
            return True
    return False


def _matters(module: nn.Module, known: set[int]) -> bool:
    """An unregistered module loses something: state of its own, or its train/eval mode (Dropout).

    A ReLU in a list, or TorchScript's twin of a traced module (whose weights are registered),
    loses nothing and is not reported.
    """
    return bool(_unregistered_state(module, known)) or _reads_training(module)


def _group(lost: list[_Lost]) -> dict[tuple[str, str, str], list[_Lost]]:
    groups: dict[tuple[str, str, str], list[_Lost]] = {}
    for item in lost:
        groups.setdefault((item.owner, item.attribute, item.kind), []).append(item)
    return groups


def _unique(objs: list[Any]) -> list[Any]:
    return list({id(o): o for o in objs}.values())


def _container_words(items: list[_Lost]) -> str:
    if any(i.location == "" for i in items):
        return "an attribute set around nn.Module's registration (straight into the instance __dict__)"
    return f"a plain {type(items[0].container).__name__}"


def _nested(items: list[_Lost]) -> bool:
    return any(i.location.count("[") + i.location.count("{") > 1 for i in items)


def _module_hint(attribute: str, items: list[_Lost], parameters: bool) -> str:
    container = items[0].container
    listing, mapping = ("nn.ParameterList", "nn.ParameterDict") if parameters else ("nn.ModuleList", "nn.ModuleDict")
    what = "parameter" if parameters else "layer"
    if any(i.location == "" for i in items):
        if parameters:
            return (f"Assign it with `self.{attribute} = nn.Parameter(...)` after super().__init__() so it is "
                    "registered.")
        return (f"Assign it with `self.{attribute} = module` after super().__init__() so it is registered; "
                "to keep a module out of the model on purpose, hold it outside the model.")
    if _nested(items):
        return (f"Use registering containers at every level: {listing} / {mapping}"
                + (" inside nn.ModuleList / nn.ModuleDict" if parameters else " nested in each other")
                + f" (e.g. `self.{attribute} = nn.ModuleList(nn.ModuleDict({{...}}) for ...)`), "
                f"so PyTorch registers every {what}.")
    if isinstance(container, dict):
        return f"Write `self.{attribute} = {mapping}({{...}})` (string keys) so PyTorch registers every {what}."
    if isinstance(container, (set, frozenset)):
        return (f"Write `self.{attribute} = {listing}([...])`: a set has no order, and state_dict() needs "
                "stable names.")
    extra = "" if parameters else " (or nn.Sequential if they run in order)"
    return f"Write `self.{attribute} = {listing}([...])`{extra} so PyTorch registers every {what}."


def _lost_module_finding(where: str, attribute: str, items: list[_Lost], known: set[int]) -> Finding:
    modules = _unique([i.obj for i in items])
    params = _unique([p for m in modules for p in m.parameters() if id(p) not in known])
    buffers = _unique([b for m in modules for b in m.buffers() if id(b) not in known])
    state = f"{_plural(len(params), 'parameter tensor')} ({_values(params)})"
    if buffers:
        state += f" and {_plural(len(buffers), 'buffer')}"
    message = (
        f"`{where}` is {_container_words(items)} holding {_plural(len(modules), 'module')} "
        f"({_classes(modules)})" + (f" with {state}" if params or buffers else "")
        + " that the model does not register"
        + (f", at {_places([i.location for i in items])}" if items[0].location else ""))
    if params or buffers:
        message += (": model.parameters(), .to(device), state_dict(), train()/eval() and an optimizer built "
                    "from model.parameters() never see them, so they are not trained, not saved and not moved.")
    else:
        message += (": they hold no weights, but model.train()/model.eval() never reach them, so a Dropout "
                    "among them keeps dropping at evaluation.")
    return finding("GS101", where, message, _module_hint(attribute, items, parameters=False))


def _lost_parameter_finding(where: str, attribute: str, items: list[_Lost]) -> Finding:
    params = _unique([i.obj for i in items])
    message = (
        f"`{where}` is {_container_words(items)} holding {_plural(len(params), 'parameter')} "
        f"({_values(params)}) that the model does not register"
        + (f", at {_places([i.location for i in items])}" if items[0].location else "")
        + ": model.parameters(), .to(device), state_dict() and an optimizer built from "
        "model.parameters() never see them, so they are not trained, not saved and not moved.")
    return finding("GS102", where, message, _module_hint(attribute, items, parameters=True))


def _lost_tensor_finding(where: str, attribute: str, items: list[_Lost]) -> Finding:
    tensors = _unique([i.obj for i in items])
    if items[0].location == "":
        t = tensors[0]
        message = (f"`{where}` is a plain tensor attribute (shape {tuple(t.shape)}, {t.dtype}, {t.device}), "
                   "neither a Parameter nor a buffer: .to(device) and .cuda() leave it behind and "
                   "state_dict() does not save it.")
        if t.requires_grad:
            message += (" It has requires_grad=True, but an optimizer built from model.parameters() "
                        "never updates it.")
            hint = (f"If it should learn, write `self.{attribute} = nn.Parameter(tensor)`; if it is fixed "
                    f"state, `self.register_buffer(\"{attribute}\", tensor)` instead of a plain assignment.")
        else:
            hint = (f"Replace `self.{attribute} = tensor` with `self.register_buffer(\"{attribute}\", tensor)` "
                    "(persistent=False keeps it out of state_dict()), or wrap it in nn.Parameter if it "
                    "should learn.")
        return finding("GS103", where, message, hint)
    message = (f"`{where}` is a plain {type(items[0].container).__name__} holding "
               f"{_plural(len(tensors), 'tensor')} that {'is' if len(tensors) == 1 else 'are'} neither "
               f"parameters nor buffers, at "
               f"{_places([i.location for i in items])}: .to(device) and state_dict() skip them. That "
               "is fine for a cache the module rebuilds or moves itself (as torchvision's anchor "
               "generators do); if they are model state, register them.")
    hint = (f"If they are state, register each one: `self.register_buffer(f\"{attribute}_{{i}}\", t)` "
            "(or nn.ParameterList if they should learn).")
    return finding("GS103", where, message, hint, severity=Severity.INFO)


def _static_findings(model: nn.Module, scan: _Scan) -> list[tuple[int, int, Finding]]:
    out: list[tuple[int, int, Finding]] = []
    for (owner, attribute, kind), items in _group(scan.lost).items():
        where = f"{_display(owner, model)}.{attribute}"
        if kind == "module":
            f = _lost_module_finding(where, attribute, items, scan.known)
        elif kind == "parameter":
            f = _lost_parameter_finding(where, attribute, items)
        else:
            f = _lost_tensor_finding(where, attribute, items)
        out.append((scan.index[owner], len(out), f))
    return out


def _shared_findings(model: nn.Module, scan: _Scan) -> list[tuple[int, int, Finding]]:
    """GS106: registration edges (parent, name) per object; two edges or more means shared in its own right."""
    module_edges: dict[int, list[str]] = {}
    param_edges: dict[int, list[str]] = {}
    params: dict[int, nn.Parameter] = {}
    for path, module in scan.tree:
        prefix = f"{path}." if path else ""
        for name, child in module._modules.items():
            if child is not None:
                module_edges.setdefault(id(child), []).append(prefix + name)
        for name, param in module._parameters.items():
            if param is not None:
                param_edges.setdefault(id(param), []).append(prefix + name)
                params[id(param)] = param
    by_id = {id(m): (p, m) for p, m in scan.tree}
    out: list[tuple[int, int, Finding]] = []
    for key, names in module_edges.items():
        if len(names) < 2 or key not in by_id:
            continue
        path, module = by_id[key]
        weights = list(module.parameters())
        if not weights:
            continue
        first = path if path in names else names[0]
        others = [n for n in names if n != first]
        message = (f"`{first}` ({type(module).__name__}, {_plural(len(weights), 'parameter tensor')}, "
                   f"{_values(weights)}) is also registered as {_names(others)}: one set of weights serves "
                   f"all {len(names)} places, and each use adds to its gradients (weight sharing).")
        hint = ("Fine when intended (weights shared across places); otherwise build one module per place "
                "(a new instance, or copy.deepcopy of the first).")
        out.append((scan.index[path], len(out), finding("GS106", first, message, hint)))
    for key, names in param_edges.items():
        if len(names) < 2:
            continue
        p = params[key]
        first, others = names[0], names[1:]
        shape = "uninitialised" if is_lazy(p) else f"shape {tuple(p.shape)}"
        message = (f"Parameter `{first}` ({shape}, {_values([p])}) is also registered as {_names(others)}: "
                   "one tensor serves every place, and each use adds to its gradient. That is intended "
                   "for tied embeddings; elsewhere it is usually a slip.")
        out.append((scan.index[_parent(first)], len(out), finding("GS106", first, message)))
    return out


def _names(names: list[str]) -> str:
    quoted = [f"`{n}`" for n in names]
    if len(quoted) > _SHOWN:
        return ", ".join(quoted[:_SHOWN]) + f", ... ({len(quoted)} more names)"
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + f" and {quoted[-1]}"


# --------------------------------------------------------------------------- the forward pass


class _ParameterUse(TorchFunctionMode):
    """Records every Parameter passed to a torch function, called module or not."""

    def __init__(self) -> None:
        super().__init__()
        self.used: set[int] = set()

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        _collect_parameters(args, self.used, 0)
        _collect_parameters(kwargs, self.used, 0)
        return func(*args, **kwargs)


def _collect_parameters(value: Any, out: set[int], depth: int) -> None:
    if isinstance(value, nn.Parameter):
        out.add(id(value))
    elif depth < 4 and isinstance(value, (list, tuple)):
        for item in value:
            _collect_parameters(item, out, depth + 1)
    elif depth < 4 and isinstance(value, dict):
        for item in value.values():
            _collect_parameters(item, out, depth + 1)


class _CallLog:
    """Global forward hooks: every module called during the root's forward, and which module called it."""

    def __init__(self, registered: set[int]) -> None:
        self.registered = registered
        self.thread = threading.get_ident()
        self.stack: list[nn.Module] = []
        self.called: set[int] = set()
        self.unregistered: list[tuple[nn.Module, nn.Module | None]] = []  # top-level ones, first call order
        self._seen: dict[int, nn.Module] = {}  # keeps modules built in forward alive, so ids stay unique

    def pre(self, module: nn.Module, args: Any) -> None:
        if threading.get_ident() != self.thread:
            return
        caller = self.stack[-1] if self.stack else None
        self.stack.append(module)
        self.called.add(id(module))
        if id(module) in self.registered or id(module) in self._seen:
            return
        self._seen[id(module)] = module
        if caller is None or id(caller) in self.registered:
            self.unregistered.append((module, caller))

    def post(self, module: nn.Module, args: Any, output: Any) -> None:
        if threading.get_ident() != self.thread:
            return
        for i in range(len(self.stack) - 1, -1, -1):  # also drops entries of a forward that raised and was caught
            if self.stack[i] is module:
                del self.stack[i:]
                return


class _Snapshot:
    """What a forward pass may change on a module tree, to put back afterwards."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = []
        for m in modules:
            registries = [getattr(m, name, None) for name in ("_parameters", "_buffers", "_modules")]
            # the registries, and the plain lists, dicts and sets a forward may fill in place (caches)
            saved = [(r, dict(r)) for r in registries if type(r) in (dict, OrderedDict)]
            saved += [(v, _contents(v)) for k, v in vars(m).items()
                      if k not in _BOOKKEEPING and isinstance(v, (list, dict, set))]
            self.modules.append((m, m.__class__, dict(vars(m)), saved, m.training))
        self.buffers: list[tuple[torch.Tensor, int | None, torch.Tensor]] = []
        seen: set[int] = set()
        for m in modules:
            for b in m.buffers(recurse=False):
                if id(b) in seen or is_lazy(b) or b.device.type == "meta":
                    continue
                seen.add(id(b))
                self.buffers.append((b, _version(b), b.detach().clone()))

    def restore(self) -> None:
        for module, cls, state, registries, training in self.modules:
            if module.__class__ is not cls:
                module.__class__ = cls
            current = vars(module)
            for key in [k for k in current if k not in state]:
                del current[key]
            for key, value in state.items():
                if current.get(key, _MISSING) is not value:
                    current[key] = value
            for container, saved in registries:
                _restore_contents(container, saved)
            if module.training != training:  # TorchScript keeps the flag outside __dict__
                module.training = training
        with torch.no_grad():
            for buf, version, saved in self.buffers:
                if version is not None and _version(buf) == version:
                    continue  # untouched: leave it (and its version counter) alone
                if buf.shape == saved.shape and buf.dtype == saved.dtype:
                    if not torch.equal(buf, saved):
                        buf.copy_(saved)
                else:
                    buf.data = saved


_MISSING = object()


def _version(t: torch.Tensor) -> int | None:
    try:
        return int(t._version)
    except RuntimeError:  # inference tensors have no version counter
        return None


def _contents(container: list | dict | set) -> list:
    return list(container.items()) if isinstance(container, dict) else list(container)


def _restore_contents(container: list | dict | set, saved: list) -> None:
    """Put back what a list, dict or set held, in place, only when something changed."""
    now = _contents(container)
    if len(now) == len(saved) and all(_same(a, b) for a, b in zip(now, saved)):
        return
    if isinstance(container, list):
        container[:] = saved
    else:
        container.clear()
        container.update(saved)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, tuple) and isinstance(b, tuple) and len(a) == 2 == len(b):  # dict items
        return a[0] == b[0] and a[1] is b[1]
    return a is b


@contextmanager
def _preserved_rng() -> Iterator[None]:
    cpu = torch.get_rng_state()
    python = random.getstate()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        random.setstate(python)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def _forward_target(model: nn.Module) -> nn.Module:
    """The model, or a copy when the forward would materialise lazy parameters in place."""
    lazy = [t for t in [*model.parameters(), *model.buffers()] if is_lazy(t)]
    if not lazy:
        return model
    memo: dict[int, Any] = {}
    for t in lazy:  # Uninitialized* refuse deepcopy: give the copy fresh ones of the same kind
        kind = UninitializedParameter if isinstance(t, nn.Parameter) else UninitializedBuffer
        memo[id(t)] = kind(requires_grad=t.requires_grad, device=t.device, dtype=t.dtype)
    try:
        return copy.deepcopy(model, memo)
    except Exception as exc:
        raise GradscopeError(
            f"`{type(model).__name__}` has uninitialised lazy parameters, and gradscope runs its forward "
            f"check on a copy so that they stay uninitialised, but the model cannot be copied "
            f"({type(exc).__name__}: {exc}). Run one forward pass yourself first, or call check(model) "
            "without an input for the static checks only.") from exc


def _input_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    for t in [*model.parameters(), *model.buffers()]:
        if t.is_floating_point():
            return t.device, t.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _make_input(model: nn.Module, example_input: Any, shape: tuple[int, ...] | None) -> tuple[tuple, dict]:
    if shape is not None:
        device, dtype = _input_device_dtype(model)
        return (torch.randn((_BATCH, *shape), device=device, dtype=dtype),), {}
    if isinstance(example_input, tuple):
        return example_input, {}
    if isinstance(example_input, Mapping):
        if not all(isinstance(k, str) for k in example_input):
            raise GradscopeError(
                f"example_input is a dict, which check() passes as keyword arguments, so its keys must be "
                f"argument names; got keys {list(example_input)!r}. To pass a dict as the one argument, "
                "wrap it in a tuple: example_input=(batch,).")
        return (), dict(example_input)
    return (example_input,), {}


def _shape_text(value: Any, depth: int = 0) -> str:
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    if depth > 3:
        return "..."
    if isinstance(value, (list, tuple)):
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ")")
        more = ", ..." if len(value) > _SHOWN else ""
        return opening + ", ".join(_shape_text(v, depth + 1) for v in value[:_SHOWN]) + more + closing
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k!r}: {_shape_text(v, depth + 1)}" for k, v in list(value.items())[:_SHOWN]) + "}"
    return type(value).__name__


def _describe_input(args: tuple, kwargs: dict) -> str:
    if len(args) == 1 and not kwargs:
        only = args[0]
        return f"of shape {_shape_text(only)}" if isinstance(only, torch.Tensor) else _shape_text(only)
    parts = [_shape_text(a) for a in args] + [f"{k}={_shape_text(v)}" for k, v in kwargs.items()]
    return "(" + ", ".join(parts) + ")"


@dataclass
class _Run:
    target: nn.Module
    scan: _Scan
    log: _CallLog
    used_parameters: set[int]
    input_text: str


def _run_forward(model: nn.Module, scan: _Scan, example_input: Any, shape: tuple[int, ...] | None,
                 static: list[Finding]) -> _Run:
    target = _forward_target(model)
    if target is not model:
        scan = _scan(target)
    paths = {id(m): p for p, m in scan.tree}
    log = _CallLog(set(paths))
    use = _ParameterUse()
    held = [i.obj for i in scan.held if i.kind == "module"]
    snapshot = _Snapshot(_unique([m for _, m in scan.tree] + [s for h in held for s in h.modules()]))
    handles = []
    with _preserved_rng():
        args, kwargs = _make_input(target, example_input, shape)
        input_text = _describe_input(args, kwargs)
        try:
            handles.append(_module_api.register_module_forward_pre_hook(log.pre))
            handles.append(_module_api.register_module_forward_hook(log.post))
            with torch.no_grad(), use:
                target.eval()
                target(*args, **kwargs)
        except Exception as exc:
            raise _forward_error(model, scan, log, exc, input_text, static) from exc
        finally:
            for handle in handles:
                handle.remove()
            snapshot.restore()
    return _Run(target, scan, log, use.used, input_text)


def _held_at(model: nn.Module, scan: _Scan) -> dict[int, tuple[str, _Lost]]:
    """Where each unregistered module sits in the tree's plain containers: id -> (place, entry)."""
    out: dict[int, tuple[str, _Lost]] = {}
    for item in scan.held:
        if item.kind == "module" and id(item.obj) not in out:
            out[id(item.obj)] = (f"{_display(item.owner, model)}.{item.attribute}{item.location}", item)
    return out


def _forward_error(model: nn.Module, scan: _Scan, log: _CallLog, exc: Exception, input_text: str,
                   static: list[Finding]) -> ForwardPassError:
    root = type(model).__name__
    paths = {id(m): p for p, m in scan.tree}
    failing = log.stack[-1] if log.stack else scan.tree[0][1]
    cls = type(failing).__name__
    held = _held_at(model, scan)
    if id(failing) in paths:
        place = _display(paths[id(failing)], model)
        inside = "in its own forward" if failing is scan.tree[0][1] else f"in `{place}` ({cls})"
    elif id(failing) in held:
        place = held[id(failing)][0]
        inside = f"in `{place}` ({cls}, not registered)"
    else:
        place = cls
        inside = f"in an unregistered {cls}"
    detail = (str(exc).strip().splitlines() or [""])[0][:500]
    message = (f"The forward pass of `{root}` failed {inside} on an input "
               f"{input_text}: {type(exc).__name__}: {detail}. Expected an input that `{root}` accepts: pass "
               "example_input= with a real batch (a tuple for several positional arguments, a dict for "
               "keyword arguments) or input_shape= with the shape of one sample, without the batch "
               "dimension; check(model) without an input runs the static checks only.")
    errors = [f for f in static if f.severity is Severity.ERROR]
    if errors:
        listed = ", ".join(f"{f.code} at `{f.where}`" for f in errors[:_SHOWN])
        message += f" The static checks found {_plural(len(errors), 'error')} that may explain it ({listed})."
    if static:
        message += " The static findings are attached to this error as `.findings`."
    return ForwardPassError(message, static, place, input_text)


def _unregistered_call_findings(model: nn.Module, run: _Run) -> list[tuple[int, int, Finding]]:
    """GS104, one finding per plain-container attribute, or per calling forward and class."""
    scan, root = run.scan, type(model).__name__
    paths = {id(m): p for p, m in scan.tree}
    held = _held_at(model, scan)
    groups: dict[str, list[tuple[nn.Module, nn.Module | None]]] = {}
    for module, caller in run.log.unregistered:
        if not _matters(module, scan.known):
            continue  # a ReLU or Flatten built in forward loses nothing
        if id(module) in held:
            item = held[id(module)][1]
            where = f"{_display(item.owner, model)}.{item.attribute}"
        else:
            caller_path = paths.get(id(caller), "") if caller is not None else ""
            where = f"{_display(caller_path, model)}.forward ({type(module).__name__})"
        groups.setdefault(where, []).append((module, caller))
    out: list[tuple[int, int, Finding]] = []
    for where, calls in groups.items():
        modules = [m for m, _ in calls]
        callers = _unique([c for _, c in calls if c is not None])
        caller_where = ", ".join(f"`{_display(paths.get(id(c), ''), model)}`" for c in callers[:_SHOWN])
        held_items = [held[id(m)][1] for m in modules if id(m) in held]
        params = _unique([p for m in modules for p in m.parameters() if id(p) not in scan.known])
        kinds = {type(m) for m in modules}
        subject = (_plural(len(modules), f"{type(modules[0]).__name__} module") if len(kinds) == 1
                   else f"{len(modules)} modules ({_classes(modules)})")
        verb = "was" if len(modules) == 1 else "were"
        found = f", held in `{where}` at {_places([i.location for i in held_items])}," if held_items else ""
        message = (f"{subject}{found} {verb} called during the forward of {caller_where} but "
                   f"{'is' if len(modules) == 1 else 'are'} not registered under `{root}`")
        if any(_unregistered_state(m, scan.known) for m in modules):
            message += (f": {_plural(len(params), 'parameter tensor')} ({_values(params)}) take part in the "
                        "computation, but an optimizer built from model.parameters() never trains them, "
                        "state_dict() never saves them and .to(device) never moves them.")
            if not held_items:
                message += " A layer built inside forward() also gets fresh random weights on every call."
        else:
            mode = "training" if modules[0].training else "eval"
            it, them, holds, stays = (("it", "it", "holds", "stays") if len(modules) == 1
                                      else ("they", "them", "hold", "stay"))
            message += (f": {it} {holds} no weights, but model.train()/model.eval() never reach {them}, so {it} "
                        f"{stays} in {mode} mode (a Dropout built in forward keeps dropping at evaluation).")
        hint = None
        if held_items:
            hint = _module_hint(held_items[0].attribute, held_items, parameters=False)
            owner = held_items[0].owner
        else:
            owner = paths.get(id(callers[0]), "") if callers else ""
        out.append((scan.index.get(owner, 0), len(out), finding("GS104", where, message, hint)))
    return out


def _unused_findings(model: nn.Module, run: _Run) -> list[tuple[int, int, Finding]]:
    scan, called, used_params = run.scan, run.log.called, run.used_parameters
    # TorchScript runs its submodules in its own interpreter: no hooks, no torch functions to see.
    scripted = {id(sub) for _, m in scan.tree if id(m) in called and isinstance(m, torch.jit.ScriptModule)
                for sub in m.modules()}
    memo: dict[int, bool] = {}

    def used(module: nn.Module) -> bool:
        key = id(module)
        if key not in memo:
            memo[key] = True  # cycles in a broken tree end here
            memo[key] = (key in called or key in scripted
                         or any(p is not None and id(p) in used_params for p in module._parameters.values())
                         or any(c is not None and used(c) for c in module._modules.values()))
        return memo[key]

    by_path = dict(scan.tree)
    out: list[tuple[int, int, Finding]] = []
    for path, module in scan.tree[1:]:
        if used(module) or not used(by_path[_parent(path)]):
            continue
        params = list(module.parameters())
        if not params:
            continue
        message = (f"`{path}` ({type(module).__name__}, {_plural(len(params), 'parameter tensor')}, "
                   f"{_values(params)}) is registered but was not called during a forward pass in eval mode "
                   f"on an input {run.input_text}, and none of its parameters took part in a computation: it "
                   "costs memory and optimizer state and never learns (its gradients stay None). If it runs "
                   "only in training mode (an auxiliary head) or only for other inputs, this is expected.")
        out.append((scan.index[path], len(out), finding("GS105", path, message)))
    return out


# --------------------------------------------------------------------------- public API


def _check_model(model: Any) -> None:
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise GradscopeError(f"check() got the class `{model.__name__}`, expected an instance: "
                             f"`{model.__name__}(...)`.")
    if not isinstance(model, nn.Module):
        raise GradscopeError(f"check() expected an nn.Module instance, got {type(model).__name__}: pass the "
                             "model object, e.g. check(Net()).")


def _check_shape(input_shape: Any) -> tuple[int, ...]:
    ok = (isinstance(input_shape, (tuple, list)) and len(input_shape) > 0
          and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in input_shape))
    if not ok:
        raise GradscopeError(f"input_shape must be the shape of one sample without the batch dimension, a "
                             f"tuple of positive ints such as (1, 28, 28); got {input_shape!r}.")
    return tuple(input_shape)


def _ordered(items: list[tuple[int, int, Finding]]) -> list[Finding]:
    return [f for _, _, f in sorted(items, key=lambda t: (t[0], t[2].code, t[1]))]


def check(model: nn.Module, example_input: object = None, *,
          input_shape: tuple[int, ...] | None = None) -> list[Finding]:
    """Registration findings (GS101-GS106) for ``model``, in module tree order.

    Args:
        model: the model instance.
        example_input: optional input for one forward pass (GS104, GS105): a tuple is positional
            arguments, a dict keyword arguments, anything else the one argument.
        input_shape: or the shape of one sample without the batch dimension, e.g. ``(1, 28, 28)``;
            a batch of two ``torch.randn`` samples is made on the model's device and dtype.

    Raises:
        GradscopeError: for a bad argument; ForwardPassError (with the static findings as
            ``.findings``) when the model's forward raises on the input.
    """
    _check_model(model)
    if example_input is not None and input_shape is not None:
        raise GradscopeError("check() got both example_input and input_shape; pass one, not both: "
                             "example_input for a real batch, input_shape for random samples of that shape.")
    shape = _check_shape(input_shape) if input_shape is not None else None
    scan = _scan(model)
    items = _static_findings(model, scan) + _shared_findings(model, scan)
    if example_input is not None or shape is not None:
        run = _run_forward(model, scan, example_input, shape, _ordered(items))
        dynamic = _unregistered_call_findings(model, run) + _unused_findings(model, run)
        items += [(i, len(items) + n, f) for n, (i, _, f) in enumerate(dynamic)]
    return _ordered(items)


def registration_tree(model: nn.Module) -> list[dict[str, Any]]:
    """One row per module in tree order, for the report's registration section.

    Each row: ``path`` ("" for the root), ``name`` (the path, or the root's class name), ``depth``,
    ``class``, ``own_parameters``, ``parameters`` and ``trainable`` (counts of parameter values,
    shared ones once), and ``unregistered``: one dict per attribute and kind of lost object with
    ``attribute``, ``kind`` ("module", "parameter" or "tensor"), ``count``, ``code`` and ``severity``
    (the code's, or "info" for tensors inside a container), the same objects ``check`` reports.
    """
    _check_model(model)
    scan = _scan(model)
    lost: dict[str, list[dict[str, Any]]] = {}
    for (owner, attribute, kind), items in _group(scan.lost).items():
        direct = items[0].location == ""
        severity = Severity.INFO if kind == "tensor" and not direct else CATALOG[_KIND_CODE[kind]].severity
        lost.setdefault(owner, []).append({"attribute": attribute, "kind": kind,
                                           "count": len(_unique([i.obj for i in items])),
                                           "code": _KIND_CODE[kind], "severity": severity.value})
    rows = []
    for path, module in scan.tree:
        own = _unique([p for p in module._parameters.values() if p is not None])
        every = list(module.parameters())
        rows.append({
            "path": path,
            "name": _display(path, model),
            "depth": path.count(".") + 1 if path else 0,
            "class": type(module).__name__,
            "own_parameters": sum(_numel(p) for p in own),
            "parameters": sum(_numel(p) for p in every),
            "trainable": sum(_numel(p) for p in every if p.requires_grad),
            "unregistered": lost.get(path, []),
        })
    return rows


# --------------------------------------------------------------------------- GS107


_ASSIGN_BEFORE_INIT = re.compile(r"cannot assign (module|parameters?|buffer) before Module\.__init__\(\) call")
_MISSING_ATTRIBUTE = re.compile(r"object has no attribute '(\w+)'")
_REGISTERING = {"__setattr__", "register_buffer", "register_parameter", "add_module", "register_module"}


def _frames(exc: BaseException) -> list[tuple[FrameType, int]]:
    out = []
    tb = exc.__traceback__
    while tb is not None:
        out.append((tb.tb_frame, tb.tb_lineno))
        tb = tb.tb_next
    return out


def _in_torch(frame: FrameType) -> bool:
    try:
        return str(Path(frame.f_code.co_filename).resolve()).startswith(_TORCH_DIR)
    except OSError:
        return False


def build_error_finding(exc: BaseException, cls: type | None = None) -> Finding | None:
    """GS107 when ``exc`` is PyTorch's error for a module built without ``super().__init__()`` first.

    Recognises "cannot assign module/parameters/buffer before Module.__init__() call" and the
    AttributeError for a missing attribute that ``nn.Module.__init__`` creates (``_parameters``,
    ``_modules``...). ``where`` is the ``file:line`` of the user's line from the traceback (the class's
    ``__init__`` when there is none). ``cls`` names the class being built when the caller knows it.
    Returns None for any other error.
    """
    if not isinstance(exc, AttributeError):
        return None
    text = str(exc)
    assign = _ASSIGN_BEFORE_INIT.search(text)
    missing = None if assign else _MISSING_ATTRIBUTE.search(text)
    if assign is None and (missing is None or missing.group(1) not in _BOOKKEEPING):
        return None
    frames = _frames(exc)
    first_torch = next((i for i, (f, _) in enumerate(frames) if _in_torch(f)), None)
    module_frame = frames[first_torch][0] if first_torch is not None else None
    user = frames[first_torch - 1] if first_torch else (frames[-1] if frames and first_torch is None else None)
    instance = module_frame.f_locals.get("self") if module_frame is not None else None
    if cls is None and isinstance(instance, nn.Module):
        cls = type(instance)
    if assign is None and not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        return None  # "no attribute '_modules'" means something only on an nn.Module
    name = cls.__name__ if cls is not None else "the model class"

    what = "uses nn.Module machinery"
    if module_frame is not None and module_frame.f_code.co_name in _REGISTERING:
        local = module_frame.f_locals
        attribute = local.get("name")
        value = local.get("value", local.get("param", local.get("tensor", local.get("module"))))
        kind = f" (a {type(value).__name__})" if value is not None else ""
        if module_frame.f_code.co_name == "__setattr__":
            what = f"assigns `self.{attribute}`{kind}"
        else:
            what = f"calls `self.{module_frame.f_code.co_name}(\"{attribute}\", ...)`"
    elif missing is not None:
        what = f"uses `self.{missing.group(1)}`, which nn.Module.__init__() creates,"

    if user is not None:
        frame, line = user
        where = f"{frame.f_code.co_filename}:{line}"
        source = linecache.getline(frame.f_code.co_filename, line).strip()
        at = f" at line {line}" + (f" (`{source}`)" if source else "")
    else:
        where = f"{name}.__init__"
        at = ""
    message = (f"`{name}` {what}{at} before `super().__init__()` has run, so PyTorch has nowhere to register "
               f"it and building `{name}` failed with \"{text}\".")
    return finding("GS107", where, message)
