"""Findings and the code catalog: the contract shared by tests, the JSON record and the docs."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Iterable, Mapping


class Severity(str, enum.Enum):
    """How bad a finding is. Ordered: ``INFO < WARNING < ERROR``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.ERROR: 2}


@dataclass(frozen=True)
class CatalogEntry:
    """One code of the catalog: its default severity, a one-line title and the default hint."""

    code: str
    severity: Severity
    title: str
    hint: str


@dataclass(frozen=True)
class Finding:
    """One diagnosis: what is wrong (``message``), where to look (``where``) and how to fix it."""

    code: str
    severity: Severity
    where: str
    message: str
    hint: str

    def to_dict(self) -> dict[str, str]:
        return {
            "code": self.code,
            "severity": self.severity.value,
            "where": self.where,
            "message": self.message,
            "hint": self.hint,
        }

    @classmethod
    def from_dict(cls, data: Any, path: str = "finding") -> Finding:
        """Read a finding from JSON; a missing hint is the catalog's. Raises ``RecordError``
        naming the field when one is missing or of the wrong type."""
        from gradscope.errors import RecordError

        fix = "the file was changed by hand or written by another tool; write it again with gradscope"
        if not isinstance(data, Mapping):
            raise RecordError(f"{path} should be an object with code, severity, where, message and "
                              f"hint, got {type(data).__name__}; {fix}")
        for key in ("code", "where", "message"):
            if not isinstance(data.get(key), str):
                raise RecordError(f"{path}.{key} should be a string, got {data.get(key)!r}; {fix}")
        if data.get("severity") not in ("error", "warning", "info"):
            raise RecordError(f"{path}.severity should be one of error, warning, info, got "
                              f"{data.get('severity')!r}; {fix}")
        hint = data.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise RecordError(f"{path}.hint should be a string, got {hint!r}; {fix}")
        entry = CATALOG.get(data["code"])
        return cls(code=data["code"], severity=Severity(data["severity"]), where=data["where"],
                   message=data["message"], hint=hint or (entry.hint if entry else ""))

    from_json = from_dict

    def to_json(self) -> dict[str, str]:
        return self.to_dict()


def _entry(code: str, severity: str, title: str, hint: str) -> CatalogEntry:
    return CatalogEntry(code, Severity(severity), title, hint)


