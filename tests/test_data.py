from __future__ import annotations

import gzip
import struct
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from gradscope.data import (
    GLYPH_ALPHABET,
    ClassificationData,
    default_sizes,
    describe,
    glyph_fonts,
    load_data,
    render_glyphs,
)
from gradscope.errors import GradscopeError
from gradscope.runner import notes_cnn


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Run these small CPU workloads on one thread: on a busy 2-core machine, two threads that wait
    on each other make them many times slower. The setting is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _small(spec: str, shape: tuple[int, ...], classes: int = 10, seed: int = 0, n: int = 200):
    return load_data(spec, shape, classes, seed=seed, train_size=n, test_size=n // 4)


def _default_cnn() -> nn.Module:
    """The notes' CNN, as `gradscope run` trains it by default."""
    return notes_cnn()


def _train_and_score(model: nn.Module, train: ClassificationData, test: ClassificationData,
                        *, lr: float = 1e-3, epochs: int = 1) -> float:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    loader = DataLoader(train, batch_size=64, shuffle=True, generator=torch.Generator().manual_seed(0))
    model.train()
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            loss_fn(model(x), y).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(x).argmax(1) for x, _ in DataLoader(test, batch_size=1000)])
    return (pred == test.labels).double().mean().item()


# ---------------------------------------------------------------- determinism, shapes, balance

@pytest.mark.parametrize("spec", ["glyphs", "synthetic", "fake"])
def test_same_seed_gives_identical_tensors_and_other_seed_differs(spec: str) -> None:
    shape = (20,) if spec == "synthetic" else (1, 28, 28)
    a_train, a_test = _small(spec, shape, seed=3)
    b_train, b_test = _small(spec, shape, seed=3)
    c_train, _ = _small(spec, shape, seed=4)
    assert torch.equal(a_train.inputs, b_train.inputs) and torch.equal(a_train.labels, b_train.labels)
    assert torch.equal(a_test.inputs, b_test.inputs) and torch.equal(a_test.labels, b_test.labels)
    assert not torch.equal(a_train.inputs, c_train.inputs)


@pytest.mark.parametrize(
    "shape, classes",
    [((1, 28, 28), 10), ((3, 32, 32), 10), ((1, 64, 64), 10), ((20,), 10), ((8, 16), 5),
     ((1, 28, 28), 62), ((3, 24, 40), 7), ((1, 32, 32), 100), ((2, 16, 16), 3)],
    ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else f"{v}cls",
)
def test_shapes_dtypes_and_label_range(shape: tuple[int, ...], classes: int) -> None:
    train, test = load_data("glyphs", shape, classes, train_size=3 * classes, test_size=classes)
    for ds, n in ((train, 3 * classes), (test, classes)):
        assert isinstance(ds, ClassificationData) and len(ds) == n
        assert ds.inputs.shape == (n, *shape) and ds.inputs.dtype == torch.float32
        assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
        assert int(ds.labels.min()) >= 0 and int(ds.labels.max()) < classes
        assert torch.isfinite(ds.inputs).all()
        x, y = ds[0]
        assert x.shape == shape and x.dtype == torch.float32 and y.dtype == torch.int64 and y.dim() == 0
        assert len(ds.class_names) == classes and len(set(ds.class_names)) == classes
    # every class occurs exactly three times in train: the split is balanced
    assert torch.equal(torch.bincount(train.labels, minlength=classes), torch.full((classes,), 3))


def test_classes_are_balanced_and_shuffled() -> None:
    train, test = load_data("glyphs", (1, 28, 28), 10, train_size=1003, test_size=250)
    counts = torch.bincount(train.labels, minlength=10)
    assert int(counts.max() - counts.min()) <= 1
    assert int(torch.bincount(test.labels, minlength=10).min()) == 25
    assert not torch.equal(train.labels[:10], torch.arange(10)), "labels must not come in class order"


def test_class_k_is_the_kth_glyph() -> None:
    train, _ = load_data("glyphs", (1, 28, 28), 62, train_size=62, test_size=62)
    assert train.class_names == tuple(GLYPH_ALPHABET)
    train, _ = load_data("glyphs", (1, 28, 28), 100, train_size=100, test_size=100)
    assert train.class_names[0] == "00" and train.class_names[61] == "0z" and train.class_names[62] == "10"


def test_train_and_test_are_different_samples() -> None:
    train, test = _small("glyphs", (1, 28, 28), n=400)
    flat_train = train.inputs.flatten(1)
    flat_test = test.inputs.flatten(1)
    # the nearest train image to each test image is never an exact copy
    dists = torch.cdist(flat_test, flat_train).min(dim=1).values
    assert float(dists.min()) > 1e-3
    s_train, s_test = _small("synthetic", (20,), n=400)
    assert float(torch.cdist(s_test.inputs, s_train.inputs).min()) > 1e-3


