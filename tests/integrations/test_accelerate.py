"""accelerate: ``watch()`` on what ``Accelerator.prepare`` returned, with ``accumulate()``,
``no_sync`` (two gloo ranks) and ``accelerator.clip_grad_norm_``."""
from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import pytest
import torch
import torch.distributed as dist

pytest.importorskip("accelerate")

from accelerate import Accelerator  # noqa: E402
from accelerate.state import AcceleratorState, GradientState  # noqa: E402

from gradscope.errors import GradscopeError  # noqa: E402
from gradscope.integrations import accelerate as gs_accelerate  # noqa: E402

RANKS = Path(__file__).with_name("accelerate_ranks.py")
DEADLINE_S = 120.0   # a hang fails the test instead of CI; a healthy run takes a few seconds


@pytest.fixture
def fresh_state() -> Iterator[None]:
    """accelerate keeps its state in process-wide singletons: start and leave them empty."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.mark.parametrize("plain", [False, True], ids=["helper", "unwrap_model and optimizer.optimizer"])
def test_accumulated_steps_and_clip_norms_in_one_process(fresh_state: None, plain: bool) -> None:
    train = runpy.run_path(str(RANKS))["train"]
    result = train(Accelerator(cpu=True, gradient_accumulation_steps=2), plain=plain)
    assert result["steps"] == 8 and result["backwards"] == 16         # 16 micro-batches, 8 updates
    assert result["totals"] == pytest.approx(result["returned"], rel=1e-6)
    assert max(result["totals"]) > 0.1                                # clipped: the norms are pre-clip
    assert result["clip_calls"] == 8
    assert result["parameters"] == ["0.weight", "0.bias", "2.weight", "2.bias"]


@pytest.mark.distributed
@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_ranks_no_sync_accumulation_equals_the_clip_norm_on_both(tmp_path: Path) -> None:
    store = tmp_path / "store"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(RANKS), str(r), "2", str(store), str(tmp_path / f"rank{r}.json")],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env) for r in range(2)]
    deadline = time.monotonic() + DEADLINE_S
    outputs: list[str] = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError("the two accelerate ranks did not finish (a hang):\n"
                             + "\n".join(p.communicate()[0][-3000:] for p in procs)) from None
    failed = [(r, p.returncode, o[-4000:]) for r, (p, o) in enumerate(zip(procs, outputs)) if p.returncode]
    assert not failed, failed
    ranks: list[dict[str, Any]] = [json.loads((tmp_path / f"rank{r}.json").read_text(encoding="utf-8"))
                                   for r in range(2)]
    for result in ranks:
        assert result["strategy"] == "ddp"
        assert result["steps"] == 4 and result["backwards"] == 8       # 8 micro-batches per rank
        assert result["totals"] == pytest.approx(result["returned"], rel=1e-6)
        assert result["parameters"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    # read after DDP's all-reduce: both ranks recorded the same averaged gradient
    assert ranks[0]["totals"] == pytest.approx(ranks[1]["totals"], rel=1e-6)


def test_deepspeed_is_refused_with_the_reason() -> None:
    model = torch.nn.Linear(2, 1)
    accelerator = SimpleNamespace(distributed_type=SimpleNamespace(name="DEEPSPEED"))
    with pytest.raises(GradscopeError, match=r"distributed_type=DEEPSPEED: DeepSpeed \(ZeRO\).*\.grad"):
        gs_accelerate.watch(accelerator, model, torch.optim.SGD(model.parameters(), lr=0.1))


def test_an_optimizer_that_is_no_optimizer_is_named() -> None:
    model = torch.nn.Linear(2, 1)
    with pytest.raises(GradscopeError, match="expected a torch.optim.Optimizer.*got str"):
        gs_accelerate.watch(SimpleNamespace(distributed_type="NO"), model, "adam")
