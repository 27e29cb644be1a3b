"""The run record: one file holding everything a watched run left behind.

``RunRecord`` is what ``Scope.to_record()`` returns and what ``gradscope run`` writes as JSON; the
HTML report, ``compare`` and ``gradscope report --thresholds`` read it back with
``RunRecord.from_json``. Probe records sit under ``probes`` by probe name; a probe this version
does not know (a user's probe whose module is not imported, a newer gradscope's) is kept as plain
JSON in ``other_probes`` and shown as data.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, TypeVar

from gradscope.errors import RecordError
from gradscope.findings import Finding
from gradscope.records.base import ProbeRecord, Record, clean, fail, probe_record_type, read_value
from gradscope.thresholds import Thresholds

SCHEMA = "gradscope.record"
VERSION = 2            # 2: typed records (columnar statistics, timing summary nested, tensors)
RunStatus = Literal["completed", "crashed", "interrupted", "nonfinite", "exited"]
P = TypeVar("P", bound=ProbeRecord)


@dataclass(frozen=True)
class ModelInfo(Record):
    """The root module: class, value counts (all, and with ``requires_grad``), device."""

    class_name: str = ""
    parameters: int = 0
    trainable: int = 0
    device: str = "cpu"

    renamed = {"class": "class_name"}


@dataclass(frozen=True)
class RunInfo(Record):
    """How ``gradscope run`` ran: the command, its options and how it ended."""

    command: str = ""
    file: str = ""
    mode: Literal["model", "script"] = "model"
    arguments: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    data: str | None = None
    device: str | None = None
    status: RunStatus = "completed"
    error: str | None = None
    steps: int | None = None
    checkpoints: list[str] = field(default_factory=list)
    exit_code: int | None = None


@dataclass(frozen=True)
class DistributedInfo(Record):
    """How the run was spread over processes, and how gradscope combined what each saw."""

    world_size: int = 1
    rank: int = 0
    backend: str | None = None
    strategy: str = "none"           # ddp, fsdp1, fsdp2, dp or none
    compiled: bool = False           # the model was a torch.compile OptimizedModule
    reduction: str = ""              # how gradient norms were combined over ranks
    sharded_parameters: int = 0      # parameter tensors whose norms needed a collective


@dataclass(frozen=True)
class Curves(Record):
    """Per-evaluation results: epoch -1 is the evaluation before training; None where absent."""

    epoch: list[int] = field(default_factory=list)
    train_loss: list[float | None] = field(default_factory=list)
    train_accuracy_percent: list[float | None] = field(default_factory=list)
    test_loss: list[float | None] = field(default_factory=list)
    test_accuracy_percent: list[float | None] = field(default_factory=list)

    def validate(self, path: str) -> None:
        for name in ("train_loss", "train_accuracy_percent", "test_loss", "test_accuracy_percent"):
            values = getattr(self, name)
            if values and len(values) != len(self.epoch):
                raise fail(f"{path}.{name}", f"{len(self.epoch)} values (one per epoch)", values)

    @staticmethod
    def last(values: list[float | None]) -> float | None:
        """The last finite value of a curve."""
        found = [v for v in values if v is not None and v == v and abs(v) != float("inf")]
        return found[-1] if found else None


@dataclass(frozen=True)
class Environment(Record):
    """Versions and the machine; ``extra`` keeps keys this version does not name."""

    gradscope: str | None = None
    python: str | None = None
    torch: str | None = None
    torchvision: str | None = None
    platform: str | None = None
    cuda: str | None = None
    threads: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        known = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in data.items() if k not in known}
        out = {k: v for k, v in data.items() if k in known}
        given = data.get("extra")
        out["extra"] = {**(given if isinstance(given, dict) else {}), **extra}
        return out


@dataclass(frozen=True)
class Unregistered(Record):
    """Objects of one kind in one attribute that PyTorch does not register."""

    attribute: str = ""
    kind: Literal["module", "parameter", "tensor"] = "module"
    count: int = 0
    code: str = ""
    severity: Literal["error", "warning", "info"] = "error"


@dataclass(frozen=True)
class ModuleNode(Record):
    """One module of the tree, in tree order (``path`` "" for the root)."""

    path: str = ""
    name: str = ""
    depth: int = 0
    class_name: str = ""
    own_params: int = 0
    total_params: int = 0
    trainable_params: int = 0
    unregistered: list[Unregistered] = field(default_factory=list)

    renamed = {"class": "class_name", "own_parameters": "own_params", "parameters": "total_params",
               "trainable": "trainable_params"}


@dataclass(frozen=True)
class Registration(Record):
    tree: list[ModuleNode] = field(default_factory=list)


def _read_probes(value: Any, path: str) -> tuple[dict[str, ProbeRecord], dict[str, Any]]:
    if not isinstance(value, Mapping):
        raise fail(path, "an object (records by probe name)", value)
    known: dict[str, ProbeRecord] = {}
    other: dict[str, Any] = {}
    for name, data in value.items():
        kind = probe_record_type(str(name))
        if kind is None:
            other[str(name)] = data
        elif data not in (None, {}, []):
            known[str(name)] = kind.from_json(data, f"{path}.{name}")
    return known, other


@dataclass(frozen=True)
class WatchedModel(Record):
    """One root model of a script that trains several (a GAN): its own scope's record."""

    name: str = ""
    model: ModelInfo = field(default_factory=ModelInfo)
    optimizers: list[str] = field(default_factory=list)
    steps: int = 0
    findings: list[Finding] = field(default_factory=list)
    probes: dict[str, ProbeRecord] = field(default_factory=dict)
    other_probes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Any, path: str = "record") -> WatchedModel:
        if not isinstance(data, Mapping):
            raise fail(path, "an object", data)
        probes, other = _read_probes(data.get("probes", {}), f"{path}.probes")
        rest = {k: v for k, v in data.items() if k not in ("probes", "class")}
        base = super().from_json(rest, path)
        return dataclasses.replace(base, probes=probes, other_probes=other)

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        out["probes"] = {**out.pop("other_probes"), **{k: v.to_json() for k, v in self.probes.items()}}
        return out


