"""Shared pieces of the specimen training scripts (tiny, seeded, CPU)."""
import torch
from torch import nn


def data(n: int = 64, features: int = 8, classes: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    return x, y.clamp_max(classes - 1)


def mlp(features: int = 8, classes: int = 3, dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(nn.Linear(features, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, classes))
