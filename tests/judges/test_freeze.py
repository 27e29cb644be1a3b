"""GS301-GS306: the freeze judge on synthetic records (no model, no torch, milliseconds)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest

from gradscope.findings import Finding, Severity
from gradscope.judges import MAX_PLACES
from gradscope.judges.freeze import ALMOST_ALL_FROZEN, judge_freeze
from gradscope.records import FreezeRecord, GradNormRecord, ModelInfo, RunRecord, StatsTable, TensorState, load_record
from gradscope.thresholds import Thresholds

ROOT = "Net"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "records_v1"


# ---- builders ------------------------------------------------------------------------------------
def trains(name: str, numel: int = 10, **kw: Any) -> TensorState:
    """A healthy trainable parameter: in the optimizer, and it changed at step 1."""
    values: dict[str, Any] = dict(name=name, numel=numel, trainable=True, requires_grad=True,
                                  in_optimizer=True, lr=0.1, weight_decay=0.0, first_changed_step=1)
    return TensorState(**{**values, **kw})


def frozen(name: str, numel: int = 10, **kw: Any) -> TensorState:
    """A healthy frozen parameter: out of the optimizer, and it never changed."""
    values: dict[str, Any] = dict(name=name, numel=numel, trainable=False, requires_grad=False,
                                  in_optimizer=False)
    return TensorState(**{**values, **kw})


def freeze_record(tensors: Sequence[TensorState] | None, *, subtrees: Sequence[str] = (),
                  batchnorm: Sequence[str] = ()) -> FreezeRecord:
    known = list(tensors or [])
    total = sum(t.numel for t in known)
    trainable = sum(t.numel for t in known if t.trainable)
    return FreezeRecord(parameters=total, trainable=trainable, frozen=total - trainable,
                        frozen_subtrees=list(subtrees), batchnorm_train_in_frozen=list(batchnorm),
                        table=FreezeRecord.rows_of(known, ROOT),
                        tensors=list(tensors) if tensors is not None else None)


def judge(rec: FreezeRecord, *, steps: int = 20, optimizers: Sequence[str] | None = ("SGD",),
          grads: GradNormRecord | None = None) -> list[Finding]:
    """Judge ``rec`` in a run of ``steps`` optimizer steps (``optimizers`` None: an older run
    that did not record them)."""
    probes: dict[str, Any] = {"freeze": rec}
    if grads is not None:
        probes["grad_norm"] = grads
    run = RunRecord(model=ModelInfo(class_name=ROOT), steps=steps, backwards=steps,
                    optimizers=list(optimizers) if optimizers is not None else None,
                    probes=probes)
    return judge_freeze(rec, run, Thresholds())


def codes(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


HEAD = [trains("head.weight", 40), trains("head.bias", 4)]
BACKBONE = [frozen("backbone.0.weight", 30), frozen("backbone.0.bias", 3), frozen("backbone.1.weight", 3)]


def test_a_healthy_fine_tuning_run_has_no_finding() -> None:
    assert judge(freeze_record(BACKBONE + HEAD, subtrees=["backbone"])) == []


def test_a_healthy_full_training_run_has_no_finding() -> None:
    assert judge(freeze_record([trains("enc.weight"), trains("enc.bias"), *HEAD])) == []


# ---- GS301 ---------------------------------------------------------------------------------------
def test_gs301_groups_frozen_parameters_in_the_optimizer_by_frozen_subtree() -> None:
    tensors = [dataclasses.replace(t, in_optimizer=True, grad_while_frozen=True) for t in BACKBONE] + HEAD
    (f,) = judge(freeze_record(tensors, subtrees=["backbone"]))
    assert (f.code, f.severity, f.where) == ("GS301", Severity.WARNING, "backbone")
    assert f.message.startswith("3 frozen parameter(s) of backbone (backbone.0.weight, backbone.0.bias, "
                                "backbone.1.weight) are in the optimizer and hold a gradient")


def test_gs301_is_info_where_the_optimizer_can_never_move_them() -> None:
    # never a .grad: SGD and Adam skip them, weight decay and momentum included (mmcv-style
    # frameworks hand every parameter to the optimizer on purpose)
    tensors = [dataclasses.replace(t, in_optimizer=True) for t in BACKBONE] + HEAD
    (f,) = judge(freeze_record(tensors, subtrees=["backbone"]))
    assert (f.code, f.severity, f.where) == ("GS301", Severity.INFO, "backbone")
    assert "the optimizer skips them" in f.message


def test_gs301_outside_a_frozen_subtree_groups_by_owning_module() -> None:
    tensors = [trains("head.weight"), frozen("head.bias", in_optimizer=True),
               frozen("scale", in_optimizer=True), *[trains(f"enc.{i}") for i in range(2)]]
    found = codes(judge(freeze_record(tensors)), "GS301")
    assert {f.where: f.message.split(" are in")[0] for f in found} == {
        "head": "1 frozen parameter(s) of head (head.bias)", ROOT: f"1 frozen parameter(s) of {ROOT} (scale)"}


def test_gs301_is_quiet_for_frozen_parameters_kept_out_of_the_optimizer() -> None:
    assert codes(judge(freeze_record(BACKBONE + HEAD, subtrees=["backbone"])), "GS301") == []


def test_gs301_reads_requires_grad_at_the_end_of_the_run() -> None:
    # trainable when watch started, frozen during the run, still in the optimizer
    late = trains("enc.weight", requires_grad=False)
    (f,) = codes(judge(freeze_record([late, *HEAD])), "GS301")
    assert f.where == "enc" and "(enc.weight)" in f.message
    # and the other way: frozen at attach, unfrozen later, in the optimizer: healthy
    thawed = frozen("enc.weight", requires_grad=True, in_optimizer=True, first_changed_step=5)
    assert codes(judge(freeze_record([thawed, *HEAD])), "GS301") == []


@pytest.mark.parametrize(("places", "findings"), [
    pytest.param(MAX_PLACES, MAX_PLACES, id="three places give one finding each"),
    pytest.param(MAX_PLACES + 1, 1, id="four places fold into one finding"),
])
def test_gs301_folds_many_places_into_one_finding(places: int, findings: int) -> None:
    tensors = [frozen(f"m{i}.weight", in_optimizer=True) for i in range(places)] + HEAD
    assert len(codes(judge(freeze_record(tensors)), "GS301")) == findings


def test_gs301_a_folded_finding_names_the_first_places_and_counts_every_parameter() -> None:
    tensors = [frozen(f"m{i}.{p}", in_optimizer=True) for i in range(5) for p in ("weight", "bias")] + HEAD
    (f,) = codes(judge(freeze_record(tensors)), "GS301")
    assert f.where == "m0, m1, m2 and 2 more"
    assert f.message.startswith("10 frozen parameter(s) of 5 modules (m0, m1, m2, m3 and 1 more) "
                                "(m0.weight, m0.bias, m1.weight, m1.bias and 6 more)")


# ---- GS302 ---------------------------------------------------------------------------------------
def test_gs302_names_frozen_parameters_that_changed_and_the_first_step() -> None:
    tensors = [frozen("backbone.0.weight", 30, in_optimizer=True, first_changed_step=40,
                      first_frozen_change_step=40),
               frozen("backbone.0.bias", 3, in_optimizer=True, first_changed_step=12,
                      first_frozen_change_step=12),
               frozen("backbone.1.weight", 3), *HEAD]
    (f,) = codes(judge(freeze_record(tensors, subtrees=["backbone"])), "GS302")
    assert (f.severity, f.where) == (Severity.ERROR, "backbone")
    assert f.message.startswith("2 frozen parameter(s) of backbone (backbone.0.weight, backbone.0.bias) "
                                "changed during training (first seen by step 12)")


@pytest.mark.parametrize("tensor", [
    pytest.param(frozen("enc.weight", requires_grad=True, in_optimizer=True, first_changed_step=3,
                        first_frozen_change_step=3),
                 id="a parameter unfrozen by the end of the run is not reported"),
    pytest.param(frozen("enc.weight", first_changed_step=None, first_frozen_change_step=None),
                 id="a frozen parameter that never changed is healthy"),
    pytest.param(trains("enc.weight", first_changed_step=3, first_frozen_change_step=None),
                 id="a trainable parameter that changed is healthy"),
])
def test_gs302_only_for_parameters_still_frozen_at_the_end(tensor: TensorState) -> None:
    assert codes(judge(freeze_record([tensor, *HEAD])), "GS302") == []


def test_gs302_needs_an_optimizer_step() -> None:
    moved = frozen("enc.weight", first_changed_step=0, first_frozen_change_step=0)
    rec = freeze_record([moved, *HEAD])
    assert codes(judge(rec, steps=1), "GS302")
    assert codes(judge(rec, steps=0), "GS302") == []


def test_gs302_folds_many_places_into_one_finding() -> None:
    tensors = [frozen(f"m{i}.weight", first_frozen_change_step=10 + i) for i in range(4)] + HEAD
    (f,) = codes(judge(freeze_record(tensors)), "GS302")
    assert f.where == "m0, m1, m2 and 1 more" and "first seen by step 10" in f.message


# ---- GS303 ---------------------------------------------------------------------------------------
def test_gs303_names_trainable_parameters_in_no_param_group() -> None:
    tensors = [trains("enc.weight"), trains("head.weight", in_optimizer=False, lr=None),
               trains("head.bias", in_optimizer=False, lr=None)]
    (f,) = codes(judge(freeze_record(tensors)), "GS303")
    assert (f.severity, f.where) == (Severity.ERROR, "head")
    assert f.message.startswith("2 trainable parameter(s) of head (head.weight, head.bias) are in no "
                                "optimizer param group")


@pytest.mark.parametrize("optimizers", [
    pytest.param([], id="a watch without an optimizer has no param groups to miss"),
    pytest.param(None, id="an older run without optimizers holding none of the parameters"),
])
def test_gs303_needs_an_optimizer(optimizers: list[str] | None) -> None:
    tensors = [trains("enc.weight", in_optimizer=False), trains("head.weight", in_optimizer=False)]
    assert codes(judge(freeze_record(tensors), optimizers=optimizers), "GS303") == []


def test_gs303_without_optimizer_names_falls_back_to_what_the_optimizer_holds() -> None:
    tensors = [trains("enc.weight"), trains("head.weight", in_optimizer=False)]
    (f,) = codes(judge(freeze_record(tensors), optimizers=None), "GS303")
    assert f.where == "head"


def test_gs303_folds_many_places_into_one_finding() -> None:
    tensors = [trains(f"m{i}.weight", in_optimizer=False) for i in range(4)] + HEAD
    (f,) = codes(judge(freeze_record(tensors)), "GS303")
    assert f.where == "m0, m1, m2 and 1 more" and f.message.startswith("4 trainable parameter(s) of 4 modules")


# ---- GS304 ---------------------------------------------------------------------------------------
def test_gs304_names_the_frozen_subtree_holding_batchnorm_in_train_mode() -> None:
    rec = freeze_record(BACKBONE + HEAD, subtrees=["backbone"], batchnorm=["backbone.1"])
    (f,) = judge(rec)
    assert (f.code, f.severity, f.where) == ("GS304", Severity.WARNING, "backbone")
    assert "1 BatchNorm layer(s) inside frozen submodule(s) (backbone) ran in train mode" in f.message


def test_gs304_names_each_subtree_once_and_shortens_many() -> None:
    two = freeze_record(HEAD, subtrees=["a", "b"], batchnorm=["a.1", "a.3", "b.bn"])
    (f,) = judge(two)
    assert f.where == "a, b" and f.message.startswith("3 BatchNorm layer(s) inside frozen submodule(s) (a, b)")
    four = freeze_record(HEAD, subtrees=["a", "b", "c", "d"], batchnorm=["a.1", "b.1", "c.1", "d.1"])
    (f,) = judge(four)
    assert f.where == "a, b, c…"


def test_gs304_is_quiet_when_frozen_batchnorm_stayed_in_eval_mode() -> None:
    assert judge(freeze_record(BACKBONE + HEAD, subtrees=["backbone"], batchnorm=[])) == []


# ---- GS305 ---------------------------------------------------------------------------------------
def test_gs305_names_parameters_that_never_changed_with_their_learning_rate() -> None:
    tensors = [trains("enc.weight", lr=0.0, first_changed_step=None),
               trains("enc.bias", lr=0.0, first_changed_step=None), *HEAD]
    (f,) = codes(judge(freeze_record(tensors), steps=20), "GS305")
    assert (f.severity, f.where) == (Severity.WARNING, "enc")
    assert f.message == ("2 parameter(s) of enc (enc.weight, enc.bias) are in the optimizer and got "
                         "gradients, yet never changed over 20 steps (learning rate 0).")


def test_gs305_lists_every_learning_rate_and_none_when_unknown() -> None:
    tensors = [trains("enc.weight", lr=1e-9, first_changed_step=None),
               trains("enc.bias", lr=0.0, first_changed_step=None), *HEAD]
    (f,) = codes(judge(freeze_record(tensors), steps=20), "GS305")
    assert "(learning rate 0, 1e-09)" in f.message
    unknown = [trains("a.weight", lr=None, first_changed_step=None), *HEAD]
    (f,) = codes(judge(freeze_record(unknown), steps=20), "GS305")
    assert f.message.endswith("never changed over 20 steps.")


@pytest.mark.parametrize(("kw", "tensor"), [
    pytest.param({"steps": 0}, trains("enc.weight", first_changed_step=None),
                 id="a run without optimizer steps cannot have changed anything"),
    pytest.param({"optimizers": []}, trains("enc.weight", in_optimizer=False, first_changed_step=None),
                 id="a watch without an optimizer"),
    pytest.param({}, frozen("enc.weight", in_optimizer=True),
                 id="a frozen parameter in the optimizer is GS301 not GS305"),
    pytest.param({}, trains("enc.weight", first_changed_step=19),
                 id="a parameter that changed at the last step is healthy"),
])
def test_gs305_is_quiet(kw: dict[str, Any], tensor: TensorState) -> None:
    assert codes(judge(freeze_record([tensor, *HEAD]), **kw), "GS305") == []


def no_gradient_record(names: list[str], *, never: list[str], zero: Sequence[str] = ()) -> GradNormRecord:
    """A grad-norm record saying which parameters got no gradient (and which only zeros)."""
    peak = np.array([0.0 if n in zero or n in never else 1.0 for n in names])
    stats = StatsTable(count=[10] * len(names), min=peak.copy(), max=peak, mean=peak.copy(),
                       first_nonfinite_step=[None] * len(names))
    return GradNormRecord(parameters=names, layers=[n.rpartition(".")[0] for n in names],
                          parameter_layer=list(range(len(names))), parameter_stats=stats,
                          layer_stats=stats, no_gradient=never, steps_seen=10)


def test_gs305_leaves_a_parameter_that_got_no_gradient_to_gs201() -> None:
    tensors = [trains("enc.weight", first_changed_step=None), *HEAD]
    names = [t.name for t in tensors]
    assert codes(judge(freeze_record(tensors)), "GS305")
    grads = no_gradient_record(names, never=["enc.weight"])
    assert codes(judge(freeze_record(tensors), grads=grads), "GS305") == []


def test_gs305_leaves_a_parameter_whose_gradient_was_always_zero_to_gs202() -> None:
    tensors = [trains("enc.weight", first_changed_step=None), *HEAD]
    grads = no_gradient_record([t.name for t in tensors], never=[], zero=["enc.weight"])
    assert codes(judge(freeze_record(tensors), grads=grads), "GS305") == []


def test_gs305_folds_many_places_into_one_finding() -> None:
    tensors = [trains(f"m{i}.weight", first_changed_step=None, lr=0.0) for i in range(4)] + HEAD
    (f,) = codes(judge(freeze_record(tensors)), "GS305")
    assert f.where == "m0, m1, m2 and 1 more" and "(learning rate 0)" in f.message


# ---- GS306 ---------------------------------------------------------------------------------------
def mostly_frozen(head: list[TensorState], total: int = 10_000) -> list[TensorState]:
    rest = total - sum(t.numel for t in head)
    return [frozen("backbone.0.weight", rest), *head]


@pytest.mark.parametrize(("trainable", "expected"), [
    pytest.param(99, True, id="just under 1 percent training is almost everything frozen"),
    pytest.param(100, False, id="exactly 1 percent training is not"),
    pytest.param(101, False, id="just over 1 percent training is not"),
])
def test_gs306_edge_at_one_percent(trainable: int, expected: bool) -> None:
    assert ALMOST_ALL_FROZEN == 0.01
    rec = freeze_record(mostly_frozen([trains("fc.weight", trainable)]), subtrees=["backbone"])
    assert bool(codes(judge(rec), "GS306")) is expected


def test_gs306_names_the_share_and_the_parameters_that_train() -> None:
    rec = freeze_record(mostly_frozen([trains("fc.weight", 40), trains("fc.bias", 10)]), subtrees=["backbone"])
    (f,) = judge(rec)
    assert (f.code, f.severity, f.where) == ("GS306", Severity.INFO, ROOT)
    assert f.message == "only 50 of 10,000 parameters (0.50%) train: fc.weight, fc.bias."


@pytest.mark.parametrize(("kinds", "text"), [
    pytest.param(("BatchNorm", "BatchNorm"), "only BatchNorm affine parameters (bn.weight, bn.bias)",
                 id="training only BatchNorm affine parameters is named as such"),
    pytest.param(("BatchNorm", "norm"), "only normalisation-layer affine parameters (bn.weight, bn.bias)",
                 id="training only normalisation layers of several kinds is named as such"),
    pytest.param(("norm", None), "bn.weight, bn.bias",
                 id="a mix with an ordinary layer lists the parameters"),
])
def test_gs306_says_what_kind_of_parameters_train(kinds: tuple[str | None, str | None], text: str) -> None:
    head = [trains("bn.weight", 20, norm_kind=kinds[0]), trains("bn.bias", 20, norm_kind=kinds[1])]
    (f,) = codes(judge(freeze_record(mostly_frozen(head))), "GS306")
    assert f.message.endswith(f"train: {text}.")


def test_gs306_counts_what_was_trainable_when_watch_started() -> None:
    # the head was frozen during the run: at attach it trained, so the run was not "almost all frozen"
    head = [trains("fc.weight", 5000, requires_grad=False, in_optimizer=False)]
    assert codes(judge(freeze_record(mostly_frozen(head))), "GS306") == []


def test_gs306_is_quiet_when_nothing_trains_at_all() -> None:
    assert codes(judge(freeze_record([frozen("backbone.0.weight", 10_000)])), "GS306") == []


# ---- records from an older gradscope -------------------------------------------------------------
EVIDENCE_CODES = {"GS301", "GS302", "GS303", "GS305", "GS306", "GS307"}


def everything_wrong() -> FreezeRecord:
    tensors = [frozen("backbone.0.weight", 5000, in_optimizer=True, first_frozen_change_step=3),
               frozen("backbone.1.weight", 4990), trains("fc.weight", 5, first_changed_step=None),
               trains("fc.bias", 5, in_optimizer=False),
               trains("old_fc.weight", 5, in_model=False)]   # replaced, still in the optimizer
    return freeze_record(tensors, subtrees=["backbone"], batchnorm=["backbone.1"])


def test_a_specimen_with_every_problem_finds_every_code() -> None:
    assert {f.code for f in judge(everything_wrong())} == EVIDENCE_CODES | {"GS304"}


def test_an_older_record_lists_the_codes_it_cannot_judge() -> None:
    assert everything_wrong().unjudged() == frozenset()
    data = everything_wrong().to_json()
    del data["tensors"]
    older = FreezeRecord.from_json(data)
    assert older.tensors is None
    assert older.unjudged() == EVIDENCE_CODES


def test_an_older_record_yields_only_gs304_which_needs_no_tensors() -> None:
    data = everything_wrong().to_json()
    del data["tensors"]
    assert [f.code for f in judge(FreezeRecord.from_json(data))] == ["GS304"]


def test_a_version_1_file_yields_none_of_the_codes_it_holds_no_evidence_for() -> None:
    run = load_record(FIXTURES / "watch_full.json")
    rec = run.probe(FreezeRecord)
    assert rec is not None and rec.unjudged() == EVIDENCE_CODES
    assert "GS301" in {f.code for f in run.findings}, "the finding recorded at the time"
    assert {f.code for f in judge_freeze(rec, run, Thresholds())} & EVIDENCE_CODES == set()


# ---- GS307 ---------------------------------------------------------------------------------------
def test_gs307_names_a_replaced_layers_parameters_still_in_the_optimizer() -> None:
    old = [dataclasses.replace(t, in_model=False, in_optimizer=True) for t in HEAD]
    new = [trains("head.weight", in_optimizer=False), trains("head.bias", in_optimizer=False)]
    found = judge(freeze_record(BACKBONE + old + new))
    gone = codes(found, "GS307")
    assert [f.where for f in gone] == ["head"] and "no longer in the model" in gone[0].message
    assert [f.where for f in codes(found, "GS303")] == ["head"]  # the new head is in no optimizer


def test_gs307_is_quiet_for_a_replaced_layer_the_optimizer_no_longer_holds() -> None:
    old = [dataclasses.replace(t, in_model=False, in_optimizer=False) for t in HEAD]
    assert codes(judge(freeze_record(BACKBONE + old + HEAD)), "GS307") == []
