"""Training without an optimizer: a manual update through p.data, as older examples do."""
import torch
from torch import nn

from _common import data, mlp

torch.manual_seed(0)
model = mlp()
x, y = data()
for step in range(7):
    loss = nn.functional.cross_entropy(model(x), y)
    model.zero_grad()
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.data.add_(p.grad, alpha=-0.1)
    print(f"loss {loss.item():.6f}")
