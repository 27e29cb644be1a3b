"""The train/test loop: the notes' recipe done right, instrumented by ``watch()``.

One training step is forward, loss, ``zero_grad``, backward, optional clip, ``step``. Running loss
and accuracy are summed on the device and read once per epoch, so the loop adds no host sync per
batch. Evaluation runs in eval mode under ``torch.no_grad()``: softmax gives class probabilities,
top-1 accuracy is reported in percent. One evaluation before training and one after each epoch.

Failures are part of the result, not a lost run: an exception inside a step, a non-finite loss
(checked at every flush of the scope, not every step) or Ctrl-C end the loop with a status and a
message naming the module and shapes involved; whatever was captured is kept.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.findings import Finding, finding
from gradscope.records import Curves, RunStatus, TimingRecord
from gradscope.scope import Scope, watch

PROBABILITY_LOSSES = (nn.CrossEntropyLoss,)
LOG_PROBABILITY_LOSSES = (nn.NLLLoss,)
LOGIT_BINARY_LOSSES = (nn.BCEWithLogitsLoss,)


def pick_device(requested: str | None = None) -> torch.device:
    """``cuda:0`` when available (as the notes do), else the CPU; or what was asked for."""
    if requested in (None, "", "auto"):
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise GradscopeError(f"--device {requested!r} is not a device: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GradscopeError(f"--device {requested} asked for CUDA, but no CUDA device is available; "
                             "use --device cpu")
    return device


@dataclass
class FitOptions:
    """How to train. Defaults follow the notes' "Full Loop" (Adam 1e-3, batch 64, one epoch)."""

    epochs: int = 1
    max_steps: int | None = None        # cap on optimizer steps in total
    lr: float = 1e-3
    clip_norm: float | None = None
    clip_value: float | None = None
    save_dir: Path | None = None        # model.pth / optimizer.pth when set
    progress: bool = False
    watch_options: dict[str, Any] = field(default_factory=dict)


@dataclass
class FitResult:
    """What a training run produced, also when it stopped early."""

    curves: Curves
    scope: Scope
    findings: list[Finding]             # the loop's own findings (GS501, GS502, GS506, GS209)
    status: RunStatus = "completed"
    error: str | None = None
    steps: int = 0
    checkpoints: list[str] = field(default_factory=list)


