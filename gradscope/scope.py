"""``watch()``: the context manager that attaches the probes and owns the step clock.

The clock has two ticks:

- *end of backward*: a gradient hook on the model's output (put on by a forward hook of the root),
  and, for the first backward, a ``register_post_accumulate_grad_hook`` on every trainable
  parameter (afterwards on a few sentinels only); the first one to fire in a backward pass queues
  a callback on the autograd engine
  (``Variable._execution_engine.queue_callback``, the mechanism DDP and FSDP use), which runs once
  the whole backward has finished and every ``.grad`` is final. Probes read gradients there, so
  they see the gradient backward produced, before any clipping.
- *end of step*: ``Optimizer.register_step_post_hook`` when an optimizer is given; otherwise every
  backward ends a step, or ``scope.step()`` does with ``step_on="manual"``.

Every hook handle is held by the probe or scope that registered it and removed on exit, also when
the body raises. Nothing here returns a tensor from a hook, so gradients are never replaced.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import time
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn
from torch.autograd import Variable
from torch.utils.hooks import RemovableHandle

from gradscope import __version__
from gradscope.distributed import (
    World,
    clean_name,
    compiled_in_place,
    fsdp1_flat_parameters,
    is_fsdp1,
    reductions,
    unwrap,
)
from gradscope.errors import GradscopeError
from gradscope.findings import Finding, sort_findings
from gradscope.probes import DEFAULT_PROBES, OPTIONAL_NAMES, OPTIONAL_PROBES, PROBE_NAMES, judge_run
from gradscope.probes.base import ActivationSpec, Probe, RunState, StepOn, WatchOptions, grad_outputs
from gradscope.probes.freeze import FreezeProbe
from gradscope.probes.tensor_grad import TensorProbe
from gradscope.records import DistributedInfo, ModelInfo, ProbeRecord, Registration, RunRecord, write_record
from gradscope.textreport import format_freeze_table
from gradscope.thresholds import Thresholds

ProbeSpec = str | Probe


def _check_model(model: object) -> nn.Module:
    if isinstance(model, type) and issubclass(model, nn.Module):
        raise GradscopeError(
            f"watch() got the class `{model.__name__}`, expected an instance: `{model.__name__}()`")
    if not isinstance(model, nn.Module):
        raise GradscopeError(
            f"watch() expected an nn.Module as its first argument, got {type(model).__name__}")
    return model


def _check_optimizers(optimizer: object) -> list[torch.optim.Optimizer]:
    if optimizer is None:
        return []
    items: list[Any] = list(optimizer) if isinstance(optimizer, (list, tuple)) else [optimizer]
    for item in items:
        if isinstance(item, type):
            raise GradscopeError(
                f"watch() got the optimizer class `{item.__name__}`, expected an instance such as "
                f"`{item.__name__}(model.parameters(), lr=1e-3)`")
        if not isinstance(item, torch.optim.Optimizer):
            raise GradscopeError(
                f"watch() expected a torch.optim.Optimizer (or a list of them) as `optimizer`, "
                f"got {type(item).__name__}")
    return items


def _trainable(model: nn.Module) -> tuple[list[str], list[nn.Parameter]]:
    names: list[str] = []
    params: list[nn.Parameter] = []
    for name, p in model.named_parameters():  # tied parameters come once, under their first name
        if p.requires_grad:
            names.append(clean_name(name))
            params.append(p)
    return names, params


def _root_class(model: nn.Module) -> str:
    """The class the user wrote (FSDP1 wraps it in FullyShardedDataParallel)."""
    inner = getattr(model, "_fsdp_wrapped_module", None) if is_fsdp1(model) else None
    return type(inner if isinstance(inner, nn.Module) else model).__name__


def _layers(names: list[str], root: str) -> tuple[list[str], list[int]]:
    layer_names: list[str] = []
    index: dict[str, int] = {}
    owner: list[int] = []
    for name in names:
        layer = name.rpartition(".")[0] or root
        if layer not in index:
            index[layer] = len(layer_names)
            layer_names.append(layer)
        owner.append(index[layer])
    return layer_names, owner


def _graph_task_id() -> int:
    """The running backward pass's id (PyTorch 2.1+); -2 where PyTorch cannot say."""
    current = getattr(torch._C, "_current_graph_task_id", None)
    return current() if current is not None else -2


