"""A written record is bounded: per-step arrays within a fixed budget of values, large arrays in
a ``.npz`` side file (never pickle), exact statistics, and clear errors when the pair is broken."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import gradscope.records.io as record_io
from gradscope.errors import RecordError
from gradscope.records import (
    GradNormRecord,
    ModelInfo,
    RunRecord,
    Stats,
    StatsTable,
    UpdateRatioRecord,
    WatchedModel,
    load_record,
    write_record,
)
from gradscope.records.budget import PARAMETER_VALUES, STEP_VALUES, budgeted, step_arrays
from gradscope.records.io import SIDE_FILE_VALUES, keep_previous, side_path

TENSORS, ROWS = 10_000, 2_048


def _table(values: np.ndarray) -> StatsTable:
    n = values.shape[1]
    return StatsTable(count=[values.shape[0]] * n, min=values.min(0), max=values.max(0), mean=values.mean(0),
                      first_nonfinite_step=[None] * n)


def grad_record(tensors: int, rows: int, seed: int = 0) -> GradNormRecord:
    """``tensors`` parameter tensors in ``tensors // 2`` layers, ``rows`` kept steps (every 4th step
    of a run), norms computed in float32 as the probe does, statistics over the kept rows."""
    rng = np.random.default_rng(seed)
    layers = [f"blocks.{i // 100}.fc{i % 100}" for i in range(tensors // 2)]
    params = [f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")]
    param_norms = (10 ** rng.normal(-2, 0.3, (rows, tensors))).astype(np.float32).astype(np.float64)
    layer_norms = np.sqrt(param_norms[:, 0::2] ** 2 + param_norms[:, 1::2] ** 2)
    total = np.sqrt((layer_norms ** 2).sum(axis=1))
    return GradNormRecord(parameters=params, layers=layers, parameter_layer=[i // 2 for i in range(tensors)],
                          backward_order=params[::-1], steps=list(range(0, 4 * rows, 4)), stride=4,
                          total_norm=total, layer_norms=layer_norms, parameter_norms=param_norms,
                          parameter_stats=_table(param_norms), layer_stats=_table(layer_norms),
                          total_stats=Stats(rows, float(total.min()), float(total.max()), float(total.mean()), None),
                          no_gradient=[], steps_seen=4 * rows)


def run_record(tensors: int, rows: int) -> RunRecord:
    grad = grad_record(tensors, rows)
    ratios = 10 ** np.random.default_rng(1).normal(-3, 0.5, (rows // 12, len(grad.layers)))
    update = UpdateRatioRecord(layers=grad.layers, steps=grad.steps[::12][: rows // 12], ratios=ratios)
    return RunRecord(steps=4 * rows, backwards=4 * rows, model=ModelInfo("Big", 10**8, 10**8, "cpu"),
                     probes={"grad_norm": grad, "update_ratio": update})


@pytest.fixture(scope="module")
def big() -> RunRecord:
    return run_record(TENSORS, ROWS)


@pytest.fixture(scope="module")
def written(big: RunRecord, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunRecord]:
    path = write_record(big, tmp_path_factory.mktemp("big") / "run.json")
    return path, load_record(path)


def _per_step_values(run: RunRecord) -> tuple[int, int]:
    """(per-parameter, other per-step) numbers in a record's arrays."""
    per_parameter = other = 0
    for rec in run.probes.values():
        per_parameter += sum(getattr(rec, name).size for name in rec.per_parameter
                             if getattr(rec, name) is not None)
        other += sum(getattr(rec, name).size for name in step_arrays(rec))
    return per_parameter, other


