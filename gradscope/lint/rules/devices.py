"""GS505: the result of ``tensor.to(...)``/``.cuda()``/``.cpu()`` thrown away."""
from __future__ import annotations

import ast
from typing import Iterator

from gradscope.lint.roles import Role, role
from gradscope.lint.rules.base import Hit
from gradscope.lint.source import SourceFile

CODE = "GS505"
MOVES = ("to", "cuda", "cpu")


def check(src: SourceFile) -> Iterator[Hit]:
    """A ``.to(...)``, ``.cuda()`` or ``.cpu()`` call whose result is discarded, on a tensor.

    Matches: an expression statement ``r.to(...)``/``r.cuda()``/``r.cpu()`` where the receiver
    ``r`` is known to be a tensor (see ``gradscope.lint.roles``): assigned from a torch tensor
    factory or ``nn.Parameter``, annotated ``torch.Tensor``, a loop variable over a DataLoader
    (``for data, target in loader``), an element of one (``batch[0]``), a ``self.x`` assigned a
    tensor in a module class, or, with no binding evidence at all, a parameter or global named
    ``data``, ``inputs``, ``x``, ``target(s)``, ``labels``, ``images`` or ``batch``.

    Does not match: modules (``model.to(device)`` moves a module in place: anything assigned from
    ``nn.X(...)``, a torchvision builder, a module class of the file, ``self`` in a module);
    unknown receivers, whatever their name (``model``, ``net``, a parameter ``thing``); names
    assigned from a call lint cannot see into (``inputs = tokenizer(...)``); receivers with both
    tensor and module bindings; results that are used (``x = x.to(d)``, ``return x.cuda()``);
    files importing PyTorch Geometric or ``transformers``, whose batches move in place, for
    loop-variable and name evidence.
    """
    for node in src.nodes(ast.Expr):
        if not isinstance(node.value, ast.Call):
            continue
        func = node.value.func
        if not isinstance(func, ast.Attribute) or func.attr not in MOVES:
            continue
        if src.torch_object(func) is not None:   # torch.cuda(...) and friends are not tensor moves
            continue
        if role(src, func.value) is not Role.TENSOR:
            continue
        receiver = src.segment(func.value, 30)
        if isinstance(func.value, (ast.Name, ast.Attribute, ast.Subscript)):
            fix = f"write {receiver} = {receiver}.{func.attr}(...)"
        else:
            fix = "assign the result and use it"
        yield Hit(node, f"{receiver}.{func.attr}(...) returns a moved copy and the result is thrown "
                        f"away: tensors are not moved in place, so the tensor stays where it was; {fix}")