class _Stop(Exception):
    """Ends the loop early with a status (non-finite loss)."""

    def __init__(self, status: RunStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def _accuracy_targets(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor | int, int]:
    """(number correct as a device tensor, number of samples as a host int), or (0, 0) when not
    a classifier. The count stays a Python int: making a device tensor of it would be a
    host-to-device copy every batch."""
    if predictions.dim() == 2 and predictions.shape[1] > 1 and targets.dim() == 1 \
            and not targets.is_floating_point():
        probs = torch.softmax(predictions.detach(), dim=1)  # class probabilities, as the notes do
        return (probs.argmax(dim=1) == targets).sum(), int(targets.shape[0])
    return 0, 0


def check_loss_inputs(loss_fn: Any, predictions: torch.Tensor, targets: torch.Tensor,
                      where: str) -> list[Finding]:
    """GS501 and GS502 from one batch (called once, before the first loss: a one-time sync)."""
    out: list[Finding] = []
    p = predictions.detach().float()
    if isinstance(loss_fn, PROBABILITY_LOSSES + LOG_PROBABILITY_LOSSES) and p.dim() >= 2:
        width = p.shape[1]
        if isinstance(loss_fn, PROBABILITY_LOSSES) and width == 1:
            out.append(finding(
                "GS502", where,
                f"the model has 1 output feature but the loss is {type(loss_fn).__name__}, which "
                "needs one output per class: with one column the loss is always 0 and nothing is "
                "learned.", "Output one logit per class (2 for a binary task), or use "
                "BCEWithLogitsLoss with 1 output and float targets."))
        elif not targets.is_floating_point() and targets.numel() and int(targets.max()) >= width:
            out.append(finding(
                "GS502", where,
                f"targets go up to {int(targets.max())} but the model outputs {width} values per "
                f"sample: {type(loss_fn).__name__} needs at least {int(targets.max()) + 1} outputs.",
                "Set the last layer's out_features to the number of classes."))
        rows = p.sum(dim=1)
        in_unit = bool(((p >= 0) & (p <= 1)).all())
        if width > 1 and in_unit and bool(torch.allclose(rows, torch.ones_like(rows), atol=1e-3)):
            out.append(finding(
                "GS501", where,
                f"the model's outputs are already probabilities (each row sums to 1) and "
                f"{type(loss_fn).__name__} applies {'log-' if isinstance(loss_fn, PROBABILITY_LOSSES) else ''}"
                "softmax-style normalisation again: gradients shrink and training stalls.",
                "Remove the final Softmax from the model; apply softmax only when reporting "
                "probabilities." if isinstance(loss_fn, PROBABILITY_LOSSES) else
                "NLLLoss expects log-probabilities: end the model with LogSoftmax (or use "
                "CrossEntropyLoss on logits)."))
        elif isinstance(loss_fn, PROBABILITY_LOSSES) and width > 1 and bool((p <= 0).all()) and \
                bool(torch.allclose(p.exp().sum(dim=1), torch.ones_like(rows), atol=1e-3)):
            out.append(finding(
                "GS501", where,
                "the model's outputs are log-probabilities (LogSoftmax) and CrossEntropyLoss applies "
                "log-softmax again: harmless to the value, but it hides that the model and loss "
                "disagree about who normalises.",
                "Either end with LogSoftmax and use NLLLoss, or return logits to CrossEntropyLoss."))
    if isinstance(loss_fn, LOGIT_BINARY_LOSSES) and p.shape != targets.shape:
        out.append(finding(
            "GS502", where,
            f"BCEWithLogitsLoss got outputs of shape {list(p.shape)} and targets of shape "
            f"{list(targets.shape)}: it needs one logit per target (1 output for a binary task).",
            "Use 1 output feature and float targets of the same shape (or CrossEntropyLoss with 2)."))
    return out


def describe_crash(exc: BaseException, model: nn.Module) -> str:
    """Name the innermost module whose forward raised, with the shapes of its tensor inputs."""
    names = {id(m): n for n, m in model.named_modules()}
    culprit: tuple[str, nn.Module, list[str]] | None = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        self_obj = frame.f_locals.get("self")
        if frame.f_code.co_name == "forward" and isinstance(self_obj, nn.Module):
            shapes = [f"{k}: {list(v.shape)}" for k, v in frame.f_locals.items()
                      if isinstance(v, torch.Tensor) and k != "self"][:3]
            path = names.get(id(self_obj))
            culprit = ((path or type(model).__name__) if path is not None else type(self_obj).__name__,
                       self_obj, shapes)
        tb = tb.tb_next
    head = f"{type(exc).__name__}: {exc}".strip()
    if culprit is None:
        return head
    path, module, shapes = culprit
    desc = repr(module) if len(repr(module)) < 120 else type(module).__name__
    return (f"{head}\n  in module {path} ({desc})"
            + (f", inputs {', '.join(shapes)}" if shapes else ""))


class LossGuard:
    """Checks the first batch's outputs against the loss (GS501, GS502) before any loss is
    computed, so a width mismatch is reported instead of PyTorch's raw IndexError."""

    def __init__(self, loss_fn: Any, where: str) -> None:
        self.loss_fn = loss_fn
        self.where = where
        self.checked = False
        self.findings: list[Finding] = []

    def __call__(self, predictions: torch.Tensor, targets: torch.Tensor) -> None:
        if self.checked:
            return
        self.checked = True  # one sync, once per run
        self.findings = check_loss_inputs(self.loss_fn, predictions, targets, self.where)
        fatal = next((f for f in self.findings if f.code == "GS502"), None)
        if fatal is not None:
            raise _Stop("crashed", fatal.message)


def evaluate(model: nn.Module, loader: Iterable[Any], loss_fn: Callable[..., torch.Tensor],
             device: torch.device, guard: LossGuard | None = None) -> tuple[float | None, float | None]:
    """Mean loss and top-1 accuracy in percent over ``loader``, in eval mode, without gradients."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    batches = 0
    try:
        with torch.no_grad():
            for data, targets in loader:
                data = data.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                predictions = model(data)
                if guard is not None:
                    guard(predictions, targets)
                loss_sum += loss_fn(predictions, targets).detach().double()
                c, n = _accuracy_targets(predictions, targets)
                correct += c
                seen += n
                batches += 1
    finally:
        model.train(was_training)
    if batches == 0:
        return None, None
    loss = float(loss_sum) / batches
    accuracy = 100.0 * int(correct) / seen if seen else None
    return loss, accuracy


def fit(model: nn.Module, train_loader: Iterable[Any], test_loader: Iterable[Any] | None, *,
        optimizer: torch.optim.Optimizer | None = None, loss_fn: Callable[..., torch.Tensor] | None = None,
        device: torch.device | str | None = None, options: FitOptions | None = None,
        on_epoch: Callable[[int, Curves], None] | None = None) -> FitResult:
    """Train ``model`` under ``gradscope.watch`` and evaluate it after every epoch.

    Never raises for a failing run: the result's ``status`` and ``error`` say what happened.
    """
    opts = options or FitOptions()
    dev = device if isinstance(device, torch.device) else pick_device(device)
    model.to(dev)
    if optimizer is None:
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=opts.lr)
    loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
    curves = Curves()
    loop_findings: list[Finding] = []
    root = type(model).__name__
    scope = watch(model, optimizer, **opts.watch_options)
    result = FitResult(curves=curves, scope=scope, findings=loop_findings)
    unpinned = pinning_finding(train_loader, dev)
    if unpinned is not None:
        loop_findings.append(unpinned)
    step = 0
    guard = LossGuard(loss_fn, root)
    scope.__enter__()
    try:
        try:
            if test_loader is not None:
                test_loss, test_acc = evaluate(model, test_loader, loss_fn, dev, guard)
                _append(curves, -1, None, None, test_loss, test_acc)
            for epoch in range(opts.epochs):
                model.train()
                loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
                correct = torch.zeros((), device=dev, dtype=torch.long)
                seen = 0
                batches = 0
                batches_iter = iter(_progress(train_loader, opts.progress, f"epoch {epoch}"))
                while opts.max_steps is None or step < opts.max_steps:
                    with scope.phase("data"):
                        batch = next(batches_iter, None)
                    if batch is None:
                        break
                    data, targets = batch
                    with scope.phase("h2d"):
                        data = data.to(dev, non_blocking=True)
                        targets = targets.to(dev, non_blocking=True)
                    predictions = model(data)
                    guard(predictions, targets)
                    loss = loss_fn(predictions, targets)
                    optimizer.zero_grad()
                    loss.backward()
                    if opts.clip_norm is not None:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=opts.clip_norm)
                    if opts.clip_value is not None:
                        torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=opts.clip_value)
                    optimizer.step()
                    loss_sum += loss.detach().double()
                    c, n = _accuracy_targets(predictions, targets)
                    correct += c
                    seen += n
                    batches += 1
                    step += 1
                    if step % scope.run.flush_every == 0 and not bool(torch.isfinite(loss_sum)):
                        # one sync per flush interval, not per step
                        raise _Stop("nonfinite", f"the training loss became non-finite by step {step}")
                train_loss = float(loss_sum) / batches if batches else None
                train_acc = 100.0 * int(correct) / seen if seen else None
                test_loss, test_acc = (evaluate(model, test_loader, loss_fn, dev)
                                       if test_loader is not None else (None, None))
                _append(curves, epoch, train_loss, train_acc, test_loss, test_acc)
                if on_epoch is not None:
                    on_epoch(epoch, curves)
                if train_loss is not None and not math.isfinite(train_loss):
                    raise _Stop("nonfinite", f"the training loss was non-finite in epoch {epoch}")
                if opts.max_steps is not None and step >= opts.max_steps:
                    break
            if opts.save_dir is not None:
                result.checkpoints = save_checkpoints(model, optimizer, opts.save_dir)
        except _Stop as stop:
            result.status, result.error = stop.status, str(stop)
        except KeyboardInterrupt:
            result.status, result.error = "interrupted", f"interrupted by the user at step {step}"
        except GradscopeError as exc:  # strict mode's NonFiniteError, among others
            result.status, result.error = "nonfinite" if "non-finite" in str(exc) else "crashed", str(exc)
        except Exception as exc:  # the user's model failed: keep what was captured
            result.status, result.error = "crashed", describe_crash(exc, model)
    finally:
        # a step cut short by a failure keeps its gradients: they are the evidence
        scope.close(keep_partial_step=result.status != "completed")
    result.steps = step
    loop_findings.extend(guard.findings)
    _add_pinning_evidence(loop_findings, scope)
    loop_findings.extend(not_learning(curves, scope, loss_fn, _num_classes(model, train_loader), result.status))
    return result


def pinning_finding(loader: Any, device: torch.device) -> Finding | None:
    """GS506: a DataLoader without ``pin_memory`` feeding a CUDA device (loaders of other kinds,
    which have no such switch, are left alone)."""
    if device.type != "cuda" or getattr(loader, "pin_memory", None) is not False:
        return None
    return finding(
        "GS506", "DataLoader",
        "training on CUDA from a DataLoader without pin_memory=True: every batch is copied "
        "through pageable memory first, and the copy cannot overlap with compute.")


def _add_pinning_evidence(findings: list[Finding], scope: Scope) -> None:
    """Give GS506 the measured cost of the copies it is about, when timings exist."""
    timing = scope.records.get(TimingRecord.probe)
    summary = timing.summary if isinstance(timing, TimingRecord) else None
    if summary is None or "step" not in summary.phases or not summary.phases["step"].median_ms:
        return
    h2d, step = summary.phases["h2d"].median_ms, summary.phases["step"].median_ms
    for i, f in enumerate(findings):
        if f.code == "GS506":
            findings[i] = dataclasses.replace(
                f, message=f"{f.message} Measured: the host-to-device copy takes {h2d:.2f} ms of a "
                           f"{step:.2f} ms median step ({h2d / step:.0%}).")


def _append(curves: Curves, epoch: int, train_loss: float | None, train_acc: float | None,
            test_loss: float | None, test_acc: float | None) -> None:
    curves.epoch.append(epoch)
    curves.train_loss.append(train_loss)
    curves.train_accuracy_percent.append(train_acc)
    curves.test_loss.append(test_loss)
    curves.test_accuracy_percent.append(test_acc)


def _progress(loader: Iterable[Any], enabled: bool, label: str) -> Iterable[Any]:
    if not enabled:
        return loader
    import click

    length = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    return _bar(loader, length, label, click)


def _bar(loader: Iterable[Any], length: int | None, label: str, click: Any) -> Iterable[Any]:
    with click.progressbar(loader, length=length, label=label, file=sys.stderr) as bar:
        yield from bar


def _num_classes(model: nn.Module, loader: Iterable[Any]) -> int | None:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return last[-1].out_features if last else None


def not_learning(curves: Curves, scope: Scope, loss_fn: Any, num_classes: int | None,
                 status: RunStatus) -> list[Finding]:
    """GS209: the loss did not fall, or test accuracy stayed near chance; names the suspects."""
    if status != "completed":
        return []
    train = [x for x in curves.train_loss if x is not None and math.isfinite(x)]
    test_acc = [x for x in curves.test_accuracy_percent if x is not None]
    before = curves.test_loss[0] if curves.epoch and curves.epoch[0] == -1 else None
    reasons: list[str] = []
    first_loss = before if before is not None else (train[0] if train else None)
    if first_loss is not None and train and train[-1] > 0.98 * first_loss:
        reasons.append(f"the loss went from {first_loss:.4g} to {train[-1]:.4g}")
    if num_classes and num_classes > 1 and test_acc and len(test_acc) > 1:
        chance = 100.0 / num_classes
        if test_acc[-1] < 1.5 * chance:
            reasons.append(f"test accuracy is {test_acc[-1]:.1f}% against {chance:.1f}% by chance")
    if not reasons:
        return []
    codes = {f.code: f for f in scope.findings}
    suspects = [f"{c} ({codes[c].where})" for c in
                ("GS101", "GS303", "GS306", "GS301", "GS501", "GS502", "GS207", "GS203", "GS401",
                 "GS208", "GS201", "GS504", "GS305") if c in codes]
    return [finding(
        "GS209", scope.run.root_name,
        f"training is not learning: {'; '.join(reasons)}. "
        + (f"Likeliest suspects: {', '.join(suspects)}." if suspects else
           "No other finding explains it: check the learning rate and the labels."))]


def save_checkpoints(model: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> list[str]:
    """``model.pth`` and ``optimizer.pth`` (state dicts) in ``folder``, as the notes save them."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "model.pth", folder / "optimizer.pth"]
    torch.save(model.state_dict(), paths[0])
    torch.save(optimizer.state_dict(), paths[1])
    return [str(p) for p in paths]


def format_exception_short(exc: BaseException) -> str:
    """One line: the exception type and message."""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()
