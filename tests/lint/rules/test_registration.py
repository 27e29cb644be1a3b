"""GS101: submodules held in a plain list, tuple, dict or set on an nn.Module."""
from __future__ import annotations

import textwrap

import pytest

from gradscope.lint import lint_source

HEADER = """
import torch
from torch import nn
class Block(nn.Module):
    pass
class Net(nn.Module):
    def __init__(self):
        super().__init__()
"""


def lines(body: str) -> list[int]:
    source = HEADER + textwrap.indent(textwrap.dedent(body), " " * 8)
    findings = lint_source(source, "model.py", select={"GS101"})
    return [int(f.where.split(":")[1]) - HEADER.count("\n") for f in findings]


MATCH = {
    "list-comprehension": ("self.layers = [nn.Linear(4, 4) for _ in range(3)]\n", [1]),
    "dict": ("self.heads = {'a': nn.Linear(1, 1), 'b': nn.Linear(1, 1)}\n", [1]),
    "tuple": ("self.pair = (nn.Linear(1, 1), nn.ReLU())\n", [1]),
    "nested": ("self.groups = [[nn.Linear(1, 1)], [nn.Linear(1, 1)]]\n", [1]),
    "list-of-generator-of-file-class": ("self.blocks = list(Block() for _ in range(2))\n", [1]),
    "name-built-by-append": ("""
        layers = []
        for _ in range(3):
            layers.append(nn.Linear(2, 2))
        self.layers = layers
        """, [5]),
    "attribute-appended-to": ("""
        self.blocks = []
        for _ in range(2):
            self.blocks.append(nn.Conv2d(1, 1, 3))
        """, [2]),
    "annotated": ("self.layers: list = [nn.Linear(1, 1)]\n", [1]),
}


@pytest.mark.parametrize(("body", "expected"), MATCH.values(), ids=MATCH.keys())
def test_plain_container_of_submodules_is_found(body: str, expected: list[int]) -> None:
    assert lines(body) == expected


NOT_MATCH = {
    "module-list": "self.layers = nn.ModuleList([nn.Linear(1, 1) for _ in range(3)])\n",
    "module-dict": "self.heads = nn.ModuleDict({'a': nn.Linear(1, 1)})\n",
    "sequential-of-star-list": "self.net = nn.Sequential(*[nn.Linear(1, 1), nn.ReLU()])\n",
    "ints-and-strings": "self.sizes = [1, 2, 3]\nself.names = ('a', 'b')\n",
    "list-fed-to-sequential": """
        layers = []
        layers.append(nn.Linear(2, 2))
        self.net = nn.Sequential(*layers)
        """,
    "module-list-appended": """
        layers = nn.ModuleList()
        layers.append(nn.Linear(2, 2))
        self.layers = layers
        """,
    "references-not-constructors": "self.convs = [m for m in self.modules() if isinstance(m, nn.Conv2d)]\n",
    "unknown-constructor": "self.blocks = [Imported() for _ in range(2)]\n",
}


@pytest.mark.parametrize("body", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_registered_containers_are_not_flagged(body: str) -> None:
    assert lines(body) == []


def test_a_class_that_is_not_a_module_may_hold_a_list_of_modules() -> None:
    src = "from torch import nn\nclass Builder:\n    def __init__(self):\n        self.parts = [nn.Linear(1, 1)]\n"
    assert lint_source(src, "b.py", select={"GS101"}) == []


def test_message_names_the_attribute_and_the_container() -> None:
    (f,) = lint_source(HEADER + "        self.heads = {'a': nn.Linear(1, 1)}\n", "m.py", select={"GS101"})
    assert "self.heads" in f.message and "dict" in f.message and "ModuleDict" in f.hint
