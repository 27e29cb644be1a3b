"""Zero-code mode: run an unmodified training script under gradscope, as ``coverage run`` does.

The script runs as ``__main__`` in a fresh module, with ``sys.argv`` set to the script and its
arguments and its folder first on ``sys.path``. Nothing in it is edited: PyTorch's global hooks
find what it trains.

- A *root model* is a module with trainable parameters called from outside any other module's
  forward (a global forward pre-hook tracks the call depth). On its first call gradscope attaches
  a ``watch()`` scope to it, with the optimizers that hold its parameters (found among the live
  ``torch.optim.Optimizer`` objects). Several roots (a GAN's generator and discriminator) each get
  their own scope.
- A model trained without an optimizer (a manual ``p.data.add_(...)`` update) still gets its
  gradient norms: its steps are counted from backward passes.
- An optimizer created after its model's first call is noticed at its first ``step()`` (a global
  step pre-hook) and named in the report, but the model's steps keep being counted from backward
  passes.

The report is written when the script ends, also when it raises, calls ``sys.exit`` or is
interrupted; the script's exit code and output are kept. A traceback from the script shows the
script's frames (and the libraries it called), not gradscope's.
"""
from __future__ import annotations

import ast
import builtins
import contextlib
import gc
import os
import sys
import traceback
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.optim.optimizer as optim_hooks
from torch import nn
from torch.nn.modules import module as module_hooks

from gradscope.errors import ModelFileError
from gradscope.frames import frame_kind
from gradscope.records import RunStatus
from gradscope.scope import Scope


