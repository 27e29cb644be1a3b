"""A learning-rate schedule that switches training off: ``StepLR(step_size=5, gamma=0.01)``
stepped every iteration cuts the lr by 100x every 5 steps, so within 20 steps it falls from 0.1
to 1e-7 (a million times lower) and the last three quarters of the run barely move the weights.

Modelled on ustc-time-series/TimeDART#17 ("learning rate decays too fast": the log shows "Current
learning rate: 1.7893e-10" by epoch 258) and shayneobrien/coreference-resolution#22 ("Gamma in the
LR scheduler is too small").

``--fixed`` uses ``gamma=0.5`` (the lr ends 8x lower, as a step schedule should).
"""
import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="gamma 0.5 instead of 0.01")
args = parser.parse_args()
torch.manual_seed(0)

g = torch.Generator().manual_seed(0)
x = torch.randn(640, 10, generator=g)
y = (x[:, 0] - x[:, 1] > 0).long()

model = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 2))
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=5, gamma=0.5 if args.fixed else 0.01)
criterion = nn.CrossEntropyLoss()
for step in range(20):
    i = (step * 32) % 640
    loss = criterion(model(x[i:i + 32]), y[i:i + 32])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    if step % 5 == 4:
        print(f"step {step} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.1e}")
