"""A healthy training script: prints its losses, reads --steps from its own argv."""
import argparse

import torch
from torch import nn

from _common import data, mlp

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=12)
args = parser.parse_args()
torch.manual_seed(0)
model = mlp(dropout=0.1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
loss_fn = nn.CrossEntropyLoss()
x, y = data()
for step in range(args.steps):
    model.train()
    loss = loss_fn(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=5.0)
    optimizer.step()
    model.eval()
    with torch.no_grad():
        test_loss = loss_fn(model(x), y)
    print(f"step {step} loss {loss.item():.6f} test {test_loss.item():.6f}")
