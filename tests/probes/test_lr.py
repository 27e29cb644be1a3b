"""The learning-rate probe against the optimizers' own param groups, GS308 and GS309 with a specimen
and a healthy twin each, and the patch of ``LRScheduler.__init__`` put back on exit. Also GS307,
the freeze probe's re-reading of the model at flushes: the other run-time check of what the
optimizer holds."""
from __future__ import annotations

import contextlib
import copy
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import lr_scheduler

from gradscope.findings import Finding, Severity
from gradscope.probes.lr import _scheduler_base
from gradscope.records import LrRecord
from gradscope.scope import Scope, watch

Schedule = Callable[[torch.optim.Optimizer], lr_scheduler.LRScheduler]
BASE = _scheduler_base()
BASE_INIT = BASE.__init__


def _setup(lr: float = 0.1) -> tuple[nn.Module, torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = nn.Linear(4, 1)
    return model, torch.optim.SGD(model.parameters(), lr=lr), torch.randn(8, 4, generator=g), \
        torch.randn(8, 1, generator=g)


def _step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    opt.zero_grad()
    F.mse_loss(model(x), y).backward()
    opt.step()


def _lr(scope: Scope) -> LrRecord:
    rec = scope.records["lr"]
    assert isinstance(rec, LrRecord)
    return rec


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


# ---- the recorded learning rates -----------------------------------------------------------------
def test_recorded_rows_are_each_groups_lr_right_before_each_step() -> None:
    model, _, x, y = _setup()
    head = nn.Linear(1, 1)
    opt = torch.optim.SGD([{"params": model.parameters()}, {"params": head.parameters(), "lr": 0.5}], lr=0.1)
    sched = lr_scheduler.LambdaLR(opt, [lambda k: 0.9 ** k, lambda k: 1.0 / (k + 1)])
    seen: list[list[float]] = []
    with watch(model, opt) as scope:
        for _ in range(12):
            opt.zero_grad()
            F.mse_loss(head(model(x)), y).backward()
            seen.append([group["lr"] for group in opt.param_groups])
            opt.step()
            sched.step()
    rec = _lr(scope)
    assert rec.groups == ["SGD#0.0", "SGD#0.1"]
    assert rec.steps == list(range(12))
    assert rec.lr.tolist() == seen
    assert rec.at(5) == seen[5] and rec.at(-1) is None


def test_a_bounded_record_keeps_evenly_spaced_rows() -> None:
    model, opt, x, y = _setup()
    sched = lr_scheduler.ExponentialLR(opt, gamma=0.9)
    seen: list[float] = []
    with watch(model, opt, max_kept_steps=8) as scope:
        for _ in range(40):
            seen.append(opt.param_groups[0]["lr"])
            _step(model, opt, x, y)
            sched.step()
    rec = _lr(scope)
    assert len(rec.steps) <= 8
    assert rec.steps == list(range(0, 40, rec.steps[1]))   # one stride, from step 0
    assert rec.lr[:, 0].tolist() == [seen[s] for s in rec.steps]


# ---- GS308 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("schedule", "collapses"), [
    pytest.param(lambda o: lr_scheduler.StepLR(o, step_size=1, gamma=0.01), True,
                 id="StepLR dividing by 100 at every step collapses"),
    pytest.param(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=30), False,
                 id="a cosine schedule over the whole run does not"),
    pytest.param(lambda o: lr_scheduler.CosineAnnealingLR(o, T_max=29), False,
                 id="a cosine schedule reaching 0 at the last step does not"),
])
def test_gs308(schedule: Schedule, collapses: bool) -> None:
    model, opt, x, y = _setup()
    sched = schedule(opt)
    with watch(model, opt) as scope:
        for _ in range(30):
            _step(model, opt, x, y)
            sched.step()
    found = only(scope.findings, "GS308")
    assert [(f.severity, f.where) for f in found] == ([(Severity.WARNING, "SGD#0.0")] if collapses else [])
    assert only(scope.findings, "GS309") == []
    lrs = _lr(scope).lr[:, 0]
    assert (float((lrs < 0.1 / 1000).mean()) > 0.1) is collapses   # the rule, on the plain numbers


# ---- GS309 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("made_inside", [pytest.param(False, id="created before watch()"),
                                         pytest.param(True, id="created inside the watch block")])