def build_probes(options: WatchOptions, has_optimizer: bool,
                 wanted: Sequence[ProbeSpec] | None) -> list[Probe]:
    """The probes of a scope: the defaults, or those named in ``wanted`` (built-in names,
    ``"default"`` for all the defaults, and probe instances, used as they are)."""
    if wanted is None:
        wanted = ["default"]
    if isinstance(wanted, (str, Probe)):
        wanted = [wanted]
    names: list[str] = []
    extra: list[Probe] = []
    for item in wanted:
        if isinstance(item, Probe):
            if not item.name:
                raise GradscopeError(f"probes=[{type(item).__name__}()]: a probe class needs a `name`")
            extra.append(item)
        elif isinstance(item, type) and issubclass(item, Probe):
            raise GradscopeError(f"probes= got the class `{item.__name__}`, expected an instance: "
                                 f"`{item.__name__}()`")
        elif item == "default":
            names += [n for n in PROBE_NAMES if n not in names]
        elif isinstance(item, str) and item in (*PROBE_NAMES, *OPTIONAL_NAMES):
            names.append(item)
        else:
            raise GradscopeError(f"probes={[item]} is not a probe: choose from {list(PROBE_NAMES)}, the "
                                 f"optional {list(OPTIONAL_NAMES)} or 'default', or pass a Probe instance")
    explicit = [i for i in wanted if isinstance(i, str) and i != "default"]
    out: list[Probe] = []
    for kind in (*DEFAULT_PROBES, *OPTIONAL_PROBES):
        if kind.name not in names:
            continue
        probe = kind.build(options, has_optimizer)
        if probe is None and kind.name in explicit:
            why = ("needs activations=... (\"all\", or module names or classes)" if kind.name == "activation_grad"
                   else "needs an optimizer" if kind.name == "update_ratio" else "is turned off by its option")
            raise GradscopeError(f"probes=[{kind.name!r}] {why}")
        if probe is not None:
            out.append(probe)
    taken = {p.name for p in out}
    for probe in extra:
        if probe.name in taken:
            raise GradscopeError(f"probes= has two probes named {probe.name!r}; each name can be used once")
        taken.add(probe.name)
        out.append(probe)
    return out


