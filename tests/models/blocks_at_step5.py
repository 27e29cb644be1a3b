"""Blocks in its fifth training forward until a signal arrives: a run to stop in mid-epoch.

It prints "blocked after 4 steps" (flushed) first, so that a test sends its signal once four
optimizer steps are done, whatever the machine's speed. With GRADSCOPE_TEST_WORKERS set, its
loaders use that many DataLoader worker processes, each writing its pid into the folder
GRADSCOPE_TEST_PIDS names (to check that none is left running afterwards).
"""
import os
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

input_shape = (20,)
num_classes = 3


class BlocksAtStep5(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == 5:
                print("blocked after 4 steps", flush=True)
                while True:  # until the signal's KeyboardInterrupt
                    time.sleep(0.05)
        return self.body(x)


def build_model() -> nn.Module:
    return BlocksAtStep5()


def _note_pid(_worker_id: int) -> None:
    folder = Path(os.environ["GRADSCOPE_TEST_PIDS"])
    (folder / str(os.getpid())).write_text("worker\n")


def _loaders() -> tuple[DataLoader, DataLoader]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(512, 20, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
    workers = int(os.environ["GRADSCOPE_TEST_WORKERS"])
    train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, num_workers=workers,
                       worker_init_fn=_note_pid, generator=g)
    return train, DataLoader(TensorDataset(x[:64], y[:64]), batch_size=64)


if os.environ.get("GRADSCOPE_TEST_WORKERS"):
    build_loaders = _loaders
