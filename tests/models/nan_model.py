"""GS206: a layer whose output turns non-finite (log of a negative number)."""
import torch
from torch import nn

input_shape = (20,)
num_classes = 3


class Log(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(x)  # negative inputs give NaN


def build_model() -> nn.Module:
    return nn.Sequential(nn.Linear(20, 64), Log(), nn.Linear(64, 3))
