"""What gradscope needs to know about data and model parallelism, and torch.compile.

- ``unwrap``: the user's module inside DDP, DataParallel and ``torch.compile``'s
  ``OptimizedModule`` (the same Parameter objects), so names carry no ``module.`` or
  ``_orig_mod.``; FSDP1's ``_fsdp_wrapped_module.`` is taken out of names by ``clean_name``.
- ``Reduction``: how a parameter's gradient is spread over ranks. A replicated one (DDP, one
  process) needs nothing: after backward every rank holds the same averaged gradient. A sharded one
  (an FSDP2 DTensor, an FSDP1 flat shard) holds a piece of it: the norm of the whole is the root of
  the sum over the shard ranks of the squared local norms, one ``all_reduce`` for all parameters of a
  group, done at a flush, never in a step.
- ``World``: the rank and world size, and whether collectives may be used at all.

Collective discipline: gradscope issues collectives only at the step clock's flushes (every rank
reaches the same step count) and at a normal close, never from ``scope.records`` or
``scope.findings`` in mid-run, which serve what the last flush reduced.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


@dataclass(frozen=True)
class Unwrapped:
    """The module gradscope names and hooks (``inner``), and what wraps it (``root``)."""

    root: nn.Module
    inner: nn.Module
    wrappers: tuple[str, ...] = ()     # outermost first: "DistributedDataParallel", "compile", ...

    @property
    def compiled(self) -> bool:
        return "compile" in self.wrappers

    @property
    def strategy(self) -> str:
        """``ddp``, ``fsdp1``, ``fsdp2``, ``dp`` or ``none``."""
        if "DistributedDataParallel" in self.wrappers:
            return "ddp"
        if "DataParallel" in self.wrappers:
            return "dp"
        if is_fsdp1(self.inner):
            return "fsdp1"
        if any(is_dtensor(p) for p in self.inner.parameters()):
            return "fsdp2"
        return "none"


def unwrap(model: nn.Module) -> Unwrapped:
    """Peel DDP, DataParallel and ``torch.compile`` off ``model`` (in any order)."""
    from torch.nn.parallel import DataParallel, DistributedDataParallel

    wrappers: list[str] = []
    inner = model
    for _ in range(8):  # a wrapper of a wrapper of ...: a few levels at most
        if isinstance(inner, (DistributedDataParallel, DataParallel)):
            wrappers.append(type(inner).__name__)
            inner = inner.module
        elif _is_optimized_module(inner):
            wrappers.append("compile")
            inner = inner._orig_mod  # type: ignore[assignment]
        else:
            break
    return Unwrapped(root=model, inner=inner, wrappers=tuple(wrappers))


def _is_optimized_module(module: nn.Module) -> bool:
    cls = type(module)
    return cls.__name__ == "OptimizedModule" and hasattr(module, "_orig_mod")


def compiled_in_place(module: nn.Module) -> bool:
    """``module.compile()`` was called: its own ``__call__`` runs compiled."""
    return getattr(module, "_compiled_call_impl", None) is not None


def clean_name(name: str) -> str:
    """A parameter or module name without the wrappers' prefixes."""
    for prefix in WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


_DTENSOR: list[type | None] = []   # DTensor's class, looked up once (None: a build without it)


def is_dtensor(t: Any) -> bool:
    if not _DTENSOR:
        try:
            from torch.distributed.tensor import DTensor
        except ImportError:  # pragma: no cover - builds without distributed
            _DTENSOR.append(None)
        else:
            _DTENSOR.append(DTensor)
    cls = _DTENSOR[0]
    return cls is not None and isinstance(t, cls)


def local(t: torch.Tensor) -> torch.Tensor:
    """The part of ``t`` this rank holds (``t`` itself unless it is a DTensor)."""
    return t.to_local() if is_dtensor(t) else t  # type: ignore[attr-defined]


def is_fsdp1(module: nn.Module) -> bool:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover - builds without distributed
        return False
    return isinstance(module, FullyShardedDataParallel) or any(
        isinstance(m, FullyShardedDataParallel) for m in module.modules())


@dataclass(frozen=True)
class Reduction:
    """The process groups over whose ranks a tensor is sharded (empty: it is whole here)."""

    groups: tuple[Any, ...] = ()
    note: str = ""

    @property
    def sharded(self) -> bool:
        return bool(self.groups)

    def key(self) -> tuple[int, ...]:
        return tuple(id(g) for g in self.groups)


WHOLE = Reduction()


