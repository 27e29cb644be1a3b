"""GS508: deprecated PyTorch and torchvision APIs, each with its replacement."""
from __future__ import annotations

import textwrap
import warnings

import pytest
import torch
import torchvision

from gradscope.lint import lint_source


def messages(source: str) -> list[str]:
    return [f.message for f in lint_source(textwrap.dedent(source), "train.py", select={"GS508"})]


def test_the_notes_pretrained_true_is_info_and_names_the_weights_enum() -> None:
    src = "import torchvision\nmodel = torchvision.models.resnet18(pretrained=True)\n"
    findings = lint_source(src, "notes.py")
    assert [f.code for f in findings] == ["GS508"]
    (f,) = findings
    assert f.severity.value == "info"
    assert "weights=ResNet18_Weights.DEFAULT" in f.message


MATCH = {
    "pretrained-false": ("from torchvision import models\nmodels.resnet18(pretrained=False)\n",
                         "weights=None"),
    "pretrained-backbone": (
        "from torchvision.models.detection import fasterrcnn_resnet50_fpn\n"
        "fasterrcnn_resnet50_fpn(weights=None, pretrained_backbone=True)\n",
        "weights_backbone=ResNet50_Weights.DEFAULT"),
    "positional-pretrained": ("import torchvision.models as tvm\ntvm.resnet18(True)\n", "weights="),
    "cuda-amp-grad-scaler": ("import torch\nscaler = torch.cuda.amp.GradScaler()\n",
                             "torch.amp.GradScaler('cuda'"),
    "cuda-amp-autocast": ("from torch.cuda.amp import autocast\nwith autocast():\n    pass\n",
                          "torch.amp.autocast('cuda'"),
    "variable": ("from torch.autograd import Variable\nv = Variable(x)\n", "requires_grad"),
    "clip-grad-norm-without-underscore": ("import torch\ntorch.nn.utils.clip_grad_norm(p, 1.0)\n",
                                          "clip_grad_norm_"),
    "size-average": ("import torch.nn as nn\nnn.CrossEntropyLoss(size_average=False)\n",
                     "reduction='sum'"),
    "reduce": ("import torch.nn.functional as F\nF.mse_loss(a, b, reduce=False)\n", "reduction='none'"),
    "deprecated-decorator": ("from torch.cuda.amp import custom_fwd\n@custom_fwd\ndef f(x):\n    pass\n",
                             "torch.amp.custom_fwd"),
    "deprecated-base-class": ("from torch import nn\nclass Old(nn.Container):\n    pass\n", "nn.Module"),
}


@pytest.mark.parametrize(("source", "replacement"), MATCH.values(), ids=MATCH.keys())
def test_deprecated_api_is_found_and_names_the_replacement(source: str, replacement: str) -> None:
    (message,) = messages(source)
    assert replacement in message


NOT_MATCH = {
    "weights": "import torchvision\ntorchvision.models.resnet18(weights=None)\n",
    "torch-amp": "import torch\ntorch.amp.GradScaler('cuda')\nwith torch.autocast('cuda'):\n    pass\n",
    "reduction": "import torch.nn as nn\nnn.CrossEntropyLoss(reduction='sum')\n",
    "clip-with-underscore": "import torch\ntorch.nn.utils.clip_grad_norm_(p, 1.0)\n",
    "isinstance-of-class-deprecated-on-init": (
        "import torch\nok = isinstance(s, torch.cuda.amp.GradScaler)\n"),
    "user-function-with-pretrained": "def build(pretrained=False):\n    pass\nbuild(pretrained=True)\n",
    "compat-import": (
        "try:\n    from torch.amp import GradScaler\nexcept ImportError:\n"
        "    from torch.cuda.amp import GradScaler\nGradScaler()\n"),
    "torchvision-keyword-only-call": "import torchvision\ntorchvision.models.resnet18(progress=False)\n",
}


@pytest.mark.parametrize("source", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_current_apis_are_not_flagged(source: str) -> None:
    assert messages(source) == []


def test_the_installed_libraries_still_warn_where_the_rule_says_deprecated() -> None:
    """The hand-kept deprecations are checked against the installed torch and torchvision."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.nn.MSELoss(size_average=False)
        torchvision.models.resnet18(pretrained=False)
        torchvision.models.resnet18(False)
    texts = [str(w.message) for w in caught]
    assert any("size_average" in t for t in texts)
    assert any("'pretrained' is deprecated" in t for t in texts)
    assert any("positional" in t for t in texts)
    assert type(torch.autograd.Variable(torch.zeros(1))) is torch.Tensor