CATALOG: dict[str, CatalogEntry] = {
    e.code: e
    for e in [
        # GS1xx: registration
        _entry("GS101", "error", "submodule held in a plain container",
               "Hold submodules in nn.ModuleList / nn.ModuleDict (or assign each one as an attribute)."),
        _entry("GS102", "error", "Parameter held in a plain container",
               "Hold parameters in nn.ParameterList / nn.ParameterDict."),
        _entry("GS103", "warning", "plain tensor attribute on a module",
               "Use self.register_buffer(name, tensor) (or nn.Parameter if it should learn)."),
        _entry("GS104", "error", "module called in forward but not registered under the root",
               "Create the layer in __init__ and assign it to self (or a ModuleList), not inside forward."),
        _entry("GS105", "warning", "registered submodule with parameters never called in forward",
               "Remove the unused layer, or call it in forward; its parameters still cost memory and optimizer state."),
        _entry("GS106", "info", "shared (tied) parameters",
               "Fine when intended (tied embeddings); otherwise give each layer its own Parameter."),
        _entry("GS107", "error", "submodule assigned before Module.__init__() was called",
               "Call super().__init__() as the first line of __init__."),
        # GS2xx: gradient flow
        _entry("GS201", "warning", "trainable parameter never received a gradient",
               "Look for a detached path (.detach(), .data, torch.no_grad) or an unused branch; freeze it if unused."),
        _entry("GS202", "warning", "gradient exactly zero at every observed step",
               "Check for dead activations, a zero-initialised layer feeding it, or a masked path."),
        _entry("GS203", "warning", "vanishing gradients",
               "Use residual connections, normalisation (BatchNorm/LayerNorm), ReLU-family activations, or better "
               "init."),
        _entry("GS204", "warning", "exploding gradients",
               "Lower the learning rate, add normalisation, or clip with torch.nn.utils.clip_grad_norm_(params, "
               "max_norm=1.0)."),
        _entry("GS205", "error", "non-finite (NaN/Inf) gradient",
               "Look at the named module: log of zero, division by zero, overflow in fp16; lower the lr or use a "
               "GradScaler."),
        _entry("GS206", "error", "non-finite loss or forward output",
               "Inspect the named module's inputs and weights; check the data for NaN and the loss for log(0)."),
        _entry("GS207", "warning", "dead units in a ReLU-family layer",
               "Lower the learning rate, use LeakyReLU/GELU, or check the initialisation and the bias of the layer "
               "before."),
        _entry("GS208", "info", "update-to-weight ratio far from about 1e-3",
               "Tune the learning rate for this layer (per-parameter-group lr), or check its scale."),
        _entry("GS209", "warning", "training is not learning",
               "Check the suspects named in the message first; then the learning rate and the data labels."),
        # GS3xx: freezing and the optimizer
        _entry("GS301", "warning", "frozen parameters handed to the optimizer",
               "Build the optimizer from [p for p in model.parameters() if p.requires_grad]."),
        _entry("GS302", "error", "frozen parameter changed during training",
               "Keep frozen parameters out of the optimizer (weight decay and momentum still move them) and "
               "zero_grad(set_to_none=True)."),
        _entry("GS303", "error", "trainable parameter in no optimizer param group",
               "Build the optimizer after replacing layers, or add the new parameters with "
               "optimizer.add_param_group()."),
        _entry("GS304", "warning", "frozen submodule with BatchNorm in train mode",
               "Call .eval() on the frozen submodule after model.train(), or freeze BatchNorm statistics explicitly."),
        _entry("GS305", "warning", "parameter in the optimizer with gradients that never changed",
               "Check the learning rate of its param group and whether optimizer.step() is skipped."),
        _entry("GS306", "info", "almost everything is frozen",
               "Often intended for fine-tuning; check it is what you meant."),
        _entry("GS307", "warning", "parameter no longer in the model still in the optimizer",
               "Rebuild the optimizer after replacing layers (or remove the old param group and add the new "
               "parameters with optimizer.add_param_group())."),
        _entry("GS308", "warning", "learning rate collapsed",
               "Check the scheduler's gamma and step size (or milestones): a schedule should not divide the "
               "learning rate by more than 1000 long before the end."),
        _entry("GS309", "warning", "learning-rate scheduler never stepped",
               "Call scheduler.step() once per epoch (or per step, as the scheduler expects), after "
               "optimizer.step()."),
        # GS4xx: clipping
        _entry("GS401", "warning", "norm clipping acted on more than 90% of steps",
               "Raise max_norm (look at the recorded pre-clip norms) or lower the learning rate."),
        _entry("GS402", "info", "clipping never acted",
               "The threshold is above every observed norm; lower it or drop clipping."),
        _entry("GS403", "error", "clipping ran with nothing fresh to clip",
               "Clip after loss.backward() and before optimizer.step()."),
        _entry("GS404", "error", "non-finite total norm at clipping time",
               "Find where the NaN/Inf starts (GS205); pass error_if_nonfinite=True to fail fast."),
        _entry("GS405", "warning", "value clipping saturated more than 10% of gradient elements",
               "Raise clip_value, or clip by norm instead."),
        _entry("GS406", "error", "clipping of gradients still scaled by a GradScaler",
               "Call scaler.unscale_(optimizer) before clipping."),
        _entry("GS407", "warning", "clipping on every micro-batch under gradient accumulation",
               "Clip once, after the last backward of the accumulation step, right before optimizer.step()."),
        # GS5xx: the training loop
        _entry("GS501", "warning", "softmax applied before a loss that applies it again",
               "Return logits from the model; apply softmax only for reporting probabilities."),
        _entry("GS502", "error", "output width does not fit the loss",
               "CrossEntropyLoss needs one output per class (2 for binary); BCEWithLogitsLoss needs one."),
        _entry("GS503", "warning", "optimizer.step() without zero_grad() since the last step",
               "Call optimizer.zero_grad() once per optimizer step (before backward)."),
        _entry("GS504", "warning", "train/eval mode wrong",
               "Call model.eval() before evaluating and model.train() before training."),
        _entry("GS505", "warning", "result of .to()/.cuda()/.cpu() discarded, or devices differ",
               "Tensors are not moved in place: write x = x.to(device)."),
        _entry("GS506", "info", "CUDA training without pinned memory",
               "Pass pin_memory=True to the DataLoader when training on CUDA."),
        _entry("GS507", "error", "call with a keyword the function does not take",
               "Use the keyword the function takes (see its signature)."),
        _entry("GS508", "info", "deprecated API",
               "Use the replacement named in the message."),
        _entry("GS509", "warning", "loss tensor accumulated across steps",
               "Accumulate loss.item() (or loss.detach()) instead of the loss tensor."),
        _entry("GS511", "warning", "zero_grad() inside the gradient-accumulation loop",
               "Call optimizer.zero_grad() once per optimizer step, after optimizer.step(), not before every "
               "micro-batch's backward."),
        _entry("GS512", "warning", "accumulated micro-batch losses not divided",
               "Divide each micro-batch's loss by the number of accumulation steps before backward() "
               "(loss = loss / accumulation_steps)."),
        _entry("GS510", "info", "input-bound training",
               "Use DataLoader(num_workers=N, pin_memory=True, persistent_workers=True), or move "
               "preprocessing off the training step."),
        # GS6xx: hooks
        _entry("GS601", "warning", "hooks piling up",
               "Register hooks once outside the loop, or keep the handle and call handle.remove()."),
        _entry("GS602", "info", "user hook changed a gradient",
               "Fine when intended (gradient scaling, masking); make sure it is."),
        # GS7xx: distributed training
        _entry("GS701", "error", "DistributedDataParallel's forward never ran",
               "Call the DDP wrapper (ddp_model(x)), not ddp_model.module(x): only the wrapper's forward "
               "prepares the all-reduce of the gradients."),
        _entry("GS702", "error", "replicas drifted apart",
               "Make every rank apply the same update: wrap with DDP and call its forward, broadcast the initial "
               "weights, and keep rank-dependent code out of the update."),
        # GS8xx: departures from a reference run (gradscope compare --reference, run --reference)
        _entry("GS801", "warning", "gradient norms left the reference envelope",
               "Look at what changed at the step named (the other GS8xx findings say what differs): learning "
               "rate, frozen layers, clipping, data or a NaN source."),
        _entry("GS802", "warning", "loss left the reference envelope",
               "Look at what changed at that step: the learning rate, the data (source, labels, shuffling), a "
               "resumed checkpoint."),
        _entry("GS803", "warning", "update sizes left the reference envelope",
               "Compare this layer's learning rate, optimizer and weight decay with the reference run's: update "
               "sizes follow them."),
        _entry("GS804", "warning", "clipping differs from the reference",
               "Use the reference run's clip threshold and clip at the same point of the step, or keep this run "
               "as the new reference if the change is intended."),
        _entry("GS805", "warning", "optimizer settings differ from the reference",
               "Restore the reference run's optimizer, learning rate and weight decay, or keep this run as the "
               "new reference if the change is intended."),
        _entry("GS806", "warning", "learning-rate schedule differs from the reference",
               "Check the scheduler (type, step size, warm-up, stepped per step or per epoch) and any code that "
               "writes param_group['lr'] during training."),
        _entry("GS807", "warning", "parameters differ from the reference",
               "The model is not the one the reference trained: check the architecture and its configuration "
               "(widths, layers, heads) or the checkpoint loaded."),
        _entry("GS808", "warning", "frozen layers differ from the reference",
               "Freeze and unfreeze the same layers as the reference run (gradscope.freeze(model, train=[...]) "
               "makes it explicit), and check code that sets requires_grad during training."),
        _entry("GS809", "info", "finding absent from every reference run",
               "Read the new finding first: it is what this run does that the good runs did not."),
        _entry("GS810", "info", "step time differs from the reference",
               "Compare the phase named: data loading (workers, pinned memory), the device, the batch size, or "
               "extra work in the step."),
    ]
}


