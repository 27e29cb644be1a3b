"""GS503: optimizer.step() every iteration, zero_grad() never."""
import torch
from torch import nn

from _common import data, mlp

torch.manual_seed(0)
model = mlp()
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
x, y = data()
for step in range(8):
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()  # noqa: GS503
    print(f"loss {loss.item():.6f}")
