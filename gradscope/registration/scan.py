"""The static scan of a model: every module, parameter and tensor that nothing registered holds.

See ``gradscope.registration`` for what counts as unregistered.
"""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

# What nn.Module.__init__ puts into every instance: PyTorch's registries and hook dicts, never user state.
_BOOKKEEPING = frozenset(vars(nn.Module()))
_MAX_DEPTH = 32          # nesting of plain containers searched
_SHOWN = 4               # places listed in a message before "..."
_BATCH = 2               # samples in the batch made from input_shape (BatchNorm needs more than one)
_KIND_CODE = {"module": "GS101", "parameter": "GS102", "tensor": "GS103"}


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


def _values(params: Sequence[torch.Tensor]) -> str:
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

