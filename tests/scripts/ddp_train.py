"""An unmodified DDP training script, as torchrun would run it (here the ranks meet through a
file store, given on the command line)."""
import argparse

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

parser = argparse.ArgumentParser()
parser.add_argument("--store", required=True)
parser.add_argument("--rank", type=int, required=True)
parser.add_argument("--world", type=int, required=True)
parser.add_argument("--nan-on-rank", type=int, default=-1)
args = parser.parse_args()

dist.init_process_group("gloo", store=dist.FileStore(args.store, args.world), rank=args.rank,
                        world_size=args.world)
torch.manual_seed(0)
model = DistributedDataParallel(nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3)))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
g = torch.Generator().manual_seed(args.rank)
for step in range(6):
    x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
    if step == 3 and args.rank == args.nan_on_rank:
        x[0, 0] = float("nan")
    loss = nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print(f"rank {args.rank} done, loss {loss.item():.4f}")
dist.destroy_process_group()
