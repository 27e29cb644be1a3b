"""The model file loader: what it finds, what it refuses, and how it explains a refusal."""
from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from gradscope.errors import GradscopeError, ModelFileError
from gradscope.modelfile import ModelSpec, build, load_model_file

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def write(folder: Path, name: str, *parts: str) -> Path:
    """Write the parts, each dedented on its own, one after the other."""
    path = folder / name
    path.write_text("".join(textwrap.dedent(part) for part in parts), encoding="utf-8")
    return path


def load_error(path: Path) -> ModelFileError:
    with pytest.raises(ModelFileError) as info:
        load_model_file(path)
    assert isinstance(info.value, GradscopeError)
    assert "Traceback" not in str(info.value)
    return info.value


NET = """
    import torch
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)
"""


# --- what is found -------------------------------------------------------------------------------

def test_build_model_function_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    def build_model():
        return Net()
    """)
    spec = load_model_file(path)
    assert isinstance(spec, ModelSpec)
    assert spec.source == "build_model"
    assert spec.path == path
    model = build(spec)
    assert type(model).__name__ == "Net"
    assert build(spec) is not model  # a fresh model on every call


def test_module_level_instance_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    model = Net()
    """)
    spec = load_model_file(path)
    assert spec.source == "model"
    assert build(spec) is build(spec)


def test_the_one_class_with_a_no_arg_constructor_is_used(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    class Block(nn.Module):
        def __init__(self, width, depth=2):
            super().__init__()
            self.fc = nn.Linear(width, width)
    """)
    spec = load_model_file(path)
    assert spec.source == "class Net"
    assert type(build(spec)).__name__ == "Net"


def test_build_model_wins_over_model_and_classes(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
    model = Other()
    def build_model():
        return nn.Linear(3, 3)
    """)
    spec = load_model_file(path)
    assert spec.source == "build_model"
    assert isinstance(build(spec), nn.Linear)


def test_model_instance_wins_over_several_classes(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
    model = Other()
    """)
    spec = load_model_file(path)
    assert spec.source == "model"
    assert type(build(spec)).__name__ == "Other"


def test_imported_classes_are_not_candidates(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", """
    from torch.nn import Linear, Sequential, ReLU
    from torchvision.models import ResNet, AlexNet
    """)
    err = load_error(path)
    assert "no model" in str(err)
    assert "AlexNet" not in str(err)

    path = write(tmp_path, "n.py", NET, """
    from torchvision.models import AlexNet, ResNet
    """)
    assert load_model_file(path).source == "class Net"


# --- the optional settings -----------------------------------------------------------------------

def test_optional_settings_are_read_and_typed(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    import torch
    input_shape = [4]
    num_classes = 2
    loss_fn = nn.CrossEntropyLoss()
    clip = {"max_norm": 1}

    def build_optimizer(model):
        return torch.optim.SGD(model.parameters(), lr=0.1)

    def build_loaders():
        data = [(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))]
        return data, data
    """)
    spec = load_model_file(path)
    assert spec.input_shape == (4,)
    assert spec.num_classes == 2
    assert isinstance(spec.loss_fn, nn.CrossEntropyLoss)
    assert spec.clip == {"max_norm": 1.0}
    assert isinstance(spec.clip["max_norm"], float)
    model = build(spec)
    assert spec.build_optimizer is not None and spec.build_loaders is not None
    optimizer = spec.build_optimizer(model)
    assert isinstance(optimizer, torch.optim.SGD)
    train, test = spec.build_loaders()
    (x, y), = train
    spec.loss_fn(model(x), y).backward()


def test_optional_settings_default_to_none(tmp_path: Path) -> None:
    spec = load_model_file(write(tmp_path, "m.py", NET))
    assert spec.input_shape is None and spec.num_classes is None and spec.loss_fn is None
    assert spec.build_optimizer is None and spec.build_loaders is None and spec.clip is None


def test_clip_value_is_accepted(tmp_path: Path) -> None:
    spec = load_model_file(write(tmp_path, "m.py", NET, "clip = {'clip_value': 0.5}\n"))
    assert spec.clip == {"clip_value": 0.5}


