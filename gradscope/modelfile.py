"""Load a user's model file into a typed :class:`ModelSpec`, explaining every reason it cannot be.

A model file is plain Python. gradscope imports it as a fresh module (its ``if __name__ ==
"__main__":`` block does not run) and looks for the model, in this order:

1. ``build_model()``: a function with no arguments that returns the model;
2. ``model``: a module-level ``nn.Module`` instance;
3. the one ``nn.Module`` subclass *defined in the file* whose constructor needs no arguments
   (classes imported into the file do not count).

Optional names refine what gradscope can do with it: ``input_shape`` (one sample, without the batch
dimension), ``num_classes``, ``loss_fn``, ``build_optimizer(model)``, ``build_loaders()`` and
``clip`` (``{"max_norm": x}`` or ``{"clip_value": x}``).
"""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import inspect
import itertools
import math
import numbers
import re
import reprlib
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from gradscope.errors import ModelFileError
from gradscope.findings import Finding
from gradscope.frames import frame_kind, library_name
from gradscope.registration.forensics import build_error_finding

LOOKED_FOR = ("a function `build_model()` that returns the model, a module-level `model` "
              "(an nn.Module instance), or an nn.Module subclass defined in the file whose "
              "constructor takes no arguments")

_MODULE_NUMBERS = itertools.count()
_REPR = reprlib.Repr()
_REPR.maxstring = 60
_REPR.maxother = 60


@dataclass
class ModelSpec:
    """What a model file defines: how to build the model, and the optional training pieces."""

    path: Path
    build_model: Callable[[], nn.Module]
    source: str                                   # "build_model" | "model" | "class Net"
    input_shape: tuple[int, ...] | None            # one sample, without the batch dimension
    num_classes: int | None
    loss_fn: nn.Module | Callable[..., Any] | None
    build_optimizer: Callable[[nn.Module], torch.optim.Optimizer] | None
    build_loaders: Callable[[], tuple[Iterable[Any], Iterable[Any]]] | None
    clip: dict[str, float] | None                 # {"max_norm": x} or {"clip_value": x}


class ModelFindingError(ModelFileError):
    """The model could not be built for a reason the catalog has a code for (GS107).

    ``finding`` holds it, so a caller can report it as a finding rather than as a crash.
    """

    def __init__(self, message: str, finding: Finding) -> None:
        super().__init__(message)
        self.finding = finding


def load_model_file(path: str | Path) -> ModelSpec:
    """Import ``path`` as a fresh module and read the model and its settings from it.

    Raises:
        ModelFileError: the file is missing, is not Python, does not import, defines no model (or
            several), or a setting has the wrong type or value. The message says which file and
            line, what was expected and how to fix it. ``ModelFindingError`` (a ``ModelFileError``)
            when importing failed with a catalogued mistake, such as a module instance built at
            import time whose class assigns a submodule before ``super().__init__()``.
    """
    path = Path(path)
    shown = str(path)
    resolved = _check_path(path)
    source = _read_source(path, resolved)
    try:
        # Named as the user gave it, as `python path/to/model.py` would: tracebacks and file:line
        # findings then read the way the user wrote the command.
        tree = ast.parse(source, filename=shown)
        code = compile(tree, shown, "exec")
    except SyntaxError as exc:
        raise ModelFileError(_syntax_message(shown, exc)) from None

    name = f"gradscope_model_{next(_MODULE_NUMBERS)}_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    assert module_spec is not None  # a .py path always has a spec
    module = importlib.util.module_from_spec(module_spec)
    # Registered while it runs (and kept), as an import would: dataclasses, pickling and
    # typing.get_type_hints look classes up through sys.modules.
    sys.modules[name] = module
    try:
        with _user_code(resolved, argv=[shown]):
            exec(code, module.__dict__)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        found = _init_order_finding(exc, None)
        if found is not None:
            raise ModelFindingError(_finding_message(shown, found), found) from None
        message = describe_failure(f"importing {shown} failed", exc)
        if isinstance(exc, SystemExit):
            message += ("\nThe file exited while gradscope imported it to find the model. Keep "
                        "argument parsing and training under `if __name__ == \"__main__\":`.")
        raise ModelFileError(message) from None

    namespace = module.__dict__
    build_model, source_name = _find_model(namespace, name, tree, shown)
    return ModelSpec(
        path=path,
        build_model=build_model,
        source=source_name,
        input_shape=_input_shape(namespace.get("input_shape"), shown),
        num_classes=_num_classes(namespace.get("num_classes"), shown),
        loss_fn=_loss_fn(namespace.get("loss_fn"), shown),
        build_optimizer=_build_optimizer(namespace.get("build_optimizer"), shown),
        build_loaders=_build_loaders(namespace.get("build_loaders"), shown),
        clip=_clip(namespace.get("clip"), shown),
    )


