"""A training script that moves to another folder (its first argument) before it trains."""
import os
import sys

import torch
from torch import nn

from _common import data, mlp

os.chdir(sys.argv[1])
torch.manual_seed(0)
model = mlp()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loss_fn = nn.CrossEntropyLoss()
x, y = data()
for _ in range(3):
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
print("trained in", os.getcwd())