def test_every_font_renders_every_glyph_inside_the_canvas() -> None:
    fonts = glyph_fonts()
    assert len(fonts) >= 8 and all(Path(f).is_file() for f in fonts)
    t = render_glyphs(GLYPH_ALPHABET, 56)
    assert t.shape == (len(fonts), 62, 56, 56) and t.dtype == torch.float32
    assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    ink = t.sum(dim=(2, 3))
    assert float(ink.min()) > 20, "some font draws an empty glyph"
    # nothing is cut off: the outermost rows and columns stay (nearly) empty
    border = t[..., [0, -1], :].sum(dim=(2, 3)) + t[..., :, [0, -1]].sum(dim=(2, 3))
    assert float(border.max()) < 2.0
    # within a font, any two characters differ (no missing-glyph boxes)
    flat = t.flatten(2)
    for f in range(len(fonts)):
        d = torch.cdist(flat[f], flat[f]) + torch.eye(62) * 1e9
        assert float(d.min()) > 1.0, Path(fonts[f]).name


def test_glyph_images_have_visible_ink_on_a_background() -> None:
    for shape in [(1, 28, 28), (3, 32, 32)]:
        train, _ = _small("glyphs", shape, n=100)
        x = train.inputs.flatten(2)  # (N, C, H*W), standardised
        # a glyph covers part of the image: strong contrast between its brightest and darkest pixels
        spread = (x.amax(dim=2) - x.amin(dim=2)).amax(dim=1)
        assert float(spread.min()) > 1.5, shape
        ink = (x - x.median(dim=2, keepdim=True).values).abs().gt(1.0).double().mean(dim=(1, 2))
        assert 0.03 < float(ink.mean()) < 0.5, shape


def test_glyph_inputs_are_standardised_by_the_train_split() -> None:
    train, test = _small("glyphs", (3, 32, 32), n=400)
    mean, std = train.inputs.mean(dim=(0, 2, 3)), train.inputs.std(dim=(0, 2, 3))
    torch.testing.assert_close(mean, torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(std, torch.ones(3), atol=1e-3, rtol=0)
    assert float(test.inputs.mean().abs()) < 0.2


def test_mean_brightness_alone_does_not_tell_the_class() -> None:
    train, test = load_data("glyphs", (1, 28, 28), 10, seed=1, train_size=3000, test_size=1000)
    b_train, b_test = train.inputs.mean(dim=(1, 2, 3)), test.inputs.mean(dim=(1, 2, 3))
    centres = torch.stack([b_train[train.labels == k].mean() for k in range(10)])
    pred = (b_test[:, None] - centres[None]).abs().argmin(1)
    assert float((pred == test.labels).double().mean()) < 0.3  # chance is 0.1


def test_default_sizes_shrink_for_big_inputs() -> None:
    assert default_sizes((1, 28, 28)) == (12_000, 2_000)
    big_train, big_test = default_sizes((3, 224, 224))
    assert 0 < big_test < big_train < 12_000
    assert (big_train + big_test) * 3 * 224 * 224 * 4 <= 512 * 2**20


# ---------------------------------------------------------------- learnability (the one slow test)

@pytest.fixture(scope="module")
def default_glyphs() -> tuple[ClassificationData, ClassificationData]:
    # how long generating them takes is measured in benchmarks/bench_speed.py
    return load_data("glyphs", (1, 28, 28), 10, seed=0)


@pytest.mark.slow
def test_default_cnn_reaches_90_percent_after_one_epoch_and_a_linear_model_does_clearly_worse(
    default_glyphs,
) -> None:
    train, test = default_glyphs
    assert len(train) == 12_000 and len(test) == 2_000
    torch.manual_seed(0)
    cnn = _train_and_score(_default_cnn(), train, test)
    assert cnn >= 0.90, f"one epoch of the default CNN reached only {cnn:.3f} test accuracy"
    torch.manual_seed(0)
    # three epochs at a higher rate: the gap is not for lack of training
    linear_model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    linear = _train_and_score(linear_model, train, test, lr=3e-3, epochs=3)
    assert 0.3 < linear <= cnn - 0.08, f"linear model {linear:.3f} vs CNN {cnn:.3f}: the task is too easy"


def test_synthetic_task_is_learnable_and_deterministic() -> None:
    train, test = load_data("synthetic", (20,), 10, seed=0, train_size=3000, test_size=1000)
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
    acc = _train_and_score(mlp, train, test, epochs=5)
    assert acc >= 0.85, acc
    # "glyphs" on a non-image shape is the synthetic task
    g_train, _ = load_data("glyphs", (20,), 10, seed=0, train_size=3000, test_size=1000)
    assert torch.equal(g_train.inputs, train.inputs)


def test_synthetic_task_for_a_sequence_shape() -> None:
    train, test = _small("synthetic", (8, 16), classes=4)
    assert train.inputs.shape == (200, 8, 16) and test.inputs.shape == (50, 8, 16)
    assert torch.equal(torch.bincount(train.labels, minlength=4), torch.full((4,), 50))


# ---------------------------------------------------------------- fake and local datasets

@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (20,), (8, 16)], ids=str)
def test_fake_spec_is_torchvision_fakedata_sized_to_the_shape(shape: tuple[int, ...]) -> None:
    train, test = load_data("fake", shape, 7, seed=1, train_size=40, test_size=10)
    assert train.inputs.shape == (40, *shape) and test.inputs.shape == (10, *shape)
    assert train.inputs.dtype == torch.float32 and train.labels.dtype == torch.int64
    assert 0.0 <= float(train.inputs.min()) and float(train.inputs.max()) <= 1.0
    assert int(train.labels.max()) < 7
    assert not torch.equal(train.inputs[:10], test.inputs)


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("gradscope tried to download a dataset")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashionmnist", "FashionMNIST")])
def test_missing_mnist_files_give_a_clear_error_and_no_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, folder: str
) -> None:
    _no_network(monkeypatch)
    with pytest.raises(GradscopeError) as info:
        load_data(f"{name}:{tmp_path}", (1, 28, 28), 10)
    msg = str(info.value)
    assert str(tmp_path / folder / "raw") in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg
    assert "download=True" in msg  # how to fetch them on a machine with network
    assert not (tmp_path / folder).exists(), "a failed load must not create folders"


