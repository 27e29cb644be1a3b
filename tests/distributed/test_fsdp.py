"""FSDP2 (DTensor shards, and an HSDP mesh) and FSDP1 on gloo ranks: per-parameter norms of the
whole gradient from local shards, one all-reduce per flush and none inside a step."""
from __future__ import annotations

from pathlib import Path

import pytest

from ranks import flat, spawn

pytestmark = pytest.mark.distributed
NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]


def test_fsdp2_norms_equal_an_unsharded_run_with_no_collective_in_a_step(tmp_path: Path) -> None:
    r0, r1 = spawn("fsdp2", 2, tmp_path)
    assert r0["names"] == NAMES
    assert all("Shard(dim=0)" in p for p in r0["placements"])
    assert r0["norms"] == r1["norms"]
    assert flat(r0["norms"]) == pytest.approx(flat(r0["reference"]), rel=1e-6, abs=1e-9)
    assert r0["collectives_in_steps"] == 0                      # nothing until the scope flushes
    # then one per flush for each kind of sharded statistic, not one per tensor: the norms (one
    # shard group), the update ratios, the freeze fingerprints, and the NaN flags with their ranks
    assert r0["collectives_in_all"] == r0["groups"] + 3 == 4
    assert r0["distributed"]["strategy"] == "fsdp2" and r0["distributed"]["sharded_parameters"] == 6


def test_hsdp_on_a_2x2_mesh_reduces_over_the_shard_dimension_only(tmp_path: Path) -> None:
    results = spawn("fsdp2", 4, tmp_path, hsdp=True)
    assert all("Replicate(), Shard(dim=0)" in p for p in results[0]["placements"])
    for r in results:
        assert r["norms"] == results[0]["norms"]
    assert flat(results[0]["norms"]) == pytest.approx(flat(results[0]["reference"]), rel=1e-6, abs=1e-9)


def test_sharded_specimens_still_get_their_findings(tmp_path: Path) -> None:
    r0, r1 = spawn("fsdp2_findings", 2, tmp_path)
    for r in (r0, r1):
        assert {"GS205", "GS302", "GS303"} <= set(r["findings"]), r["findings"]
    assert r0["findings"] == r1["findings"]


@pytest.mark.parametrize("orig", [True, False], ids=["use-orig-params", "flat-parameters"])
def test_fsdp1_norms(orig: bool, tmp_path: Path) -> None:
    r0, r1 = spawn("fsdp1", 2, tmp_path, use_orig_params=orig)
    assert r0["norms"] == r1["norms"]
    assert r0["distributed"]["strategy"] == "fsdp1"
    if orig:
        assert r0["names"] == NAMES
        assert flat(r0["norms"]) == pytest.approx(flat(r0["reference"]), rel=1e-6, abs=1e-9)
    else:
        # one flat parameter for the whole model: its norm is the total norm of the reference
        assert r0["names"] == ["_flat_param"]
        totals = [sum(x * x for x in row) ** 0.5 for row in r0["reference"]]
        assert [row[0] for row in r0["norms"]] == pytest.approx(totals, rel=1e-6)
        assert any("use_orig_params=True" in n for n in r0["record"]["notes"])


def test_fsdp1_clip_grad_norm_is_seen(tmp_path: Path) -> None:
    r0, _ = spawn("fsdp1", 2, tmp_path, clip=True)
    assert "GS401" not in r0["findings"]  # 3 steps are too few for a rate...
    calls = r0["record"]["probes"]["clipping"]["calls"]
    assert len(calls) == 3 and all(c["acted"] for c in calls)  # ...but every call was observed
