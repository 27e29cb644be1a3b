"""Functional dropout hard-wired on: ``F.dropout(x, 0.5, training=True)`` inside ``forward``.
``model.eval()`` does not reach it (only ``nn.Dropout`` modules follow the mode), so the test
accuracy, computed after ``model.eval()`` under ``torch.no_grad()``, is that of a randomly
thinned network and changes from run to run.

Modelled on Coderx7/SimpleNet#2 ("Functional Dropout in evaluation mode": ``F.dropout2d(out, 0.1,
training=True)`` in ``forward``) and pytorch/pytorch#26338 ("Behavior of F.dropout in eval mode").

``--fixed`` passes ``training=self.training``.
"""
import argparse

import torch
from torch import nn
from torch.nn import functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="training=self.training")
args = parser.parse_args()
torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 64)
        self.fc2 = nn.Linear(64, 3)

    def forward(self, x):
        x = F.relu(self.fc1(x))
        x = F.dropout(x, 0.5, training=self.training if args.fixed else True)
        return self.fc2(x)


g = torch.Generator().manual_seed(0)
x = torch.randn(256, 8, generator=g)
y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
model = Net()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for epoch in range(3):
    model.train()
    for i in range(0, 192, 32):
        optimizer.zero_grad()
        F.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(x[192:]).argmax(1) == y[192:]).float().mean().item()
    print(f"epoch {epoch} test accuracy {accuracy:.3f}")