@pytest.mark.parametrize("stepped", [pytest.param(False, id="never stepped"), pytest.param(True, id="stepped")])
def test_gs309(made_inside: bool, stepped: bool) -> None:
    model, opt, x, y = _setup()
    sched = None if made_inside else lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    with watch(model, opt) as scope:
        if sched is None:
            sched = lr_scheduler.CosineAnnealingLR(opt, T_max=100)
        for _ in range(12):
            _step(model, opt, x, y)
            if stepped:
                sched.step()
    found = only(scope.findings, "GS309")
    assert [(f.severity, f.where) for f in found] == ([] if stepped else [(Severity.WARNING, "SGD#0")])
    (state,) = _lr(scope).schedulers
    assert (state.name, state.optimizer, state.stepped, state.steps_watched) == (
        "CosineAnnealingLR", "SGD#0", stepped, 12)
    # plain torch: a scheduler never stepped leaves the learning rate where it started
    assert (opt.param_groups[0]["lr"] == 0.1) is not stepped


def test_gs309_needs_ten_steps_after_the_scheduler_was_found() -> None:
    model, opt, x, y = _setup()
    kept: list[lr_scheduler.LRScheduler] = []   # a scheduler nobody holds is collected: not judged
    with watch(model, opt) as scope:
        for i in range(12):
            if i == 3:
                kept.append(lr_scheduler.StepLR(opt, step_size=5))   # found at step 3: 9 steps watched
            _step(model, opt, x, y)
    (state,) = _lr(scope).schedulers
    assert (state.stepped, state.steps_watched) == (False, 9)
    assert only(scope.findings, "GS309") == []


@pytest.mark.parametrize("made_inside", [pytest.param(False, id="created before watch()"),
                                         pytest.param(True, id="created inside the watch block")])
def test_a_scheduler_of_an_optimizer_that_is_not_watched_is_ignored(made_inside: bool) -> None:
    model, opt, x, y = _setup()
    other = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    schedulers = [] if made_inside else [lr_scheduler.StepLR(other, step_size=1)]
    with watch(model, opt) as scope:
        if made_inside:
            schedulers.append(lr_scheduler.StepLR(other, step_size=1))
        for _ in range(12):
            _step(model, opt, x, y)
    assert _lr(scope).schedulers == [] and only(scope.findings, "GS309") == []


@pytest.mark.parametrize("inside", [pytest.param(False, id="built before watch"),
                                    pytest.param(True, id="built inside the block")])
@pytest.mark.parametrize("stepped", [pytest.param(True, id="stepped"), pytest.param(False, id="never stepped")])
def test_gs309_judges_a_sequential_schedule_as_one_scheduler(inside: bool, stepped: bool) -> None:
    """SequentialLR steps its children itself (a child before its milestone keeps its last_epoch),
    and does not call the base constructor: it is found, and judged alone."""
    model, opt, x, y = _setup()

    def build() -> lr_scheduler.SequentialLR:
        warmup = lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=5)
        return lr_scheduler.SequentialLR(opt, [warmup, lr_scheduler.CosineAnnealingLR(opt, T_max=100)],
                                         milestones=[50])

    sched = None if inside else build()
    with watch(model, opt) as scope:
        if inside:
            sched = build()
        for _ in range(20):
            _step(model, opt, x, y)
            if stepped:
                sched.step()
    assert [s.name for s in _lr(scope).schedulers] == ["SequentialLR"]
    assert [f.where for f in only(scope.findings, "GS309")] == ([] if stepped else ["SGD#0"])


# ---- the patch of LRScheduler.__init__ -----------------------------------------------------------
@pytest.mark.parametrize("raises", [pytest.param(False, id="a block that ends"),
                                    pytest.param(True, id="a block that raises")])
def test_the_scheduler_patch_is_removed_when_the_scope_exits(raises: bool) -> None:
    model, opt, x, y = _setup()
    with pytest.raises(RuntimeError, match="user error") if raises else contextlib.nullcontext():
        with watch(model, opt):
            assert BASE.__init__ is not BASE_INIT
            _step(model, opt, x, y)
            if raises:
                raise RuntimeError("user error")
    assert BASE.__init__ is BASE_INIT
    assert lr_scheduler.StepLR(opt, step_size=1).last_epoch == 0   # schedulers still build