BAD_SETTINGS = [
    ("input_shape = (1, -28, 28)", ["input_shape", "(1, -28, 28)", "positive"]),
    ("input_shape = '1,28,28'", ["input_shape", "'1,28,28'", "tuple"]),
    ("input_shape = (1.0, 28)", ["input_shape", "(1.0, 28)"]),
    ("input_shape = (True, 3)", ["input_shape", "(True, 3)"]),
    ("input_shape = ()", ["input_shape", "()"]),
    ("num_classes = 0", ["num_classes", "0", "positive"]),
    ("num_classes = 10.0", ["num_classes", "10.0", "int"]),
    ("num_classes = True", ["num_classes", "True"]),
    ("clip = {'max_norm': -1}", ["clip", "-1", "positive"]),
    ("clip = {'max_norm': float('nan')}", ["clip", "nan"]),
    ("clip = {'max_norm': '1'}", ["clip", "'1'"]),
    ("clip = {'max_norm': 1, 'clip_value': 1}", ["clip", "max_norm", "clip_value", "one"]),
    ("clip = {'norm': 1.0}", ["clip", "'norm'", "max_norm", "clip_value"]),
    ("clip = 1.0", ["clip", "dict", "{\"max_norm\": 1.0}"]),
    ("loss_fn = nn.CrossEntropyLoss", ["loss_fn", "class", "nn.CrossEntropyLoss()"]),
    ("loss_fn = 3", ["loss_fn", "int"]),
    ("build_optimizer = torch.optim.Adam", ["build_optimizer", "def build_optimizer(model)"]),
    ("build_optimizer = lambda: None", ["build_optimizer", "one argument"]),
    ("def build_loaders(root):\n    return [], []", ["build_loaders", "root"]),
    ("build_loaders = [1, 2]", ["build_loaders", "list"]),
]


@pytest.mark.parametrize("line, words", BAD_SETTINGS, ids=[line.split("\n")[0] for line, _ in BAD_SETTINGS])
def test_bad_settings_are_named_with_what_was_expected(tmp_path: Path, line: str,
                                                       words: list[str]) -> None:
    path = write(tmp_path, "m.py", NET, line + "\n")
    message = str(load_error(path))
    assert str(path) in message
    for word in words:
        assert word in message, (word, message)


# --- what is refused, and how it is explained ------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    message = str(load_error(tmp_path / "nope.py"))
    assert "nope.py" in message and "not found" in message


def test_directory_and_non_python_file(tmp_path: Path) -> None:
    assert "directory" in str(load_error(tmp_path))
    other = tmp_path / "model.txt"
    other.write_text("x = 1\n", encoding="utf-8")
    message = str(load_error(other))
    assert "model.txt" in message and ".py" in message


def test_syntax_error_shows_file_line_and_caret(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", """
    import torch

    def build_model(:
        return None
    """)
    message = str(load_error(path))
    assert f"{path}:4" in message
    lines = message.splitlines()
    code = next(i for i, text in enumerate(lines) if "def build_model(:" in text)
    assert lines[code + 1].strip() == "^"
    assert lines[code + 1].index("^") == lines[code].index("(:") + 1


def test_undecodable_file(tmp_path: Path) -> None:
    path = tmp_path / "m.py"
    path.write_bytes(b"x = '\xff\xfe'\n")
    message = str(load_error(path))
    assert str(path) in message and "UTF-8" in message


def test_import_error_shows_only_the_users_frames(tmp_path: Path) -> None:
    write(tmp_path, "helper.py", """
    def explode():
        return 1 / 0
    """)
    path = write(tmp_path, "m.py", """
    from helper import explode

    value = explode()
    """)
    message = str(load_error(path))
    assert "ZeroDivisionError: division by zero" in message
    assert f'File "{path}", line 4, in <module>' in message
    assert "helper.py" in message and "return 1 / 0" in message
    assert "modelfile.py" not in message and "importlib" not in message


def test_library_frames_below_the_users_are_summarised(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", """
    from torch import nn

    layer = nn.Conv2d(3, 8, 3, groups=2)
    """)
    message = str(load_error(path))
    assert "in_channels must be divisible by groups" in message
    assert "nn.Conv2d(3, 8, 3, groups=2)" in message
    assert "conv.py" not in message
    assert "inside installed libraries" in message


def test_system_exit_while_importing_is_explained(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", """
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    args = parser.parse_args()
    """)
    message = str(load_error(path))
    assert "SystemExit" in message and "line 5" in message


def test_nothing_found_names_what_was_looked_for(tmp_path: Path) -> None:
    message = str(load_error(write(tmp_path, "m.py", "import torch\nx = 1\n")))
    for word in ["build_model", "model", "nn.Module subclass", str(tmp_path / "m.py")]:
        assert word in message


def test_several_candidates_are_named_with_the_way_to_choose(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    class Other(nn.Module):
        def __init__(self):
            super().__init__()
    """)
    message = str(load_error(path))
    assert "Net" in message and "Other" in message
    assert "def build_model():" in message
    assert "line 5" in message and "line 13" in message


def test_constructor_needing_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", """
    from torch import nn

    class Net(nn.Module):
        def __init__(self, width, depth, dropout=0.1):
            super().__init__()
    """)
    message = str(load_error(path))
    assert "Net" in message and "width" in message and "depth" in message
    assert "dropout" not in message
    assert "def build_model():" in message


@pytest.mark.parametrize("line, words", [
    ("build_model = 3", ["build_model", "int", "function"]),
    ("model = Net", ["model", "class", "model = Net()"]),
    ("model = 'resnet'", ["model", "str", "nn.Module"]),
])
def test_wrong_kind_of_model_entry(tmp_path: Path, line: str, words: list[str]) -> None:
    message = str(load_error(write(tmp_path, "m.py", NET, line + "\n")))
    for word in words:
        assert word in message


def test_build_model_returning_something_else(tmp_path: Path) -> None:
    spec = load_model_file(write(tmp_path, "m.py", NET, "def build_model():\n    return Net\n"))
    with pytest.raises(ModelFileError, match=r"returned the class `Net`.*Net\(\)"):
        build(spec)
    spec = load_model_file(write(tmp_path, "n.py", NET, "def build_model():\n    return None\n"))
    with pytest.raises(ModelFileError, match="returned None"):
        build(spec)


def test_build_error_shows_only_the_users_frames(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    def build_model():
        sizes = {}
        return nn.Linear(sizes["in"], 2)
    """)
    spec = load_model_file(path)
    with pytest.raises(ModelFileError) as info:
        build(spec)
    message = str(info.value)
    assert "KeyError: 'in'" in message
    assert f'File "{path}", line 15, in build_model' in message
    assert "modelfile.py" not in message and "Traceback" not in message
    assert getattr(info.value, "finding", None) is None


