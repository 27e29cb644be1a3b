"""The train/test loop's own findings (GS209, GS506) and its device-side bookkeeping."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from gradscope.loop import FitOptions, check_loss_inputs, evaluate, fit, pinning_finding


def _problem(seed: int = 0) -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 10, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    data = TensorDataset(x, y)
    return (DataLoader(data, batch_size=32, shuffle=True, generator=g),
            DataLoader(data, batch_size=64))


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))


def test_not_learning_is_reported_with_its_suspect() -> None:
    train, test = _problem()
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.0)  # nothing can move
    result = fit(model, train, test, optimizer=optimizer, device="cpu", options=FitOptions(epochs=2))
    gs209 = [f for f in result.findings if f.code == "GS209"]
    assert gs209, [f.code for f in result.findings]
    assert "GS305" in gs209[0].message  # the learning rate of 0 is named as the likeliest suspect


def test_a_learning_run_is_not_reported() -> None:
    train, test = _problem()
    result = fit(_model(), train, test, device="cpu", options=FitOptions(epochs=3, lr=1e-2))
    assert result.status == "completed"
    assert "GS209" not in {f.code for f in result.findings}
    assert result.curves.test_accuracy_percent[-1] > 85.0


def test_curves_equal_a_plain_evaluation() -> None:
    train, test = _problem()
    model = _model()
    result = fit(model, train, test, device="cpu", options=FitOptions(epochs=1, lr=1e-2))
    loss, accuracy = evaluate(model, test, nn.CrossEntropyLoss(), torch.device("cpu"))
    with torch.no_grad():
        x, y = test.dataset.tensors
        plain_acc = 100.0 * float((model(x).argmax(1) == y).float().mean())
    assert result.curves.test_accuracy_percent[-1] == accuracy == plain_acc
    assert result.curves.test_loss[-1] == loss


def test_pinned_memory_on_cuda_only() -> None:
    data = TensorDataset(torch.zeros(4, 2), torch.zeros(4, dtype=torch.long))
    cuda = torch.device("cuda")
    assert pinning_finding(DataLoader(data, pin_memory=False), cuda).code == "GS506"
    assert pinning_finding(DataLoader(data, pin_memory=True), cuda) is None
    assert pinning_finding(DataLoader(data, pin_memory=False), torch.device("cpu")) is None
    assert pinning_finding([(torch.zeros(2), torch.zeros(2))], cuda) is None


def test_loss_input_checks() -> None:
    ce = nn.CrossEntropyLoss()
    logits = torch.randn(8, 3)
    targets = torch.randint(0, 3, (8,))
    assert check_loss_inputs(ce, logits, targets, "m") == []
    assert [f.code for f in check_loss_inputs(ce, logits.softmax(1), targets, "m")] == ["GS501"]
    assert [f.code for f in check_loss_inputs(ce, logits[:, :1], torch.zeros(8, dtype=torch.long), "m")] == ["GS502"]
    assert [f.code for f in check_loss_inputs(ce, logits, targets + 3, "m")] == ["GS502"]
    nll = nn.NLLLoss()
    assert check_loss_inputs(nll, logits.log_softmax(1), targets, "m") == []
    assert [f.code for f in check_loss_inputs(nll, logits.softmax(1), targets, "m")] == ["GS501"]
    bce = nn.BCEWithLogitsLoss()
    assert [f.code for f in check_loss_inputs(bce, torch.randn(8, 2), torch.rand(8, 1), "m")] == ["GS502"]
    assert check_loss_inputs(bce, torch.randn(8, 1), torch.rand(8, 1), "m") == []
