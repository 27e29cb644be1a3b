"""The pure maths behind the probes, checked against plain PyTorch on small tensors."""
from __future__ import annotations

import math

import pytest
import torch

from gradscope.norms import (
    clip_coefficient,
    combine_norms,
    foreach_norms,
    group_by_device_dtype,
    membership_matrix,
    total_norm,
    update_ratio,
)


def _tensors() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [torch.randn(3, 4, generator=g), torch.randn(7, generator=g),
            torch.randn(2, 3, 5, generator=g), torch.randn(1, generator=g)]


def test_group_by_device_dtype_keeps_positions_in_order() -> None:
    ts = [torch.zeros(1), torch.zeros(1, dtype=torch.float64), torch.zeros(2), torch.zeros(1, dtype=torch.float16)]
    groups = group_by_device_dtype(ts)
    cpu = torch.device("cpu")
    assert groups == {(cpu, torch.float32): [0, 2], (cpu, torch.float64): [1], (cpu, torch.float16): [3]}


def test_foreach_norms_equal_tensor_norm() -> None:
    ts = _tensors()
    got = foreach_norms(ts)
    assert got.dtype == torch.float32 and got.shape == (len(ts),)
    torch.testing.assert_close(got, torch.stack([t.norm() for t in ts]), rtol=1e-6, atol=0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16],
                         ids=["float64", "float16", "bfloat16"])
def test_foreach_norms_of_other_dtypes_come_back_as_float32(dtype: torch.dtype) -> None:
    ts = [t.to(dtype) for t in _tensors()]
    got = foreach_norms(ts)
    assert got.dtype == torch.float32
    want = torch.stack([t.double().norm() for t in ts]).float()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0)


def test_foreach_norms_of_half_values_does_not_overflow() -> None:
    # 300**2 * 1000 is far above float16's maximum of 65504: the sum of squares must be float32.
    t = torch.full((1000,), 300.0, dtype=torch.float16)
    got = foreach_norms([t])
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, torch.tensor([300.0 * 1000 ** 0.5]), rtol=1e-3, atol=0)


def test_foreach_norms_rejects_an_empty_list() -> None:
    with pytest.raises(ValueError, match="at least one tensor"):
        foreach_norms([])


def test_total_norm_is_the_norm_of_the_concatenation() -> None:
    ts = _tensors()
    norms = foreach_norms(ts)
    want = torch.cat([t.flatten() for t in ts]).double().norm()
    torch.testing.assert_close(total_norm(norms), want, rtol=1e-6, atol=0)
    torch.testing.assert_close(total_norm(norms).float(), torch.nn.utils.get_total_norm(ts), rtol=1e-6, atol=0)


def test_total_norm_works_row_by_row() -> None:
    rows = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1.0, 0.0]])
    torch.testing.assert_close(total_norm(rows), torch.tensor([5.0, 0.0, 1.0], dtype=torch.float64))


def test_membership_matrix_has_one_one_per_row() -> None:
    m = membership_matrix([0, 0, 2, 1], 3)
    want = torch.tensor([[1, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float64)
    assert torch.equal(m, want)
    assert membership_matrix([], 2).shape == (0, 2)


def test_combine_norms_equal_norms_of_the_concatenated_groups() -> None:
    ts = _tensors()
    owner = [1, 0, 1, 0]
    got = combine_norms(foreach_norms(ts).unsqueeze(0), membership_matrix(owner, 2))[0]
    want = torch.stack([torch.cat([ts[i].flatten() for i in range(len(ts)) if owner[i] == g]).double().norm()
                        for g in range(2)])
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_clip_coefficient_is_the_factor_clip_grad_norm_applies() -> None:
    for max_norm in (0.5, 2.0, 100.0):
        params = [torch.nn.Parameter(torch.zeros_like(t)) for t in _tensors()]
        for p, t in zip(params, _tensors()):
            p.grad = t.clone()
        before = [p.grad.clone() for p in params]
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        coef = clip_coefficient(total, max_norm)
        for p, b in zip(params, before):
            torch.testing.assert_close(p.grad, b * coef, rtol=1e-6, atol=1e-7)
    assert float(clip_coefficient(torch.tensor(1.0), 5.0)) == 1.0


def test_update_ratio_with_zero_weights_is_undefined() -> None:
    d = torch.tensor([0.1, 0.0, 0.5, 0.0])
    w = torch.tensor([10.0, 2.0, 0.0, 0.0])
    got = update_ratio(d, w).tolist()
    assert got[:2] == pytest.approx([0.01, 0.0])
    assert math.isnan(got[2]) and math.isnan(got[3])  # a ratio to a zero weight has no size
