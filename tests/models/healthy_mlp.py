"""A healthy model file: an MLP on the synthetic task."""
from torch import nn

input_shape = (20,)
num_classes = 3


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3))
