"""Gradient accumulation that accumulates nothing: ``optimizer.zero_grad()`` runs at the top of
every micro-batch, inside the accumulation loop, so when ``optimizer.step()`` runs every
``accumulation_steps`` micro-batches only the last micro-batch's gradient (divided by
``accumulation_steps``) is left: a quarter of the intended update, from a quarter of the batch.

Modelled on bytetriper/RAE#67 ("train.py: zero_grad is called per microbatch, breaking gradient
accumulation"), pytorch/torchtitan#3575 ("[rl][bug] Fix gradient accumulation zero grad") and
huggingface/accelerate#1299 (``zero_grad()`` at the start of the iteration discards the
accumulated gradient).

``--fixed`` zeroes the gradients once, right after ``optimizer.step()``.
"""
import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="zero_grad once per optimizer step")
parser.add_argument("--accumulation-steps", type=int, default=4)
args = parser.parse_args()
torch.manual_seed(0)

g = torch.Generator().manual_seed(0)
x = torch.randn(512, 16, generator=g)
y = (x[:, :3].sum(1) > 0).long()
loader = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 512, 16)]

model = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 2))
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
accumulation_steps = args.accumulation_steps

for epoch in range(2):
    for i, (inputs, labels) in enumerate(loader):
        if not args.fixed:
            optimizer.zero_grad()
        loss = criterion(model(inputs), labels) / accumulation_steps
        loss.backward()
        if (i + 1) % accumulation_steps == 0:
            optimizer.step()
            if args.fixed:
                optimizer.zero_grad()
    print(f"epoch {epoch} loss {loss.item() * accumulation_steps:.4f}")
