"""The accelerate scenario: ``train`` is imported by test_accelerate.py for one process, and this
file runs as one gloo rank of the two-rank run (``python accelerate_ranks.py RANK WORLD STORE OUT``).

The ranks meet through a ``FileStore`` (no port). The process group exists before the
``Accelerator``, which then uses it as it is (accelerate only initialises one when none exists).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn


def train(accelerator: Any, plain: bool = False) -> dict[str, Any]:
    """Train with ``accumulate()``, ``accelerator.clip_grad_norm_`` at the sync steps, under
    ``gradscope.integrations.accelerate.watch`` (or, ``plain``, the documented one-liner)."""
    import gradscope
    from gradscope.integrations import accelerate as gs_accelerate

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=g), 3 * torch.randn(64, 1, generator=g))
    loader = torch.utils.data.DataLoader(data, batch_size=4)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scope = (gradscope.watch(accelerator.unwrap_model(model), optimizer.optimizer) if plain
             else gs_accelerate.watch(accelerator, model, optimizer))
    returned: list[float] = []
    with scope:
        for x, y in loader:
            with accelerator.accumulate(model):       # no_sync on the micro-batches that do not step
                loss = nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    returned.append(float(accelerator.clip_grad_norm_(model.parameters(), 0.1)))
                optimizer.step()
                optimizer.zero_grad()
    record = scope.to_record()
    grad = record.probes["grad_norm"]
    return {"totals": grad.total_norm.tolist(), "returned": returned, "steps": record.steps,
            "backwards": record.backwards, "parameters": list(grad.parameters),
            "strategy": record.distributed.strategy if record.distributed else "none",
            "clip_calls": record.probes["clipping"].summary.norm_calls}


def main(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from accelerate import Accelerator

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    try:
        result = train(Accelerator(cpu=True, gradient_accumulation_steps=2))
        Path(out).write_text(json.dumps(result), encoding="utf-8")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