# ---- the budget ----------------------------------------------------------------------------------
def test_a_10000_tensor_record_is_written_within_the_budget(written: tuple[Path, RunRecord]) -> None:
    path, loaded = written
    assert sorted(p.name for p in path.parent.iterdir()) == ["run.json", "run.npz"]
    per_parameter, other = _per_step_values(loaded)
    assert per_parameter <= PARAMETER_VALUES and other <= STEP_VALUES
    # 8 bytes a number at most, plus the per-tensor statistics (3 vectors per parameter and layer)
    stats = 3 * (TENSORS + TENSORS // 2)
    assert side_path(path).stat().st_size <= 8 * (PARAMETER_VALUES + STEP_VALUES + stats) + 1_000_000
    assert path.stat().st_size < 5_000_000          # names, counts, steps: no per-step numbers
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["side_file"]["file"] == "run.npz" and data["side_file"]["arrays"] >= 8
    assert data["probes"]["grad_norm"]["layer_norms"]["$array"] == "probes.grad_norm.layer_norms"


def test_per_layer_rows_stay_dense_while_they_fit_and_halve_beyond(big: RunRecord,
                                                                   written: tuple[Path, RunRecord]) -> None:
    grad, kept = big.probe(GradNormRecord), written[1].probe(GradNormRecord)
    assert grad is not None and kept is not None
    # 5,000 layers x 2,048 rows do not fit 6 M values: every second kept step goes, once
    assert kept.steps == grad.steps[::2] and kept.stride == 2 * grad.stride
    np.testing.assert_array_equal(kept.layer_norms, grad.layer_norms[::2])
    np.testing.assert_array_equal(kept.total_norm, grad.total_norm[::2])
    # a model that fits keeps every row
    small = run_record(1_000, ROWS)
    assert budgeted(small).probe(GradNormRecord).layer_norms.shape == (ROWS, 500)  # type: ignore[union-attr]


def test_per_parameter_rows_are_thinned_evenly_to_their_own_steps(big: RunRecord,
                                                                  written: tuple[Path, RunRecord]) -> None:
    grad, kept = big.probe(GradNormRecord), written[1].probe(GradNormRecord)
    assert grad is not None and kept is not None and kept.parameter_norms is not None
    assert kept.parameter_steps is not None and len(kept.parameter_steps) == PARAMETER_VALUES // TENSORS
    assert kept.parameter_steps[0] == grad.steps[0] and kept.parameter_steps[-1] in kept.steps
    assert set(kept.parameter_steps) <= set(kept.steps)
    rows = [grad.steps.index(s) for s in kept.parameter_steps]
    np.testing.assert_array_equal(kept.parameter_norms, grad.parameter_norms[rows])  # type: ignore[index]


def test_the_statistics_stay_exact(big: RunRecord, written: tuple[Path, RunRecord]) -> None:
    grad, kept = big.probe(GradNormRecord), written[1].probe(GradNormRecord)
    assert grad is not None and kept is not None
    for name in ("parameter_stats", "layer_stats"):
        before, after = getattr(grad, name), getattr(kept, name)
        assert after.count == before.count and after.first_nonfinite_step == before.first_nonfinite_step
        for column in ("min", "max", "mean"):
            np.testing.assert_array_equal(getattr(after, column), getattr(before, column))
    assert kept.total_stats == grad.total_stats and kept.steps_seen == grad.steps_seen


def test_the_record_says_what_was_thinned_and_to_which_steps(written: tuple[Path, RunRecord]) -> None:
    loaded = written[1]
    kept = loaded.probe(GradNormRecord)
    assert kept is not None and loaded.thinned is not None
    assert loaded.thinned["probes.grad_norm.parameter_norms"] == kept.parameter_steps
    assert loaded.thinned["probes.grad_norm.layer_norms"] == kept.steps
    assert loaded.thinned["probes.grad_norm.total_norm"] == kept.steps
    assert "probes.update_ratio.ratios" not in loaded.thinned       # small enough to stay whole


def test_the_record_in_memory_keeps_what_the_probes_kept(big: RunRecord, written: tuple[Path, RunRecord]) -> None:
    grad = big.probe(GradNormRecord)
    assert grad is not None and grad.parameter_norms is not None
    assert grad.parameter_norms.shape == (ROWS, TENSORS) and grad.parameter_steps is None and big.thinned is None
    small = run_record(20, 50)
    assert budgeted(small) is small                                # nothing to thin: the same object


def test_a_record_too_wide_for_two_rows_drops_its_parameter_rows() -> None:
    run = run_record(40, 10)
    thin = budgeted(run, parameter_values=50)
    grad = thin.probe(GradNormRecord)
    assert grad is not None and grad.parameter_norms is None and grad.parameter_steps is None
    assert thin.thinned == {"probes.grad_norm.parameter_norms": []}


def test_each_root_model_of_a_script_is_budgeted_too() -> None:
    run = run_record(200, 100)
    models = [WatchedModel(name=n, probes=dict(run.probes)) for n in ("G", "D")]
    thin = budgeted(dataclasses.replace(run, models=models), parameter_values=6_000)
    assert thin.thinned is not None and {"models[0].probes.grad_norm.parameter_norms",
                                         "models[1].probes.grad_norm.parameter_norms"} <= set(thin.thinned)
    total = sum(g.parameter_norms.size for g in [thin.probe(GradNormRecord)]   # type: ignore[union-attr]
                + [m.probes["grad_norm"] for m in thin.models])                # type: ignore[misc]
    assert total <= 6_000


# ---- one file or two -----------------------------------------------------------------------------
def test_a_small_record_stays_one_self_contained_json(tmp_path: Path) -> None:
    run = run_record(40, 100)
    path = write_record(run, tmp_path / "run.json")
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]
    data = json.loads(path.read_text(encoding="utf-8"))
    assert "side_file" not in data and "thinned" not in data
    assert isinstance(data["probes"]["grad_norm"]["layer_norms"], list)
    assert load_record(path).to_json() == run.to_json()


