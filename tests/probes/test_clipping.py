"""Clipping analysis (GS401-GS407): a specimen and a healthy twin per code, recorded norms against
plain PyTorch, bitwise-unchanged training, and the observer's patching (every import form, restore
on exit and on exceptions)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import pytest
import torch
import torch.nn.utils.clip_grad as clip_module
from torch import nn
from torch.nn.utils import clip_grad_norm_ as clip_imported_before_watch

from gradscope.findings import Finding, Severity
from gradscope.probes.clipping import ClipProbe
from gradscope.records import ClipCall
from gradscope.scope import watch

STEPS = 6


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(6, 16)
        self.decoder = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.tanh(self.encoder(x)))


def make(lr: float = 0.05, momentum: float = 0.9) -> tuple[MLP, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = MLP()
    return model, torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def loss_of(model: nn.Module, step: int, micro: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 * step + micro)
    x, y = torch.randn(8, 6, generator=g), torch.randn(8, 3, generator=g)
    return nn.functional.mse_loss(model(x), y)


def clip_calls(scope: Any) -> list[ClipCall]:
    rec = scope.records.get("clipping")
    return rec.calls if rec is not None else []


def clip_probe(scope: Any) -> ClipProbe:
    probe = scope.get_probe("clipping")
    assert isinstance(probe, ClipProbe)
    return probe


# --------------------------------------------------------------------------- GS403


@pytest.mark.parametrize("where", ["before-backward", "after-step", "between"])
def test_gs403_clip_with_nothing_fresh_to_clip(where: str) -> None:
    model, opt = make()
    with watch(model, opt) as scope:
        for step in range(3):
            opt.zero_grad()
            loss = loss_of(model, step)
            if where == "before-backward":
                nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # noqa: GS403
            loss.backward()
            if where == "between":
                nn.utils.clip_grad_norm_(model.parameters(), 0.1)
            opt.step()
            if where == "after-step":
                nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # noqa: GS403
    gs403 = only(scope.findings, "GS403")
    if where == "between":
        assert gs403 == []
        return
    assert len(gs403) == 1 and gs403[0].severity is Severity.ERROR
    assert gs403[0].where == "clip_grad_norm_" and "3 time(s)" in gs403[0].message
    expected = "before this step's backward()" if where == "before-backward" else "after optimizer.step()"
    assert expected in gs403[0].message


@pytest.mark.parametrize("before_backward", [False, True], ids=["clip-after-backward", "clip-before-backward"])
def test_gs403_backward_clock(before_backward: bool) -> None:
    """Without an optimizer every backward ends a step: a clip after it is still fresh."""
    model, opt = make()
    with watch(model) as scope:
        for step in range(3):
            opt.zero_grad()
            loss = loss_of(model, step)
            if before_backward:  # (clip_grad_value_ itself fails on no gradients at all)
                nn.utils.clip_grad_norm_(model.parameters(), 0.1)  # noqa: GS403
            loss.backward()
            if not before_backward:
                nn.utils.clip_grad_value_(model.parameters(), 0.1)
            opt.step()
    assert scope.steps == 3
    gs403 = only(scope.findings, "GS403")
    if before_backward:
        assert len(gs403) == 1 and gs403[0].where == "clip_grad_norm_"
        assert "at step 0 (1 time(s) in all)" in gs403[0].message
    else:
        assert gs403 == []


# --------------------------------------------------------------------------- GS404


@pytest.mark.parametrize("nan_step", [2, None], ids=["nan-grad", "finite"])
def test_gs404_nonfinite_norm_at_clip_time(nan_step: int | None) -> None:
    model, opt = make()
    with watch(model, opt) as scope:
        for step in range(4):
            opt.zero_grad()
            loss = loss_of(model, step)
            if step == nan_step:
                loss = loss * torch.tensor(float("nan"))
            loss.backward()
            total = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
    assert torch.isnan(total) == (nan_step is not None)  # plain truth
    gs404 = only(scope.findings, "GS404")
    if nan_step is None:
        assert gs404 == []
    else:
        assert len(gs404) == 1 and gs404[0].severity is Severity.ERROR
        assert f"at step {nan_step}" in gs404[0].message and "2 call(s)" in gs404[0].message


# --------------------------------------------------------------------------- GS401 / GS402


def _alternating_run(max_norm: float, steps: int = 8) -> Any:
    """Odd steps have a 100x larger loss: their norms are about 100x the even steps' ones."""
    model, opt = make(lr=1e-3, momentum=0.0)
    with watch(model, opt) as scope:
        for step in range(steps):
            opt.zero_grad()
            (loss_of(model, 0) * (1.0 if step % 2 == 0 else 100.0)).backward()
            nn.utils.clip_grad_norm_(model.parameters(), max_norm)
            opt.step()
    return scope


