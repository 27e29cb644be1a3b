"""``gradscope.testing.assert_healthy``: fails on real mistakes, naming code and place; passes on
the notes' CNN."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.runner import notes_cnn
from gradscope.testing import assert_healthy


class ListHeld(nn.Module):
    """Hidden layers in a plain list: never registered, never trained (GS101)."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = [nn.Linear(8, 8), nn.Linear(8, 8)]  # noqa: GS101 - the mistake under test
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.head(x)


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # negative inputs give NaN


def test_a_list_of_layers_fails_with_the_code_and_the_place() -> None:
    torch.manual_seed(0)
    with pytest.raises(AssertionError) as failure:
        assert_healthy(ListHeld(), example_input=torch.randn(4, 8), target=torch.tensor([0, 1, 2, 0]))
    message = str(failure.value)
    assert "GS101 error at ListHeld.hidden" in message
    assert "nn.ModuleList" in message                   # the fix comes with it


def test_a_model_that_goes_nan_fails_naming_the_module() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), Log(), nn.Linear(16, 3))
    with pytest.raises(AssertionError) as failure:
        assert_healthy(model, torch.randn(4, 20), target=torch.tensor([0, 1, 2, 0]), loss_fn=nn.CrossEntropyLoss())
    message = str(failure.value)
    assert "GS206 error at 1:" in message                # the Log module, where NaN first appeared
    assert "GS205 error at" in message


def test_the_notes_cnn_is_healthy() -> None:
    torch.manual_seed(0)
    model = notes_cnn()
    model.eval()
    found = assert_healthy(model, torch.randn(4, 1, 28, 28), target=torch.randint(0, 10, (4,)), steps=3)
    assert all(f.severity.value == "info" for f in found)
    assert not model.training                            # its mode is put back


def test_severity_and_ignore_decide_what_fails() -> None:
    torch.manual_seed(0)
    found = assert_healthy(ListHeld(), torch.randn(4, 8), ignore=["GS1"], steps=2)   # a prefix
    assert {f.code for f in found} >= {"GS101"}
    with pytest.raises(AssertionError, match="GS101"):
        assert_healthy(ListHeld(), torch.randn(4, 8), severity="error", steps=2)


def test_mistakes_in_the_call_are_explained() -> None:
    with pytest.raises(GradscopeError, match="steps=...\\) must be an integer >= 1"):
        assert_healthy(nn.Linear(2, 1), torch.randn(1, 2), steps=0)
    with pytest.raises(GradscopeError, match="cannot make a loss from a model output of type tuple"):
        assert_healthy(TupleOut(), torch.randn(1, 2), steps=1)


class TupleOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc(x), x