def test_the_side_file_is_plain_numpy(written: tuple[Path, RunRecord]) -> None:
    path, loaded = written
    kept = loaded.probe(GradNormRecord)
    assert kept is not None
    with np.load(side_path(path), allow_pickle=False) as npz:
        assert npz["probes.grad_norm.parameter_norms"].dtype == np.float32   # float32 holds them exactly
        np.testing.assert_array_equal(npz["probes.grad_norm.layer_norms"], kept.layer_norms)
    assert loaded.to_json()["probes"]["grad_norm"]["steps"] == kept.steps


def test_a_record_read_again_and_written_again_is_the_same(written: tuple[Path, RunRecord], tmp_path: Path) -> None:
    again = load_record(write_record(written[1], tmp_path / "again.json"))
    assert (tmp_path / "again.npz").is_file()
    assert again.to_json() == written[1].to_json()


# ---- broken pairs --------------------------------------------------------------------------------
def _pair(tmp_path: Path) -> Path:
    run = run_record(1_000, 300)   # 300 x (1,000 + 500) values: over the side-file threshold
    assert 300 * 1_500 > SIDE_FILE_VALUES
    return write_record(run, tmp_path / "run.json")


def test_a_missing_side_file_is_named(tmp_path: Path) -> None:
    path = _pair(tmp_path)
    side_path(path).unlink()
    with pytest.raises(RecordError, match=r"run\.json: its arrays are kept in the side file .*run\.npz, which "
                                          r"is missing.*copy or move the \.json and the \.npz file together"):
        load_record(path)


@pytest.mark.parametrize("content", [b"", b"not a zip archive at all", b"PK\x03\x04broken"],
                         ids=["empty", "not-a-zip", "a-broken-zip"])
def test_a_damaged_side_file_is_named(tmp_path: Path, content: bytes) -> None:
    path = _pair(tmp_path)
    side_path(path).write_bytes(content)
    with pytest.raises(RecordError, match=r"run\.npz: the side file of .*run\.json is not a NumPy \.npz archive"):
        load_record(path)


