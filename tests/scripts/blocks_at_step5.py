"""A training script that blocks after four optimizer steps until a signal arrives.

It prints "blocked after 4 steps" (flushed) first, so that a test signals it only then."""
import time

import torch
from torch import nn

from _common import data, mlp

torch.manual_seed(0)
model = mlp()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
loss_fn = nn.CrossEntropyLoss()
x, y = data()
for step in range(100):
    if step == 4:
        print("blocked after 4 steps", flush=True)
        while True:  # until the signal's KeyboardInterrupt
            time.sleep(0.05)
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