def _base_norm() -> float:
    model, _ = make()
    loss_of(model, 0).backward()
    return float(nn.utils.get_total_norm([p.grad for p in model.parameters()]))


@pytest.mark.parametrize("kind", ["tiny", "huge", "between"])
def test_gs401_gs402_clip_rate(kind: str) -> None:
    base = _base_norm()
    max_norm = {"tiny": 1e-6, "huge": 1e6, "between": 10 * base}[kind]
    scope = _alternating_run(max_norm)
    found = scope.findings
    fraction = scope.records["clipping"].summary.clipped_fraction
    if kind == "tiny":
        assert fraction == 1.0
        gs401 = only(found, "GS401")
        assert len(gs401) == 1 and gs401[0].severity is Severity.WARNING
        assert "100% of 8 steps" in gs401[0].message and "GS402" not in codes(found)
    elif kind == "huge":
        assert fraction == 0.0
        gs402 = only(found, "GS402")
        assert len(gs402) == 1 and gs402[0].severity is Severity.INFO
        assert "GS401" not in codes(found)
    else:
        assert fraction == 0.5
        assert not codes(found) & {"GS401", "GS402"}


def test_gs401_needs_enough_calls() -> None:
    scope = _alternating_run(1e-6, steps=4)
    assert scope.records["clipping"].summary.clipped_fraction == 1.0
    assert not codes(scope.findings) & {"GS401", "GS402"}


# --------------------------------------------------------------------------- GS405


@pytest.mark.parametrize("clip_value", [1e-7, 1e-3, 1e3], ids=["saturating", "partial", "large"])
def test_gs405_value_clipping_saturation(clip_value: float) -> None:
    model, opt = make()
    expected: list[float] = []
    with watch(model, opt) as scope:
        for step in range(3):
            opt.zero_grad()
            loss_of(model, step).backward()
            grads = [p.grad for p in model.parameters()]
            over = sum(int((g.abs() > clip_value).sum()) for g in grads)
            expected.append(over / sum(g.numel() for g in grads))
            nn.utils.clip_grad_value_(model.parameters(), clip_value)
            opt.step()
    recorded = [c.saturated for c in clip_calls(scope)]
    assert recorded == pytest.approx(expected, rel=1e-12)
    gs405 = only(scope.findings, "GS405")
    if sum(expected) / len(expected) > 0.1:
        assert len(gs405) == 1 and gs405[0].where == "clip_grad_value_"
        assert gs405[0].severity is Severity.WARNING
    else:
        assert clip_value == 1e3 and gs405 == []
    if clip_value == 1e-7:
        assert len(gs405) == 1


# --------------------------------------------------------------------------- GS406


