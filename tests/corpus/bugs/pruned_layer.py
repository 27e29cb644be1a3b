"""Structured pruning in the middle of training: after a few epochs the script keeps the hidden
units of ``fc1`` with the largest weight norms and replaces ``fc1`` and ``fc2`` by smaller
layers holding the surviving weights (``model.fc1 = nn.Linear(...)``), then fine-tunes, with the
optimizer built before the surgery. The new layers are in no optimizer (the optimizer still holds
the old, now unused, parameters): after the prune nothing moves.

Modelled on microsoft/nni#4521 ("The parameters are not updated when the pruned model is
finetuned": ModelSpeedup replaces the layers, the optimizer keeps the outdated parameters;
re-creating the optimizer fixed it) and FasterAI-Labs/fasterai#92 (after a structured prune the
optimizer "held one of eight live parameters").

``--fixed`` builds a new optimizer after the prune.
"""
import argparse

import torch
from torch import nn
from torch.nn import functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="rebuild the optimizer after pruning")
parser.add_argument("--keep", type=int, default=16, help="hidden units kept by the prune")
args = parser.parse_args()
torch.manual_seed(0)


class MLP(nn.Module):
    def __init__(self, hidden=48):
        super().__init__()
        self.fc1 = nn.Linear(20, hidden)
        self.fc2 = nn.Linear(hidden, 4)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


def prune_hidden_units(model, keep):
    """Keep the `keep` hidden units of fc1 with the largest weight norms (and fc2's matching inputs)."""
    idx = model.fc1.weight.norm(dim=1).topk(keep).indices.sort().values
    fc1, fc2 = nn.Linear(model.fc1.in_features, keep), nn.Linear(keep, model.fc2.out_features)
    with torch.no_grad():
        fc1.weight.copy_(model.fc1.weight[idx])
        fc1.bias.copy_(model.fc1.bias[idx])
        fc2.weight.copy_(model.fc2.weight[:, idx])
        fc2.bias.copy_(model.fc2.bias)
    model.fc1, model.fc2 = fc1, fc2


g = torch.Generator().manual_seed(0)
x = torch.randn(256, 20, generator=g)
y = (x[:, :4] * torch.tensor([1.0, -1.0, 0.5, 2.0])).argmax(1)

model = MLP()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
for epoch in range(6):
    if epoch == 3:
        prune_hidden_units(model, args.keep)
        if args.fixed:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for i in range(0, 256, 64):
        loss = F.cross_entropy(model(x[i:i + 64]), y[i:i + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f} hidden {model.fc1.out_features}")
