"""A DDP training script (ranks meet through a file store given on the command line, as in
tests/scripts/ddp_train.py) whose training loop calls ``model.module(x)``: the forward bypasses
``DistributedDataParallel.forward``, so the reducer is never prepared, ``backward()`` all-reduces
nothing, and each rank steps on its own local gradient; the replicas silently drift apart.

Modelled on jingyaogong/minimind#854 ("[fix] route RL trainer forward through DDP so gradients
all-reduce", fixing #853: the loss-bearing forward ran through ``.module``) and the discussion in
k2-fsa/icefall#226.

``--fixed`` calls ``model(x)``.
"""
import argparse

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

parser = argparse.ArgumentParser()
parser.add_argument("--store", required=True)
parser.add_argument("--rank", type=int, required=True)
parser.add_argument("--world", type=int, required=True)
parser.add_argument("--fixed", action="store_true", help="forward through the DDP wrapper")
args = parser.parse_args()

dist.init_process_group("gloo", store=dist.FileStore(args.store, args.world), rank=args.rank,
                        world_size=args.world)
torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.fc2 = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


model = DistributedDataParallel(Net())
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
g = torch.Generator().manual_seed(args.rank)  # each rank its own shard of the data
for _ in range(8):
    x, y = torch.randn(16, 6, generator=g), torch.randint(0, 3, (16,), generator=g)
    out = model(x) if args.fixed else model.module(x)
    loss = nn.functional.cross_entropy(out, y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
checksum = sum(p.detach().sum() for p in model.parameters())
print(f"rank {args.rank} done, loss {loss.item():.4f}, weight checksum {checksum.item():.6f}")
dist.destroy_process_group()
