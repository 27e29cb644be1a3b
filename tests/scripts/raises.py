"""Raises inside its training loop."""
import torch
from torch import nn

from _common import data, mlp


def train() -> None:
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = data()
    for step in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        if step == 1:
            raise RuntimeError("the script's own failure")


if __name__ == "__main__":
    train()
