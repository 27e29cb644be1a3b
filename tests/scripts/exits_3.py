"""Reads its own sys.argv and exits with code 3."""
import sys

import torch
from torch import nn

from _common import data, mlp

model = mlp()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
x, y = data()
optimizer.zero_grad()
nn.functional.cross_entropy(model(x), y).backward()
optimizer.step()
print("argv:", " ".join(sys.argv[1:]))
sys.exit(3)
