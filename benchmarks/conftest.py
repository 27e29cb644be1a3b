"""The benchmarks' fixtures; their shared pieces live in ``workloads.py`` (importable: this folder
is put on ``sys.path`` here, since pytest's importlib mode does not)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(params=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)
