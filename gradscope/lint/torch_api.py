"""The installed torch and torchvision as lint sees them: dotted names to objects, and facts about them.

Lint never imports the user's code. It imports only ``torch`` and ``torchvision`` themselves (and
their submodules a file names), and only when a file's imports point at them. Every fact here is
read from the installed libraries (``inspect.signature``, ``__deprecated__``, class hierarchies), so
the rules follow the version the user runs.
"""
from __future__ import annotations

import functools
import importlib
import inspect
import typing
import warnings
from typing import Any

ROOTS = ("torch", "torchvision")

# torch.* factories whose result is always a tensor (checked against the installed torch in tests).
TENSOR_FACTORIES = frozenset({
    "tensor", "as_tensor", "from_numpy", "zeros", "ones", "empty", "full", "rand", "randn",
    "randint", "randperm", "arange", "linspace", "logspace", "eye", "zeros_like", "ones_like",
    "empty_like", "full_like", "rand_like", "randn_like", "randint_like", "stack", "cat", "concat",
})


@functools.lru_cache(maxsize=None)
def resolve(qualname: str) -> Any:
    """The object a dotted torch/torchvision name stands for, or None when it cannot be found.

    Only names under ``torch``/``torchvision`` are looked up; a submodule is imported only when
    attribute access does not reach it. Any failure (a missing name, a lazy attribute that raises
    without CUDA, an import error) means "unknown", never an exception.
    """
    parts = qualname.split(".")
    if parts[0] not in ROOTS or "__main__" in parts:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated modules warn on import; lint reports them itself
        try:
            obj: Any = importlib.import_module(parts[0])
        except Exception:
            return None
        for i, part in enumerate(parts[1:], start=1):
            try:
                obj = getattr(obj, part)
                continue
            except Exception:
                pass
            if not inspect.ismodule(obj):
                return None
            try:
                obj = importlib.import_module(".".join(parts[: i + 1]))
            except BaseException:  # a broken optional submodule may even raise SystemExit
                return None
    return obj


def _safe_issubclass(obj: Any, base: Any) -> bool:
    try:
        return isinstance(obj, type) and issubclass(obj, base)
    except Exception:
        return False


def _torch() -> Any:
    return resolve("torch")


def is_module_class(obj: Any) -> bool:
    """A class whose instances are ``nn.Module`` s."""
    torch = _torch()
    return torch is not None and _safe_issubclass(obj, torch.nn.Module)


def returns_module(obj: Any) -> bool:
    """A torchvision model builder: a function annotated to return an ``nn.Module`` subclass."""
    if not inspect.isfunction(obj) or not (getattr(obj, "__module__", None) or "").startswith("torchvision.models"):
        return False
    sig = signature(obj)
    return sig is not None and is_module_class(sig.return_annotation)


def makes_tensor(obj: Any) -> bool:
    """A torch factory from TENSOR_FACTORIES, ``torch.Tensor`` and its subclasses (``nn.Parameter``)."""
    torch = _torch()
    if torch is None:
        return False
    if _safe_issubclass(obj, torch.Tensor) or type(obj).__name__ == "tensortype":
        return True
    return any(obj is getattr(torch, name, None) for name in TENSOR_FACTORIES)


def is_loss_class(obj: Any) -> bool:
    """An ``nn`` loss class (a subclass of torch's ``_Loss`` base)."""
    loss_base = resolve("torch.nn.modules.loss._Loss")
    return loss_base is not None and _safe_issubclass(obj, loss_base)


@functools.lru_cache(maxsize=1)
def _functional_losses() -> tuple[Any, ...]:
    functional = resolve("torch.nn.functional")
    if functional is None:
        return ()
    names = [n for n in dir(functional) if "loss" in n or "entropy" in n or n == "kl_div"]
    return tuple(getattr(functional, n) for n in names)


def is_loss_function(obj: Any) -> bool:
    """A loss function of ``torch.nn.functional`` (``cross_entropy``, ``mse_loss``, ``kl_div``...)."""
    return any(obj is fn for fn in _functional_losses())


def is_cross_entropy(obj: Any) -> bool:
    """``nn.CrossEntropyLoss`` (or a subclass) or ``F.cross_entropy``: losses that apply log-softmax."""
    cls = resolve("torch.nn.CrossEntropyLoss")
    fn = resolve("torch.nn.functional.cross_entropy")
    return (cls is not None and _safe_issubclass(obj, cls)) or (fn is not None and obj is fn)


