"""The distributed scenarios need torch.distributed with gloo; they skip cleanly without it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).parent))  # ranks.py, for the tests


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if dist.is_available() and dist.is_gloo_available():
        return
    skip = pytest.mark.skip(reason="torch.distributed with the gloo backend is not available")
    for item in items:
        if "distributed" in item.keywords:
            item.add_marker(skip)
