"""One rank of a distributed test scenario: ``python worker.py SCENARIO RANK WORLD STORE OUT``.

Each scenario trains a small model under ``gradscope.watch`` and writes what the tests check to
``OUT/rank{RANK}.json``: the recorded gradient norms, and the same quantities computed with
plain autograd on one process over the concatenated batch of every rank (the reference).
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch import nn

import gradscope

STEPS = 3
BATCH = 4
OPTIONS: dict[str, Any] = json.loads(os.environ.get("GRADSCOPE_SCENARIO_OPTIONS", "{}"))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 13), nn.ReLU(), nn.Linear(13, 7), nn.Tanh(), nn.Linear(7, 3))  # odd sizes


def batch(rank: int, step: int, micro: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 * rank + 10 * step + micro)
    return torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 3, generator=g)


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.mse_loss(model(x), y)


def reference(world: int, micro_batches: int = 1) -> list[list[float]]:
    """Per step, per parameter: the gradient norm plain autograd gives on one process."""
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rows = []
    for step in range(STEPS):
        opt.zero_grad()
        for k in range(micro_batches):
            data = [batch(r, step, k) for r in range(world)]
            loss_of(model, torch.cat([d[0] for d in data]), torch.cat([d[1] for d in data])).backward()
        rows.append([float(p.grad.norm()) for p in model.parameters()])
        opt.step()
    return rows


class Collectives:
    """Counts the collectives gradscope itself issues (calls from its own modules)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.saved: dict[str, Any] = {}

    def __enter__(self) -> Collectives:
        for name in ("all_reduce", "all_gather_object", "all_gather", "broadcast"):
            original = getattr(dist, name)
            self.saved[name] = original

            def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
                caller = sys._getframe(1).f_globals.get("__name__", "")
                if caller.startswith("gradscope"):
                    self.calls.append(_name)
                return _original(*args, **kwargs)

            setattr(dist, name, counted)
        return self

    def __exit__(self, *exc: Any) -> None:
        for name, original in self.saved.items():
            setattr(dist, name, original)


def train(model: nn.Module, opt: torch.optim.Optimizer, rank: int, *, micro_batches: int = 1,
          no_sync: Callable[[], Any] | None = None, after_step: Callable[[int], None] | None = None,
          poison: tuple[int, int] | None = None) -> None:
    for step in range(STEPS):
        opt.zero_grad()
        for k in range(micro_batches):
            x, y = batch(rank, step, k)
            if poison == (rank, step):
                x = x.clone()
                x[0, 0] = float("nan")
            if no_sync is not None and k < micro_batches - 1:
                with no_sync():
                    loss_of(model, x, y).backward()
            else:
                loss_of(model, x, y).backward()
        opt.step()
        if after_step is not None:
            after_step(step)


def grad_result(scope: gradscope.Scope) -> dict[str, Any]:
    rec = scope.records["grad_norm"]
    run = scope.to_record()
    return {"names": rec.parameters, "norms": rec.parameter_norms.tolist(), "steps": rec.steps,
            "layers": rec.layers, "findings": [f.code for f in run.findings],
            "distributed": run.distributed.to_json() if run.distributed else None,
            "record": run.to_json()}


# ---- scenarios ------------------------------------------------------------------------------------
def scenario_ddp(rank: int, world: int) -> dict[str, Any]:
    from torch.nn.parallel import DistributedDataParallel as DDP

    kwargs = {k: OPTIONS[k] for k in ("gradient_as_bucket_view", "static_graph", "bucket_cap_mb") if k in OPTIONS}
    micro = int(OPTIONS.get("micro_batches", 1))
    model = DDP(make_model(), **kwargs)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    per_step: list[int] = []
    with Collectives() as comm:
        with gradscope.watch(model, opt, flush_every=1000) as scope:
            train(model, opt, rank, micro_batches=micro, no_sync=model.no_sync if micro > 1 else None,
                  after_step=lambda _s: per_step.append(len(comm.calls)))
    out = grad_result(scope)
    out["collectives_in_steps"] = per_step[-1]
    out["collectives"] = comm.calls
    out["reference"] = reference(world, micro)
    # the same training without gradscope ends with the same weights, bit for bit
    bare = DDP(make_model(), **kwargs)
    bare_opt = torch.optim.SGD(bare.parameters(), lr=0.1)
    train(bare, bare_opt, rank, micro_batches=micro, no_sync=bare.no_sync if micro > 1 else None)
    out["bitwise"] = all(torch.equal(a, b) for a, b in zip(model.parameters(), bare.parameters()))
    return out


