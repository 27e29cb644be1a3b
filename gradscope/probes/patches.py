"""Observing a torch function while scopes are open: ``F.dropout``, ``F.cross_entropy``...

Some mistakes are visible only in what a script hands to a torch function (a dropout hard-wired on,
probabilities fed to a loss that wants logits). ``FunctionPatch`` replaces the function, in its own
module, by a wrapper that shows each call's arguments to the open scopes' observers and then calls
the original unchanged; the original goes back when the last observer leaves. Code that reaches
the function through its module (``F.dropout(...)``, ``nn.Dropout``, ``nn.CrossEntropyLoss``) is
seen; a name imported before the scope opened (``from torch.nn.functional import dropout``) is not.
"""
from __future__ import annotations

import functools
import sys
from types import ModuleType
from typing import Any, Callable

from torch import nn

Observer = Callable[[tuple[Any, ...], dict[str, Any]], None]


class FunctionPatch:
    """One function of one module, observed by every open scope that asked for it."""

    def __init__(self, module: ModuleType, name: str) -> None:
        self.module = module
        self.name = name
        self.observers: list[Observer] = []
        self.original: Callable[..., Any] | None = None

    def add(self, observer: Observer) -> None:
        if observer in self.observers:
            return
        if not self.observers:
            original = getattr(self.module, self.name)
            self.original = original
            observers = self.observers

            @functools.wraps(original)
            def observed(*args: Any, **kwargs: Any) -> Any:
                for watch in list(observers):
                    watch(args, kwargs)
                return original(*args, **kwargs)

            setattr(self.module, self.name, observed)
        self.observers.append(observer)

    def remove(self, observer: Observer) -> None:
        if observer in self.observers:
            self.observers.remove(observer)
            if not self.observers and self.original is not None:
                setattr(self.module, self.name, self.original)
                self.original = None


def argument(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str, default: Any) -> Any:
    """A call's argument given by position or keyword."""
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def calling_module(modules: dict[int, str], depth: int = 6) -> str | None:
    """The path (in ``modules``, by id) of the innermost module whose method called the observed
    function, looked for in the few frames above the wrapper; None when that module is not in
    ``modules`` (``nn.Dropout`` calling ``F.dropout``, another model) or no module is found."""
    frame = sys._getframe(2)   # 0: this function, 1: the observer, 2: the wrapper
    for _ in range(depth):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        owner = frame.f_locals.get("self")
        if isinstance(owner, nn.Module):
            return modules.get(id(owner))
    return None


def call_site(depth: int = 12) -> str | None:
    """``file:line`` of the first frame above the wrapper outside torch and gradscope."""
    frame = sys._getframe(2)
    for _ in range(depth):
        frame = frame.f_back  # type: ignore[assignment]
        if frame is None:
            return None
        module = frame.f_globals.get("__name__", "")
        if not (module.startswith("torch") or module.startswith("gradscope")):
            return f"{frame.f_code.co_filename}:{frame.f_lineno}"
    return None
