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

from typing import Any

from torch import nn

from gradscope.errors import GradscopeError
from gradscope.findings import CATALOG, Finding, Severity
from gradscope.records.run import ModuleNode, Unregistered
from gradscope.registration.forensics import build_error_finding
from gradscope.registration.messages import _shared_findings, _static_findings
from gradscope.registration.scan import (
    _KIND_CODE,
    _display,
    _group,
    _numel,
    _scan,
    _unique,
)
from gradscope.registration.tracer import (
    ForwardPassError,
    _run_forward,
    _unregistered_call_findings,
    _unused_findings,
)

__all__ = ["ForwardPassError", "build_error_finding", "check", "registration_tree"]


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


def registration_tree(model: nn.Module) -> list[ModuleNode]:
    """One node per module in tree order, for the report's registration section.

    Each node has the module's ``path`` ("" for the root), ``name`` (the path, or the root's class
    name), ``depth``, ``class_name``, ``own_params``, ``total_params`` and ``trainable_params``
    (counts of parameter values, shared ones once), and ``unregistered``: one entry per attribute
    and kind of lost object with its count, code and severity (the code's, or "info" for tensors
    inside a container), the same objects ``check`` reports.
    """
    _check_model(model)
    scan = _scan(model)
    lost: dict[str, list[Unregistered]] = {}
    for (owner, attribute, kind), items in _group(scan.lost).items():
        direct = items[0].location == ""
        severity = Severity.INFO if kind == "tensor" and not direct else CATALOG[_KIND_CODE[kind]].severity
        lost.setdefault(owner, []).append(Unregistered(
            attribute=attribute, kind=kind, count=len(_unique([i.obj for i in items])),  # type: ignore[arg-type]
            code=_KIND_CODE[kind], severity=severity.value))
    rows = []
    for path, module in scan.tree:
        own = _unique([p for p in module._parameters.values() if p is not None])
        every = list(module.parameters())
        rows.append(ModuleNode(
            path=path, name=_display(path, model), depth=path.count(".") + 1 if path else 0,
            class_name=type(module).__name__, own_params=sum(_numel(p) for p in own),
            total_params=sum(_numel(p) for p in every),
            trainable_params=sum(_numel(p) for p in every if p.requires_grad),
            unregistered=lost.get(path, [])))
    return rows


