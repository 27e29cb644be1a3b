"""The replicas probe in one process: a model that is not wrapped in DistributedDataParallel, and
not run over several ranks, gets no replicas record and no GS701/GS702 (the multi-rank cases are
in tests/distributed)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradscope.records import ReplicasRecord
from gradscope.scope import watch


@pytest.mark.parametrize("probes", [pytest.param(None, id="the default probes"),
                                    pytest.param(["replicas"], id="the replicas probe asked for by name")])
def test_a_model_without_ddp_has_no_replicas_record(probes: list[str] | None) -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    with watch(model, opt, probes=probes, flush_every=2) as scope:
        for _ in range(5):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
    assert scope.get_probe("replicas") is not None   # attached, and silent
    assert "replicas" not in scope.records
    record = scope.to_record()
    assert record.probe(ReplicasRecord) is None and record.distributed is None
    assert not {f.code for f in scope.findings} & {"GS701", "GS702"}