@dataclass(frozen=True)
class RunRecord(Record):
    """Everything a run left behind. Every part is optional but ``schema`` and ``version``."""

    schema: str = SCHEMA
    version: int = VERSION
    gradscope_version: str | None = None
    torch_version: str | None = None
    model: ModelInfo | None = None
    steps: int = 0
    backwards: int = 0
    step_on: str | None = None
    optimizers: list[str] | None = None      # class names of the watched optimizers
    grad_scaler: bool | None = None           # a torch.amp.GradScaler scaled the losses
    distributed: DistributedInfo | None = None
    notes: list[str] = field(default_factory=list)   # what the capture could not do, and why
    #: arrays a written record keeps fewer rows of than the probes kept (``records.budget``):
    #: their path, such as "probes.grad_norm.parameter_norms", and the steps of the rows left ([]: dropped)
    thinned: dict[str, list[int]] | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    probes: dict[str, ProbeRecord] = field(default_factory=dict)
    other_probes: dict[str, Any] = field(default_factory=dict)
    run: RunInfo | None = None
    curves: Curves | None = None
    environment: Environment | None = None
    registration: Registration | None = None
    lint: list[Finding] | None = None
    models: list[WatchedModel] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)   # keys this version does not know

    @classmethod
    def from_json(cls, data: Any, path: str = "record") -> RunRecord:
        """Read a run record: checks the schema and version, then every field by its type."""
        if not isinstance(data, Mapping) or data.get("schema") != SCHEMA:
            raise RecordError(f"{path}: not a gradscope record (expected \"schema\": \"{SCHEMA}\")")
        version = data.get("version")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise RecordError(f"{path}: \"version\" must be a positive integer, got {version!r}")
        if version > VERSION:
            raise RecordError(f"{path}: record version {version} is newer than this gradscope reads "
                              f"({VERSION}); upgrade gradscope to read it")
        raw = dict(data)
        if version < 2:
            raw = _upgrade_v1(raw)
        probes, other = _read_probes(raw.pop("probes", {}), f"{path}.probes")
        names = {f.name for f in dataclasses.fields(cls)}
        extra = {k: v for k, v in raw.items() if k not in names}
        body = {k: v for k, v in raw.items() if k in names and k not in ("extra", "probes", "other_probes")}
        values = {f.name: read_value(body[f.name], hint, f"{path}.{f.name}")
                  for f, hint in _record_fields() if f.name in body}
        values["version"] = VERSION
        record = cls(**values, probes=probes, other_probes=other, extra=extra)
        record.validate(path)
        return record

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f, _ in _record_fields():
            if f.name in ("probes", "other_probes", "extra"):
                continue
            value = getattr(self, f.name)
            if value is None or (f.name == "models" and not value):
                continue  # optional parts are left out rather than written as null
            out[f.name] = clean(value)
        out["probes"] = {**clean(self.other_probes), **{k: v.to_json() for k, v in self.probes.items()}}
        return {**clean(self.extra), **out}

    # ---- typed access ------------------------------------------------------------------------------
    def probe(self, kind: type[P]) -> P | None:
        """The record of one probe, by its record type: ``run.probe(GradNormRecord)``."""
        found = self.probes.get(kind.probe)
        return found if isinstance(found, kind) else None

    @property
    def root_name(self) -> str:
        return self.model.class_name if self.model and self.model.class_name else "model"

    @property
    def status(self) -> str:
        return self.run.status if self.run else "completed"

    def _repr_html_(self) -> str:
        """The notebook summary (a cell ending in ``gradscope.load("run.json")``)."""
        from gradscope.reports.notebook import summary_html

        return summary_html(self)

    def judged_with(self) -> Thresholds:
        """The thresholds the findings were judged with (defaults for what is not recorded)."""
        known = {f.name for f in dataclasses.fields(Thresholds)}
        return Thresholds.of({k: v for k, v in self.thresholds.items() if k in known})


def _record_fields() -> tuple[tuple[dataclasses.Field[Any], Any], ...]:
    from gradscope.records.base import _fields

    return _fields(RunRecord)


def _upgrade_v1(data: dict[str, Any]) -> dict[str, Any]:
    """Records written by gradscope 0.1 (version 1)."""
    timings = data.pop("timings", None)
    probes = data.get("probes")
    if isinstance(timings, dict) and (not isinstance(probes, dict) or "timing" not in probes):
        data["probes"] = {**(probes if isinstance(probes, dict) else {}), "timing": timings}
    for model in data.get("models") or []:
        if isinstance(model, dict) and isinstance(model.get("model"), dict):
            model.setdefault("steps", 0)
    return data
