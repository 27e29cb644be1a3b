"""The ``gradscope_watch`` fixture, run by pytest itself (pytester) on a small test file."""
from __future__ import annotations

from importlib.metadata import entry_points

import pytest

pytest_plugins = ["pytester"]

SPECIMEN = '''
import pytest
import torch
from torch import nn


class ListHeld(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = [nn.Linear(4, 4)]
        self.head = nn.Linear(4, 1)

    def forward(self, x):
        return self.head(torch.relu(self.hidden[0](x)))


def train(model, watch, steps=3):
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    with watch(model, opt) as scope:
        for _ in range(steps):
            loss = nn.functional.mse_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return scope


def test_healthy(gradscope_watch):
    scope = train(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1)), gradscope_watch)
    assert scope.steps == 3


def test_list_of_layers(gradscope_watch):
    train(ListHeld(), gradscope_watch)


@pytest.mark.gradscope(ignore=["GS101"])
def test_list_of_layers_ignored(gradscope_watch):
    train(ListHeld(), gradscope_watch)


def test_never_left(gradscope_watch):
    model = ListHeld()
    scope = gradscope_watch(model, torch.optim.SGD(model.parameters(), lr=0.01))
    scope.__enter__()
'''


def plugin_args() -> list[str]:
    """Load the plugin by name unless its entry point already loads it (once installed)."""
    installed = any(ep.value == "gradscope.pytest_plugin" for ep in entry_points(group="pytest11"))
    return [] if installed else ["-p", "gradscope.pytest_plugin"]


def test_a_test_whose_training_shows_findings_fails(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_specimen=SPECIMEN)
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=3, failed=1, errors=1)   # test_never_left: passed, then its teardown errs
    result.stdout.fnmatch_lines([
        "*test_list_of_layers*",
        "*AssertionError: gradscope found 1 problem at or above 'warning' in ListHeld after 3 steps:*",
        "*GS101 error at ListHeld.hidden:*",
    ])
    # the scope entered and never left is closed and judged when the test ends: an error in teardown
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_never_left*"])


def test_the_bar_comes_from_the_ini_file(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_specimen=SPECIMEN)
    pytester.makeini("[pytest]\ngradscope_fail_on = never\n")
    result = pytester.runpytest(*plugin_args(), "-p", "no:cacheprovider", "-q", "-k", "list_of_layers")
    result.assert_outcomes(passed=2)
