"""The run-level sections: what ran, the model, its registration, the curves, lint and the
environment. Probe sections are declared by the probes; these read the run record itself."""
from __future__ import annotations

import functools
import json
from typing import Callable

from gradscope.records.base import clean
from gradscope.records.grad_norm import GradNormRecord
from gradscope.reports.page import (
    MAX_TABLE_ROWS,
    Cell,
    Row,
    Section,
    SectionContext,
    Table,
    draw,
    finding_views,
    fmt_number,
    json_text,
    num,
    text,
)

RUN_CODES = ("GS501", "GS502", "GS506", "GS509")
REGISTRATION_CODES = ("GS1",)
CURVE_CODES = ("GS209",)
MAX_BLOCK_CHARS = 4000


def section_run(ctx: SectionContext) -> Section | None:
    run = ctx.run.run
    if run is None:
        return None
    s = Section("run", "Command and run", gist=run.status)
    if run.command:
        s.blocks.append(("Command line", run.command))
    s.facts.append(("status", run.status))
    for value, label in ((run.file, "model file" if run.mode == "model" else "script"), (run.data, "data"),
                         (run.device, "device"), (run.steps, "optimizer steps"), (run.exit_code, "exit code")):
        if value not in (None, ""):
            s.facts.append((label, fmt_number(value)))
    if run.arguments:
        s.facts.append(("script arguments", " ".join(run.arguments)))
    if run.checkpoints:
        s.facts.append(("checkpoints", ", ".join(run.checkpoints)))
    if run.error:
        s.blocks.append(("Error", run.error))
    if run.options:
        rows = [Row([text(k, mono=True), text(json_text(v), mono=True)]) for k, v in run.options.items()]
        s.tables.append(Table("options", ["option", "value"], rows, "Options"))
    s.related = ctx.related(RUN_CODES)
    return s


def section_models(ctx: SectionContext) -> Section | None:
    """Zero-code mode with several root models (a GAN): one row and one norm chart per model.
    The other sections show the first model; findings name their model before the place."""
    from gradscope.reports import figures as F

    models = ctx.run.models
    if len(models) < 2:
        return None
    s = Section("models", "Models in the script", gist=f"{len(models)} models watched")
    rows = []
    for m in models:
        codes = ", ".join(sorted({f.code for f in m.findings})) or "none"
        rows.append(Row([text(m.name, mono=True), text(m.model.class_name), num(m.model.parameters),
                         num(m.model.trainable), text(", ".join(m.optimizers) or "none"), num(m.steps),
                         text(codes, mono=True)]))
    s.tables.append(Table("models", ["model", "class", "parameters", "trainable", "optimizers", "steps",
                                     "findings"], rows, "Root models and their optimizers"))

    def chart(i: int) -> object:
        grad = models[i].probes.get(GradNormRecord.probe)
        c = F.total_norm_figure(grad) if isinstance(grad, GradNormRecord) else None
        if c is not None:
            c.key = f"model{i}-total-norm"
            c.title = f"{models[i].name}: total gradient norm (before clipping)"
        return c

    s.figures = draw([(f"total norm of {m.name}", functools.partial(chart, i)) for i, m in enumerate(models)],
                     s.notes)
    s.notes.append(f"The sections below show {models[0].name}; every model's findings are in the verdict, "
                   "named `model: place`.")
    return s


def section_model(ctx: SectionContext) -> Section | None:
    record = ctx.run
    model = record.model
    if model is None and not record.torch_version:
        return None
    s = Section("model", "Model")
    if model is not None:
        if model.class_name:
            s.facts.append(("class", model.class_name))
        s.facts.append(("parameters", fmt_number(model.parameters)))
        share = f" ({100 * model.trainable / model.parameters:.1f}%)" if model.parameters else ""
        s.facts.append(("trainable", fmt_number(model.trainable) + share))
        s.facts.append(("frozen", fmt_number(model.parameters - model.trainable)))
        s.facts.append(("device", model.device))
        s.gist = f"{fmt_number(model.parameters)} parameters, {fmt_number(model.trainable)} trainable"
    if record.torch_version:
        s.facts.append(("torch", record.torch_version))
    s.facts.append(("steps recorded", fmt_number(record.steps)))
    s.facts.append(("backward passes", fmt_number(record.backwards)))
    if record.step_on:
        s.facts.append(("step clock", record.step_on))
    if record.optimizers:
        s.facts.append(("optimizers", ", ".join(record.optimizers)))
    return s