def _fsdp2_model(hsdp: bool, world: int) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    mesh = None
    if hsdp:
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (world // 2, 2), mesh_dim_names=("replicate", "shard"))
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def scenario_fsdp2(rank: int, world: int) -> dict[str, Any]:
    hsdp = bool(OPTIONS.get("hsdp"))
    model = _fsdp2_model(hsdp, world)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    per_step: list[int] = []
    with Collectives() as comm:
        with gradscope.watch(model, opt, flush_every=1000) as scope:
            train(model, opt, rank, after_step=lambda _s: per_step.append(len(comm.calls)))
        out = grad_result(scope)
    out["collectives_in_steps"] = per_step[-1]
    out["collectives_in_all"] = len(comm.calls)
    out["groups"] = len({id(g) for g in scope.get_probe("grad_norm").groups})  # type: ignore[union-attr]
    out["reference"] = reference(world)
    out["placements"] = [str(p.placements) for p in model.parameters()]  # type: ignore[attr-defined]
    return out


def scenario_fsdp2_findings(rank: int, world: int) -> dict[str, Any]:
    """Sharded specimens: a frozen layer moved by weight decay (GS302), a trainable one in no
    optimizer (GS303), and a NaN gradient (GS205)."""
    from torch.distributed.fsdp import fully_shard

    model = make_model()
    for p in model[2].parameters():
        p.requires_grad_(False)
    for layer in (model[0], model[2], model[4]):
        fully_shard(layer)
    fully_shard(model)
    # frozen params in the optimizer with weight decay and momentum: weight decay moves them
    # once their gradient is set to zero (set_to_none=False after a first backward would not
    # do it: they never get one); an in-place edit is the other classic way
    opt = torch.optim.SGD([*model[0].parameters(), *model[2].parameters()], lr=0.1, weight_decay=0.1)

    def after(step: int) -> None:
        if step == 1:
            with torch.no_grad():
                for p in model[2].parameters():
                    p.mul_(0.5)  # a frozen layer edited in place (an EMA written into the wrong model)

    with gradscope.watch(model, opt, flush_every=1) as scope:
        train(model, opt, rank, after_step=after, poison=(1, 2))
    return grad_result(scope)


def scenario_fsdp1(rank: int, world: int) -> dict[str, Any]:
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    orig = bool(OPTIONS.get("use_orig_params", True))
    model = FSDP(make_model(), use_orig_params=orig, device_id=torch.device("cpu"))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def after(step: int) -> None:
        pass

    with gradscope.watch(model, opt, flush_every=1000) as scope:
        for step in range(STEPS):
            opt.zero_grad()
            x, y = batch(rank, step)
            loss_of(model, x, y).backward()
            if OPTIONS.get("clip"):
                model.clip_grad_norm_(1e-3)
            opt.step()
    out = grad_result(scope)
    out["reference"] = reference(world)
    return out


def scenario_midrun(rank: int, world: int) -> dict[str, Any]:
    """``scope.records`` and ``scope.findings`` read on rank 0 alone in mid-run must not hang."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = _fsdp2_model(False, world) if OPTIONS.get("fsdp2") else DDP(make_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    seen: list[int] = []

    def after(step: int) -> None:
        if rank == 0:
            seen.append(len(scope.records["grad_norm"].steps))
            _ = scope.findings

    with gradscope.watch(model, opt, flush_every=2) as scope:
        train(model, opt, rank, after_step=after)
    out = grad_result(scope)
    out["seen_mid_run"] = seen
    return out


def scenario_nan_rank(rank: int, world: int) -> dict[str, Any]:
    """A NaN that enters on rank 1 only is reported on every rank, with its rank."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(make_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with gradscope.watch(model, opt, flush_every=1) as scope:
        train(model, opt, rank, poison=(1, 1))
    out = grad_result(scope)
    out["messages"] = [f.message for f in scope.findings]
    return out


def scenario_replicas(rank: int, world: int) -> dict[str, Any]:
    """``drift``: rank 1 edits a weight in place after step 1 (a rank-local EMA or re-init), so the
    replicas no longer agree (GS702). ``module``: the loop calls ``model.module(x)``, so nothing is
    all-reduced (GS701). With neither, the same loop gets neither finding."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    model = DDP(make_model())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    drift, module = bool(OPTIONS.get("drift")), bool(OPTIONS.get("module"))
    with gradscope.watch(model, opt, flush_every=2) as scope:
        for step in range(STEPS):
            opt.zero_grad()
            x, y = batch(rank, step)
            loss_of(model.module if module else model, x, y).backward()
            opt.step()
            if drift and rank == 1 and step == 1:
                with torch.no_grad():
                    model.module[2].weight.mul_(0.5)
    out = grad_result(scope)
    out["where"] = {f.code: f.where for f in scope.findings}
    out["messages"] = [f.message for f in scope.findings]
    return out


def main() -> None:
    scenario, rank, world, store, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", store=dist.FileStore(store, world), rank=rank, world_size=world)
    try:
        result = globals()[f"scenario_{scenario}"](rank, world)
        dist.barrier()
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps(result, default=str), encoding="utf-8")


if __name__ == "__main__":
    main()
