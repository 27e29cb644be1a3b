"""TensorBoard export: per-layer gradient norms, the clip rate and the findings, in one event file.

Two ways in:

- ``TensorBoardExporter(log_dir)``, a probe for a live run:
  ``watch(model, opt, probes=["default", TensorBoardExporter("runs/exp1")])``. It does nothing
  per step. At each flush (every ``flush_every`` steps, and when the scope closes) it writes what
  the other probes have just brought to the host, so it must flush after them: ``watch()``
  attaches the built-in probes first and probe instances after them in the order given, so keep
  it last among your own probes (it warns otherwise). No tensor of the run is read: it adds no
  device sync and no device memory.
- ``export_tensorboard(record, log_dir)`` (``gradscope export RUN.json --tensorboard DIR``) writes
  the same tags from a finished record.

Tags, under ``prefix`` ("gradscope"), with the gradscope step (0, 1, ...) as the TensorBoard step:

- ``gradscope/grad_norm/<layer>`` and ``gradscope/grad_norm/total``: gradient L2 norms before
  clipping, one value per recorded step (every step until ``max_kept_steps``, then the evenly
  thinned steps the record keeps). All of a step's values are one event.
- ``gradscope/clip_rate``: the share of the last 50 norm-clipping calls that clipped, at each call.
- ``gradscope/findings/error``, ``.../warning``, ``.../info``: how many findings there are, and
  ``gradscope/findings`` (text): the findings as a table, at each flush and at the end.

Everything goes into one event file per run, written by one ``FileWriter`` (never
``add_scalars``, which opens one file and one writer thread per tag), and only on rank 0.
"""
from __future__ import annotations

import dataclasses
import uuid
import warnings
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

from gradscope.findings import Finding
from gradscope.integrations._common import require
from gradscope.probes.base import Probe, RunState

require(("tensorboard",), "gradscope.integrations.tensorboard")

if TYPE_CHECKING:  # pragma: no cover - typing only
    from gradscope.records import RunRecord

ROLLING_WINDOW = 50
# probes whose record() reads host data only, once flushed: judged at every flush. The others (dead
# units read their device masks) are judged once, when the scope closes.
HOST_RECORDS = ("grad_norm", "nonfinite", "tensor_grad", "hooks", "freeze", "clipping", "mode", "zero_grad",
                "activation_grad", "update_ratio", "timing")


