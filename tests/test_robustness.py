"""Legitimate training code that must neither crash under gradscope nor get false findings."""
from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest
import torch
import torch.nn.utils.clip_grad as clip_module
from torch import nn

from gradscope.scope import watch
from gradscope.script import ScriptWatcher, run_script


def codes(scope) -> set[str]:
    return {f.code for f in scope.findings}


def test_scopes_closed_in_either_order_leave_the_clip_functions_as_they_were() -> None:
    original = clip_module.clip_grad_norm_.__closure__[0].cell_contents
    scale = torch.amp.GradScaler.scale
    a_model, b_model = nn.Linear(3, 1), nn.Linear(3, 1)
    a, b = watch(a_model), watch(b_model)
    a.__enter__()
    b.__enter__()
    a.close()  # first in, first out, as a script's models are closed
    b.close()
    assert clip_module.clip_grad_norm_.__closure__[0].cell_contents is original
    assert torch.amp.GradScaler.scale is scale
    a_model(torch.randn(2, 3)).sum().backward()
    torch.nn.utils.clip_grad_norm_(a_model.parameters(), 1.0)
    clipping = a.get_probe("clipping")
    assert not clipping.calls and not clipping.done  # a closed scope records nothing more


def test_a_gan_clipping_each_half_gets_no_clipping_finding() -> None:
    torch.manual_seed(0)
    g, d = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 3)), nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 1))
    og, od = torch.optim.Adam(g.parameters(), 1e-3), torch.optim.Adam(d.parameters(), 1e-3)
    with watch(g, og) as sg, watch(d, od) as sd:
        for _ in range(8):
            fake = g(torch.randn(8, 2))
            od.zero_grad()
            (d(torch.randn(8, 3)).mean() - d(fake.detach()).mean()).backward()
            torch.nn.utils.clip_grad_norm_(d.parameters(), 1.0)
            od.step()
            og.zero_grad()
            d(fake).mean().backward()
            torch.nn.utils.clip_grad_norm_(g.parameters(), 1.0)
            og.step()
    for scope in (sg, sd):
        assert not codes(scope) & {"GS403", "GS406", "GS407"}, scope.findings
        assert len(scope.records["clipping"].calls) == 8  # its own model's calls only


def test_two_optimizers_each_clipped_before_its_own_step() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    o1, o2 = torch.optim.SGD(m[0].parameters(), 0.01), torch.optim.SGD(m[1].parameters(), 0.01)
    scaler = torch.amp.GradScaler("cpu")
    with watch(m, [o1, o2]) as scope:
        for _ in range(6):
            o1.zero_grad()
            o2.zero_grad()
            scaler.scale(m(torch.randn(4, 3)).sum()).backward()
            scaler.unscale_(o1)  # the AMP recipe: unscale the optimizer whose grads are clipped
            torch.nn.utils.clip_grad_norm_(m[0].parameters(), 100.0)
            scaler.step(o1)
            scaler.unscale_(o2)
            torch.nn.utils.clip_grad_norm_(m[1].parameters(), 100.0)
            scaler.step(o2)
            scaler.update()
    assert not codes(scope) & {"GS403", "GS406", "GS407"}, scope.findings


def test_gradscaler_overflow_at_the_start_is_not_a_fault() -> None:
    """A half-precision output overflows under a 2**16 loss scale until the scaler lowers it."""
    torch.manual_seed(0)

    class Half(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(3, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.half() @ self.l.weight.half().t() + self.l.bias.half()

    m = Half()
    opt = torch.optim.SGD(m.parameters(), 1e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    with watch(m, opt) as scope:
        for _ in range(12):
            opt.zero_grad()
            loss = m(torch.randn(4, 3)).float().sum()
            scaler.scale(loss * 10).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(m.parameters(), 10.0)
            scaler.step(opt)
            scaler.update()
    assert scaler.get_scale() < 2.0 ** 16  # it did overflow and back off
    assert not codes(scope) & {"GS204", "GS205", "GS206", "GS404", "GS407"}, scope.findings


def test_a_backward_that_raises_does_not_stop_the_counting() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 1))
    opt = torch.optim.SGD(m.parameters(), 0.1)

    class Boom(Exception):
        pass

    def boom(_g: torch.Tensor) -> None:
        raise Boom

    with watch(m, opt) as scope:
        for i in range(6):
            opt.zero_grad()
            h = m[0](torch.randn(4, 3))
            if i == 1:
                h.register_hook(boom)  # raises after the output side got its gradients
            try:
                m[1](h).sum().backward()
            except Boom:
                continue
            opt.step()
    assert scope.run.backwards == 5
    assert scope.records["grad_norm"].steps == [0, 1, 2, 3, 4]


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_create_graph_backward_keeps_no_graph_alive() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    opt = torch.optim.SGD(m.parameters(), 0.01)
    refs = []
    with watch(m, opt, flush_every=2) as scope:
        for _ in range(6):
            opt.zero_grad(set_to_none=True)
            out = m(torch.randn(4, 3))
            out.sum().backward(create_graph=True)
            refs.append(weakref.ref(out))
            opt.step()
            for p in m.parameters():
                p.grad = None  # break PyTorch's own create_graph cycle, as its warning advises
        assert not scope.get_probe("grad_norm").groups[0].buffer.requires_grad
    del out
    gc.collect()
    assert [r() is None for r in refs[:-1]] == [True] * 5


def test_a_script_that_first_evaluates_under_inference_mode(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nfrom torch import nn\n"
        "torch.manual_seed(0)\n"
        "m = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))\n"
        "opt = torch.optim.SGD(m.parameters(), 0.1)\n"
        "x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))\n"
        "with torch.inference_mode():\n    m(x)\n"
        "for _ in range(3):\n"
        "    opt.zero_grad()\n    nn.functional.cross_entropy(m(x), y).backward()\n    opt.step()\n")
    result = run_script(script, [], ScriptWatcher())
    assert result.status == "completed", result.error
    assert result.watched[0].scope.steps == 3


def test_locating_a_nan_is_not_an_evaluation_in_train_mode() -> None:
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.d = nn.Linear(3, 3), nn.Dropout(0.1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.d(torch.log(self.a(x)))  # negative inputs give NaN

    m = Net()
    opt = torch.optim.SGD(m.parameters(), 0.1)
    with watch(m, opt) as scope:
        opt.zero_grad()
        m(torch.randn(4, 3)).sum().backward()
        opt.step()
    assert "GS206" in codes(scope)
    assert "GS504" not in codes(scope)


def test_a_dict_output_that_starts_with_an_argmax() -> None:
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.l = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            logits = self.l(x)
            return {"pred": logits.argmax(1), "logits": logits}

    m = Net()
    opt = torch.optim.SGD(m.parameters(), 0.1)
    with watch(m, opt, probes=["timing", "nonfinite", "grad_norm"]) as scope:
        for _ in range(7):
            opt.zero_grad()
            m(torch.randn(4, 3))["logits"].sum().backward()
            opt.step()
    backward = scope.records["timing"].column("backward")
    assert all(ms > 0 for ms in backward)  # the output hook went on the logits


def test_sparse_embedding_without_zero_grad_does_not_crash() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Embedding(10, 4, sparse=True), nn.Flatten(), nn.Linear(8, 2))
    opt = torch.optim.SGD(m.parameters(), 0.1)
    with watch(m, opt) as scope:
        for _ in range(3):
            m(torch.randint(0, 10, (5, 2))).sum().backward()
            opt.step()  # noqa: GS503
    assert "GS503" in codes(scope)