def test_gzipped_mnist_files_are_pointed_out(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"x"))
    with pytest.raises(GradscopeError, match="gunzip"):
        load_data(f"mnist:{tmp_path}", (1, 28, 28), 10)


def test_missing_cifar_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    with pytest.raises(GradscopeError) as info:
        load_data(f"cifar10:{tmp_path}", (3, 32, 32), 10)
    assert "cifar-10-batches-py" in str(info.value) and "download=True" in str(info.value)


def test_empty_path_in_spec_is_a_clear_error() -> None:
    with pytest.raises(GradscopeError, match="mnist:PATH"):
        load_data("mnist:", (1, 28, 28), 10)


def _write_idx(path: Path, data: torch.Tensor) -> None:
    """Write a uint8 tensor in the IDX format of the MNIST files (big-endian header, type 0x08)."""
    header = struct.pack(">HBB", 0, 0x08, data.dim()) + b"".join(struct.pack(">I", s) for s in data.shape)
    path.write_bytes(header + data.contiguous().numpy().tobytes())


def _write_mnist(root: Path, folder: str, n_train: int = 30, n_test: int = 12) -> dict[str, torch.Tensor]:
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    arrays = {
        "train-images-idx3-ubyte": torch.randint(0, 256, (n_train, 28, 28), generator=g, dtype=torch.uint8),
        "train-labels-idx1-ubyte": torch.arange(n_train, dtype=torch.uint8) % 10,
        "t10k-images-idx3-ubyte": torch.randint(0, 256, (n_test, 28, 28), generator=g, dtype=torch.uint8),
        "t10k-labels-idx1-ubyte": (torch.arange(n_test, dtype=torch.uint8) * 3) % 10,
    }
    for name, data in arrays.items():
        _write_idx(raw / name, data)
    return arrays


@pytest.mark.parametrize(
    "name, folder, mean, std",
    [("mnist", "MNIST", 0.1307, 0.3081), ("fashionmnist", "FashionMNIST", 0.2860, 0.3530)],
)
def test_local_mnist_folder_is_read_and_normalised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, folder: str, mean: float, std: float
) -> None:
    _no_network(monkeypatch)
    arrays = _write_mnist(tmp_path, folder)
    train, test = load_data(f"{name}:{tmp_path}", (1, 28, 28), 10)
    assert train.inputs.shape == (30, 1, 28, 28) and test.inputs.shape == (12, 1, 28, 28)
    assert train.inputs.dtype == torch.float32 and train.labels.dtype == torch.int64
    # without a size the files come in their own order, pixel v becomes (v/255 - mean)/std
    expected = (arrays["train-images-idx3-ubyte"].float() / 255 - mean) / std
    torch.testing.assert_close(train.inputs[:, 0], expected)
    assert torch.equal(train.labels, arrays["train-labels-idx1-ubyte"].long())
    assert torch.equal(test.labels, arrays["t10k-labels-idx1-ubyte"].long())
    assert "mnist" in describe(f"{name}:{tmp_path}").lower()
    assert len(train.class_names) == 10 and (name != "fashionmnist" or train.class_names[1] == "Trouser")


