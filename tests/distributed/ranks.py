"""Run a scenario of ``worker.py`` on several gloo ranks, one process each, and collect results.

No port is used: the ranks meet through a ``FileStore`` in a temporary folder. Every rank has a
deadline; a rank that hangs or fails is killed with the others, and the test fails with what
the ranks printed, instead of hanging CI.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("worker.py")
DEADLINE_S = 120.0  # generous for a loaded 2-core machine; a healthy scenario takes a few seconds


def spawn(scenario: str, world: int, folder: Path, **options: Any) -> list[dict[str, Any]]:
    """Run ``scenario`` on ``world`` ranks; returns each rank's JSON result, rank order."""
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "store"
    store.unlink(missing_ok=True)
    env = {**os.environ, "GRADSCOPE_SCENARIO_OPTIONS": json.dumps(options), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(WORKER), scenario, str(rank), str(world), str(store),
                               str(folder)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env) for rank in range(world)]
    deadline = time.monotonic() + DEADLINE_S
    outputs: list[str] = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        seen = [p.communicate()[0] for p in procs]
        raise AssertionError(f"{scenario} on {world} ranks did not finish in {DEADLINE_S:.0f} s (a hang):\n"
                             + "\n".join(f"--- rank {r}\n{o[-3000:]}" for r, o in enumerate(seen))) from None
    failed = [(r, p.returncode, o) for r, (p, o) in enumerate(zip(procs, outputs)) if p.returncode != 0]
    if failed:
        raise AssertionError("\n".join(f"--- rank {r} exited {code}\n{o[-4000:]}" for r, code, o in failed))
    return [json.loads((folder / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(world)]


def flat(rows: list[list[float]]) -> list[float]:
    """A table of numbers as one list, for ``pytest.approx``."""
    return [x for row in rows for x in row]
