"""docs/probes.md's worked example of a user-defined probe runs as written and does what it says.

It runs in a fresh interpreter: the example registers a finding code and a probe, and those
registries are the process's own."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "probes.md"


def example() -> str:
    return "\n\n".join(re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S))


def test_the_worked_example_of_a_user_probe_runs_and_reports() -> None:
    code = example() + '''
import json
codes = [f.code for f in scope.findings]
assert "ACME01" in codes, codes
assert {"grad_norm", "timing", "weight_norm"} <= set(record.probes)
data = record.to_json()
assert data["probes"]["weight_norm"]["steps"] == list(range(30))
from gradscope.records import RunRecord
again = RunRecord.from_json(json.loads(json.dumps(data)))
assert isinstance(again.probes["weight_norm"], WeightNormRecord)
from gradscope.probes import judge_run
assert "ACME01" in [f.code for f in judge_run(again)]
print("ok")
'''
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("ok")


def test_the_example_with_the_sign_fixed_is_a_healthy_twin() -> None:
    code = example().replace("loss = -nn.functional", "loss = nn.functional").replace(
        'assert found and "weight norm grew" in found[0].message', "assert not found, found").replace(
        'assert \'id="weight-norm"\' in page and "ACME01" in page',
        "assert 'id=\"weight-norm\"' in page") + "\nprint('ok')\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
