"""GS601: a gradient hook registered on every iteration and never removed."""
import torch
from torch import nn

from _common import data, mlp

torch.manual_seed(0)
model = mlp()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = data()
seen = []
for step in range(12):
    model[0].weight.register_hook(lambda g: seen.append(1))
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