@pytest.mark.parametrize("unscale", [False, True], ids=["no-unscale", "unscale-first"])
def test_gs406_clipping_scaled_amp_gradients(unscale: bool) -> None:
    model, opt = make()
    scaler = torch.amp.GradScaler("cpu")
    totals = []
    with watch(model, opt) as scope:
        for step in range(3):
            opt.zero_grad()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_of(model, step)
            scaler.scale(loss).backward()
            if unscale:
                scaler.unscale_(opt)
            totals.append(nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            scaler.step(opt)
            scaler.update()
    assert scope.steps == 3
    found = scope.findings
    gs406 = only(found, "GS406")
    recorded = [c.total_norm for c in clip_calls(scope)]
    assert recorded == [float(t) for t in totals]
    if unscale:
        assert gs406 == [] and max(recorded) < 100
    else:
        assert len(gs406) == 1 and gs406[0].severity is Severity.ERROR
        assert gs406[0].where == "clip_grad_norm_" and "3 time(s)" in gs406[0].message
        assert min(recorded) > 1000  # still multiplied by the scale (65536 at start)
    assert "GS403" not in codes(found)


# --------------------------------------------------------------------------- GS407


@pytest.mark.parametrize("style", ["every-micro-batch", "once-before-step", "once-per-group"])
def test_gs407_clip_after_every_micro_batch(style: str) -> None:
    model, opt = make()
    with watch(model, opt) as scope:
        for step in range(3):
            opt.zero_grad()
            for micro in range(4):
                (loss_of(model, step, micro) / 4).backward()
                if style == "every-micro-batch":
                    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if style == "once-before-step":
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            if style == "once-per-group":  # one clip per part of the model, after the last backward
                nn.utils.clip_grad_norm_(model.encoder.parameters(), 1.0)
                nn.utils.clip_grad_norm_(model.decoder.parameters(), 1.0)
            opt.step()
    assert scope.run.backwards == 12 and scope.steps == 3
    found = scope.findings
    gs407 = only(found, "GS407")
    if style == "every-micro-batch":
        assert len(gs407) == 1 and gs407[0].severity is Severity.WARNING
        assert "3 accumulation step(s)" in gs407[0].message
    else:
        assert gs407 == []
    assert "GS403" not in codes(found)


def test_gs407_with_a_tensor_max_norm() -> None:
    """A tensor threshold is not read (that would sync), but the call is still seen clipping
    between the backward passes of one step."""
    model, opt = make()
    with watch(model, opt) as scope:
        for step in range(3):
            opt.zero_grad()
            for micro in range(4):
                (loss_of(model, step, micro) / 4).backward()
                nn.utils.clip_grad_norm_(model.parameters(), torch.tensor(1.0))
            opt.step()
    gs407 = only(scope.findings, "GS407")
    assert len(gs407) == 1 and "3 accumulation step(s)" in gs407[0].message


# --------------------------------------------------------------------------- recorded norms


def test_recorded_pre_clip_norms_equal_get_total_norm() -> None:
    model, opt = make()
    params = list(model.parameters())
    by_hand: list[torch.Tensor] = []
    per_param: list[list[float]] = []
    with watch(model, opt) as scope:
        for step in range(4):
            opt.zero_grad()
            loss_of(model, step).backward()
            by_hand.append(nn.utils.get_total_norm([p.grad for p in params]))
            per_param.append([float(p.grad.norm()) for p in params])
            returned = nn.utils.clip_grad_norm_(params, 0.5)
            assert torch.equal(returned, by_hand[-1])
            opt.step()
    calls = clip_calls(scope)
    assert [c.total_norm for c in calls] == [float(t) for t in by_hand]  # exact
    assert any(c.acted for c in calls)
    for c in calls:
        assert c.clipped_norm == pytest.approx(min(c.total_norm, 0.5), rel=1e-5)
    grad_norm = scope.records["grad_norm"]
    assert grad_norm.total_norm.tolist() == pytest.approx([float(t) for t in by_hand], rel=1e-6)
    assert grad_norm.parameter_norms.tolist() == [pytest.approx(row, rel=1e-6) for row in per_param]


def _clip_norm(model: nn.Module) -> Any:
    return nn.utils.clip_grad_norm_(model.parameters(), 0.3)


def _clip_value(model: nn.Module) -> Any:
    return nn.utils.clip_grad_value_(model.parameters(), 0.02)


def _clip_split(model: nn.Module) -> Any:
    params = list(model.parameters())
    total = nn.utils.get_total_norm([p.grad for p in params])
    nn.utils.clip_grads_with_norm_(params, 0.3, total)
    return total


def _trajectory(clip: Callable[[nn.Module], Any], watched: bool,
                steps: int = 5) -> tuple[list[Any], list[list[torch.Tensor]], list[torch.Tensor], Any]:
    model, opt = make()
    returned: list[Any] = []
    grads: list[list[torch.Tensor]] = []
    scope = watch(model, opt) if watched else None
    with scope if scope is not None else contextlib.nullcontext():
        for step in range(steps):
            opt.zero_grad()
            loss_of(model, step).backward()
            returned.append(clip(model))
            grads.append([p.grad.clone() for p in model.parameters()])
            opt.step()
    return returned, grads, [p.detach().clone() for p in model.parameters()], scope


@pytest.mark.parametrize("clip", [_clip_norm, _clip_value, _clip_split], ids=["norm", "value", "total+with_norm"])
def test_training_bitwise_identical_with_and_without_watch(clip: Callable[[nn.Module], Any]) -> None:
    ret_a, grads_a, params_a, _ = _trajectory(clip, watched=False)
    ret_b, grads_b, params_b, scope = _trajectory(clip, watched=True)
    for a, b in zip(ret_a, ret_b):
        if a is None:
            assert b is None
        else:
            assert type(a) is type(b) and a.dtype == b.dtype and torch.equal(a, b)
    for step_a, step_b in zip(grads_a, grads_b):
        assert all(torch.equal(a, b) for a, b in zip(step_a, step_b))
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))
    calls = clip_calls(scope)
    assert len(calls) == 5
    acted = [c.acted if c.acted is not None else (c.saturated or 0) > 0 for c in calls]
    assert any(acted)  # the clip really changed gradients in this comparison


