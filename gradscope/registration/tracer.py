"""The forward pass of the registration check: which modules a call of the model really used
(GS104, GS105), with the model left exactly as it was. See ``gradscope.registration``."""
from __future__ import annotations

import copy
import random
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as _module_api
from torch.nn.parameter import UninitializedBuffer, UninitializedParameter, is_lazy
from torch.overrides import TorchFunctionMode

from gradscope.errors import GradscopeError
from gradscope.findings import Finding, Severity, finding
from gradscope.registration.messages import _module_hint
from gradscope.registration.scan import (
    _BATCH,
    _BOOKKEEPING,
    _SHOWN,
    _classes,
    _display,
    _Lost,
    _matters,
    _parent,
    _places,
    _plural,
    _Scan,
    _scan,
    _unique,
    _unregistered_state,
    _values,
)


class ForwardPassError(GradscopeError):
    """The model's forward raised on the input ``check`` was given; ``findings`` holds the static findings."""

    def __init__(self, message: str, findings: list[Finding], module: str, input_description: str) -> None:
        super().__init__(message)
        self.findings = findings
        self.module = module
        self.input_description = input_description

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
        self.modules: list[tuple[nn.Module, type, dict[str, Any], list[tuple[Any, Any]], bool]] = []
        for m in modules:
            registries: list[Any] = [getattr(m, name, None) for name in ("_parameters", "_buffers", "_modules")]
            # the registries, and the plain lists, dicts and sets a forward may fill in place (caches)
            saved: list[tuple[Any, Any]] = [(r, dict(r)) for r in registries if type(r) in (dict, OrderedDict)]
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
            for buf, version, kept in self.buffers:
                if version is not None and _version(buf) == version:
                    continue  # untouched: leave it (and its version counter) alone
                if buf.shape == kept.shape and buf.dtype == kept.dtype:
                    if not torch.equal(buf, kept):
                        buf.copy_(kept)
                else:
                    buf.data = kept


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
        memo[id(t)] = kind(requires_grad=t.requires_grad, device=t.device, dtype=t.dtype)  # type: ignore[call-arg]
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


