"""GS403: clipping before backward() clips nothing fresh."""
import torch
from torch import nn

from _common import data, mlp

torch.manual_seed(0)
model = mlp()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = data()
for step in range(8):
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)  # noqa: GS403
    loss.backward()
    optimizer.step()