class Scope:
    """A watched training run. Use through ``gradscope.watch``."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
        *,
        activations: ActivationSpec = None,
        step_on: StepOn = "auto",
        flush_every: int = 100,
        max_kept_steps: int = 2048,
        strict: bool = False,
        dead_units_every: int = 10,
        update_ratio_every: int = 50,
        thresholds: Thresholds | Mapping[str, Any] | None = None,
        probes: Sequence[ProbeSpec] | None = None,
        grad_norm_every: int | None = None,
        reference: Any = None,
    ) -> None:
        self.model = _check_model(model)
        self.optimizers = _check_optimizers(optimizer)
        if step_on not in ("auto", "optimizer", "backward", "manual"):
            raise GradscopeError(
                f"step_on must be 'auto', 'optimizer', 'backward' or 'manual', got {step_on!r}")
        if step_on == "optimizer" and not self.optimizers:
            raise GradscopeError("step_on='optimizer' needs an optimizer: watch(model, optimizer)")
        chosen = step_on
        if step_on == "auto":
            step_on = "optimizer" if self.optimizers else "backward"
        self.step_on: StepOn = step_on
        for label, value, least in (("flush_every", flush_every, 1), ("max_kept_steps", max_kept_steps, 2),
                                    ("dead_units_every", dead_units_every, 0),
                                    ("update_ratio_every", update_ratio_every, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise GradscopeError(f"{label} must be an integer >= {least}, got {value!r}")
        if grad_norm_every is not None and (isinstance(grad_norm_every, bool)
                                            or not isinstance(grad_norm_every, int) or grad_norm_every < 1):
            raise GradscopeError(
                f"grad_norm_every must be an integer >= 1 or None (automatic), got {grad_norm_every!r}")
        self.options = WatchOptions(
            activations=activations, step_on=step_on, flush_every=flush_every,
            max_kept_steps=max_kept_steps, strict=strict, dead_units_every=dead_units_every,
            update_ratio_every=update_ratio_every, thresholds=Thresholds.of(thresholds),
            grad_norm_every=grad_norm_every)
        self.unwrapped = unwrap(self.model)
        inner = self.unwrapped.inner
        names, params = _trainable(inner)
        root = _root_class(inner)
        layer_names, owner = _layers(names, root)
        self.run = RunState(
            model=inner, optimizers=self.optimizers, options=self.options, root_name=root,
            module_names={id(m): clean_name(n) for n, m in inner.named_modules(remove_duplicate=False)},
            param_names=names, params=params, param_layer=owner, layer_names=layer_names,
            root=self.model, reductions=reductions(inner, params),
            compiled=self.unwrapped.compiled or compiled_in_place(inner))
        if self.unwrapped.strategy == "fsdp1" and any(n.endswith("_flat_param") for n in names):
            self.run.notes.append(
                "FSDP1 with use_orig_params=False: gradient norms are per FSDP unit (its flat parameter), "
                "named by the unit's module; wrap with use_orig_params=True for per-parameter norms.")
        self.probes: list[Probe] = build_probes(self.options, bool(self.optimizers), probes)
        if reference is not None:
            from gradscope.probes.reference import ReferenceProbe

            if any(isinstance(p, ReferenceProbe) for p in self.probes):
                raise GradscopeError("watch() got reference= and a ReferenceProbe in probes=; give the "
                                     "reference runs once")
            self.probes.append(ReferenceProbe(reference))   # last: its flush reads what the others flushed
        self.run.probes = {p.name: p for p in self.probes}
        self._handles: list[RemovableHandle] = []
        self._param_hooks: dict[int, RemovableHandle] = {}  # parameter index -> its post-accumulate hook
        self._queued_task: int | None = None  # graph task whose end callback is queued
        self._recording_order = True
        self._attached = False
        self._closed = False
        self._findings: list[Finding] | None = None
        self._extra: list[Finding] = []       # add_findings()
        self._stepper: int | None = None      # the optimizer that ended the last step
        self._begun = False                   # begin_step() ran for the step in progress (manual clock)
        self._manual_clock = chosen in ("manual", "backward")  # the user chose it: keep it
        self.registration: Registration | None = None

    # ---- attach / detach -----------------------------------------------------------------------
    def __enter__(self) -> Scope:
        if self._attached or self._closed:
            raise GradscopeError("a watch() scope can be entered once; create a new one per run")
        self._attached = True
        # Buffers made here must be ordinary tensors even if the first call of the model (zero-code
        # mode) happens under torch.inference_mode() or no_grad.
        with torch.inference_mode(False), torch.no_grad():
            self._attach()
        return self

    def _attach(self) -> None:
        self.run.world = World.current()
        try:
            for i, p in enumerate(self.run.params):
                self._param_hooks[i] = p.register_post_accumulate_grad_hook(functools.partial(self._on_grad, i))
            # the tick of every backward through the model's output, whatever the tensor count
            self._handles.append(self.run.wrapper.register_forward_hook(self._on_output))
            for flat in fsdp1_flat_parameters(self.run.model, self.run.params):
                # FSDP1 with use_orig_params=True runs no hook on the original parameters: the
                # flat parameters' own hooks are the tick, the original ones hold the gradients
                self._handles.append(flat.register_post_accumulate_grad_hook(
                    functools.partial(self._on_grad, None)))
            if self.step_on == "optimizer":
                for opt in self.optimizers:
                    self._clock(opt)
            for probe in self.probes:
                probe.attach(self.run)
            self.run.own_hook_ids.update(
                h.id for h in [*self._handles, *self._param_hooks.values(),
                               *(h for p in self.probes for h in p.handles)])
        except BaseException:
            self._detach()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close(keep_partial_step=True)
        except Exception as failure:  # the user's own exception matters more: let it through
            warnings.warn(f"gradscope could not finish its record after the error in the watched "
                          f"block ({type(failure).__name__}: {failure}); every hook was removed",
                          RuntimeWarning, stacklevel=2)

    def close(self, keep_partial_step: bool = False) -> None:
        """Flush what is left and remove every hook. Safe to call twice.

        Backward passes after the last optimizer step (a GAN's generator loss reaching the
        discriminator, an evaluation-time gradient) are not a step of their own; they are kept as
        a last, cut-short step only when ``keep_partial_step`` (the block raised mid-step: those
        gradients are the evidence).
        """
        if self._closed:
            return
        self._closed = True
        try:
            if self.run.backwards_in_step and (keep_partial_step or self.step_on == "manual"):
                self._end_step()
            # after an error, another rank may never reach this point: no collectives then
            self._flush(collective=not keep_partial_step)
        finally:
            self._detach()

    def _detach(self) -> None:
        while self._handles:
            self._handles.pop().remove()
        while self._param_hooks:
            self._param_hooks.popitem()[1].remove()
        for probe in self.probes:
            probe.detach()

    # ---- the clock -----------------------------------------------------------------------------
    def _on_grad(self, index: int | None, _param: torch.Tensor) -> None:
        if self._recording_order and index is not None:
            self.run.backward_order.append(index)
        self._tick()

    def _on_output(self, _module: nn.Module, _args: Any, output: Any) -> None:
        if not torch.is_grad_enabled() or torch.compiler.is_compiling():
            return
        for t in grad_outputs(output):
            t.register_hook(self._on_output_grad)

    def _on_output_grad(self, _grad: torch.Tensor) -> None:
        self._tick()

    def _keep_sentinel_hooks(self) -> None:
        """After the first backward, which recorded the order gradients arrive in, a Python call
        per parameter per backward is no longer needed: the output's gradient hook ticks every
        backward through the model. Hooks stay on the first and last parameters of that order and
        on those it did not reach, for backward passes that do not start at the model's output
        (``model.forward(x)``, which runs no module hook; a loss on a submodule's output)."""
        order = self.run.backward_order
        if not order:
            return
        keep = {order[0], order[-1]} | (set(self._param_hooks) - set(order))
        for index in [i for i in self._param_hooks if i not in keep]:
            self._param_hooks.pop(index).remove()

    def _tick(self) -> None:
        # One callback per backward pass (graph task). Keyed by the task, not a plain flag, so that
        # a backward that raised before its end (an out-of-memory retried by the user) cannot
        # leave the scope waiting for a callback that never comes.
        task = _graph_task_id()
        if task != self._queued_task:
            self._queued_task = task
            Variable._execution_engine.queue_callback(self._defer)

    def _defer(self) -> None:
        # The engine runs end-of-backward callbacks first in, first out, and one queued from a
        # callback after all those already queued. DDP queues its finaliser (which waits for the
        # all-reduce and writes the averaged .grad) after this scope's first hook fired, FSDP
        # queues its own final callback too: queueing once more from here reads the gradients
        # after all of them, averaged or reduce-scattered, still before any clipping, with no
        # extra sync or collective.
        Variable._execution_engine.queue_callback(self._on_backward_end)

    def _on_backward_end(self) -> None:
        started = time.perf_counter_ns()
        self._queued_task = None
        if self._recording_order:
            self._recording_order = False
            self._keep_sentinel_hooks()
        run = self.run
        run.backwards += 1
        run.backwards_in_step += 1
        with torch.no_grad():  # backward(create_graph=True) leaves grads that require grad
            for probe in self.probes:
                probe.on_backward_end()
        run.overhead_ns += time.perf_counter_ns() - started
        if self.step_on == "backward":
            self._end_step()

    def _clock(self, optimizer: torch.optim.Optimizer) -> None:
        self._handles.append(optimizer.register_step_pre_hook(self._on_step_pre))
        self._handles.append(optimizer.register_step_post_hook(self._on_step_post))

    def _counts(self, optimizer: torch.optim.Optimizer) -> bool:
        """Whether this optimizer's step is a training step of its own. With several optimizers
        (one per parameter group of a model, or one rebuilt mid-run), the first to step after a
        backward ends the step; another stepping right after it, with no backward in between,
        belongs to the same step."""
        return self.run.backwards_in_step > 0 or self._stepper in (None, id(optimizer))

    def _on_step_pre(self, optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        span = self.run.optimizer_steps.get(id(optimizer))
        self.run.optimizer_steps[id(optimizer)] = (span[0] if span else self.run.step, self.run.step)
        if not self._counts(optimizer):
            return
        started = time.perf_counter_ns()
        for probe in self.probes:
            probe.on_step_begin()
        self.run.overhead_ns += time.perf_counter_ns() - started

    def _on_step_post(self, optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        if not self._counts(optimizer):
            return
        self._stepper = id(optimizer)
        self._end_step()

    def add_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Watch an optimizer created after the scope began (a rebuilt one, or one for a new task):
        its steps join the step clock, and the optimizer checks include it from the next flush."""
        if any(opt is optimizer for opt in self.optimizers) or self._closed:
            return
        _check_optimizers(optimizer)
        self.optimizers.append(optimizer)  # the run state shares this list
        if self.step_on == "backward" and not self._manual_clock:
            self.step_on = "optimizer"  # a model stepped by hand until now: from here on, its optimizer
        if self.step_on == "optimizer":
            self._clock(optimizer)
        for probe in self.probes:
            probe.on_optimizer_added(optimizer)
        self.run.own_hook_ids.update(
            h.id for h in [*self._handles, *(h for p in self.probes for h in p.handles)])

    def add_findings(self, findings: Sequence[Finding]) -> None:
        """Findings from outside the probes (the registration checks of a script's model)."""
        self._extra.extend(findings)
        self._findings = None

    def begin_step(self) -> None:
        """Say that the optimizer is about to update (only with ``step_on="manual"``): call it right
        before ``optimizer.step()``, after any clipping, and ``scope.step()`` after it. Without it,
        ``step()`` does both at once, after the update, and the update ratios (GS208) have no
        "before" to compare with."""
        self._manual("begin_step")
        if not self._begun:
            self._begun = True
            for probe in self.probes:
                probe.on_step_begin()

    def step(self) -> None:
        """End the current step by hand (only with ``step_on="manual"``)."""
        self._manual("step")
        if not self._begun:
            for probe in self.probes:
                probe.on_step_begin()
        self._begun = False
        self._end_step()

    def _manual(self, what: str) -> None:
        if self.step_on != "manual":
            raise GradscopeError(
                f"scope.{what}() is for step_on='manual'; this scope's clock follows the "
                f"{self.step_on} already. Drop the {what}() call or pass step_on='manual' to watch().")

    def _end_step(self) -> None:
        started = time.perf_counter_ns()
        run = self.run
        timing = run.probes.get("timing")
        for probe in self.probes:
            if probe is not timing:
                probe.on_step_end()
        run.overhead_ns += time.perf_counter_ns() - started
        if timing is not None:
            timing.on_step_end()  # last, so the step's own overhead is counted in it
        run.step += 1
        run.backwards_in_step = 0
        if run.step - run.flushed_until >= run.flush_every:
            self._flush()

    def _flush(self, collective: bool = True) -> None:
        """Move the device rows to the host. ``collective``: every rank is at the same point (the
        step clock, a normal close), so sharded statistics may be reduced over ranks."""
        run = self.run
        steps = list(range(run.flushed_until, run.step))
        run.collective = collective and run.world.collectives
        try:
            for probe in self.probes:
                probe.flush(steps)
        finally:
            run.collective = False
        run.flushed_until = run.step

    def _refresh(self) -> None:
        """Bring the host data up to date for a read in mid-run. In a distributed run that would
        take collectives that the other ranks are not issuing: serve the last flush instead."""
        if not self._closed and not self.run.world.collectives:
            self._flush(collective=False)

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase of the user's loop that hooks cannot see: ``with scope.phase("data"): ...``.

        Known names are "data" (waiting for the next batch) and "h2d" (copying it to the device).
        """
        self.run.emit(f"{name}_begin")
        try:
            yield
        finally:
            self.run.emit(f"{name}_end")

    # ---- activation gradients on request ---------------------------------------------------------
    def _tensors(self, what: str) -> TensorProbe:
        probe = self.run.probes.get(TensorProbe.name)
        if not isinstance(probe, TensorProbe):
            raise GradscopeError(f"scope.{what}() needs the tensor_grad probe, which this scope leaves "
                                 "out: add \"tensor_grad\" to watch(probes=[...])")
        return probe

    def probe(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """Record the gradient of ``tensor`` (norm, max |g|) through ``Tensor.register_hook``.

        Call it every step on the fresh tensor; returns the tensor so it can wrap an expression.
        """
        self._tensors("probe").probe(tensor, name)
        return tensor

    def retain(self, tensor: torch.Tensor, name: str) -> torch.Tensor:
        """Keep ``tensor.grad`` with ``retain_grad()`` and record its statistics after backward."""
        self._tensors("retain").retain(tensor, name)
        return tensor

    # ---- results -------------------------------------------------------------------------------
    def get_probe(self, name: str) -> Probe | None:
        """This scope's probe called ``name``, if it has one."""
        return self.run.probes.get(name)

    def freeze_table(self) -> str:
        """Per module: trainable and frozen counts, optimizer coverage, lr, and what changed."""
        self._refresh()
        probe = self.run.probes.get(FreezeProbe.name)
        rows = probe.table() if isinstance(probe, FreezeProbe) else []
        return format_freeze_table(rows)

    @property
    def steps(self) -> int:
        """Completed steps."""
        return self.run.step

    @property
    def findings(self) -> list[Finding]:
        """Every probe's findings, most severe first (computed once the scope is closed)."""
        if self._closed and self._findings is not None:
            return self._findings
        found = sort_findings([*judge_run(self._record_without_findings(), self.options.thresholds),
                               *self._extra])
        if self._closed:
            self._findings = found
        return found

    @property
    def records(self) -> dict[str, ProbeRecord]:
        """What each probe captured, by probe name (probes with nothing to say are left out)."""
        self._refresh()
        out: dict[str, ProbeRecord] = {}
        for p in self.probes:
            rec = p.record()
            if rec is not None:
                out[p.name] = rec
        return out

    def _record_without_findings(self) -> RunRecord:
        run = self.run
        n_all = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in run.params)
        return RunRecord(
            gradscope_version=__version__, torch_version=torch.__version__,
            model=ModelInfo(class_name=run.root_name, parameters=n_all, trainable=n_train,
                            device=str(run.params[0].device) if run.params else "cpu"),
            steps=run.step, backwards=run.backwards, step_on=self.step_on,
            optimizers=[type(o).__name__ for o in self.optimizers], grad_scaler=bool(run.scalers),
            distributed=self._distributed(), notes=list(run.notes), registration=self.registration,
            thresholds=dataclasses.asdict(self.options.thresholds), probes=self.records)

    def _distributed(self) -> DistributedInfo | None:
        world, run = self.run.world, self.run
        strategy = self.unwrapped.strategy
        if world.world_size == 1 and strategy == "none" and not self.unwrapped.compiled:
            return None
        sharded = sum(r.sharded for r in run.reductions)
        if sharded:
            how = (f"{sharded} sharded parameter tensor(s): squared norms of the local shards summed over "
                   "the shard ranks with one all-reduce per flush, then the root")
        elif world.world_size > 1:
            how = ("none needed: gradients are read after DDP's all-reduce, so every rank records the "
                   "averaged gradient")
        else:
            how = "none (one process)"
        return DistributedInfo(world_size=world.world_size, rank=world.rank, backend=world.backend,
                               strategy=strategy, compiled=self.unwrapped.compiled, reduction=how,
                               sharded_parameters=sharded)

    def _repr_html_(self) -> str:
        """The notebook summary of the run so far (a cell ending in ``scope``)."""
        from gradscope.reports.notebook import summary_html

        return summary_html(self.to_record())

    def to_record(self) -> RunRecord:
        """The record of this run: findings, captured statistics, and what was watched."""
        record = self._record_without_findings()
        return dataclasses.replace(record, findings=self.findings)

    def report(self, path: str | Path) -> Path:
        """Write the JSON record to ``path`` atomically and return the path."""
        return write_record(self.to_record(), path)


def watch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | Sequence[torch.optim.Optimizer] | None = None,
    *,
    activations: ActivationSpec = None,
    step_on: StepOn = "auto",
    flush_every: int = 100,
    max_kept_steps: int = 2048,
    strict: bool = False,
    dead_units_every: int = 10,
    update_ratio_every: int = 50,
    thresholds: Thresholds | Mapping[str, Any] | None = None,
    probes: Sequence[ProbeSpec] | None = None,
    grad_norm_every: int | None = None,
    reference: Any = None,
) -> Scope:
    """Watch a training run: ``with gradscope.watch(model, optimizer) as scope: ...``.

    Args:
        model: the root module being trained.
        optimizer: its optimizer (or a list); its step hooks are the step clock.
        activations: record output-gradient norms of modules: "all", or a list of module names
            and/or module classes.
        step_on: "auto" (optimizer if given, else each backward), "optimizer", "backward", "manual".
        flush_every: steps between moves of the device buffers to the host (one sync each).
        max_kept_steps: per-step rows kept for plots; older rows are thinned evenly beyond it.
        strict: raise ``NonFiniteError`` at the first non-finite gradient, loss or output (this
            checks every step, which costs one host-device sync per step on a GPU).
        dead_units_every: look for ReLU units that never activate (GS207) on every this many
            steps' forwards (0 turns it off).
        update_ratio_every: sample ``||dw||/||w||`` every this many steps (0 turns it off).
        grad_norm_every: read the gradient norms every this many steps (and on every step before
            the first such interval). None (the default): every step for models of up to 2,000
            parameter tensors; beyond, often enough that the reads cost about as much as for
            2,000 (each tensor's norm is one kernel on the CPU). ``strict=True`` reads every step.
        thresholds: overrides of ``gradscope.Thresholds`` as a dict.
        reference: known-good runs' records (a path, a RunRecord, or a list of them): the run is
            judged against their envelope at flushes and when the scope closes (GS801-GS810, see
            docs/reference.md). A missing or broken file fails here, before training.
        probes: which probes to attach: built-in names (``gradscope.probes.PROBE_NAMES``),
            ``"default"`` for all of them, and your own ``Probe`` instances (see docs/probes.md).
            All built-in probes by default.
    """
    return Scope(model, optimizer, activations=activations, step_on=step_on, flush_every=flush_every,
                 max_kept_steps=max_kept_steps, strict=strict, dead_units_every=dead_units_every,
                 update_ratio_every=update_ratio_every, thresholds=thresholds, probes=probes,
                 grad_norm_every=grad_norm_every, reference=reference)