def reduction_of(t: torch.Tensor) -> Reduction:
    """How ``t`` is spread over ranks: a DTensor is sharded over the mesh dimensions whose
    placement is ``Shard`` (FSDP2, and the shard dimension of an HSDP mesh); a replicated
    dimension needs nothing, since every replica holds the same values."""
    if not is_dtensor(t):
        return WHOLE
    from torch.distributed.tensor import Replicate, Shard

    mesh = t.device_mesh  # type: ignore[attr-defined]
    groups = []
    for dim, placement in enumerate(t.placements):  # type: ignore[attr-defined]
        if isinstance(placement, Shard):
            groups.append(mesh.get_group(dim))
        elif not isinstance(placement, Replicate):  # Partial: a pending sum, rare outside TP
            groups.append(mesh.get_group(dim))
    return Reduction(tuple(groups), "sum of squared shard norms over the mesh's shard dimensions")


def all_reduce_sum(values: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """``values`` summed over the ranks of each of ``reduction``'s groups (in place)."""
    import torch.distributed as dist

    for group in reduction.groups:
        dist.all_reduce(values, op=dist.ReduceOp.SUM, group=group)
    return values


@dataclass
class World:
    """This process's place in a distributed run (rank 0 of 1 when there is none)."""

    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    collectives: bool = False      # may the scope issue collectives at its flushes
    notes: list[str] = field(default_factory=list)

    @staticmethod
    def current() -> World:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return World()
        size = dist.get_world_size()
        return World(rank=dist.get_rank(), world_size=size, backend=str(dist.get_backend()),
                     collectives=size > 1)


def reduce_rows_max(values: torch.Tensor) -> torch.Tensor:
    """Element-wise maximum over every rank of the default group (in place)."""
    import torch.distributed as dist

    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def reduce_rows_min(values: torch.Tensor) -> torch.Tensor:
    """Element-wise minimum over every rank of the default group (in place)."""
    import torch.distributed as dist

    dist.all_reduce(values, op=dist.ReduceOp.MIN)
    return values


def gather_objects(value: Any) -> list[Any]:
    """``value`` from every rank (a host collective, for the end of a run only)."""
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def group_by_reduction(tensors: Sequence[torch.Tensor]) -> dict[tuple[torch.device, torch.dtype, tuple[int, ...]],
                                                                   tuple[list[int], Reduction]]:
    """Positions of ``tensors`` grouped by (device, dtype, sharding), the unit of one fused norm
    kernel and one collective."""
    groups: dict[tuple[torch.device, torch.dtype, tuple[int, ...]], tuple[list[int], Reduction]] = {}
    for i, t in enumerate(tensors):
        red = reduction_of(t)
        lt = local(t)
        key = (lt.device, lt.dtype, red.key())
        groups.setdefault(key, ([], red))[0].append(i)
    return groups


def _fsdp1_units(model: nn.Module) -> list[Any]:
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # pragma: no cover - builds without distributed
        return []
    return [m for m in model.modules() if isinstance(m, FullyShardedDataParallel)]


def _sharded_unit(unit: Any) -> bool:
    """Whether an FSDP1 unit shards its parameters (NO_SHARD keeps them whole on every rank)."""
    handle = getattr(unit, "_handle", None)
    return bool(handle is not None and getattr(handle, "uses_sharded_strategy", True))


def fsdp1_flat_parameters(model: nn.Module, params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """FSDP1's flat parameters when the watched parameters are the original ones
    (``use_orig_params=True``): their post-accumulate hooks are the only ones that run."""
    flats = []
    ids = {id(p) for p in params}
    for unit in _fsdp1_units(model):
        flat = getattr(getattr(unit, "_handle", None), "flat_param", None)
        if isinstance(flat, torch.Tensor) and id(flat) not in ids and flat.requires_grad:
            flats.append(flat)
    return flats


def reductions(model: nn.Module, params: Sequence[torch.Tensor]) -> list[Reduction]:
    """How each of ``params`` is spread over ranks (see ``Reduction``)."""
    out = [reduction_of(p) for p in params]
    units = _fsdp1_units(model)
    if not units:
        return out
    # FSDP1: a unit's flat parameter, and with use_orig_params=True its original parameters
    # (views into the flat shard, or empty on ranks that hold none of them), are sharded over the
    # unit's process group
    owner: dict[int, Reduction] = {}
    for unit in units:
        if not _sharded_unit(unit):
            continue
        red = Reduction((unit.process_group,), "sum of squared shard norms over the FSDP process group")
        flat = getattr(getattr(unit, "_handle", None), "flat_param", None)
        if isinstance(flat, torch.Tensor):
            owner[id(flat)] = red
            for p in getattr(flat, "_params", None) or []:
                owner[id(p)] = red
    return [owner.get(id(p), r) for p, r in zip(params, out)]
