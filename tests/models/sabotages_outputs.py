"""A fault after the output paths were checked: at its first training forward this model file
replaces the folder GRADSCOPE_TEST_SABOTAGE names with a regular file, so that writing into it
fails only at the end, as a full disk or a vanished mount would."""
import os
import shutil
from pathlib import Path

import torch
from torch import nn

input_shape = (20,)
num_classes = 3


class Saboteur(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
        self.done = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self.done:
            self.done = True
            folder = Path(os.environ["GRADSCOPE_TEST_SABOTAGE"])
            shutil.rmtree(folder, ignore_errors=True)
            folder.write_text("a file where the output folder was\n")
        return self.body(x)


def build_model() -> nn.Module:
    return Saboteur()
