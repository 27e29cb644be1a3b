"""DDP on 2 gloo ranks with different data per rank: gradscope reads the averaged gradients, so
every rank records the same norms, equal to one process training on the concatenated batch."""
from __future__ import annotations

from pathlib import Path

import pytest

from ranks import flat, spawn

pytestmark = pytest.mark.distributed

VARIANTS = {
    "plain": {},
    "gradient-as-bucket-view": {"gradient_as_bucket_view": True},
    "static-graph": {"static_graph": True},
    "tiny-buckets": {"bucket_cap_mb": 0.0001},
    "no-sync-accumulation": {"micro_batches": 2},
}


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_ddp_norms_are_the_averaged_gradients_and_identical_on_every_rank(variant: str, tmp_path: Path) -> None:
    r0, r1 = spawn("ddp", 2, tmp_path, **VARIANTS[variant])
    assert r0["names"] == ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]  # no "module."
    assert r0["norms"] == r1["norms"]                      # bit for bit on both ranks
    assert flat(r0["norms"]) == pytest.approx(flat(r0["reference"]), rel=1e-6)
    assert r0["distributed"]["world_size"] == 2 and r0["distributed"]["strategy"] == "ddp"
    assert r0["distributed"]["rank"] == 0 and r1["distributed"]["rank"] == 1
    assert "averaged" in r0["distributed"]["reduction"]
    assert r0["collectives_in_steps"] == 0 and r1["collectives_in_steps"] == 0
    # at the flush only: NaN flags and the ranks that saw them, then the weight fingerprints that
    # tell whether the replicas still agree (DDP needs none for the norms)
    assert r0["collectives"] == r1["collectives"] == ["all_reduce", "all_reduce"]
    assert r0["bitwise"] and r1["bitwise"]                 # the training is unchanged


def test_a_read_in_mid_run_on_one_rank_does_not_hang(tmp_path: Path) -> None:
    r0, r1 = spawn("midrun", 2, tmp_path)
    assert r0["seen_mid_run"] == [0, 2, 2]  # what the last flush (every 2 steps) had reduced
    assert r0["norms"] == r1["norms"] and len(r0["steps"]) == 3


def test_a_nan_on_one_rank_is_reported_on_every_rank_with_its_rank(tmp_path: Path) -> None:
    r0, r1 = spawn("nan_rank", 2, tmp_path)
    for r in (r0, r1):
        assert "GS206" in r["findings"], r["findings"]
        assert any("at step 1 on rank 1 (of 2)" in m for m in r["messages"]), r["messages"]
        assert "GS205" in r["findings"]  # the averaged gradient carries it to every rank


@pytest.mark.parametrize("case", ["healthy", "drift", "module"])
def test_replicas_that_drift_apart_or_skip_the_wrapper_are_found(case: str, tmp_path: Path) -> None:
    options = {} if case == "healthy" else {case: True}
    r0, r1 = spawn("replicas", 2, tmp_path, **options)
    for r in (r0, r1):
        codes = set(r["findings"])
        if case == "healthy":
            assert not codes & {"GS701", "GS702"}, r["messages"]
        elif case == "drift":
            assert "GS702" in codes and "GS701" not in codes, r["messages"]
            assert r["where"]["GS702"] == "2.weight"
        else:
            assert "GS701" in codes, r["messages"]