# --------------------------------------------------------------------------- patching


IMPORT_FORMS: dict[str, Callable[..., Any]] = {
    "torch.nn.utils": lambda *a: torch.nn.utils.clip_grad_norm_(*a),
    "imported-before-watch": lambda *a: clip_imported_before_watch(*a),
    "torch.nn.utils.clip_grad": lambda *a: torch.nn.utils.clip_grad.clip_grad_norm_(*a),
}


@pytest.mark.parametrize("as_list", [False, True], ids=["generator", "list"])
@pytest.mark.parametrize("form", list(IMPORT_FORMS))
def test_calls_observed_however_imported(form: str, as_list: bool) -> None:
    clip = IMPORT_FORMS[form]
    model, opt = make()
    returned = []
    with watch(model, opt) as scope:
        for step in range(3):
            opt.zero_grad()
            loss_of(model, step).backward()
            params = list(model.parameters()) if as_list else model.parameters()
            returned.append(clip(params, 0.3))
            assert float(nn.utils.get_total_norm([p.grad for p in model.parameters()])) <= 0.3 + 1e-5
            opt.step()
    calls = clip_calls(scope)
    assert [c.kind for c in calls] == ["norm"] * 3
    assert [c.total_norm for c in calls] == [float(r) for r in returned]
    assert "GS403" not in codes(scope.findings)


def test_one_observed_call_per_user_call() -> None:
    model, opt = make()
    with watch(model, opt) as scope:
        for step in range(STEPS):
            opt.zero_grad()
            loss_of(model, step).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.3)  # calls _clip_grads_with_norm_ inside
            if step == 0:
                total = nn.utils.get_total_norm([p.grad for p in model.parameters()])
                nn.utils.clip_grads_with_norm_(model.parameters(), 0.3, total)
            opt.step()
    kinds = [c.kind for c in clip_calls(scope)]
    assert kinds == ["norm", "with_norm"] + ["norm"] * (STEPS - 1)


def test_empty_generator_still_warns_like_pytorch() -> None:
    model, opt = make()
    with pytest.warns(UserWarning, match="empty generator") as plain:
        nn.utils.clip_grad_norm_((p for p in []), 1.0)
    with watch(model, opt):
        with pytest.warns(UserWarning, match="empty generator") as watched:
            total = nn.utils.clip_grad_norm_((p for p in []), 1.0)
    assert [str(w.message) for w in watched] == [str(w.message) for w in plain]
    assert torch.equal(total, torch.tensor(0.0))


def _wrapped_functions() -> dict[str, Any]:
    out = {}
    for name in ("clip_grad_norm_", "clip_grad_value_", "_clip_grads_with_norm_"):
        wrapper = getattr(clip_module, name)
        cell = wrapper.__closure__[wrapper.__code__.co_freevars.index("func")]
        out[name] = cell.cell_contents
    return out