def register_code(code: str, severity: str | Severity, title: str, hint: str) -> CatalogEntry:
    """Add a code for a user-defined probe's findings. ``GS`` codes are gradscope's own: choose
    another prefix (a team's initials, ``"ACME01"``). Registering the same code again with the same
    text is allowed (a module imported twice); a different text is an error."""
    from gradscope.errors import GradscopeError

    if not isinstance(code, str) or not code or code.upper().startswith("GS"):
        raise GradscopeError(f"register_code({code!r}): codes starting with GS are gradscope's own; "
                             "choose another prefix, such as 'ACME01'")
    entry = CatalogEntry(code, Severity(severity), title, hint)
    known = CATALOG.get(code)
    if known is not None and known != entry:
        raise GradscopeError(f"register_code({code!r}): the code is already registered as {known}")
    CATALOG[code] = entry
    return entry


def finding(code: str, where: str, message: str, hint: str | None = None,
            severity: Severity | None = None) -> Finding:
    """Build a finding for a catalog code, with the catalog's severity and hint unless given."""
    try:
        entry = CATALOG[code]
    except KeyError:
        raise ValueError(f"unknown finding code {code!r}: expected one of the catalog's codes "
                         f"(GS101 ... GS810); add new codes to gradscope.findings.CATALOG") from None
    return Finding(code=code, severity=severity or entry.severity, where=where,
                   message=message, hint=hint or entry.hint)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Most severe first, then by code and place: the order a user should read them in."""
    return sorted(findings, key=lambda f: (-f.severity.rank, f.code, f.where))


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The highest severity among ``findings``, or None when there are none."""
    levels = [f.severity for f in findings]
    return max(levels, key=lambda s: s.rank) if levels else None


def fails(findings: Iterable[Finding], fail_on: str) -> bool:
    """Whether any finding is at or above ``fail_on`` ("error", "warning", "info" or "never")."""
    if fail_on == "never":
        return False
    threshold = Severity(fail_on)
    return any(f.severity >= threshold for f in findings)