def test_corrupt_mnist_files_give_a_clear_error(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x0c\x01garbage")
    with pytest.raises(GradscopeError, match=r"could not read MNIST .*download=True"):
        load_data(f"mnist:{tmp_path}", (1, 28, 28), 10)


def test_missing_files_are_reported_in_the_folder_the_user_named(tmp_path: Path) -> None:
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx(raw / "train-images-idx3-ubyte", torch.zeros(2, 28, 28, dtype=torch.uint8))
    with pytest.raises(GradscopeError) as info:
        load_data(f"mnist:{raw}", (1, 28, 28), 10)
    msg = str(info.value)
    assert f"in {raw} " in msg and "train-labels-idx1-ubyte" in msg
    assert "expected the files train-images" not in msg, "a file that is there is not missing"


def test_local_mnist_subset_is_seeded_and_folder_may_be_the_raw_one(tmp_path: Path) -> None:
    arrays = _write_mnist(tmp_path, "MNIST")
    a, _ = load_data(f"mnist:{tmp_path}", (1, 28, 28), 10, seed=0, train_size=10, test_size=5)
    raw = tmp_path / "MNIST" / "raw"
    b, _ = load_data(f"mnist:{raw}", (1, 28, 28), 10, seed=0, train_size=10, test_size=5)
    c, _ = load_data(f"mnist:{tmp_path / 'MNIST'}", (1, 28, 28), 10, seed=1, train_size=10, test_size=5)
    assert len(a) == 10 and torch.equal(a.inputs, b.inputs)
    assert not torch.equal(a.labels, c.labels) or not torch.equal(a.inputs, c.inputs)
    # each picked row is a real row of the file
    all_rows = (arrays["train-images-idx3-ubyte"].float() / 255 - 0.1307) / 0.3081
    assert all(any(torch.allclose(row, ref) for ref in all_rows) for row in a.inputs[:, 0])
    with pytest.raises(GradscopeError, match="30"):
        load_data(f"mnist:{tmp_path}", (1, 28, 28), 10, train_size=31)


def test_mnist_shape_or_class_mismatch_is_a_clear_error(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "MNIST")
    with pytest.raises(GradscopeError, match=r"1x28x28.*3x32x32|3x32x32.*1x28x28"):
        load_data(f"mnist:{tmp_path}", (3, 32, 32), 10)
    with pytest.raises(GradscopeError, match="10 classes"):
        load_data(f"mnist:{tmp_path}", (1, 28, 28), 5)


# ---------------------------------------------------------------- spec errors, describe, import cost

def test_unknown_spec_lists_the_valid_ones() -> None:
    with pytest.raises(GradscopeError) as info:
        load_data("imagenet", (3, 224, 224), 1000)
    msg = str(info.value)
    for valid in ("glyphs", "synthetic", "fake", "mnist:PATH", "fashionmnist:PATH", "cifar10:PATH"):
        assert valid in msg
    assert "'imagenet'" in msg


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (1, 0, 28)}, "input_shape"),
        ({"input_shape": ()}, "input_shape"),
        ({"num_classes": 1}, "num_classes"),
        ({"seed": -1}, "seed"),
        ({"train_size": 0}, "train_size"),
        ({"test_size": -5}, "test_size"),
        ({"num_classes": 62 * 62 + 1}, "3844"),
    ],
    ids=["zero-dim", "empty-shape", "one-class", "negative-seed", "zero-train", "negative-test", "too-many"],
)
def test_bad_arguments_are_clear_errors(kwargs: dict, match: str) -> None:
    args = {"input_shape": (1, 28, 28), "num_classes": 10, "seed": 0, "train_size": 10, "test_size": 10}
    args.update(kwargs)
    shape, classes = args.pop("input_shape"), args.pop("num_classes")
    with pytest.raises(GradscopeError, match=match):
        load_data("glyphs", shape, classes, **args)


def test_describe_is_one_line_for_every_spec(tmp_path: Path) -> None:
    for spec in ("glyphs", "synthetic", "fake", f"mnist:{tmp_path}", f"fashionmnist:{tmp_path}",
                 f"cifar10:{tmp_path}"):
        text = describe(spec)
        assert text and "\n" not in text, spec
    assert "Gaussian" in describe("glyphs", input_shape=(20,))
    assert "font" in describe("glyphs", input_shape=(1, 28, 28))
    with pytest.raises(GradscopeError, match="glyphs"):
        describe("nope")


def test_importing_the_module_does_not_import_matplotlib_or_write_files(tmp_path: Path) -> None:
    code = (
        "import sys, gradscope.data\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'\n"
        "gradscope.data.load_data('glyphs', (1, 28, 28), 10, train_size=20, test_size=10)\n"
    )
    env = {"HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache"),
           "MPLCONFIGDIR": str(tmp_path / "mpl"), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=tmp_path, timeout=120)
    written = [p for p in tmp_path.rglob("*") if p.is_file() and "mpl" not in p.parts]
    assert written == [], f"generating data wrote {written}"
