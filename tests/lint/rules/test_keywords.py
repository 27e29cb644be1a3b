"""GS507: a call of a PyTorch function with a keyword its installed signature does not take."""
from __future__ import annotations

import textwrap

import pytest

from gradscope.lint import lint_source


def messages(source: str) -> list[str]:
    return [f.message for f in lint_source(textwrap.dedent(source), "train.py", select={"GS507"})]


def test_the_notes_clip_norm_keyword_is_an_error_with_a_suggestion() -> None:
    src = """
        import torch
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm=1)
        """
    findings = lint_source(textwrap.dedent(src), "train.py")
    assert [f.code for f in findings] == ["GS507"]
    (f,) = findings
    assert f.severity.value == "error"
    assert f.where == "train.py:3:52"  # the keyword itself
    assert "clip_norm" in f.message and "clip_grad_norm_" in f.message
    assert "did you mean max_norm?" in f.message


MATCH = {
    "from-import": ("from torch.nn.utils import clip_grad_norm_\nclip_grad_norm_(p, clip_norm=1.0)\n",
                    "max_norm"),
    "nn-alias": ("import torch.nn as nn\nnn.utils.clip_grad_norm_(p, maxnorm=1)\n", "max_norm"),
    "renamed-import": ("from torch.nn.utils import clip_grad_norm_ as clip\nclip(p, clip_norm=1)\n",
                       "max_norm"),
    "optimizer": ("from torch import optim\noptim.SGD(p, lr=0.1, momentun=0.9)\n", "momentum"),
    "dataloader": ("from torch.utils.data import DataLoader\nDataLoader(ds, batchsize=32)\n",
                   "batch_size"),
    "functional": ("import torch.nn.functional as F\nF.cross_entropy(out, y, label_smooth=0.1)\n",
                   "label_smoothing"),
    "module-constructor": ("import torch\ntorch.nn.Linear(3, 4, biass=False)\n", "bias"),
    "inside-function": ("import torch\ndef f(p):\n    torch.optim.Adam(p, learning_rate=1e-3)\n", "Adam"),
}


@pytest.mark.parametrize(("source", "expected"), MATCH.values(), ids=MATCH.keys())
def test_unknown_keyword_is_found(source: str, expected: str) -> None:
    (message,) = messages(source)
    assert expected in message


NOT_MATCH = {
    "right-keywords": """
        import torch
        from torch.utils.data import DataLoader
        torch.nn.utils.clip_grad_norm_(params, max_norm=1.0, norm_type=2.0)
        torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01)
        DataLoader(ds, batch_size=8, shuffle=True, pin_memory=True)
        """,
    "var-keyword-function": """
        import torchvision
        torchvision.models.resnet18(weights=None, num_classes=3)
        """,
    "shadowed-by-parameter": """
        import torch.nn.functional as F
        def f(F):
            F.cross_entropy(a, b, foo=1)
        """,
    "not-torch": """
        import mylib as F
        F.cross_entropy(a, b, foo=1)
        """,
    "local-function-of-same-name": """
        def clip_grad_norm_(p, clip_norm):
            pass
        clip_grad_norm_(p, clip_norm=1)
        """,
    "rebound-import": """
        from torch.nn.utils import clip_grad_norm_
        clip_grad_norm_ = my_clip
        clip_grad_norm_(p, clip_norm=1)
        """,
    "unknown-receiver-method": """
        optimizer.zero_grad(set_to_none=True)
        """,
    "double-star-only": """
        import torch.nn.functional as F
        F.cross_entropy(a, b, **options)
        """,
    "relative-import": """
        from .utils import clip_grad_norm_
        clip_grad_norm_(p, clip_norm=1)
        """,
}


@pytest.mark.parametrize("source", NOT_MATCH.values(), ids=NOT_MATCH.keys())
def test_accepted_or_unresolvable_keywords_are_not_flagged(source: str) -> None:
    assert messages(source) == []