def build(spec: ModelSpec) -> nn.Module:
    """Build the model the way the file says, with the file's folder importable.

    Raises:
        ModelFindingError: a submodule was assigned before ``super().__init__()`` (GS107);
            ``.finding`` holds the finding.
        ModelFileError: building raised anything else (the message shows the user's frames
            only), or did not return an ``nn.Module``.
    """
    shown = str(spec.path)
    what = "build_model()" if spec.source == "build_model" else f"{spec.source.removeprefix('class ')}()"
    try:
        with _user_code(spec.path.resolve()):
            model = spec.build_model()
    except (Exception, SystemExit) as exc:
        cls = spec.build_model if isinstance(spec.build_model, type) else None
        found = _init_order_finding(exc, cls)
        if found is not None:
            raise ModelFindingError(_finding_message(shown, found), found) from None
        raise ModelFileError(describe_failure(f"{what} in {shown} failed", exc)) from None
    if isinstance(model, type):
        raise ModelFileError(
            f"{what} in {shown} returned the class `{model.__name__}`, expected an instance: "
            f"return `{model.__name__}()`")
    if not isinstance(model, nn.Module):
        raise ModelFileError(
            f"{what} in {shown} returned {_describe(model)}, expected an nn.Module; "
            f"end it with `return model`")
    return model


# --- reading the file ------------------------------------------------------------------------------

def _check_path(path: Path) -> Path:
    shown = str(path)
    if path.is_dir():
        inside = path / "model.py"
        also = f"; did you mean {inside}?" if inside.is_file() else ""
        raise ModelFileError(f"{shown} is a directory, expected a Python file (.py) that defines "
                             f"the model{also}")
    if not path.exists():
        raise ModelFileError(f"model file not found: {shown}\nGive the path of a .py file that "
                             f"defines {LOOKED_FOR}.")
    if path.suffix != ".py":
        raise ModelFileError(f"{shown} is not a Python file: expected a path ending in .py, got "
                             f"{path.suffix or 'no suffix'!r}")
    return path.resolve()


def _read_source(path: Path, resolved: Path) -> str:
    try:
        data = resolved.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return importlib.util.decode_source(data)
    except (UnicodeDecodeError, SyntaxError, LookupError) as exc:
        raise ModelFileError(
            f"{path} is not UTF-8 text (nor in the encoding its `# -*- coding: ... -*-` line "
            f"names): {exc}\nSave the file as UTF-8.") from None


def _syntax_message(shown: str, exc: SyntaxError) -> str:
    where = f"{shown}:{exc.lineno}" if exc.lineno else shown
    lines = [f"{where}: {type(exc).__name__}: {exc.msg}"]
    if exc.text:
        text = exc.text.rstrip("\r\n")
        stripped = text.lstrip()
        lines.append("    " + stripped)
        if exc.offset:
            start = max(exc.offset - 1 - (len(text) - len(stripped)), 0)
            same_line = exc.end_lineno in (None, exc.lineno)
            span = (exc.end_offset - exc.offset) if same_line and exc.end_offset else 1
            lines.append("    " + " " * start + "^" * max(span, 1))
    lines.append("Fix the syntax on that line; the file must run as plain Python.")
    return "\n".join(lines)


@contextlib.contextmanager
def _user_code(file: Path, argv: list[str] | None = None) -> Iterator[None]:
    """The file's folder first on ``sys.path`` (and ``sys.argv`` set), restored afterwards."""
    saved_path, saved_argv = list(sys.path), sys.argv
    sys.path.insert(0, str(file.parent))
    if argv is not None:
        sys.argv = list(argv)
    try:
        yield
    finally:
        sys.path[:] = saved_path
        sys.argv = saved_argv


# --- explaining a failure with the user's frames only ------------------------------------------------

def user_traceback(exc: BaseException) -> list[str]:
    """The frames of ``exc`` in the user's own files, formatted as ``traceback`` does.

    gradscope's and the import machinery's frames are dropped; frames inside installed libraries
    (torch, the standard library) are dropped too, and those below the user's last frame are
    summarised in one line naming the libraries.
    """
    frames = traceback.extract_tb(exc.__traceback__)
    kinds = [frame_kind(frame.filename) for frame in frames]
    user = [frame for frame, kind in zip(frames, kinds) if kind == "user"]
    last_user = max((i for i, kind in enumerate(kinds) if kind == "user"), default=-1)
    below = [frame for frame, kind in zip(frames[last_user + 1:], kinds[last_user + 1:])
             if kind in ("library", "torch")]
    lines = traceback.StackSummary.from_list(user).format()
    if below:
        names = sorted({library_name(frame.filename) for frame in below})
        plural = "frame" if len(below) == 1 else "frames"
        lines.append(f"  ... {len(below)} more {plural} inside installed libraries "
                     f"({', '.join(names)})\n")
    return lines


