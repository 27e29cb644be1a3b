"""Probes are declared parts: each names itself, its codes, its record type, its judge and its
section, and the scope, the report and re-judging find everything through that declaration."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from gradscope.errors import GradscopeError
from gradscope.findings import CATALOG
from gradscope.probes import DEFAULT_PROBES, PROBE_NAMES, Probe
from gradscope.records import load_record, probe_record_type
from gradscope.records.base import ProbeRecord
from gradscope.scope import watch

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records_v1"


@pytest.mark.parametrize("kind", DEFAULT_PROBES, ids=lambda k: k.name)
def test_a_built_in_probe_declares_every_part(kind: type[Probe]) -> None:
    assert kind.name and kind.record_type is not None
    assert kind.record_type.probe == kind.name and probe_record_type(kind.name) is kind.record_type
    assert set(kind.codes) <= set(CATALOG)
    assert kind.section is not Probe.section, "a probe's record needs a section in the report"
    if kind.codes:
        assert kind.judge is not Probe.judge, "a probe with codes needs a judge"


def test_names_and_codes_are_each_declared_once() -> None:
    assert len(set(PROBE_NAMES)) == len(PROBE_NAMES)
    owned = [c for kind in DEFAULT_PROBES for c in kind.codes]
    assert len(set(owned)) == len(owned), "two probes claim one code"


def _judged_by(kind: type[Probe], record: ProbeRecord, run) -> list[str]:  # noqa: ANN001
    return [f.code for f in kind.judge(record, run, run.judged_with())]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_a_judge_emits_only_the_codes_its_probe_declares(path: Path) -> None:
    run = load_record(path)
    by_name = {k.name: k for k in DEFAULT_PROBES}
    for name, record in run.probes.items():
        kind = by_name[name]
        assert set(_judged_by(kind, record, run)) <= set(kind.codes), name


class _Counter(Probe):
    name = "test_backward_counter"

    def __init__(self) -> None:
        super().__init__()
        self.backwards = 0

    def on_backward_end(self) -> None:
        self.backwards += 1


def test_user_probe_instances_join_the_defaults_or_replace_them() -> None:
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    counter = _Counter()
    with watch(model, opt, probes=["default", counter]) as scope:
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(2, 3)).sum().backward()
            opt.step()
    assert counter.backwards == 3
    assert {p.name for p in scope.probes} == set(PROBE_NAMES) - {"activation_grad"} | {counter.name}
    assert counter.name not in scope.records  # it returned no record: nothing to say
    only = _Counter()
    with watch(model, opt, probes=["grad_norm", only]) as small:
        model(torch.randn(2, 3)).sum().backward()
        opt.step()
    assert [p.name for p in small.probes] == ["grad_norm", only.name] and only.backwards == 1


@pytest.mark.parametrize(("probes", "message"), [
    (["grad_norm", _Counter, "timing"], "got the class `_Counter`, expected an instance: `_Counter()`"),
    (["grad_norms"], "is not a probe"),
    (["activation_grad"], "needs activations="),
    ([_Counter(), _Counter()], "two probes named"),
], ids=["a-class-not-an-instance", "a-misspelt-name", "activation-grads-without-modules", "a-name-twice"])
def test_a_wrong_probe_list_is_explained(probes: list[object], message: str) -> None:
    with pytest.raises(GradscopeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        watch(nn.Linear(2, 2), probes=probes)  # type: ignore[arg-type]