def test_the_patch_stays_while_another_scope_is_open() -> None:
    model, opt, x, y = _setup()
    inner_model = copy.deepcopy(model)
    inner_opt = torch.optim.SGD(inner_model.parameters(), lr=0.1)
    with watch(model, opt) as outer:
        with watch(inner_model, inner_opt):
            _step(inner_model, inner_opt, x, y)
        assert BASE.__init__ is not BASE_INIT   # the outer scope still watches
        sched = lr_scheduler.StepLR(opt, step_size=1)   # made after the inner scope closed, never stepped
        for _ in range(10):
            _step(model, opt, x, y)
    assert BASE.__init__ is BASE_INIT and sched.last_epoch == 0
    assert [s.name for s in _lr(outer).schedulers] == ["StepLR"]
    assert [f.where for f in only(outer.findings, "GS309")] == ["SGD#0"]


def test_a_scope_without_an_optimizer_records_no_learning_rate_and_patches_nothing() -> None:
    model, _, x, y = _setup()
    with watch(model) as scope:
        assert BASE.__init__ is BASE_INIT
        for _ in range(3):
            model.zero_grad()
            F.mse_loss(model(x), y).backward()
    assert "lr" not in scope.records


# ---- GS307: a layer replaced while the optimizer holds the old one --------------------------------
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.body(x)))


def _surgery(replace_at: int | None, *, rebuild: bool = False, flush_every: int = 100
             ) -> tuple[Scope, Net, nn.Linear, torch.Tensor]:
    """Six steps of a classifier whose head is replaced before step ``replace_at`` (None: never);
    ``rebuild``: the optimizer is built again after the surgery and handed to the scope. Returns the
    scope, the model, its first head and the weight of the head in use as it was when it came in."""
    torch.manual_seed(0)
    model = Net()
    old_fc = model.fc
    start = old_fc.weight.detach().clone()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)
    with watch(model, opt, flush_every=flush_every) as scope:
        for step in range(6):
            if step == replace_at:
                model.fc = nn.Linear(8, 2)
                start = model.fc.weight.detach().clone()
                if rebuild:
                    opt = torch.optim.SGD(model.parameters(), lr=0.1)
                    scope.add_optimizer(opt)
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return scope, model, old_fc, start


@pytest.mark.parametrize("flush_every", [pytest.param(100, id="one flush at the end"),
                                         pytest.param(2, id="flushes before and after the surgery")])
def test_gs307_a_replaced_head_still_in_the_optimizer(flush_every: int) -> None:
    scope, model, old_fc, start = _surgery(replace_at=3, flush_every=flush_every)
    (gone,) = only(scope.findings, "GS307")
    assert (gone.severity, gone.where) == (Severity.WARNING, "fc")
    assert "2 parameter(s) of fc (fc.weight, fc.bias) are no longer in the model but still in the optimizer" \
        in gone.message
    (new,) = only(scope.findings, "GS303")
    assert new.where == "fc"
    # plain torch agrees: the optimizer holds the old head and not the new one
    held = {id(p) for group in scope.optimizers[0].param_groups for p in group["params"]}
    assert id(old_fc.weight) in held and id(model.fc.weight) not in held
    assert torch.equal(model.fc.weight, start)   # so the new head never trained


def test_gs307_twin_a_run_without_surgery() -> None:
    scope, _, _, _ = _surgery(replace_at=None)
    assert not {f.code for f in scope.findings} & {"GS303", "GS305", "GS307"}


def test_gs305_is_quiet_for_a_new_head_that_a_rebuilt_optimizer_trains() -> None:
    scope, model, _, start = _surgery(replace_at=3, rebuild=True)
    assert not torch.equal(model.fc.weight, start)   # plain torch: the rebuilt optimizer trained it
    assert only(scope.findings, "GS303") == []
    assert only(scope.findings, "GS305") == []


def test_gs307_is_quiet_once_the_rebuilt_optimizer_replaces_the_old_one() -> None:
    """The documented fix: the old optimizer, never stepped again, no longer says what trains."""
    scope, _, old_fc, _ = _surgery(replace_at=3, rebuild=True)
    held = {id(p) for group in scope.optimizers[0].param_groups for p in group["params"]}
    assert id(old_fc.weight) in held                 # the abandoned optimizer still holds the old head
    assert not {f.code for f in scope.findings} & {"GS303", "GS305", "GS307"}