def describe_failure(headline: str, exc: BaseException) -> str:
    """``headline``, the user's frames of ``exc`` and the exception, as a traceback reads."""
    body = "".join(user_traceback(exc)) + "".join(traceback.format_exception_only(type(exc), exc))
    return f"{headline} with {type(exc).__name__} (most recent call last):\n{body.rstrip()}"


def _init_order_finding(exc: BaseException, cls: type | None) -> Finding | None:
    return build_error_finding(exc, cls) if isinstance(exc, Exception) else None


def _finding_message(shown: str, found: Finding) -> str:
    return f"{shown}: the model could not be built: {found.where}: {found.message}\n{found.hint}"


# --- finding the model ----------------------------------------------------------------------------

def _describe(value: object) -> str:
    if value is None:
        return "None"
    return f"{type(value).__name__} {_REPR.repr(value)}"


def _required_arguments(fn: Callable[..., Any]) -> list[str] | None:
    """Names of the parameters ``fn`` needs; None when its signature cannot be read."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD,
             inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in signature.parameters.values()
            if p.kind in kinds and p.default is inspect.Parameter.empty]


def _class_lines(tree: ast.Module) -> dict[str, int]:
    lines: dict[str, int] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            lines.setdefault(node.name, node.lineno)
    return lines


def _instance(model: nn.Module) -> Callable[[], nn.Module]:
    def existing_model() -> nn.Module:
        return model
    return existing_model


def _find_model(namespace: dict[str, Any], module_name: str, tree: ast.Module,
                shown: str) -> tuple[Callable[[], nn.Module], str]:
    if "build_model" in namespace:
        fn = namespace["build_model"]
        if not callable(fn):
            raise ModelFileError(
                f"`build_model` in {shown} is {_describe(fn)}, expected a function that takes no "
                f"arguments and returns the model, for example:\n\n"
                f"    def build_model():\n        return Net()")
        needed = _required_arguments(fn)
        if needed:
            raise ModelFileError(
                f"build_model() in {shown} needs the arguments {_names(needed)}, expected a "
                f"function that takes none: give them defaults or set them inside it")
        return fn, "build_model"

    if "model" in namespace:
        obj = namespace["model"]
        if isinstance(obj, nn.Module):
            return _instance(obj), "model"
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            raise ModelFileError(
                f"`model` in {shown} is the class `{obj.__name__}`, expected an instance: "
                f"`model = {obj.__name__}()`")
        raise ModelFileError(
            f"`model` in {shown} is {_describe(obj)}, expected an nn.Module instance "
            f"(for example `model = Net()`), or define `def build_model():` returning one")

    lines = _class_lines(tree)
    classes: dict[int, type] = {}
    for value in namespace.values():
        if isinstance(value, type) and issubclass(value, nn.Module) and value.__module__ == module_name:
            classes.setdefault(id(value), value)
    ordered = sorted(classes.values(), key=lambda c: lines.get(c.__name__, 0))

    def at(cls: type) -> str:
        line = lines.get(cls.__name__)
        return f"`{cls.__name__}` (line {line})" if line else f"`{cls.__name__}`"

    ready = [cls for cls in ordered if not _required_arguments(cls)]
    if len(ready) == 1:
        return ready[0], f"class {ready[0].__name__}"
    if len(ready) > 1:
        listed = ", ".join(at(cls) for cls in ready)
        raise ModelFileError(
            f"{shown} defines several nn.Module subclasses that could be the model: {listed}. "
            f"Choose one by defining a function that builds it:\n\n"
            f"    def build_model():\n        return {ready[-1].__name__}()")
    if ordered:
        listed = ", ".join(f"{at(cls)} needs {_names(_required_arguments(cls) or [])}"
                           for cls in ordered)
        first = ordered[-1]
        args = ", ".join(f"{name}=..." for name in _required_arguments(first) or [])
        raise ModelFileError(
            f"{shown} defines nn.Module subclasses, but each constructor needs arguments: "
            f"{listed}. Define a function that builds the model with the arguments you train "
            f"with:\n\n    def build_model():\n        return {first.__name__}({args})")
    raise ModelFileError(
        f"found no model in {shown}: looked for {LOOKED_FOR}. Classes imported into the file "
        f"do not count. Add, for example:\n\n    def build_model():\n        return Net()")


def _names(names: list[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


# --- the optional settings ------------------------------------------------------------------------

def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _input_shape(value: object, shown: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    if (isinstance(value, (tuple, list)) and value
            and all(_is_int(d) and int(d) > 0 for d in value)):
        return tuple(int(d) for d in value)
    raise ModelFileError(
        f"`input_shape` in {shown} must be the shape of one sample, without the batch dimension, "
        f"as a tuple of positive ints: for example `input_shape = (1, 28, 28)` for 28x28 "
        f"greyscale images; got {_REPR.repr(value)}")


def _num_classes(value: object, shown: str) -> int | None:
    if value is None:
        return None
    if _is_int(value) and int(value) > 0:  # type: ignore[call-overload]
        return int(value)  # type: ignore[call-overload]
    raise ModelFileError(
        f"`num_classes` in {shown} must be a positive int (how many classes the model tells "
        f"apart), got {_REPR.repr(value)}")


def _clip(value: object, shown: str) -> dict[str, float] | None:
    if value is None:
        return None
    example = 'for example `clip = {"max_norm": 1.0}` or `clip = {"clip_value": 0.5}`'
    if not isinstance(value, dict):
        raise ModelFileError(
            f"`clip` in {shown} must be a dict with one key, {{\"max_norm\": 1.0}} for norm "
            f"clipping or {{\"clip_value\": 0.5}} for value clipping; got {_describe(value)}")
    if len(value) != 1:
        raise ModelFileError(
            f"`clip` in {shown} must have exactly one key, `max_norm` or `clip_value`, got "
            f"{_REPR.repr(value)}; {example}")
    (key, amount), = value.items()
    if key not in ("max_norm", "clip_value"):
        raise ModelFileError(
            f"`clip` in {shown} has the key {_REPR.repr(key)}, expected `max_norm` or "
            f"`clip_value`; {example}")
    if (not isinstance(amount, numbers.Real) or isinstance(amount, bool)
            or not math.isfinite(amount) or amount <= 0):
        raise ModelFileError(
            f"`clip` in {shown}: {key} must be a positive finite number, got "
            f"{_REPR.repr(amount)}; {example}")
    return {key: float(amount)}


def _torch_name(cls: type) -> str:
    if cls.__module__.startswith("torch.nn."):
        return f"nn.{cls.__name__}"
    if cls.__module__.startswith("torch.optim"):
        return f"torch.optim.{cls.__name__}"
    return cls.__name__


def _loss_fn(value: object, shown: str) -> nn.Module | Callable[..., Any] | None:
    if value is None:
        return None
    if isinstance(value, type):
        raise ModelFileError(
            f"`loss_fn` in {shown} is the class `{value.__name__}`, expected an instance: "
            f"`loss_fn = {_torch_name(value)}()`")
    if not callable(value):
        raise ModelFileError(
            f"`loss_fn` in {shown} is {_describe(value)}, expected a loss module or function "
            f"called as loss_fn(output, target), for example `loss_fn = nn.CrossEntropyLoss()`")
    return value


_OPTIMIZER_EXAMPLE = ("    def build_optimizer(model):\n"
                      "        return torch.optim.{name}(model.parameters(), lr=1e-3)")


def _build_optimizer(value: object,
                     shown: str) -> Callable[[nn.Module], torch.optim.Optimizer] | None:
    if value is None:
        return None
    if isinstance(value, type) and issubclass(value, torch.optim.Optimizer):
        raise ModelFileError(
            f"`build_optimizer` in {shown} is the optimizer class `{_torch_name(value)}`, "
            f"expected a function that builds it from the model:\n\n"
            + _OPTIMIZER_EXAMPLE.format(name=value.__name__))
    if not callable(value):
        raise ModelFileError(
            f"`build_optimizer` in {shown} is {_describe(value)}, expected a function that "
            f"builds the optimizer from the model:\n\n" + _OPTIMIZER_EXAMPLE.format(name="Adam"))
    try:
        inspect.signature(value).bind(object())
    except TypeError:
        raise ModelFileError(
            f"build_optimizer in {shown} must take one argument (the model), for example:\n\n"
            + _OPTIMIZER_EXAMPLE.format(name="Adam")) from None
    except ValueError:
        pass  # a builtin without a readable signature: trust it
    return value


def _build_loaders(value: object,
                   shown: str) -> Callable[[], tuple[Iterable[Any], Iterable[Any]]] | None:
    if value is None:
        return None
    if not callable(value):
        raise ModelFileError(
            f"`build_loaders` in {shown} is {_describe(value)}, expected a function with no "
            f"arguments that returns (train_loader, test_loader)")
    needed = _required_arguments(value)
    if needed:
        raise ModelFileError(
            f"build_loaders() in {shown} needs the arguments {_names(needed)}, expected a "
            f"function that takes none and returns (train_loader, test_loader): give them "
            f"defaults or set them inside it")
    return value
