"""GS107: explaining a model that could not be built because ``super().__init__()`` came late."""
from __future__ import annotations

import linecache
import re
from types import FrameType

from torch import nn

from gradscope.findings import Finding, finding
from gradscope.frames import frame_kind
from gradscope.registration.scan import _BOOKKEEPING

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
    return frame_kind(frame.f_code.co_filename) == "torch"


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
