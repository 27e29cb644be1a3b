"""GS507: a call of a PyTorch function with a keyword its installed signature does not take."""
from __future__ import annotations

import ast
import difflib
from typing import Iterator

from gradscope.lint import torch_api
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import SourceFile

CODE = "GS507"


def check(src: SourceFile) -> Iterator[Hit]:
    """A call of a torch/torchvision function or class with a keyword it does not accept.

    Matches: a call whose callee certainly names a torch or torchvision object through the
    file's imports (``torch.nn.utils.clip_grad_norm_``, ``nn.utils.clip_grad_norm_`` after
    ``import torch.nn as nn``, ``clip_grad_norm_`` after ``from torch.nn.utils import
    clip_grad_norm_``, ``torch.optim.Adam``, ``F.cross_entropy``, ``DataLoader``, ``nn.Linear``...)
    and passes ``name=...`` where the installed object's ``inspect.signature`` has no such
    parameter. The message names the keyword, the function and the closest accepted keyword
    (``clip_norm`` -> "did you mean max_norm?").

    Does not match: callees lint cannot pin to torch (methods of unknown objects such as
    ``optimizer.zero_grad(...)``, names bound by anything other than a torch import, relative
    imports, parameters that shadow an import); functions that take ``**kwargs`` (torchvision's
    model builders); objects without a signature Python can read (C builtins like
    ``torch.zeros``); ``**mapping`` arguments (only explicit keywords are checked).
    """
    for node in src.nodes(ast.Call):
        keywords = [k for k in node.keywords if k.arg is not None]
        if not keywords:
            continue
        name = src.qualname(node.func)
        obj = torch_api.resolve(name) if name else None
        if name is None or obj is None or not callable(obj):
            continue
        sig = torch_api.signature(obj)
        if sig is None or torch_api.accepts_any_keyword(sig):
            continue
        accepted = torch_api.keyword_names(sig)
        for keyword in keywords:
            if keyword.arg in accepted:
                continue
            close = difflib.get_close_matches(keyword.arg or "", accepted, n=1, cutoff=0.5)
            short = name.rsplit(".", 1)[-1]
            suggestion = (f"did you mean {close[0]}?" if close
                          else f"it takes {', '.join(accepted) or 'no keywords'}")
            yield Hit(keyword, f"{short}() got the keyword {keyword.arg}=, which {name} does not take "
                               f"in the installed {name.split('.')[0]}: {suggestion} (this call raises "
                               f"TypeError when it runs)",
                      hint=f"{name} takes the keywords: {', '.join(accepted)}.")
