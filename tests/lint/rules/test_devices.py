"""GS505: a `.to()`/`.cuda()`/`.cpu()` result thrown away on something that is not a module."""
from __future__ import annotations

import textwrap

import pytest

from gradscope.lint import lint_source


def lines(source: str) -> list[int]:
    findings = lint_source(textwrap.dedent(source), "train.py", select={"GS505"})
    return [int(f.where.split(":")[1]) for f in findings]


MATCH = {
    "loader-loop-variable": """
        for data, target in loader:
            data.to(device)
        """,
    "enumerate-loader": """
        for i, (images, labels) in enumerate(train_loader):
            images.cuda()
        """,
    "tensor-factory": """
        import torch
        x = torch.zeros(3)
        x.cuda()
        """,
    "discarded-factory-call": """
        import torch
        torch.randn(2, 3).to("cuda")
        """,
    "tensor-named-parameter": """
        def step(model, inputs, device):
            inputs.to(device)
        """,
    "annotated-tensor-parameter": """
        import torch
        def move(t: torch.Tensor) -> None:
            t.cpu()
        """,
    "subscript-of-batch": """
        for batch in loader:
            batch[0].to(device)
        """,
    "parameter-constructor": """
        import torch.nn as nn
        import torch
        w = nn.Parameter(torch.zeros(3))
        w.to("cuda")
        """,
    "tensor-attribute-of-module": """
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.mask = torch.ones(3)
            def move(self, device):
                self.mask.to(device)
        """,
    "labels-cpu": """
        def report(labels):
            labels.cpu()
        """,
}

NOT_MATCH = {
    "sequential-module": """
        import torch.nn as nn
        model = nn.Sequential(nn.Linear(2, 2))
        model.to(device)
        """,
    "module-class-in-file": """
        from torch import nn
        class Net(nn.Module):
            pass
        net = Net()
        net.cuda()
        """,
    "self-in-module": """
        from torch import nn
        class Net(nn.Module):
            def move(self, device):
                self.to(device)
        """,
    "torchvision-model": """
        import torchvision
        model = torchvision.models.resnet18(weights=None)
        model.to(device)
        """,
    "reassigned-tensor": """
        for data, target in loader:
            data = data.to(device)
            target = target.to(device)
        """,
    "unknown-module-ish-name": """
        def train(model, device):
            model.to(device)
        """,
    "unknown-receiver": """
        def go(thing, device):
            thing.to(device)
        """,
    "tensor-name-bound-to-module": """
        from torch import nn
        x = nn.Linear(1, 1)
        x.to("cuda")
        """,
    "tensor-name-bound-to-opaque-call": """
        inputs = tokenizer("hello", return_tensors="pt")
        inputs.to("cuda")
        """,
    "criterion-is-a-module": """
        import torch.nn as nn
        criterion = nn.CrossEntropyLoss()
        criterion.to(device)
        """,
    "module-moved-in-chain": """
        from torch import nn
        class Net(nn.Module):
            pass
        model = Net().to("cuda")
        model.cpu()
        """,
    "result-used": """
        import torch
        x = torch.zeros(1)
        y = x.to("cuda")
        print(x.cpu())
        def f():
            return x.cuda()
        """,
    "conflicting-bindings": """
        import torch
        from torch import nn
        x = torch.zeros(1)
        x = nn.Linear(1, 1)
        x.to("cuda")
        """,
    "library-with-in-place-to": """
        from torch_geometric.loader import DataLoader
        for data in DataLoader(dataset):
            data.to(device)
        """,
    "other-method-name": """
        for data, target in loader:
            data.detach()
        """,
}


@pytest.mark.parametrize("source", MATCH.values(), ids=MATCH.keys())
def test_discarded_move_of_a_tensor_is_found(source: str) -> None:
    assert len(lines(source)) == 1


@pytest.mark.parametrize("source", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_module_moves_and_used_results_are_not_flagged(source: str) -> None:
    assert lines(source) == []


def test_message_names_the_receiver_and_the_fix() -> None:
    src = "for data, target in loader:\n    data.to(device)\n"
    (f,) = lint_source(src, "t.py", select={"GS505"})
    assert f.where == "t.py:2:5"
    assert "data.to(...)" in f.message and "data = data.to(" in f.message


def test_a_parameter_reassigned_through_moves_keeps_its_name_evidence() -> None:
    src = "def f(inputs, device):\n    inputs = inputs.float()\n    inputs.to(device)\n"
    assert lines(src) == [3]


def test_long_chains_of_rebinding_stay_fast() -> None:
    body = "".join(f"    y = x.float()\n    x = y.to(d{i})\n" for i in range(40))   # x and y refer to each other
    src = "import torch\ndef f(d):\n    x = torch.zeros(1)\n" + body + "    x.cuda()\n"
    assert lines(src) == [len(src.splitlines())]