class EventWriter:
    """One new TensorBoard event file in ``log_dir``, written through torch's ``FileWriter``."""

    def __init__(self, log_dir: str | Path, prefix: str = "gradscope") -> None:
        from torch.utils.tensorboard.writer import FileWriter

        folder = Path(log_dir)
        folder.mkdir(parents=True, exist_ok=True)
        suffix = f".gradscope-{uuid.uuid4().hex[:12]}"   # finds this writer's file without private names
        self.file = FileWriter(str(folder), filename_suffix=suffix)
        self.prefix = prefix
        self.path = next(folder.glob(f"*{suffix}"))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        """One event holding every value of ``step`` (tags under the prefix)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        summary = Summary(value=[Summary.Value(tag=f"{self.prefix}/{tag}", simple_value=float(v))
                                 for tag, v in values.items()])
        self.file.add_summary(summary, global_step=step)

    def text(self, step: int, tag: str, body: str) -> None:
        from torch.utils.tensorboard.summary import text

        self.file.add_summary(text(f"{self.prefix}/{tag}", body), global_step=step)

    def norms(self, steps: Sequence[int], layers: Sequence[str], layer_rows: Any, totals: Any) -> None:
        """Per-layer and total norms, one event per step (rows: host arrays, steps x layers)."""
        for i, step in enumerate(steps):
            values = {f"grad_norm/{layer}": float(layer_rows[i][j]) for j, layer in enumerate(layers)}
            values["grad_norm/total"] = float(totals[i])
            self.scalars(int(step), values)

    def clip_rates(self, steps: Sequence[int], rates: Sequence[float]) -> None:
        for step, rate in zip(steps, rates):
            self.scalars(int(step), {"clip_rate": float(rate)})

    def findings(self, step: int, findings: Sequence[Finding]) -> None:
        counts = {f"findings/{s}": 0.0 for s in ("error", "warning", "info")}
        for f in findings:
            counts[f"findings/{f.severity.value}"] += 1
        self.scalars(step, counts)
        self.text(step, "findings", findings_markdown(findings))

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def findings_markdown(findings: Sequence[Finding]) -> str:
    """The findings as a Markdown table (TensorBoard's text plugin renders Markdown)."""
    if not findings:
        return "No findings: nothing gradscope checks for went wrong."

    def cell(value: str) -> str:
        return value.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    rows = ["| severity | code | where | message | hint |", "|---|---|---|---|---|"]
    rows += [f"| {f.severity.value} | {cell(f.code)} | {cell(f.where)} | {cell(f.message)} | {cell(f.hint)} |"
             for f in findings]
    return "\n".join(rows)


class RollingShare:
    """The share of the last ``ROLLING_WINDOW`` norm-clipping calls that clipped (the record's
    ``rolling_clipped_fraction``), one call at a time."""

    def __init__(self) -> None:
        self.window: deque[bool] = deque(maxlen=ROLLING_WINDOW)

    def add(self, acted: bool) -> float:
        self.window.append(acted)
        return sum(self.window) / len(self.window)


class TensorBoardExporter(Probe):
    """Writes gradscope's host data to TensorBoard at every flush; put it last in ``probes=``.

    Args:
        log_dir: the TensorBoard folder (created if needed; a new event file per run).
        prefix: the tags' first part.
    """

    name = "tensorboard"
    report_order = 990

    def __init__(self, log_dir: str | Path, *, prefix: str = "gradscope") -> None:
        super().__init__()
        self.log_dir = Path(log_dir)
        self.prefix = prefix
        self.writer: EventWriter | None = None
        self.path: Path | None = None       # the event file, once attached (rank 0 only)
        self._norms_until = -1               # the last step whose norms were written
        self._clips_until = -1               # the last step whose clip calls were written
        self._share = RollingShare()

    def attach(self, run: RunState) -> None:
        super().attach(run)
        if list(run.probes)[-1:] != [self.name]:
            warnings.warn("TensorBoardExporter is not the last probe: the probes after it reach TensorBoard "
                          "one flush late; put it last: probes=['default', TensorBoardExporter(...)]",
                          RuntimeWarning, stacklevel=2)
        if run.world.rank == 0:  # every rank records the same averaged gradients: one file
            self.writer = EventWriter(self.log_dir, self.prefix)
            self.path = self.writer.path

    def flush(self, steps: list[int]) -> None:
        if self.writer is None or not steps:
            return
        self._write_norms()
        self._write_clip_rates()
        self.writer.findings(steps[-1], self._findings(HOST_RECORDS))
        self.writer.flush()

    def detach(self) -> None:
        super().detach()
        writer, self.writer = self.writer, None
        if writer is None:
            return
        try:
            run = self._state()
            if run.step:
                writer.findings(run.step - 1, self._findings(None))  # the run's last word, every probe
        except Exception as exc:  # the export is a view: it must never cost the run its own record
            warnings.warn(f"TensorBoardExporter could not write the final findings ({type(exc).__name__}: "
                          f"{exc})", RuntimeWarning, stacklevel=2)
        finally:
            writer.close()

    # ---- from the other probes' host data ---------------------------------------------------------
    def _write_norms(self) -> None:
        from gradscope.norms import Groups, combine_norms
        from gradscope.probes.grad_norm import GradNormProbe

        run = self._state()
        grad = run.probes.get(GradNormProbe.name)
        if not isinstance(grad, GradNormProbe) or grad.param_series is None or grad.total_series is None:
            return
        steps = grad.param_series.steps
        first = next((i for i, s in enumerate(steps) if s > self._norms_until), len(steps))
        if first == len(steps):
            return
        rows = grad.param_series.values()[first:]
        layers = combine_norms(rows, Groups(run.param_layer, len(run.layer_names))).tolist()
        totals = grad.total_series.values()[first:, 0].tolist()
        assert self.writer is not None
        self.writer.norms(steps[first:], run.layer_names, layers, totals)
        self._norms_until = steps[-1]

    def _write_clip_rates(self) -> None:
        from gradscope.probes.clipping import ClipProbe

        clip = self._state().probes.get(ClipProbe.name)
        if not isinstance(clip, ClipProbe):
            return
        # by step, not by position: the probe thins its list of calls in long runs
        fresh = [c for c in clip.done if c.step > self._clips_until and c.acted is not None]
        if not fresh:
            return
        self._clips_until = fresh[-1].step
        assert self.writer is not None
        self.writer.clip_rates([c.step for c in fresh], [self._share.add(bool(c.acted)) for c in fresh])

    def _findings(self, only: Iterable[str] | None) -> list[Finding]:
        """The findings the probes' records support now (``only``: those probes)."""
        from gradscope.probes import judge_run
        from gradscope.records import ModelInfo, RunRecord

        run = self._state()
        wanted = None if only is None else set(only)
        records = {}
        for name, probe in run.probes.items():
            if probe is self or (wanted is not None and name not in wanted):
                continue
            rec = probe.record()
            if rec is not None:
                records[name] = rec
        model = ModelInfo(class_name=run.root_name, parameters=sum(p.numel() for p in run.model.parameters()),
                          trainable=sum(p.numel() for p in run.params),
                          device=str(run.params[0].device) if run.params else "cpu")
        record = RunRecord(model=model, steps=run.step, backwards=run.backwards, step_on=run.options.step_on,
                           optimizers=[type(o).__name__ for o in run.optimizers], grad_scaler=bool(run.scalers),
                           thresholds=dataclasses.asdict(run.thresholds), probes=records)
        return judge_run(record, run.thresholds)


def export_tensorboard(record: RunRecord | str | Path, log_dir: str | Path, *, prefix: str = "gradscope") -> Path:
    """Write a finished run record into one new event file in ``log_dir``; returns its path.

    The same tags as ``TensorBoardExporter``: the record's per-layer and total norms at its kept
    steps, the rolling clip rate at each clip call, and the record's findings at its last step.
    """
    from gradscope.records import ClippingRecord, GradNormRecord, load_record

    run = record if not isinstance(record, (str, Path)) else load_record(record)
    writer = EventWriter(log_dir, prefix)
    try:
        grad = run.probe(GradNormRecord)
        if grad is not None and len(grad.steps):
            writer.norms(grad.steps, grad.layers, grad.layer_norms.tolist(), grad.total_norm.tolist())
        clip = run.probe(ClippingRecord)
        if clip is not None:
            calls = [c for c in clip.calls if c.acted is not None]
            share = RollingShare()
            writer.clip_rates([c.step for c in calls], [share.add(bool(c.acted)) for c in calls])
        last = max(run.steps - 1, int(grad.steps[-1]) if grad is not None and len(grad.steps) else 0, 0)
        writer.findings(last, run.findings)
    finally:
        writer.close()
    return writer.path
