"""Zero-code mode on every rank of a distributed script: ``python -m gradscope run train.py --
ARGS`` on each rank (what ``torchrun ... -m gradscope run`` does) gives one report, rank 0's,
covering every rank."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "ddp_train.py"


def _run(tmp_path: Path, *extra: str, script_args: tuple[str, ...] = ()) -> list[subprocess.CompletedProcess[str]]:
    store = tmp_path / "store"
    procs = [subprocess.Popen([sys.executable, "-m", "gradscope", "run", str(SCRIPT), "--out", str(tmp_path / "out"),
                               *extra, "--", "--store", str(store), "--rank", str(r), "--world", "2", *script_args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for r in range(2)]
    done = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=180)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    except subprocess.TimeoutExpired:
        for p in procs:
            p.kill()
        raise AssertionError("the distributed script did not finish (a hang)") from None
    return done


def test_rank_zero_writes_one_report_for_the_whole_run(tmp_path: Path) -> None:
    r0, r1 = _run(tmp_path)
    assert r0.returncode == 0 and r1.returncode == 0, r0.stderr[-2000:] + r1.stderr[-2000:]
    assert "rank 0 done" in r0.stdout and "rank 1 done" in r1.stdout  # the script's own output
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["report.html", "run.json"]
    record = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    assert record["distributed"]["world_size"] == 2 and record["distributed"]["strategy"] == "ddp"
    assert record["probes"]["grad_norm"]["parameters"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert len(record["probes"]["grad_norm"]["steps"]) == 6
    assert "written by rank 0" in r1.stderr


def test_a_nan_on_rank_one_is_in_rank_zeros_report(tmp_path: Path) -> None:
    r0, r1 = _run(tmp_path, script_args=("--nan-on-rank", "1"))
    record = json.loads((tmp_path / "out" / "run.json").read_text(encoding="utf-8"))
    messages = [f["message"] for f in record["findings"] if f["code"] == "GS206"]
    assert any("on rank 1 (of 2)" in m for m in messages), record["findings"]


def test_per_rank_writes_one_record_per_rank(tmp_path: Path) -> None:
    r0, r1 = _run(tmp_path, "--per-rank")
    assert r0.returncode == 0 and r1.returncode == 0, r0.stderr[-2000:] + r1.stderr[-2000:]
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["report.rank0.html", "report.rank1.html", "run.rank0.json", "run.rank1.json"]
    one = json.loads((tmp_path / "out" / "run.rank1.json").read_text(encoding="utf-8"))
    assert one["distributed"]["rank"] == 1
