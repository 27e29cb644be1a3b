"""Continual learning with one head per task: at the start of task 2 the script builds a fresh
optimizer (resetting Adam's state between tasks), but builds it *before* adding task 2's head, so
the new head is in no optimizer. It gets gradients at every step of task 2 and never moves.

Modelled on ContinualAI/avalanche#725 and the discussion in ContinualAI/avalanche#1362 (the
optimizer must be re-created or extended with the parameters a new experience adds) and
Qznan/SpanKL#5 ("Does the optimizer reset between tasks?").

``--fixed`` adds the head first, then builds the optimizer.
"""
import argparse

import torch
from torch import nn
from torch.nn import functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="add the new head before rebuilding the optimizer")
parser.add_argument("--steps-per-task", type=int, default=12)
args = parser.parse_args()
torch.manual_seed(0)


class MultiHeadNet(nn.Module):
    def __init__(self, in_features=10, hidden=32):
        super().__init__()
        self.hidden = hidden
        self.body = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.heads = nn.ModuleList()

    def add_head(self, num_classes):
        self.heads.append(nn.Linear(self.hidden, num_classes))

    def forward(self, x, task):
        return self.heads[task](self.body(x))


def task_data(task, n=256):
    g = torch.Generator().manual_seed(task)
    x = torch.randn(n, 10, generator=g)
    y = (x[:, task] + 0.5 * x[:, task + 1] > 0).long()
    return x, y


model = MultiHeadNet()
model.add_head(2)
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for task in range(2):
    if task > 0:  # a new task: a head for its classes, and a fresh optimizer (no stale Adam state)
        if args.fixed:
            model.add_head(2)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        else:
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
            model.add_head(2)
    x, y = task_data(task)
    for step in range(args.steps_per_task):
        i = (step * 32) % 256
        loss = F.cross_entropy(model(x[i:i + 32], task), y[i:i + 32])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"task {task} loss {loss.item():.4f}")