LATE_SUPER = """
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            self.fc = nn.Linear(4, 2)
            super().__init__()

        def forward(self, x):
            return self.fc(x)
"""


def test_submodule_before_super_init_is_a_gs107_finding(tmp_path: Path) -> None:
    spec = load_model_file(write(tmp_path, "m.py", LATE_SUPER))
    with pytest.raises(ModelFileError) as info:
        build(spec)
    found = info.value.finding  # type: ignore[attr-defined]
    assert found.code == "GS107"
    assert "Net" in found.where or "Net" in found.message


def test_gs107_while_importing_is_a_finding_too(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as info:
        load_model_file(write(tmp_path, "m.py", LATE_SUPER, "model = Net()\n"))
    assert info.value.finding.code == "GS107"  # type: ignore[attr-defined]


# --- loading leaves no trace -----------------------------------------------------------------------

def test_sys_path_and_argv_are_restored(tmp_path: Path) -> None:
    write(tmp_path, "layers.py", """
    from torch import nn
    def head():
        return nn.Linear(4, 2)
    """)
    path = write(tmp_path, "m.py", """
    import sys
    from layers import head
    ARGV = list(sys.argv)
    def build_model():
        import layers  # imported lazily: the folder must be on sys.path while building, too
        return layers.head()
    """)
    before_path, before_argv = list(sys.path), list(sys.argv)
    spec = load_model_file(path)
    assert sys.path == before_path and sys.argv == before_argv
    assert isinstance(build(spec), nn.Linear)
    assert sys.path == before_path
    module = sys.modules[spec.build_model.__module__]
    assert module.ARGV == [str(path)]

    with pytest.raises(ModelFileError):
        load_model_file(write(tmp_path, "bad.py", "raise RuntimeError('no')\n"))
    assert sys.path == before_path and sys.argv == before_argv


def test_each_load_is_a_fresh_module(tmp_path: Path) -> None:
    first = tmp_path / "a"
    second = tmp_path / "b"
    first.mkdir()
    second.mkdir()
    one = load_model_file(write(first, "model.py", NET))
    two = load_model_file(write(second, "model.py", NET.replace("Linear(4, 2)", "Linear(4, 3)")))
    again = load_model_file(first / "model.py")
    assert build(one).fc.out_features == 2
    assert build(two).fc.out_features == 3
    assert type(build(one)) is not type(build(again))


def test_main_guard_does_not_run_and_no_bytecode_is_written(tmp_path: Path) -> None:
    path = write(tmp_path, "m.py", NET, """
    if __name__ == "__main__":
        raise SystemExit("training started")
    """)
    assert load_model_file(path).source == "class Net"
    assert not (tmp_path / "__pycache__").exists()


# --- the shipped examples ----------------------------------------------------------------------------

def test_healthy_cnn_example_builds_and_runs() -> None:
    spec = load_model_file(EXAMPLES / "healthy_cnn.py")
    assert spec.input_shape == (1, 28, 28) and spec.num_classes == 10
    model = build(spec)
    assert sum(p.numel() for p in model.parameters()) == 1_607_490
    out = model(torch.zeros(2, *spec.input_shape))
    assert out.shape == (2, 10)
    assert spec.loss_fn is not None and spec.build_optimizer is not None
    assert spec.build_loaders is not None
    optimizer = spec.build_optimizer(model)
    train, _test = spec.build_loaders()
    x, y = next(iter(train))
    assert x.shape[1:] == spec.input_shape
    loss = spec.loss_fn(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)


def test_list_not_modulelist_example_hides_its_layers() -> None:
    spec = load_model_file(EXAMPLES / "list_not_modulelist.py")
    model = build(spec)
    assert spec.input_shape == (1, 28, 28)
    assert model(torch.zeros(1, *spec.input_shape)).shape == (1, 10)
    assert list(model.parameters()) == []  # the pitfall: the layers in the list are invisible
