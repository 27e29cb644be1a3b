"""The integrations' frameworks stay optional: never imported by gradscope itself, and a clear
message naming the extra when one is missing."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

from gradscope.integrations import EXTRA_INSTALL, MissingIntegrationError

FRAMEWORKS = ("lightning", "pytorch_lightning", "transformers", "accelerate", "tensorboard")


def test_gradscope_imports_none_of_the_frameworks() -> None:
    code = ("import sys, json, gradscope, gradscope.integrations, gradscope.testing, gradscope.pytest_plugin, "
            "gradscope.reports.notebook, gradscope.scope; gradscope.watch; "
            f"print(json.dumps([m for m in {list(FRAMEWORKS)!r} if m in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize(("module", "hidden", "named"), [
    ("gradscope.integrations.lightning", ("lightning", "lightning.pytorch", "pytorch_lightning"),
     "`lightning` or `pytorch_lightning`"),
    ("gradscope.integrations.transformers", ("transformers",), "`transformers`"),
    ("gradscope.integrations.accelerate", ("accelerate",), "`accelerate`"),
    ("gradscope.integrations.tensorboard", ("tensorboard",), "`tensorboard`"),
])
def test_a_missing_framework_names_the_extra(monkeypatch: pytest.MonkeyPatch, module: str,
                                             hidden: tuple[str, ...], named: str) -> None:
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)   # None in sys.modules: its import fails
    if module in sys.modules:
        monkeypatch.delitem(sys.modules, module)
    with pytest.raises(MissingIntegrationError) as failure:
        importlib.import_module(module)
    message = str(failure.value)
    assert named in message and EXTRA_INSTALL in message and module in message
    assert isinstance(failure.value, ModuleNotFoundError)          # what `except ImportError` expects
    assert failure.value.name == hidden[0].partition(".")[0]