def looks_like_script(path: Path) -> bool:
    """A training script, not a model file: it calls ``.backward()`` or has a ``__main__`` block,
    and defines no ``build_model()``. A file that cannot be parsed is left to the model loader,
    which explains syntax errors."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return False
    defines_builder = any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == "build_model"
                          for n in tree.body)
    if defines_builder:
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "backward":
            return True
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
                isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__":
            return True
    return False


@dataclass
class Watched:
    """One root model found in the script and the scope attached to it."""

    label: str
    model: nn.Module
    scope: Scope
    optimizers: list[str]
    late_optimizers: list[str] = field(default_factory=list)


class ScriptWatcher:
    """Finds root models and optimizers through PyTorch's global hooks and watches each model."""

    def __init__(self, watch_options: dict[str, Any] | None = None,
                 say: Callable[[str], None] = lambda _m: None) -> None:
        self.options = dict(watch_options or {})
        self.say = say
        self.watched: list[Watched] = []
        self._by_model: dict[int, Watched] = {}
        self._depth = 0
        self._handles: list[Any] = []
        self._restore: list[Callable[[], None]] = []
        self._known_optimizers: set[int] = set()
        self._attaching = False

    def start(self) -> None:
        self._handles = [
            module_hooks.register_module_forward_pre_hook(self._on_pre),
            module_hooks.register_module_forward_hook(self._on_post, always_call=True),
            optim_hooks.register_optimizer_step_pre_hook(self._on_optimizer_step),
        ]
        self._patch_destroy()

    def _patch_destroy(self) -> None:
        """A distributed script ends with ``destroy_process_group()``: close every scope first,
        while the ranks can still reduce what they hold (the final flush's collectives)."""
        import torch.distributed as dist

        original = getattr(dist, "destroy_process_group", None)
        if original is None or not dist.is_available():
            return

        def destroy(*args: Any, **kwargs: Any) -> Any:
            if dist.is_initialized() and (not args or args[0] is None) and kwargs.get("group") is None:
                self.close_scopes(failed=False)
            return original(*args, **kwargs)

        dist.destroy_process_group = destroy
        self._restore.append(lambda: setattr(dist, "destroy_process_group", original))

    def stop(self, failed: bool = False) -> None:
        """Remove the global hooks and close every scope (flush, detach). Safe to call twice.

        ``failed``: the script raised, so a step cut short is kept as evidence."""
        while self._handles:
            self._handles.pop().remove()
        while self._restore:
            self._restore.pop()()
        self.close_scopes(failed)
        for w in self.watched:
            self._check_registration(w)

    def _check_registration(self, w: Watched) -> None:
        """The registration checks (GS101-GS106) of a script's model, after it ran: lazy modules
        have their parameters by then. Static only: a forward pass would need an input."""
        from gradscope.records import Registration
        from gradscope.registration import check, registration_tree

        inner = w.scope.unwrapped.inner
        try:
            found = check(inner)
            tree = registration_tree(inner)
        except Exception as exc:  # an unusual module must not cost the run its record
            self.say(f"gradscope: the registration check of {w.label} failed ({type(exc).__name__}: {exc})")
            return
        w.scope.add_findings(found)
        w.scope.registration = Registration(tree=tree)

    def close_scopes(self, failed: bool) -> None:
        """Close every scope (a scope closes once: later calls do nothing)."""
        errors: list[BaseException] = []
        for w in reversed(self.watched):
            try:
                w.scope.close(keep_partial_step=failed)
            except Exception as exc:  # close the others first, then say what went wrong
                errors.append(exc)
        if errors:
            raise errors[0]

    # ---- discovery ---------------------------------------------------------------------------------
    def _on_pre(self, module: nn.Module, _args: Any) -> None:
        if self._depth == 0 and not self._attaching and id(module) not in self._by_model:
            self._maybe_attach(module)
        self._depth += 1

    def _on_post(self, _module: nn.Module, _args: Any, _output: Any) -> None:
        self._depth = max(0, self._depth - 1)

    def _maybe_attach(self, module: nn.Module) -> None:
        if not any(p.requires_grad for p in module.parameters()):
            return  # losses and parameter-free helpers are not models
        if any(id(module) in {id(m) for m in w.model.modules()} for w in self.watched):
            return  # a submodule of a model already watched, called on its own
        module = _trained_whole(module)  # model.forward(x) runs no hook of the model itself
        if any(id(module) in {id(m) for m in w.model.modules()} for w in self.watched):
            return
        module = _wrapper_of(module)  # a DDP wrapper whose forward the script bypasses: GS701
        if any(w.model is module for w in self.watched):
            return
        # every parameter, frozen ones too: an optimizer holding only the frozen head (and not the
        # trainable backbone) is the model's optimizer, and the mistake to report
        params = {id(p) for p in module.parameters()}
        optimizers = [o for o in _live_optimizers()
                      if any(id(p) in params for g in o.param_groups for p in g["params"])]
        label = type(module).__name__
        if any(w.label == label for w in self.watched):
            label = f"{label}#{sum(1 for w in self.watched if w.label.split('#')[0] == label) + 1}"
        self._attaching = True
        try:
            # the model's first call may be an evaluation under torch.inference_mode(): the
            # scope's tensors must still be ordinary ones that training can update
            with torch.inference_mode(False):
                scope = Scope(module, optimizers or None, **self.options)
                scope.__enter__()
        finally:
            self._attaching = False
        names = [f"{type(o).__name__}" for o in optimizers]
        watched = Watched(label, module, scope, names)
        self.watched.append(watched)
        self._by_model[id(module)] = watched
        self._known_optimizers.update(id(o) for o in optimizers)
        n = sum(p.numel() for p in module.parameters())
        self.say(f"gradscope: watching {label} ({n:,} parameters) with "
                 + (", ".join(names) if names else "no optimizer (steps counted from backward passes)"))

    def _on_optimizer_step(self, optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if id(optimizer) in self._known_optimizers:
            return
        self._known_optimizers.add(id(optimizer))
        held = {id(p) for g in optimizer.param_groups for p in g["params"]}
        owners = [w for w in self.watched if any(id(p) in held for p in w.model.parameters())]
        if not owners:
            # a model trained through model.forward(x), which runs no module hook: found from
            # the optimizer stepping its parameters (its scope starts with the next backward)
            for module in _roots_holding(held):
                self._maybe_attach(module)
            return
        for w in owners:
            w.late_optimizers.append(type(optimizer).__name__)
            w.scope.add_optimizer(optimizer)  # a rebuilt optimizer, or one for a new task
            self.say(f"gradscope: {type(optimizer).__name__} (created after {w.label} was first "
                     "called) now updates it; it joins the step clock and the optimizer checks")


def _live(kind: type) -> list[Any]:
    # the class, not isinstance: isinstance on a dead weakref.proxy raises, and on a deprecated
    # module's proxy it warns
    return [o for o in gc.get_objects() if issubclass(type(o), kind)]


def _trained_whole(module: nn.Module) -> nn.Module:
    """The model ``module`` is part of, when an optimizer trains it as a part: the smallest live
    module that holds ``module`` and every parameter of the optimizers that hold ``module``'s. A
    model trained through ``model.forward(x)`` first shows itself as its layers' calls."""
    own = {id(p) for p in module.parameters()}
    wanted: set[int] = set()
    for opt in _live_optimizers():
        held = {id(p) for g in opt.param_groups for p in g["params"]}
        if held & own:
            wanted |= held
    if wanted <= own:
        return module
    best: tuple[int, nn.Module] | None = None
    for candidate in _live(nn.Module):
        params = {id(p) for p in candidate.parameters()}
        if wanted <= params and any(m is module for m in candidate.modules()):
            if best is None or len(params) < best[0]:
                best = (len(params), candidate)
    return best[1] if best is not None else module


def _wrapper_of(module: nn.Module) -> nn.Module:
    """The DistributedDataParallel wrapper around ``module``, if the script built one."""
    from torch.nn.parallel import DistributedDataParallel

    return next((w for w in _live(DistributedDataParallel) if w.module is module), module)


def _roots_holding(params: set[int]) -> list[nn.Module]:
    """The outermost live modules that own any of ``params``."""
    owners = [m for m in _live(nn.Module) if any(id(p) in params for p in m.parameters(recurse=False))]
    if not owners:
        return []
    holders = [m for m in _live(nn.Module) if any(id(p) in params for p in m.parameters())]
    inside = {id(sub) for m in holders for sub in m.modules() if sub is not m}
    return [m for m in holders if id(m) not in inside]


def _live_optimizers() -> list[torch.optim.Optimizer]:
    return _live(torch.optim.Optimizer)


@dataclass
class ScriptResult:
    """How the script ended and what was watched."""

    exit_code: int
    status: RunStatus
    error: str | None
    watched: list[Watched]


def script_traceback(exc: BaseException) -> str:
    """The traceback Python would print, without gradscope's own frames."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if frame_kind(f.filename) != "gradscope"]
    return ("Traceback (most recent call last):\n"
            + "".join(traceback.StackSummary.from_list(frames).format())
            + "".join(traceback.format_exception_only(type(exc), exc)))


def run_script(path: Path, args: list[str], watcher: ScriptWatcher) -> ScriptResult:
    """Run ``path`` as ``__main__`` with ``args``, watched by ``watcher``; never raises for the
    script's own failures (they become the result)."""
    resolved = path.resolve()
    if not resolved.is_file():
        raise ModelFileError(f"{path}: no such file; expected a Python training script")
    try:
        source = resolved.read_text(encoding="utf-8")
        code = compile(source, str(resolved), "exec")
    except SyntaxError as exc:
        raise ModelFileError(f"{path}:{exc.lineno}: SyntaxError: {exc.msg}\n    {(exc.text or '').strip()}\n"
                             "Fix the syntax on that line; the script must run as plain Python.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelFileError(f"{path}: cannot read it ({exc})") from None
    main = types.ModuleType("__main__")
    main.__file__ = str(resolved)
    main.__builtins__ = builtins  # type: ignore[attr-defined]
    saved_main, saved_argv, saved_path = sys.modules.get("__main__"), sys.argv, list(sys.path)
    saved_cwd = os.getcwd()   # a script that calls os.chdir() must not move the caller
    sys.modules["__main__"] = main
    sys.argv = [str(path), *args]
    sys.path.insert(0, str(resolved.parent))
    watcher.start()
    status: RunStatus = "completed"
    code_out, error = 0, None
    try:
        exec(code, main.__dict__)
    except SystemExit as exc:
        code_out = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, (int, type(None))):
            print(exc.code, file=sys.stderr)
        status = "completed" if code_out == 0 else "exited"
        error = None if code_out == 0 else f"the script called sys.exit({exc.code!r})"
    except KeyboardInterrupt:
        status, code_out, error = "interrupted", 130, "interrupted by the user"
    except BaseException as exc:  # the script's own failure: print it as Python would
        text = script_traceback(exc)
        sys.stderr.write(text)
        status, code_out, error = "crashed", 1, text.strip().splitlines()[-1]
    finally:
        sys.argv = saved_argv
        sys.path[:] = saved_path
        with contextlib.suppress(OSError):   # the folder may be gone: then stay where the script left us
            os.chdir(saved_cwd)
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        watcher.stop(failed=status in ("crashed", "interrupted"))
    return ScriptResult(exit_code=code_out, status=status, error=error, watched=watcher.watched)
