"""GS504: evaluation under no_grad with Dropout still in train mode (no model.eval())."""
import sys

import torch
from torch import nn

from _common import data, mlp

call_eval = "--eval" in sys.argv
torch.manual_seed(0)
model = mlp(dropout=0.5)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = data()
for epoch in range(3):
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    if call_eval:
        model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean().item()
    print(f"epoch {epoch} accuracy {accuracy:.3f}")
