"""An MLP whose hidden blocks are built by a helper and kept in a plain Python list: nn.Module
does not register them, so ``model.parameters()`` (and the optimizer) sees only the output
layer; the hidden blocks run in every forward but never train, and ``.to()``, ``state_dict()``
and ``eval()`` skip them.

Modelled on pytorch/pytorch#715 ("Module: parameters are not included if the module is
initialized in a list") and pytorch/pytorch#38639 ("Difference between using a python list and
nn.ModuleList").

``--fixed`` holds the blocks in an ``nn.ModuleList``.
"""
import argparse

import torch
from torch import nn
from torch.nn import functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="use nn.ModuleList")
args = parser.parse_args()
torch.manual_seed(0)


def block(fan_in, fan_out):
    return nn.Sequential(nn.Linear(fan_in, fan_out), nn.ReLU())


class MLP(nn.Module):
    def __init__(self, sizes=(8, 32, 32), classes=3):
        super().__init__()
        blocks = [block(a, b) for a, b in zip(sizes, sizes[1:])]
        self.blocks = nn.ModuleList(blocks) if args.fixed else blocks
        self.out = nn.Linear(sizes[-1], classes)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.out(x)


g = torch.Generator().manual_seed(0)
x = torch.randn(256, 8, generator=g)
y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()

model = MLP()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for epoch in range(4):
    for i in range(0, 256, 64):
        loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f}")