def test_a_truncated_side_file_is_named(tmp_path: Path) -> None:
    path = _pair(tmp_path)
    data = side_path(path).read_bytes()
    side_path(path).write_bytes(data[: len(data) // 2])
    with pytest.raises(RecordError, match=r"run\.npz"):
        load_record(path)


def test_a_side_file_of_another_record_is_refused(tmp_path: Path) -> None:
    path = _pair(tmp_path / "a")
    other = _pair(tmp_path / "b")
    side_path(path).write_bytes(side_path(other).read_bytes())
    with pytest.raises(RecordError, match=r"run\.npz: this side file does not belong to .*run\.json"):
        load_record(path)


def test_a_pickled_array_is_refused(tmp_path: Path) -> None:
    path = _pair(tmp_path)
    with np.load(side_path(path), allow_pickle=False) as npz:
        members = {k: npz[k] for k in npz.files}
    members["probes.grad_norm.layer_norms"] = np.array([{"evil": 1}, None], dtype=object)
    with side_path(path).open("wb") as fh:
        np.savez(fh, **members)                      # an object array is stored pickled
    with pytest.raises(RecordError, match=r"array 'probes\.grad_norm\.layer_norms' holds Python objects \(pickle\)"):
        load_record(path)


def test_a_reference_to_no_array_is_named(tmp_path: Path) -> None:
    path = _pair(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["probes"]["grad_norm"]["layer_norms"]["$array"] = "nothing.here"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RecordError, match=r"run\.npz: has no array 'nothing\.here', which .*run\.json refers to "
                                          r"at .*probes\.grad_norm\.layer_norms"):
        load_record(path)


@pytest.mark.parametrize("ref", [None, "run.npz", {"file": "../run.npz", "id": "x"}, {"file": "run.npz"}],
                         ids=["null", "a-string", "a-path-outside", "no-id"])
def test_a_bad_side_file_key_is_named(tmp_path: Path, ref: object) -> None:
    path = _pair(tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["side_file"] = ref
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(RecordError, match=r"run\.json: \"side_file\" should name a file beside the record"):
        load_record(path)


def test_the_json_alone_says_how_to_read_it(tmp_path: Path) -> None:
    data = json.loads(_pair(tmp_path).read_text(encoding="utf-8"))
    with pytest.raises(RecordError, match=r"kept in the record's side file .*gradscope\.load_record"):
        RunRecord.from_json(data)


def test_a_failed_write_keeps_both_old_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _pair(tmp_path)
    before = path.read_bytes(), side_path(path).read_bytes()

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(record_io, "write_npz", broken)
    with pytest.raises(OSError, match="disk full"):
        write_record(run_record(1_000, 301), path)
    assert (path.read_bytes(), side_path(path).read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.npz"]   # no temporary file left


def test_the_previous_record_keeps_its_own_side_file(tmp_path: Path) -> None:
    first = _pair(tmp_path)
    old = load_record(first).probe(GradNormRecord)
    assert keep_previous(first) == tmp_path / "run.prev.json"
    second = write_record(run_record(1_200, 300), tmp_path / "run.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json", "run.npz", "run.prev.json", "run.prev.npz"]
    kept, new = load_record(tmp_path / "run.prev.json").probe(GradNormRecord), load_record(second).probe(GradNormRecord)
    assert kept is not None and new is not None and old is not None
    assert len(kept.parameters) == 1_000 and len(new.parameters) == 1_200
    np.testing.assert_array_equal(kept.layer_norms, old.layer_norms)
    # and a third run moves the second along, replacing the oldest pair
    assert keep_previous(second) == tmp_path / "run.prev.json"
    again = load_record(tmp_path / "run.prev.json").probe(GradNormRecord)
    assert again is not None and len(again.parameters) == 1_200


def test_a_renamed_pair_is_still_read(tmp_path: Path) -> None:
    path = _pair(tmp_path)
    path.rename(tmp_path / "best.json")
    side_path(path).rename(tmp_path / "best.npz")
    assert load_record(tmp_path / "best.json").probe(GradNormRecord) is not None


def test_old_records_still_load() -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures" / "records_v1"
    for path in sorted(fixtures.glob("*.json")):
        assert load_record(path).schema == "gradscope.record"