@pytest.mark.parametrize("raises", [False, True], ids=["normal-exit", "exception"])
def test_patches_restored_on_exit(raises: bool) -> None:
    inner = _wrapped_functions()
    public = (torch.nn.utils.clip_grad_norm_, torch.nn.utils.clip_grad_value_,
              torch.nn.utils.clip_grads_with_norm_)
    scale = torch.amp.GradScaler.__dict__["scale"]
    model, opt = make()
    scope = watch(model, opt)
    with contextlib.suppress(RuntimeError):
        with scope:
            patched = _wrapped_functions()
            assert all(patched[k] is not inner[k] for k in inner)
            assert torch.amp.GradScaler.__dict__["scale"] is not scale
            opt.zero_grad()
            loss_of(model, 0).backward()
            nn.utils.clip_grad_norm_(model.parameters(), 0.3)
            if raises:
                raise RuntimeError("user error inside the block")
            opt.step()
    after = _wrapped_functions()
    assert all(after[k] is inner[k] for k in inner)
    assert torch.amp.GradScaler.__dict__["scale"] is scale
    assert (torch.nn.utils.clip_grad_norm_, torch.nn.utils.clip_grad_value_,
            torch.nn.utils.clip_grads_with_norm_) == public
    seen = len(clip_calls(scope))
    assert seen == 1
    # after exit, nothing is observed any more
    loss_of(model, 1).backward()
    nn.utils.clip_grad_norm_(model.parameters(), 0.3)
    nn.utils.clip_grad_value_(model.parameters(), 0.3)
    clip_imported_before_watch(model.parameters(), 0.3)
    assert clip_probe(scope).calls == [] and len(clip_calls(scope)) == seen
    assert clip_probe(scope).misplaced == []


def test_plain_function_without_wrapper_is_patched_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where a torch version exposes a clip function without the no-grad wrapper, the module
    attributes are swapped instead, and put back on exit."""
    inner = _wrapped_functions()["clip_grad_value_"]

    def plain_clip_grad_value_(parameters: Any, clip_value: float, foreach: bool | None = None) -> None:
        with torch.no_grad():
            return inner(parameters, clip_value, foreach)

    monkeypatch.setattr(clip_module, "clip_grad_value_", plain_clip_grad_value_)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_", plain_clip_grad_value_)
    model, opt = make()
    with watch(model, opt) as scope:
        assert torch.nn.utils.clip_grad_value_ is not plain_clip_grad_value_
        opt.zero_grad()
        loss_of(model, 0).backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1e-7)
        opt.step()
    assert clip_module.clip_grad_value_ is plain_clip_grad_value_
    assert torch.nn.utils.clip_grad_value_ is plain_clip_grad_value_
    calls = clip_calls(scope)
    assert [c.kind for c in calls] == ["value"] and calls[0].saturated == 1.0
    assert all(float(p.grad.abs().max()) == pytest.approx(1e-7) for p in model.parameters())


# ---- GradScaler-skipped steps and norm measurements -------------------------------------------------
def test_clipping_once_per_step_with_skipped_amp_steps_is_not_per_micro_batch() -> None:
    """A GradScaler skips the optimizer's step on an overflow (its step hooks never run); the clip of
    the next iteration belongs to that iteration, not to an accumulation."""
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    skipped = 0
    with watch(model, opt) as scope:
        for step in range(6):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(model(x), y)
            if step in (1, 3):
                loss = loss * float("inf")   # an overflow: the scaler skips this step
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            before = scaler.get_scale()
            scaler.step(opt)
            scaler.update()
            skipped += scaler.get_scale() < before
    assert skipped == 2                       # plain torch: two steps were skipped
    assert only(scope.findings, "GS407") == []


def test_a_norm_measured_with_an_infinite_max_norm_is_no_clipping() -> None:
    """``clip_grad_norm_(params, inf)`` returns the norm and clips nothing (HF with max_grad_norm=0)."""
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    with watch(model, opt) as scope:
        for _ in range(STEPS):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            nn.utils.clip_grad_norm_(model.parameters(), float("inf"))
            opt.step()
    assert not codes(scope.findings) & {"GS401", "GS402"}
