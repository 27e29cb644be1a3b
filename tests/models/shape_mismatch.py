"""A crash in forward: the second layer expects 32 features and gets 64."""
from torch import nn

input_shape = (20,)
num_classes = 3


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(32, 3))
