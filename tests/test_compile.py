"""torch.compile: watching a compiled model keeps it compiled (the default probes read no
changing Python value in a traced hook), records what an eager run records, and says so when the
model was compiled and run before watch() could hook it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gradscope.scope import watch

dynamo = pytest.importorskip("torch._dynamo")
from torch._dynamo.testing import CompileCounter  # noqa: E402

STEPS = 30


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))
    with torch.no_grad():
        model[2].bias[:12] -= 5.0  # most units after the second ReLU never fire: GS207
    return model


def _train(model: nn.Module, compiled: nn.Module | None = None, enter_late: bool = False):  # noqa: ANN202
    run = compiled if compiled is not None else model
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 8, generator=g), torch.randint(0, 3, (32,), generator=g)
    if enter_late:  # the compiled frames exist before the scope's hooks do
        nn.functional.cross_entropy(run(x), y).backward()
        opt.zero_grad()
    with watch(run, opt) as scope:
        for _ in range(STEPS):
            loss = nn.functional.cross_entropy(run(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return scope


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    dynamo.reset()


def test_a_watched_compiled_model_compiles_at_most_twice_and_records_what_eager_records() -> None:
    eager = _train(_model())
    counter = CompileCounter()
    model = _model()
    compiled = _train(model, torch.compile(model, backend=counter))
    assert counter.frame_count <= 2, counter.frame_count  # not once per step, then eager
    a, b = eager.records["grad_norm"], compiled.records["grad_norm"]
    assert b.parameters == a.parameters == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    assert b.parameter_norms.ravel().tolist() == pytest.approx(a.parameter_norms.ravel().tolist(), rel=1e-5)
    assert [(f.code, f.where) for f in compiled.findings] == [(f.code, f.where) for f in eager.findings]
    assert "GS207" in {f.code for f in compiled.findings}
    assert compiled.to_record().distributed.compiled  # type: ignore[union-attr]


def test_no_recompile_after_the_first_sampled_and_unsampled_steps() -> None:
    model = _model()
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 8), torch.randint(0, 3, (16,))

    def step() -> None:
        loss = nn.functional.cross_entropy(compiled(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with watch(compiled, opt, dead_units_every=3):
        step()
        step()  # one sampled (step 0) and one unsampled step compile both variants
        with dynamo.config.patch(error_on_recompile=True):
            for _ in range(8):
                step()


def test_a_model_compiled_and_run_before_watch_gets_a_note_not_dead_units() -> None:
    model = _model()
    scope = _train(model, torch.compile(model, backend="eager"), enter_late=True)
    assert "GS207" not in {f.code for f in scope.findings}
    notes = scope.to_record().notes
    assert any("compiled and ran before watch()" in n for n in notes), notes
