"""Pure tensor functions behind the probes: easy to test against plain autograd, reused by reports."""
from __future__ import annotations

from typing import Sequence

import torch

DeviceDtype = tuple[torch.device, torch.dtype]


def group_by_device_dtype(tensors: Sequence[torch.Tensor]) -> dict[DeviceDtype, list[int]]:
    """Positions of ``tensors`` grouped by (device, dtype), the unit a fused foreach kernel takes."""
    groups: dict[DeviceDtype, list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.device, t.dtype), []).append(i)
    return groups


def foreach_norms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """L2 norm of each tensor (all on one device and dtype) as one float32 vector, no host sync.

    ``torch._foreach_norm`` is one fused kernel on CUDA; asking for float32 keeps half-precision
    gradients from overflowing in the sum of squares.
    """
    if not tensors:
        raise ValueError("foreach_norms needs at least one tensor")
    if tensors[0].dtype in (torch.float16, torch.bfloat16):
        norms = torch._foreach_norm(list(tensors), 2, dtype=torch.float32)
    else:  # float32, or float64 (which cannot be asked for a narrower dtype): cast afterwards
        norms = torch._foreach_norm(list(tensors))
    return torch.stack(norms).to(torch.float32)


def total_norm(norms: torch.Tensor) -> torch.Tensor:
    """The L2 norm of the concatenation, from the norms of the parts (last dimension)."""
    return norms.double().square().sum(dim=-1).sqrt()


def membership_matrix(owner: Sequence[int], groups: int) -> torch.Tensor:
    """A (parts x groups) 0/1 matrix: row i has a 1 in column ``owner[i]``."""
    m = torch.zeros(len(owner), groups, dtype=torch.float64)
    if owner:
        m[torch.arange(len(owner)), torch.tensor(list(owner), dtype=torch.long)] = 1.0
    return m


def combine_norms(norms: torch.Tensor, membership: torch.Tensor | Groups) -> torch.Tensor:
    """Norms of groups of parts: ``sqrt(sum of norms**2)`` per group, over the last dimension.
    ``membership`` is a ``Groups`` (the owner of each part: linear in the parts) or a dense 0/1
    matrix (parts x groups)."""
    squares = norms.double().square()
    if isinstance(membership, Groups):
        return membership.sum(squares).sqrt()
    return (squares @ membership).sqrt()


class Groups:
    """Which group each of n parts belongs to (a parameter's layer), to sum per group in linear
    time and memory: a dense parts x groups matrix of a 10,000-tensor model would be 400 MB."""

    def __init__(self, owner: Sequence[int], groups: int) -> None:
        self.owner = torch.tensor(list(owner), dtype=torch.long)
        self.groups = groups

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """Per group, the sum of ``values`` over the last dimension (one column per part)."""
        out = torch.zeros(*values.shape[:-1], self.groups, dtype=values.dtype)
        return out.index_add_(values.dim() - 1, self.owner, values)


def clip_coefficient(total: torch.Tensor, max_norm: float | torch.Tensor) -> torch.Tensor:
    """The factor ``clip_grad_norm_`` scales gradients by (1.0 when it does not act), with the
    same ``1e-6`` PyTorch adds to the total."""
    return torch.clamp(max_norm / (total + 1e-6), max=1.0)


def update_ratio(delta_norm: torch.Tensor, weight_norm: torch.Tensor) -> torch.Tensor:
    """``||dw|| / ||w||`` per part; NaN where ``||w||`` is 0 (a ratio to nothing is undefined:
    a zero-initialised layer that starts to move has no relative update size)."""
    return torch.where(weight_norm > 0, delta_norm / weight_norm.clamp_min(1e-300),
                       torch.full_like(delta_norm, float("nan")))