def section_registration(ctx: SectionContext) -> Section | None:
    reg = ctx.run.registration
    if reg is None or not reg.tree:
        return None
    rows = []
    flagged = 0
    for node in reg.tree:
        missing = node.unregistered
        flagged += bool(missing)
        shown = node.path.rpartition(".")[2] if node.path else (node.name or "(root)")
        serious = any(u.severity == "error" for u in missing)
        lost = "; ".join(f"{u.attribute}: {u.count} {u.kind}{'s' if u.count != 1 else ''}"
                         + (f", {u.code}" if u.code else "") for u in missing)
        rows.append(Row([Cell(shown, css="mono", title=node.path or "(root)", indent=min(node.depth, 24)),
                         text(node.class_name, mono=True), num(node.own_params), num(node.total_params),
                         num(node.trainable_params), text(lost, mono=True)],
                        css=("flag" if serious else "warn") if missing else ""))
    note = ""
    if len(rows) > MAX_TABLE_ROWS:  # keep every flagged row visible, in tree order
        flagged_ids = {id(r) for r in rows if r.css}
        room = max(0, MAX_TABLE_ROWS - len(flagged_ids))
        head = {id(r) for r in rows[:room]}
        rows = [r for r in rows if id(r) in head or id(r) in flagged_ids]
        note = f"Showing {len(rows):,} of {len(reg.tree):,} modules (every flagged one); all are in the JSON record."
    s = Section("registration", "Registration",
                gist=f"{len(reg.tree):,} modules" + (f", {flagged} holding unregistered modules, parameters "
                                                     "or tensors" if flagged else ", all registered"))
    s.tables.append(Table("registration", ["module", "class", "own parameters", "parameters", "trainable",
                                           "not registered (attribute: what, code)"], rows, "Module tree", note))
    s.notes.append("Marked rows hold submodules, parameters or tensors in plain attributes or containers: "
                   "parameters(), .to(), state_dict() and the optimizer do not see them.")
    s.related = ctx.related(REGISTRATION_CODES)
    return s


def section_curves(ctx: SectionContext) -> Section | None:
    from gradscope.reports import figures as F

    curves = ctx.run.curves
    if curves is None or not curves.epoch:
        return None
    s = Section("curves", "Loss and accuracy")
    s.figures = draw([("curves figure", functools.partial(F.curves_figure, curves))], s.notes)
    columns = (curves.train_loss, curves.train_accuracy_percent, curves.test_loss, curves.test_accuracy_percent)
    rows = []
    for i, e in enumerate(curves.epoch):
        rows.append(Row([Cell("before training" if e == -1 else str(e), sort=str(e), css="num")]
                        + [num(c[i] if i < len(c) else None) for c in columns]))
    s.tables.append(Table("curves", ["epoch", "train loss", "train accuracy %", "test loss",
                                     "test accuracy %"], rows, "Per epoch"))
    acc = curves.last(curves.test_accuracy_percent)
    if acc is not None:
        # a run that stopped before its first evaluation after training has only the one before it
        label = "test accuracy before training" if curves.epoch[-1:] == [-1] else "final test accuracy"
        s.gist = f"{label} {fmt_number(acc)}%"
    s.related = ctx.related(CURVE_CODES)
    return s


def section_other(ctx: SectionContext) -> Section | None:
    """Probes this gradscope does not know (a user's probe, a newer version's): shown as data."""
    unknown = {k: v for k, v in ctx.run.other_probes.items() if v not in (None, {}, [])}
    if not unknown:
        return None
    s = Section("other", "Other probes", gist=", ".join(sorted(unknown)), open=False)
    for name, value in sorted(unknown.items()):
        body = json.dumps(clean(value), indent=1, default=str)
        if len(body) > MAX_BLOCK_CHARS:
            body = body[:MAX_BLOCK_CHARS] + f"\n… ({len(body):,} characters in all; the rest is in the record)"
        s.blocks.append((name, body))
    return s


def section_lint(ctx: SectionContext) -> Section | None:
    lint = ctx.run.lint
    if lint is None:
        return None
    views = finding_views(lint)
    source = ctx.run.run.file if ctx.run.run else ""
    if not views and (not source or source.startswith("<")):
        return None  # nothing was linted (the built-in model has no file)
    s = Section("lint", "Lint of the training script", gist=f"{len(views)} finding(s)" if views else "clean")
    s.related = views
    s.related_label, s.compact = "Findings:", False
    if not views:
        s.notes.append("The file passed every static check.")
    return s


def section_environment(ctx: SectionContext) -> Section | None:
    env = ctx.run.environment
    if env is None:
        return None
    s = Section("environment", "Environment")
    values = {k: v for k, v in env.to_json().items() if k != "extra"}
    values.update(env.extra)
    s.facts = [(k, "none" if v is None else json_text(v) if isinstance(v, (dict, list)) else fmt_number(v))
               for k, v in values.items()]
    s.gist = " · ".join(f"{k} {values[k]}" for k in ("python", "torch") if values.get(k))
    return s


def section_record(ctx: SectionContext) -> Section:
    s = Section("record", "The record", open=False, download="gradscope-record.json")
    s.facts = [("schema", ctx.run.schema), ("version", str(ctx.run.version))]
    s.notes.append("The run's JSON record is embedded in this page (script element #gradscope-record) "
                   "and can be downloaded with the button below.")
    if ctx.trimmed:
        s.notes.append("Trimmed to keep the page small (the figures above used the full data): "
                       + "; ".join(ctx.trimmed) + ".")
    return s


RunSection = Callable[[SectionContext], "Section | None"]
#: run-level sections before the probe sections, and after them
BEFORE_PROBES: tuple[RunSection, ...] = (section_run, section_models, section_model, section_registration,
                                         section_curves)
AFTER_PROBES: tuple[RunSection, ...] = (section_other, section_lint, section_environment, section_record)
