"""Freezing and the optimizer (GS301-GS306): a specimen and a healthy twin per code, the freeze
table, the fingerprint, and the ``freeze()`` helper, checked against plain PyTorch."""
from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.findings import Finding, Severity
from gradscope.probes.freeze import FreezeProbe, fingerprint, freeze, frozen_subtrees
from gradscope.scope import watch
from gradscope.textreport import format_freeze_table


def codes(findings: list[Finding]) -> set[str]:
    return {f.code for f in findings}


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def _freeze_probe(scope: Any) -> FreezeProbe:
    probe = scope.get_probe("freeze")
    assert isinstance(probe, FreezeProbe)
    return probe


class Net(nn.Module):
    """A tiny CNN: a backbone with BatchNorm and a linear head called ``fc``."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 6, 6, generator=g), torch.randint(0, 4, (4,), generator=g)


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int = 3, *,
          set_to_none: bool = True) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for i in range(steps):
        x, y = batch(i)
        opt.zero_grad(set_to_none=set_to_none)
        loss_fn(model(x), y).backward()
        opt.step()


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def unchanged(before: dict[str, torch.Tensor], module: nn.Module, keys: list[str] | None = None) -> bool:
    now = module.state_dict()
    return all(torch.equal(before[k], now[k]) for k in (keys or list(before)))


# --------------------------------------------------------------------------- GS301 + GS303


def test_gs303_gs301_optimizer_built_before_head_replaced() -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)   # built too early
    for p in model.parameters():
        p.requires_grad = False
    model.fc = nn.Linear(8, 4)                          # the new head is in no param group
    head = copy.deepcopy(model.fc.state_dict())
    with watch(model, opt) as scope:
        train(model, opt, 2)
    found = scope.findings
    gs303 = only(found, "GS303")
    assert len(gs303) == 1 and gs303[0].where == "fc" and gs303[0].severity is Severity.ERROR
    assert "fc.weight" in gs303[0].message and "fc.bias" in gs303[0].message
    gs301 = only(found, "GS301")
    # the frozen features never get a gradient, so the optimizer skips them: info, not a warning
    assert len(gs301) == 1 and gs301[0].severity is Severity.INFO
    assert gs301[0].where == "features" and "features.0.weight" in gs301[0].message
    # plain PyTorch agrees: the head got gradients and never moved
    assert model.fc.weight.grad is not None
    assert all(torch.equal(head[k], v) for k, v in model.fc.state_dict().items())


def test_gs303_gs301_twin_freeze_helper_then_optimizer() -> None:
    torch.manual_seed(0)
    model = Net()
    model.fc = nn.Linear(8, 4)
    params = freeze(model, train=["fc"])
    assert [id(p) for p in params] == [id(model.fc.weight), id(model.fc.bias)]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]
    opt = torch.optim.SGD(params, lr=0.1)
    model.eval()  # keep GS304 out of this twin
    with watch(model, opt) as scope:
        train(model, opt, 2)
    assert not codes(scope.findings) & {"GS301", "GS302", "GS303", "GS304", "GS305"}


# --------------------------------------------------------------------------- GS302


def _adamw_then_freeze(set_to_none: bool, frozen_in_optimizer: bool) -> tuple[Net, list[Finding], dict]:
    """One step with everything trainable (AdamW state exists), then freeze the backbone."""
    torch.manual_seed(0)
    model = Net().eval()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    train(model, opt, 1)
    for p in model.features.parameters():
        p.requires_grad = False
    if not frozen_in_optimizer:
        opt = torch.optim.AdamW(model.fc.parameters(), lr=1e-2, weight_decay=0.1)
    before = snapshot(model.features)
    with watch(model, opt) as scope:
        train(model, opt, 3, set_to_none=set_to_none)
    return model, scope.findings, before


def test_gs302_weight_decay_moves_frozen_layer_when_grads_zeroed_in_place() -> None:
    model, found, before = _adamw_then_freeze(set_to_none=False, frozen_in_optimizer=True)
    assert not unchanged(before, model.features)  # plain truth: AdamW moved frozen weights
    gs302 = only(found, "GS302")
    assert len(gs302) == 1 and gs302[0].severity is Severity.ERROR
    assert gs302[0].where == "features" and "features.0.weight" in gs302[0].message
    assert "GS301" in codes(found)


@pytest.mark.parametrize(("set_to_none", "in_optimizer"), [(True, True), (False, False)],
                         ids=["set_to_none", "frozen-out-of-optimizer"])
def test_gs302_twins(set_to_none: bool, in_optimizer: bool) -> None:
    model, found, before = _adamw_then_freeze(set_to_none, in_optimizer)
    assert unchanged(before, model.features)
    assert "GS302" not in codes(found)
    assert ("GS301" in codes(found)) == in_optimizer


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.frozen = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.frozen(x)))


@pytest.mark.parametrize("edit", [True, False], ids=["tiny-inplace-edit", "untouched"])
def test_gs302_fingerprint_sees_tiny_inplace_change(edit: bool) -> None:
    torch.manual_seed(0)
    model = Tiny()
    params = freeze(model, train=["head"])
    opt = torch.optim.SGD(params, lr=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    with watch(model, opt) as scope:
        for step in range(3):
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            if edit and step == 1:
                model.frozen.weight.data[0, 0] += 1e-6
    gs302 = only(scope.findings, "GS302")
    if edit:
        assert len(gs302) == 1 and gs302[0].where == "frozen"
        assert "frozen.weight" in gs302[0].message and "frozen.bias" not in gs302[0].message
        table = {r.module: r for r in _freeze_probe(scope).table()}
        assert table["frozen"].changed == 1 and table["head"].changed == 2
    else:
        assert gs302 == []


def test_fingerprint_matches_plain_sums_and_norms() -> None:
    torch.manual_seed(0)
    tensors = [torch.randn(3, 4), torch.randn(5, dtype=torch.float64),
               torch.randn(2, 2).half(), torch.arange(6)]  # an integer tensor too
    fp = fingerprint(tensors)
    assert fp.shape == (4, 2) and fp.dtype == torch.float64
    for row, t in zip(fp, tensors):
        t64 = t.to(torch.float64)
        assert row[0] == pytest.approx(float(t64.sum()), rel=1e-12, abs=1e-12)
        assert row[1] == pytest.approx(float(t64.norm()), rel=1e-12)
    w = torch.randn(3, 3)
    before = fingerprint([w])
    assert torch.equal(before, fingerprint([w.clone()]))
    w[0, 0] += 1e-6
    assert not torch.equal(before, fingerprint([w]))
    assert fingerprint([]).shape == (0, 2)


@pytest.mark.parametrize("set_to_none", [False, True], ids=["zeroed-in-place", "set-to-none"])
def test_gs302_for_a_layer_frozen_during_the_run(set_to_none: bool) -> None:
    """Gradual freezing: trained for two steps under watch(), then frozen but left in AdamW."""
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    with watch(model, opt) as scope:
        for step in range(5):
            if step == 2:
                for p in model.frozen.parameters():
                    p.requires_grad = False
                before = snapshot(model.frozen)
            opt.zero_grad(set_to_none=set_to_none)
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    moved = not unchanged(before, model.frozen)
    assert moved == (not set_to_none)  # plain truth: only stale zero gradients let AdamW move it
    gs302 = only(scope.findings, "GS302")
    assert bool(gs302) == moved
    if moved:
        assert gs302[0].where == "frozen"


def test_gs302_not_raised_for_parameters_unfrozen_during_the_run() -> None:
    torch.manual_seed(0)
    model = Tiny()
    opt = torch.optim.SGD(freeze(model, train=["head"]), lr=0.1)
    x, y = torch.randn(8, 4), torch.randn(8, 2)
    before = snapshot(model.frozen)
    with watch(model, opt) as scope:
        for step in range(4):
            if step == 2:  # gradual unfreezing
                for p in model.frozen.parameters():
                    p.requires_grad = True
                opt.add_param_group({"params": list(model.frozen.parameters())})
            opt.zero_grad()
            nn.functional.mse_loss(model(x), y).backward()
            opt.step()
    assert not unchanged(before, model.frozen)  # it did train after unfreezing
    assert "GS302" not in codes(scope.findings)


# --------------------------------------------------------------------------- GS304


@pytest.mark.parametrize("backbone_eval", [False, True], ids=["bn-train-mode", "backbone-eval"])
def test_gs304_frozen_backbone_batchnorm_in_train_mode(backbone_eval: bool) -> None:
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(freeze(model, train=["fc"]), lr=0.1)
    model.train()
    if backbone_eval:
        model.features.eval()
    bn = model.features[1]
    mean_before = bn.running_mean.clone()
    with watch(model, opt) as scope:
        train(model, opt, 2)
        with torch.no_grad():  # an evaluation pass is not training: not GS304's business
            model(batch(9)[0])
    gs304 = only(scope.findings, "GS304")
    moved = not torch.equal(mean_before, bn.running_mean)  # plain truth
    assert moved == (not backbone_eval)
    if backbone_eval:
        assert gs304 == []
    else:
        assert len(gs304) == 1 and gs304[0].where == "features"
        assert gs304[0].severity is Severity.WARNING and "2 BatchNorm" in gs304[0].message
        assert scope.records["freeze"].batchnorm_train_in_frozen == ["features.1", "features.4"]


# --------------------------------------------------------------------------- GS305


@pytest.mark.parametrize("head_lr", [0.0, 0.1], ids=["lr-0", "lr-0.1"])
def test_gs305_parameter_group_with_lr_zero(head_lr: float) -> None:
    torch.manual_seed(0)
    model = Net().eval()
    opt = torch.optim.SGD([{"params": model.features.parameters()},
                           {"params": model.fc.parameters(), "lr": head_lr}], lr=0.1)
    head = snapshot(model.fc)
    with watch(model, opt) as scope:
        train(model, opt, 3)
    gs305 = only(scope.findings, "GS305")
    assert unchanged(head, model.fc) == (head_lr == 0.0)  # plain truth
    if head_lr == 0.0:
        assert len(gs305) == 1 and gs305[0].where == "fc"
        assert "fc.weight" in gs305[0].message and "learning rate 0" in gs305[0].message
        assert "3 steps" in gs305[0].message
    else:
        assert gs305 == []


# --------------------------------------------------------------------------- GS306


class WideBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(256, 256)
        self.bn = nn.BatchNorm1d(256)
        self.head = nn.Linear(256, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.bn(self.body(x))))


@pytest.mark.parametrize("train_names", [["bn"], ["bn", "head"]], ids=["only-bn-affine", "bn-and-head"])
def test_gs306_only_batchnorm_affine_parameters_train(train_names: list[str]) -> None:
    torch.manual_seed(0)
    model = WideBN()
    opt = torch.optim.SGD(freeze(model, train=train_names), lr=0.01)
    x, y = torch.randn(8, 256), torch.randint(0, 4, (8,))
    with watch(model, opt) as scope:
        for _ in range(2):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
    gs306 = only(scope.findings, "GS306")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if trainable < 0.01 * total:
        assert len(gs306) == 1 and gs306[0].severity is Severity.INFO
        assert "only BatchNorm affine parameters" in gs306[0].message
        assert f"only {trainable:,} of {total:,}" in gs306[0].message
    else:
        assert train_names == ["bn", "head"] and gs306 == []


# --------------------------------------------------------------------------- the notes' recipe


def test_resnet18_frozen_backbone_new_fc(capsys: pytest.CaptureFixture[str]) -> None:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None)
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(512, 10)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([1, 7])
    model.train()
    with watch(model, opt) as scope:
        for _ in range(2):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        print(scope.freeze_table())
    found = scope.findings
    assert not codes(found) & {"GS301", "GS302", "GS303", "GS305"}
    gs306 = only(found, "GS306")
    assert len(gs306) == 1 and "fc.weight" in gs306[0].message and "5,130 of" in gs306[0].message
    assert "GS304" in codes(found)  # the recipe leaves the frozen BatchNorms in train mode

    rows = {r.module: r for r in _freeze_probe(scope).table()}
    owners = {n.rpartition(".")[0] for n, _ in model.named_parameters()}
    assert set(rows) == owners
    expected = {m: {"trainable": 0, "frozen": 0} for m in owners}
    for n, p in model.named_parameters():
        expected[n.rpartition(".")[0]]["trainable" if p.requires_grad else "frozen"] += p.numel()
    for m, counts in expected.items():
        assert (rows[m].trainable, rows[m].frozen) == (counts["trainable"], counts["frozen"])
    assert rows["fc"].trainable == 5130 and rows["fc"].in_optimizer == 5130
    assert rows["fc"].lr == [1e-3] and rows["fc"].changed == 2
    assert rows["conv1"].frozen == 64 * 3 * 7 * 7 and rows["conv1"].not_in_optimizer == 9408
    assert rows["layer4.1.bn2"].changed == 0 and rows["layer4.1.bn2"].lr == []

    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["module", "trainable", "frozen", "in", "optimizer", "lr", "changed"]
    assert len(printed) == 1 + len(rows)
    by_name = {line.split()[0]: line.split() for line in printed[1:]}
    assert by_name["fc"] == ["fc", "5,130", "0", "all", "0.001", "2/2"]
    assert by_name["conv1"] == ["conv1", "0", "9,408", "none", "-", "0/1"]
    assert scope.freeze_table() == format_freeze_table(_freeze_probe(scope).table())


# --------------------------------------------------------------------------- helpers


def test_freeze_unknown_submodule_is_a_clear_error() -> None:
    model = Net()
    with pytest.raises(GradscopeError) as info:
        freeze(model, train=["head"])
    message = str(info.value)
    assert "'head'" in message and "Net" in message
    assert "features" in message and "fc" in message
    assert all(p.requires_grad for p in model.parameters())  # nothing was frozen on the way


def test_freeze_accepts_a_single_name_and_nested_paths() -> None:
    model = Net()
    assert freeze(model, train="fc") == [model.fc.weight, model.fc.bias]
    params = freeze(model, train=["features.4", "fc"])
    assert [id(p) for p in params] == [id(p) for p in
                                      [*model.features[4].parameters(), *model.fc.parameters()]]
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {
        "features.4.weight", "features.4.bias", "fc.weight", "fc.bias"}
    assert freeze(model) == [] and not any(p.requires_grad for p in model.parameters())


def test_frozen_subtrees_are_the_largest_frozen_modules() -> None:
    model = Net()
    freeze(model, train=["features.4"])
    assert [path for path, _ in frozen_subtrees(model)] == ["features.0", "features.1", "features.3", "fc"]
    freeze(model, train=["fc"])
    assert [path for path, _ in frozen_subtrees(model)] == ["features"]
    freeze(model, train=[""])  # the root: everything trains
    assert frozen_subtrees(model) == []
