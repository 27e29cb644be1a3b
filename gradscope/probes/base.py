"""The probe base class, the watch options and the run state every probe shares.

A probe is a declared part: its class names the probe (``name``), the finding codes it can emit
(``codes``), the type of record it returns (``record_type``), the pure function that judges that
record (``judge``) and the report section that shows it (``section``). Declaring a subclass with a
``name`` registers it, so the report finds a probe's section through the probe itself.

A probe only schedules and stores; the maths lives in ``gradscope.norms``, the rules in
``gradscope.judges``. The scope calls the ``on_*`` methods from PyTorch hooks, so none of them may
synchronise with the device: values stay in device buffers indexed by ``run.row`` and reach the
host in ``flush``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Sequence

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from gradscope.distributed import Reduction, World
from gradscope.findings import Finding
from gradscope.records.base import ProbeRecord
from gradscope.thresholds import Thresholds

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gradscope.records.run import RunRecord
    from gradscope.reports.page import Section, SectionContext

StepOn = Literal["auto", "optimizer", "backward", "manual"]
ActivationSpec = Literal["all"] | Sequence[str | type] | None


@dataclass(frozen=True)
class WatchOptions:
    """What ``watch()`` was asked for; probes read the parts they need when they are built."""

    activations: ActivationSpec = None
    step_on: StepOn = "auto"
    flush_every: int = 100
    max_kept_steps: int = 2048
    strict: bool = False
    dead_units_every: int = 10
    update_ratio_every: int = 50
    thresholds: Thresholds = field(default_factory=Thresholds)
    grad_norm_every: int | None = None   # None: every step up to AUTO_TENSORS tensors, then sampled


@dataclass
class RunState:
    """What the scope knows about the run. The scope advances the clock; probes read it, and a
    few shared facts are written by the probe that learns them (``scalers``, ``locating``)."""

    model: nn.Module                             # the user's module, unwrapped: names and submodule hooks
    optimizers: list[torch.optim.Optimizer]
    options: WatchOptions
    root_name: str
    module_names: dict[int, str]                 # id(module) -> dotted path ("" for the root)
    param_names: list[str]                       # trainable parameters at attach, tied ones once
    params: list[nn.Parameter]
    param_layer: list[int]                       # index into layer_names for each parameter
    layer_names: list[str]                       # owning module path of each parameter group
    step: int = 0                                # the step being built (completed steps so far)
    flushed_until: int = 0                       # steps below this have reached the host
    backward_order: list[int] = field(default_factory=list)  # parameters, first backward's order
    backwards: int = 0                           # backward passes in the whole run
    backwards_in_step: int = 0
    own_hook_ids: set[int] = field(default_factory=set)  # gradscope's hook handles, left out of counts
    listeners: list[Callable[[str], None]] = field(default_factory=list)  # phase events, e.g. timing
    overhead_ns: int = 0                         # host time spent in gradscope's own callbacks
    scalers: list[Any] = field(default_factory=list)  # torch.amp.GradScaler objects seen scaling a loss
    locating: bool = False                       # the non-finite probe's re-run is in progress
    probes: dict[str, Probe] = field(default_factory=dict)  # the scope's probes, by name
    root: nn.Module | None = None                # what the user passed (a DDP or compile wrapper): root hooks
    reductions: list[Reduction] = field(default_factory=list)  # per parameter: how it is sharded
    world: World = field(default_factory=World)
    collective: bool = False                     # the flush in progress may use collectives
    compiled: bool = False                       # the model runs under torch.compile
    notes: list[str] = field(default_factory=list)  # what the record should say about the capture
    optimizer_steps: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (first, last) step

    def live_optimizers(self) -> list[bool]:
        """Per optimizer: whether it still trains. One that stepped, and then saw another begin
        stepping after its last step, was replaced (an optimizer rebuilt mid-run): its param groups
        no longer say what trains. Optimizers that alternate (a GAN's two) stay live."""
        spans = [self.optimizer_steps.get(id(opt)) for opt in self.optimizers]
        firsts = [span[0] for span in spans if span is not None]
        return [span is None or not any(first > span[1] for first in firsts) for span in spans]

    @property
    def wrapper(self) -> nn.Module:
        """The module to put root-level forward hooks on: the outermost one, so that they run
        eagerly even when the model inside is compiled, and see the whole call."""
        return self.root if self.root is not None else self.model

    @property
    def sharded(self) -> bool:
        """Some parameter is sharded over ranks (FSDP): its statistics need collectives."""
        return any(r.sharded for r in self.reductions)

    @property
    def flush_every(self) -> int:
        return self.options.flush_every

    @property
    def max_kept_steps(self) -> int:
        return self.options.max_kept_steps

    @property
    def thresholds(self) -> Thresholds:
        return self.options.thresholds

    @property
    def strict(self) -> bool:
        return self.options.strict

    def emit(self, event: str) -> None:
        """Tell listeners a phase begins or ends ("clip_begin", "data_end", ...)."""
        for listener in self.listeners:
            listener(event)

    @property
    def row(self) -> int:
        """The device-buffer row of the step being built."""
        return self.step - self.flushed_until

    def where(self, module: nn.Module) -> str:
        """A module's dotted path, or the root's class name for the root itself."""
        name = self.module_names.get(id(module))
        if name is None:
            return type(module).__name__
        return name or self.root_name


class Probe:
    """One kind of evidence. Subclasses declare themselves and override the ``on_*`` methods
    they need; ``record()`` returns what they saw as a ``record_type`` instance."""

    name: ClassVar[str] = ""
    codes: ClassVar[tuple[str, ...]] = ()
    record_type: ClassVar[type[ProbeRecord] | None] = None
    report_order: ClassVar[int] = 500   # where the section stands in the report (smaller: higher)
    _declared: ClassVar[dict[str, type[Probe]]] = {}

    @staticmethod
    def judge(record: Any, run: RunRecord, thresholds: Thresholds, /) -> list[Finding]:
        """The findings ``record`` supports: a pure function (``judge = staticmethod(fn)``)."""
        return []

    @staticmethod
    def section(record: Any, ctx: SectionContext, /) -> Section | None:
        """The report section that shows ``record`` (``section = staticmethod(fn)``), or None."""
        return None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.name:
            Probe._declared[cls.name] = cls

    def __init__(self) -> None:
        self.handles: list[RemovableHandle] = []
        self.run: RunState | None = None

    @classmethod
    def build(cls, options: WatchOptions, has_optimizer: bool) -> Probe | None:
        """The probe as ``watch()`` makes it by default, or None where it has nothing to watch."""
        return cls()

    def attach(self, run: RunState) -> None:
        self.run = run

    def detach(self) -> None:
        """Remove every hook this probe registered; safe to call twice."""
        while self.handles:
            self.handles.pop().remove()

    def on_backward_end(self) -> None:
        """After each backward pass, once every ``.grad`` is final for it."""

    def on_step_begin(self) -> None:
        """Right before ``optimizer.step()`` (after any clipping)."""

    def on_step_end(self) -> None:
        """When a step is complete, before ``run.step`` advances."""

    def on_optimizer_added(self, optimizer: torch.optim.Optimizer) -> None:
        """An optimizer joined the run after attach (``scope.add_optimizer``)."""

    def flush(self, steps: list[int]) -> None:
        """Move the device rows of ``steps`` (rows 0..len-1) to the host and reset them."""

    def record(self) -> ProbeRecord | None:
        """What this probe saw, or None when it has nothing to say."""
        return None

    def _state(self) -> RunState:
        if self.run is None:
            raise RuntimeError(f"probe {self.name!r} used before attach()")
        return self.run


def declared_probes() -> dict[str, type[Probe]]:
    """Every probe class declared so far, by name (the built-ins, and any a user defined)."""
    import gradscope.probes  # noqa: F401  the built-ins declare themselves on import

    return dict(Probe._declared)


def grad_outputs(value: Any, limit: int = 4) -> list[torch.Tensor]:
    """The first few tensors of a forward's output that require grad: a tensor, or one inside
    tuples, lists, dicts or a ``ModelOutput``-like mapping (anything with ``values()``)."""
    found: list[torch.Tensor] = []
    todo = [value]
    while todo and len(found) < limit:
        item = todo.pop(0)
        if isinstance(item, torch.Tensor):
            if item.requires_grad:
                found.append(item)
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
        elif isinstance(item, dict) or (hasattr(item, "values") and callable(item.values)):
            try:
                todo.extend(item.values())
            except TypeError:
                pass
    return found