def is_softmax_function(obj: Any) -> bool:
    """``torch.softmax``, ``F.softmax``, ``torch.special.softmax`` or ``Tensor.softmax``."""
    names = ("torch.softmax", "torch.nn.functional.softmax", "torch.special.softmax", "torch.Tensor.softmax")
    return any(obj is resolve(n) and obj is not None for n in names)


def is_softmax_class(obj: Any) -> bool:
    """``nn.Softmax`` (not ``nn.LogSoftmax``, which is a different class)."""
    cls = resolve("torch.nn.Softmax")
    return cls is not None and _safe_issubclass(obj, cls)


def is_optimizer_class(obj: Any) -> bool:
    optimizer = resolve("torch.optim.Optimizer")
    return optimizer is not None and _safe_issubclass(obj, optimizer)


def is_grad_scaler_class(obj: Any) -> bool:
    scaler = resolve("torch.amp.GradScaler")
    return scaler is not None and _safe_issubclass(obj, scaler)


def is_dataloader_class(obj: Any) -> bool:
    loader = resolve("torch.utils.data.DataLoader")
    return loader is not None and _safe_issubclass(obj, loader)


def is_tensor_class(obj: Any) -> bool:
    torch = _torch()
    return torch is not None and obj is torch.Tensor


def disables_grad(obj: Any) -> bool:
    """``torch.no_grad`` or ``torch.inference_mode``: contexts and decorators without a graph."""
    return any(obj is resolve(n) and obj is not None for n in ("torch.no_grad", "torch.inference_mode"))


def is_backward_function(obj: Any) -> bool:
    """``torch.autograd.backward``/``torch.autograd.grad``: backward passes written as functions."""
    return any(obj is resolve(n) and obj is not None for n in ("torch.autograd.backward", "torch.autograd.grad"))


def signature(obj: Any) -> inspect.Signature | None:
    """The call signature of a function or class, or None where Python cannot tell (builtins)."""
    try:
        return inspect.signature(obj)
    except Exception:
        return None


def accepts_any_keyword(sig: inspect.Signature) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())


def keyword_names(sig: inspect.Signature) -> list[str]:
    """The names a call may pass by keyword (not positional-only, not ``*args``)."""
    allowed = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [name for name, p in sig.parameters.items() if p.kind in allowed]


def deprecation(obj: Any, *, called: bool) -> str | None:
    """The installed library's own deprecation message for ``obj``, if it has one.

    torch marks deprecated functions and classes with ``typing_extensions.deprecated``, which
    stores the message as ``__deprecated__``. A class whose ``__init__`` alone is marked (such as
    ``torch.cuda.amp.GradScaler``) is deprecated to construct, not to name in ``isinstance``, so
    that counts only when ``called``.
    """
    message = getattr(obj, "__deprecated__", None)
    if not isinstance(message, str) and called and isinstance(obj, type):
        message = getattr(obj.__dict__.get("__init__"), "__deprecated__", None)
    return " ".join(message.split()) if isinstance(message, str) else None


def is_variable(obj: Any) -> bool:
    """``torch.autograd.Variable``: a no-op wrapper since PyTorch 0.4, returning a plain tensor."""
    variable = resolve("torch.autograd.Variable")
    return variable is not None and obj is variable


def in_torchvision_models(obj: Any) -> bool:
    return (getattr(obj, "__module__", None) or "").startswith("torchvision.models")


def weights_enum_name(builder: Any, parameter: str) -> str | None:
    """The weights enum a torchvision builder takes in ``parameter`` (``ResNet18_Weights``), if known."""
    if parameter == "weights":
        try:
            return resolve("torchvision.models").get_model_weights(builder).__name__
        except Exception:
            pass
    sig = signature(builder)
    if sig is None or parameter not in sig.parameters:
        return None
    annotation = sig.parameters[parameter].annotation
    enum_base = resolve("torchvision.models.WeightsEnum")
    for candidate in (annotation, *typing.get_args(annotation)):
        if enum_base is not None and _safe_issubclass(candidate, enum_base):
            return candidate.__name__
    return None
