"""The freeze probe's record: what is frozen, what the optimizer holds, and what changed."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gradscope.records.base import ProbeRecord, Record


@dataclass(frozen=True)
class FreezeRow(Record):
    """One module that owns parameters: value counts, optimizer coverage, lr, tensors changed."""

    module: str = ""
    tensors: int = 0
    trainable: int = 0
    frozen: int = 0
    in_optimizer: int = 0
    not_in_optimizer: int = 0
    lr: list[float] = field(default_factory=list)
    weight_decay: list[float] = field(default_factory=list)
    changed: int = 0


@dataclass(frozen=True)
class TensorState(Record):
    """One parameter tensor over the run (``trainable``: at attach; ``requires_grad``: at the end)."""

    name: str = ""
    numel: int = 0
    trainable: bool = True
    requires_grad: bool = True
    in_optimizer: bool = False
    lr: float | None = None
    weight_decay: float | None = None
    first_changed_step: int | None = None
    first_frozen_change_step: int | None = None   # changed while frozen
    norm_kind: str | None = None                  # "BatchNorm", "norm" or None: the owning layer
    grad_while_frozen: bool = False               # it held a .grad while frozen: an optimizer can move it
    in_model: bool = True                         # still a parameter of the model at the end (GS307)


@dataclass(frozen=True)
class FreezeRecord(ProbeRecord, probe="freeze"):
    parameters: int = 0
    trainable: int = 0
    frozen: int = 0
    frozen_subtrees: list[str] = field(default_factory=list)
    batchnorm_train_in_frozen: list[str] = field(default_factory=list)
    table: list[FreezeRow] = field(default_factory=list)
    tensors: list[TensorState] | None = None

    evidence = {code: ("tensors",) for code in ("GS301", "GS302", "GS303", "GS305", "GS306", "GS307")}

    @staticmethod
    def rows_of(tensors: list[TensorState], root: str) -> list[FreezeRow]:
        """One row per module owning parameters, in the order the parameters come."""
        rows: dict[str, dict[str, Any]] = {}
        for t in tensors:
            if not t.in_model:
                continue  # a replaced layer's old parameters: GS307 names them
            module = t.name.rpartition(".")[0] or root
            row = rows.setdefault(module, {"tensors": 0, "trainable": 0, "frozen": 0, "in_optimizer": 0,
                                           "not_in_optimizer": 0, "lr": set(), "weight_decay": set(),
                                           "changed": 0})
            row["tensors"] += 1
            row["trainable" if t.trainable else "frozen"] += t.numel
            row["in_optimizer" if t.in_optimizer else "not_in_optimizer"] += t.numel
            if t.lr is not None:
                row["lr"].add(t.lr)
            if t.weight_decay is not None:
                row["weight_decay"].add(t.weight_decay)
            row["changed"] += int(t.first_changed_step is not None)
        return [FreezeRow(module=m, tensors=r["tensors"], trainable=r["trainable"], frozen=r["frozen"],
                          in_optimizer=r["in_optimizer"], not_in_optimizer=r["not_in_optimizer"],
                          lr=sorted(r["lr"]), weight_decay=sorted(r["weight_decay"]), changed=r["changed"])
                for m, r in rows.items()]
