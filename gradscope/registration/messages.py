"""The words of the registration findings: what is lost, why it matters, how to hold it."""
from __future__ import annotations

from torch import nn
from torch.nn.parameter import is_lazy

from gradscope.findings import Finding, Severity, finding
from gradscope.registration.scan import (
    _SHOWN,
    _classes,
    _display,
    _group,
    _Lost,
    _parent,
    _places,
    _plural,
    _Scan,
    _unique,
    _values,
)


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


