"""GS701 (DistributedDataParallel's forward never ran) and GS702 (replicas drifted apart): the
replicas judge on hand-built records (no process group, no torch, milliseconds)."""
from __future__ import annotations

import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges.replicas import judge_replicas
from gradscope.records import ModelInfo, ReplicasRecord, RunRecord
from gradscope.thresholds import Thresholds

ROOT = "Net"


def judge(rec: ReplicasRecord) -> list[Finding]:
    run = RunRecord(model=ModelInfo(class_name=ROOT), steps=rec.backwards, backwards=rec.backwards,
                    optimizers=["SGD"], probes={"replicas": rec})
    return judge_replicas(rec, run, Thresholds())


@pytest.mark.parametrize("rec", [
    pytest.param(ReplicasRecord(ddp=True, wrapper_forwards=20, backwards=20, checks=2),
                 id="DDP whose wrapper ran every forward, replicas equal"),
    pytest.param(ReplicasRecord(ddp=True, wrapper_forwards=0, backwards=0, checks=0),
                 id="DDP with no backward pass yet"),
    pytest.param(ReplicasRecord(ddp=False, wrapper_forwards=0, backwards=20, checks=2),
                 id="replicas compared without DDP, all equal"),
    pytest.param(ReplicasRecord(ddp=True, wrapper_forwards=1, backwards=20, checks=2),
                 id="one forward through the wrapper is enough"),
])
def test_healthy_replicas_have_no_finding(rec: ReplicasRecord) -> None:
    assert judge(rec) == []


def test_gs701_backward_passes_with_no_forward_through_the_wrapper() -> None:
    (f,) = judge(ReplicasRecord(ddp=True, wrapper_forwards=0, backwards=12, checks=1))
    assert (f.code, f.severity, f.where) == ("GS701", Severity.ERROR, ROOT)
    assert f.message.startswith("12 backward pass(es) ran but DistributedDataParallel's forward never did")
    assert "model.module(x)" in f.message


def test_gs701_needs_a_ddp_wrapper() -> None:
    assert judge(ReplicasRecord(ddp=False, wrapper_forwards=0, backwards=12)) == []


def test_gs702_names_the_drifted_parameters_and_the_flush() -> None:
    (f,) = judge(ReplicasRecord(ddp=True, wrapper_forwards=10, backwards=10, checks=3,
                                drifted=["fc.weight", "fc.bias"], first_drift_step=99))
    assert (f.code, f.severity, f.where) == ("GS702", Severity.ERROR, "fc.weight, fc.bias")
    assert f.message.startswith("2 parameter tensor(s) differ between ranks (first seen at the flush of step 99)")


def test_gs702_shortens_a_long_list_in_where() -> None:
    names = [f"layers.{i}.weight" for i in range(6)]
    (f,) = judge(ReplicasRecord(ddp=True, wrapper_forwards=10, backwards=10, checks=1, drifted=names,
                                first_drift_step=9))
    assert f.where == "layers.0.weight, layers.1.weight, layers.2.weight, layers.3.weight and 2 more"
    assert "6 parameter tensor(s) differ" in f.message


def test_gs701_and_gs702_together_for_a_bypassed_wrapper() -> None:
    found = judge(ReplicasRecord(ddp=True, wrapper_forwards=0, backwards=10, checks=1, drifted=["w"],
                                 first_drift_step=9))
    assert [(f.code, f.where) for f in found] == [("GS701", ROOT), ("GS702", "w")]
