"""Crashes in its fifth training forward: the only test accuracy measured is the one before training."""
import torch
from torch import nn

input_shape = (20,)
num_classes = 3


class CrashesAtStep5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == 5:
                raise RuntimeError("the fifth batch is cursed")
        return self.body(x)


def build_model() -> nn.Module:
    return CrashesAtStep5()
