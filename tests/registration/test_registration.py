"""Registration checks (GS101-GS107): a specimen and a healthy twin per code, and a side-effect-free forward."""
from __future__ import annotations

import random
import threading

import pytest
import torch
import torch.nn.utils.prune as prune
from torch import nn
from torch.nn.modules import module as module_mod

from gradscope.errors import GradscopeError
from gradscope.findings import Finding, Severity
from gradscope.registration import (
    ForwardPassError,
    build_error_finding,
    check,
    registration_tree,
)


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


def only(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


# --------------------------------------------------------------------------- specimens and twins


class DeepMLP(nn.Module):
    """The classic mistake: hidden layers in a plain list."""

    def __init__(self, registered: bool = False) -> None:
        super().__init__()
        layers = [nn.Linear(4, 4) for _ in range(3)]
        self.hidden = nn.ModuleList(layers) if registered else layers
        self.out = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)


class ConvDict(nn.Module):
    def __init__(self, registered: bool = False) -> None:
        super().__init__()
        convs = {"a": nn.Conv2d(1, 2, 3), "b": nn.Conv2d(2, 2, 3)}
        self.convs = nn.ModuleDict(convs) if registered else convs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs["b"](self.convs["a"](x))


class NestedStages(nn.Module):
    """A list of dicts of lists: every level must be a registering container."""

    def __init__(self, registered: bool = False) -> None:
        super().__init__()
        if registered:
            self.stages = nn.ModuleList(
                nn.ModuleDict({"convs": nn.ModuleList([nn.Linear(3, 3), nn.Linear(3, 3)])}) for _ in range(2)
            )
        else:
            self.stages = [{"convs": [nn.Linear(3, 3), nn.Linear(3, 3)]} for _ in range(2)]  # noqa: GS101 (a specimen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            for layer in stage["convs"]:
                x = layer(x)
        return x


class TupleHolder(nn.Module):
    def __init__(self, registered: bool = False) -> None:
        super().__init__()
        pair = (nn.Linear(2, 2), nn.Linear(2, 2))
        self.pair = nn.Sequential(*pair) if registered else pair

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pair[1](self.pair[0](x))


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = [nn.Linear(2, 2), nn.Linear(2, 2)]  # noqa: GS101 (a specimen)


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = Encoder()


def test_gs101_list_of_linear_is_reported_with_counts() -> None:
    findings = check(DeepMLP())
    assert codes(findings) == ["GS101"]
    f = findings[0]
    assert f.severity is Severity.ERROR
    assert f.where == "DeepMLP.hidden"
    assert "3 modules" in f.message
    assert "60" in f.message  # 3 * (4*4 + 4) parameter values
    for reason in ("parameters()", ".to(", "state_dict()", "eval()", "optimizer"):
        assert reason in f.message
    assert "nn.ModuleList" in f.hint


def test_gs101_twin_module_list_is_healthy() -> None:
    assert check(DeepMLP(registered=True)) == []


def test_gs101_dict_of_conv_and_its_twin() -> None:
    findings = check(ConvDict())
    assert codes(findings) == ["GS101"]
    assert findings[0].where == "ConvDict.convs"
    assert "2 modules" in findings[0].message
    assert "nn.ModuleDict" in findings[0].hint
    assert check(ConvDict(registered=True)) == []


def test_gs101_nested_list_of_dicts_and_its_twin() -> None:
    findings = check(NestedStages())
    assert codes(findings) == ["GS101"]
    assert findings[0].where == "NestedStages.stages"
    assert "4 modules" in findings[0].message
    assert "[0]['convs'][0]" in findings[0].message
    assert check(NestedStages(registered=True)) == []


def test_gs101_tuple_and_its_twin() -> None:
    findings = check(TupleHolder())
    assert codes(findings) == ["GS101"]
    assert "tuple" in findings[0].message
    assert check(TupleHolder(registered=True)) == []


def test_gs101_set_is_reported() -> None:
    model = nn.Module()
    model.things = {nn.Linear(2, 2), nn.Linear(2, 2)}
    findings = check(model)
    assert codes(findings) == ["GS101"]
    assert "2 modules" in findings[0].message


def test_gs101_where_is_dotted_path_of_owner_below_the_root() -> None:
    findings = check(Outer())
    assert [f.where for f in findings] == ["encoder.blocks"]


def test_gs101_module_hidden_in_instance_dict_is_reported() -> None:
    model = DeepMLP(registered=True)
    object.__setattr__(model, "teacher", nn.Linear(4, 4))  # bypasses registration on purpose
    findings = check(model)
    assert codes(findings) == ["GS101"]
    assert findings[0].where == "DeepMLP.teacher"


def test_references_to_registered_modules_are_not_unregistered() -> None:
    model = DeepMLP(registered=True)
    model.order = [model.out, *model.hidden]  # a plain list of modules registered elsewhere
    model.by_name = {"out": model.out}
    object.__setattr__(model, "alias", model.out)
    assert check(model) == []


def test_gs101_stateless_modules_in_a_list_lose_nothing_unless_they_read_training() -> None:
    model = DeepMLP(registered=True)
    model.acts = [nn.ReLU(), nn.GELU()]
    assert check(model) == []
    model.drops = [nn.Dropout(0.1), nn.Dropout(0.2)]
    findings = check(model)
    assert codes(findings) == ["GS101"]
    assert findings[0].where == "DeepMLP.drops"
    assert "eval()" in findings[0].message


# --------------------------------------------------------------------------- GS102


class ParamList(nn.Module):
    def __init__(self, registered: bool = False) -> None:
        super().__init__()
        params = [nn.Parameter(torch.randn(5)) for _ in range(3)]
        self.scales = nn.ParameterList(params) if registered else params
        self.table = nn.ParameterDict({"w": nn.Parameter(torch.randn(2))}) if registered else {
            "w": nn.Parameter(torch.randn(2))}


def test_gs102_parameters_in_plain_containers_and_their_twin() -> None:
    findings = check(ParamList())
    assert codes(findings) == ["GS102", "GS102"]
    assert [f.where for f in findings] == ["ParamList.scales", "ParamList.table"]
    assert findings[0].severity is Severity.ERROR
    assert "3 parameters" in findings[0].message and "15" in findings[0].message
    assert "nn.ParameterList" in findings[0].hint
    assert "nn.ParameterDict" in findings[1].hint
    assert check(ParamList(registered=True)) == []


def test_gs102_list_of_registered_parameters_is_fine() -> None:
    model = nn.Linear(3, 3)
    model.all_params = [model.weight, model.bias]
    assert check(model) == []


# --------------------------------------------------------------------------- GS103


class Masked(nn.Module):
    def __init__(self, registered: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        if registered:
            self.register_buffer("mask", torch.ones(4, 4))
        else:
            self.mask = torch.ones(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) @ self.mask


def test_gs103_plain_tensor_attribute_and_buffer_twin() -> None:
    findings = check(Masked())
    assert codes(findings) == ["GS103"]
    f = findings[0]
    assert f.severity is Severity.WARNING
    assert f.where == "Masked.mask"
    assert "state_dict()" in f.message and ".to(" in f.message
    assert 'register_buffer("mask"' in f.hint
    assert check(Masked(registered=True)) == []


def test_gs103_tensor_with_requires_grad_points_to_parameter() -> None:
    model = nn.Module()
    model.w = torch.randn(3, requires_grad=True)
    findings = check(model)
    assert codes(findings) == ["GS103"]
    assert "requires_grad" in findings[0].message
    assert "nn.Parameter" in findings[0].hint


def test_gs103_list_of_plain_tensors_is_info_only() -> None:
    model = nn.Module()
    model.cache = [torch.zeros(2), torch.zeros(3)]
    findings = check(model)
    assert codes(findings) == ["GS103"]
    assert findings[0].severity is Severity.INFO
    assert findings[0].where == "Module.cache"


def test_gs103_alias_of_registered_buffer_is_fine() -> None:
    bn = nn.BatchNorm1d(3)
    bn.stats = [bn.running_mean, bn.running_var]
    assert check(bn) == []


# --------------------------------------------------------------------------- PyTorch's own internals


def _quantized_dynamic() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.LSTM(4, 4))
    return torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.LSTM}, dtype=torch.qint8)


def _quantized_static() -> nn.Module:
    model = torch.ao.quantization.QuantWrapper(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    prepared = torch.ao.quantization.prepare(model.eval())
    prepared(torch.randn(2, 1, 8, 8))
    return torch.ao.quantization.convert(prepared)


def _qat_prepared() -> nn.Module:
    model = torch.ao.quantization.QuantWrapper(nn.Sequential(nn.Linear(3, 3), nn.ReLU()))
    model.qconfig = torch.ao.quantization.get_default_qat_qconfig("fbgemm")
    return torch.ao.quantization.prepare_qat(model.train())


def _pruned() -> nn.Module:
    model = nn.Sequential(nn.Linear(4, 4), nn.Conv2d(1, 1, 3))
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    prune.random_unstructured(model[1], "weight", amount=0.3)
    prune.l1_unstructured(model[0], "weight", amount=0.2)  # a PruningContainer
    return model


def _weight_normed_lstm() -> nn.Module:
    return torch.nn.utils.weight_norm(nn.LSTM(3, 4), "weight_hh_l0")


INTERNALS = {
    "lstm": lambda: nn.LSTM(3, 4, num_layers=2, bidirectional=True),
    "gru": lambda: nn.GRU(3, 4),
    "rnn_cell": lambda: nn.RNNCell(3, 4),
    "multihead_attention": lambda: nn.MultiheadAttention(8, 2, kdim=4, vdim=4),
    "transformer": lambda: nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1,
                                          dim_feedforward=16),
    "weight_norm": lambda: torch.nn.utils.weight_norm(nn.Linear(3, 3)),
    "weight_norm_lstm": _weight_normed_lstm,
    "spectral_norm": lambda: torch.nn.utils.spectral_norm(nn.Conv2d(1, 2, 3)),
    "parametrize_orthogonal": lambda: torch.nn.utils.parametrizations.orthogonal(nn.Linear(3, 3)),
    "parametrize_weight_norm": lambda: torch.nn.utils.parametrizations.weight_norm(nn.Linear(3, 3)),
    "parametrize_spectral_norm": lambda: torch.nn.utils.parametrizations.spectral_norm(nn.Linear(3, 3)),
    "prune": _pruned,
    "quant_stubs": lambda: torch.ao.quantization.QuantWrapper(nn.Linear(2, 2)),
    "quantized_dynamic": _quantized_dynamic,
    "quantized_static": _quantized_static,
    "qat_prepared": _qat_prepared,
    "lazy": lambda: nn.Sequential(nn.LazyLinear(4), nn.LazyBatchNorm1d(), nn.LazyConv1d(2, 1)),
    "adaptive_log_softmax": lambda: nn.AdaptiveLogSoftmaxWithLoss(8, 20, cutoffs=[4, 10]),
    "embedding_bag": lambda: nn.EmbeddingBag(10, 3),
}


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("name", sorted(INTERNALS))
def test_no_false_alarm_on_pytorch_internals(name: str) -> None:
    model = INTERNALS[name]()
    assert check(model) == []


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_no_false_alarm_after_internals_ran_forward() -> None:
    # spectral_norm and weight_norm recompute their plain tensor attribute in a pre-hook on every call
    model = nn.Sequential(torch.nn.utils.spectral_norm(nn.Linear(3, 3)), torch.nn.utils.weight_norm(nn.Linear(3, 3)))
    model(torch.randn(2, 3))
    assert check(model, input_shape=(3,)) == []


class LSTMWrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def test_forward_on_recurrent_and_attention_internals_is_clean() -> None:
    assert check(LSTMWrapper(), input_shape=(4, 3)) == []
    mha = nn.MultiheadAttention(8, 2, batch_first=True)  # out_proj is used functionally, never called
    x = torch.randn(2, 3, 8)
    assert check(mha, (x, x, x)) == []
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    assert check(encoder, input_shape=(5, 8)) == []


def test_lazy_model_forward_leaves_parameters_uninitialized() -> None:
    model = nn.Sequential(nn.LazyLinear(4), nn.LazyBatchNorm1d(), nn.ReLU(), nn.LazyLinear(2))
    assert check(model, input_shape=(3,)) == []
    lazy = [*model.parameters(), model[1].running_mean, model[1].running_var]
    assert all(torch.nn.parameter.is_lazy(t) for t in lazy)
    assert type(model[0]) is nn.LazyLinear and type(model[1]) is nn.LazyBatchNorm1d


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_torchscript_models_are_clean_and_keep_their_modes() -> None:
    model = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3), nn.ReLU())
    scripted = torch.jit.script(model)
    scripted.train()
    scripted[1].eval()  # TorchScript keeps the flag outside __dict__
    assert check(scripted) == []
    assert check(scripted, input_shape=(3,)) == []  # submodules run inside TorchScript, unseen by hooks
    assert scripted.training and not scripted[1].training and scripted[0].training
    traced = torch.jit.trace(nn.Sequential(nn.Linear(3, 3), nn.ReLU()), torch.randn(2, 3))
    assert check(traced, input_shape=(3,)) == []  # its TorchScript twin shares the registered weights


# --------------------------------------------------------------------------- GS104


class BuildsInForward(nn.Module):
    def __init__(self, registered: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2) if registered else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        head = self.head if self.head is not None else nn.Linear(4, 2)
        return head(torch.relu(self.fc(x)))


def test_gs104_layer_built_inside_forward_and_its_twin() -> None:
    findings = check(BuildsInForward(), input_shape=(4,))
    assert codes(findings) == ["GS104"]
    f = findings[0]
    assert f.severity is Severity.ERROR
    assert "Linear" in f.where and "BuildsInForward" in f.where
    assert "forward" in f.where
    assert check(BuildsInForward(registered=True), input_shape=(4,)) == []


def test_gs104_module_held_only_in_a_list_and_called() -> None:
    findings = check(DeepMLP(), input_shape=(4,))
    assert codes(findings) == ["GS101", "GS104"]
    called = only(findings, "GS104")[0]
    assert called.where == "DeepMLP.hidden"
    assert "3 Linear modules" in called.message and "[0], [1], [2]" in called.message
    assert "nn.ModuleList" in called.hint
    assert check(DeepMLP(registered=True), input_shape=(4,)) == []


def test_gs104_stateless_layer_built_in_forward_is_harmless_but_dropout_is_not() -> None:
    class Stateless(nn.Module):
        def __init__(self, dropout: bool) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.dropout = dropout

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = nn.ReLU()(self.fc(x))
            return nn.Dropout(0.5)(x) if self.dropout else nn.Flatten()(x)

    assert check(Stateless(dropout=False), input_shape=(3,)) == []
    findings = check(Stateless(dropout=True), input_shape=(3,))
    assert codes(findings) == ["GS104"]
    assert "Dropout" in findings[0].where
    assert "eval()" in findings[0].message


GLOBAL_LAYER = nn.Linear(3, 3)


def test_gs104_module_held_outside_the_tree() -> None:
    class UsesGlobal(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return GLOBAL_LAYER(self.fc(x))

    findings = check(UsesGlobal(), input_shape=(3,))
    assert codes(findings) == ["GS104"]


def test_gs104_repeated_builds_are_one_finding_with_a_count() -> None:
    class Loop(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for _ in range(3):
                x = nn.Linear(3, 3)(x)
            return x

    findings = check(Loop(), input_shape=(3,))
    assert codes(findings) == ["GS104"]
    assert "3 Linear" in findings[0].message


def test_gs104_nested_unregistered_modules_are_reported_once_at_the_top() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = [nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))]  # noqa: GS101 (a specimen)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.body[0](x)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.block(x)

    findings = check(Net(), input_shape=(3,))
    assert codes(findings) == ["GS101", "GS104"]
    assert only(findings, "GS104")[0].where == "block.body"
    assert "1 Sequential module" in only(findings, "GS104")[0].message


def test_calls_from_other_threads_are_not_attributed_to_the_model() -> None:
    other = nn.Linear(3, 3)  # another model, run by a background thread while check() runs
    go, done = threading.Event(), threading.Event()

    def background() -> None:
        go.wait(5)
        other(torch.randn(1, 3))
        done.set()

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            go.set()
            done.wait(5)
            return self.fc(x)

    worker = threading.Thread(target=background)
    worker.start()
    try:
        assert check(Net(), input_shape=(3,)) == []
    finally:
        go.set()
        worker.join(5)
    assert done.is_set()


# --------------------------------------------------------------------------- GS105


class WithSpare(nn.Module):
    def __init__(self, use_spare: bool = False) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.spare = nn.Linear(4, 4)
        self.use_spare = use_spare

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(x)
        return self.spare(x) if self.use_spare else x


def test_gs105_unused_registered_linear_and_its_twin() -> None:
    findings = check(WithSpare(), input_shape=(4,))
    assert codes(findings) == ["GS105"]
    f = findings[0]
    assert f.severity is Severity.WARNING
    assert f.where == "spare"
    assert "20" in f.message  # 4*4 + 4 parameter values
    assert check(WithSpare(use_spare=True), input_shape=(4,)) == []


def test_gs105_static_check_alone_never_reports_unused() -> None:
    assert check(WithSpare()) == []


def test_gs105_containers_and_partially_used_lists() -> None:
    class Partial(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(3, 3) for _ in range(3))
            self.blocks = nn.ModuleDict({"a": nn.Linear(3, 3)})
            self.unused_head = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3))
            self.act = nn.ReLU()  # no parameters: never reported

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.layers[1](self.layers[0](x))  # layers[2] never runs
            return self.blocks["a"](x)

    findings = check(Partial(), input_shape=(3,))
    assert codes(findings) == ["GS105", "GS105"]
    assert [f.where for f in findings] == ["layers.2", "unused_head"]


def test_gs105_parameters_used_functionally_count_as_used() -> None:
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Linear(3, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.linear(x, self.proj.weight, self.proj.bias)

    assert check(Functional(), input_shape=(3,)) == []


# --------------------------------------------------------------------------- GS106


class TiedLM(nn.Module):
    def __init__(self, tied: bool = True) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def test_gs106_tied_weights_and_untied_twin() -> None:
    findings = check(TiedLM())
    assert codes(findings) == ["GS106"]
    f = findings[0]
    assert f.severity is Severity.INFO
    assert f.where == "embed.weight"
    assert "head.weight" in f.message
    assert check(TiedLM(tied=False)) == []
    x = torch.randint(0, 10, (2, 3))
    assert codes(check(TiedLM(), x)) == ["GS106"]


def test_gs106_one_shared_block_is_one_finding() -> None:
    block = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    model = nn.Sequential(block, block, block)
    findings = check(model)
    assert codes(findings) == ["GS106"]
    assert findings[0].where == "0"
    assert "`1`" in findings[0].message and "`2`" in findings[0].message


# --------------------------------------------------------------------------- GS107


class NoSuperLinear(nn.Module):
    def __init__(self) -> None:
        self.fc = nn.Linear(2, 2)  # GS107-LINE-MODULE
        super().__init__()


class NoSuperParam(nn.Module):
    def __init__(self) -> None:
        self.w = nn.Parameter(torch.zeros(2))  # GS107-LINE-PARAM


class NoSuperBuffer(nn.Module):
    def __init__(self) -> None:
        self.register_buffer("mask", torch.zeros(2))  # GS107-LINE-BUFFER


class NoSuperAddModule(nn.Module):
    def __init__(self) -> None:
        self.add_module("fc", nn.Linear(2, 2))  # GS107-LINE-ADD-MODULE


def _line_of(marker: str) -> int:
    with open(__file__, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if f"# {marker}" in line and "_line_of" not in line:
                return number
    raise AssertionError(marker)


@pytest.mark.parametrize(("cls", "marker", "attribute"), [
    (NoSuperLinear, "GS107-LINE-MODULE", "fc"),
    (NoSuperParam, "GS107-LINE-PARAM", "w"),
    (NoSuperBuffer, "GS107-LINE-BUFFER", "mask"),
    (NoSuperAddModule, "GS107-LINE-ADD-MODULE", "fc"),  # PyTorch says "no attribute '_modules'" here
], ids=["module", "parameter", "buffer", "add_module"])
def test_gs107_missing_super_init_names_class_and_line(cls: type, marker: str, attribute: str) -> None:
    with pytest.raises(AttributeError) as info:
        cls()
    f = build_error_finding(info.value)
    assert f is not None
    assert f.code == "GS107" and f.severity is Severity.ERROR
    assert f.where == f"{__file__}:{_line_of(marker)}"
    assert cls.__name__ in f.message
    assert f"self.{attribute}" in f.message or f'"{attribute}"' in f.message
    assert "super().__init__()" in f.hint


def test_gs107_from_a_model_file_run_by_a_loader(tmp_path) -> None:
    path = tmp_path / "model.py"
    path.write_text("import torch.nn as nn\n\n"
                    "class Net(nn.Module):\n"
                    "    def __init__(self):\n"
                    "        self.fc = nn.Linear(2, 2)\n"
                    "        super().__init__()\n\n"
                    "model = Net()\n", encoding="utf-8")
    namespace: dict[str, object] = {"__name__": "__main__"}
    with pytest.raises(AttributeError) as info:
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    f = build_error_finding(info.value)
    assert f is not None
    assert f.where == f"{path}:5"
    assert "`Net`" in f.message and "self.fc" in f.message and "self.fc = nn.Linear(2, 2)" in f.message


def test_gs107_class_argument_and_unrelated_errors() -> None:
    with pytest.raises(AttributeError) as info:
        NoSuperLinear()
    f = build_error_finding(info.value, cls=TiedLM)
    assert f is not None and "TiedLM" in f.message
    assert build_error_finding(AttributeError("'Foo' object has no attribute 'bar'")) is None
    assert build_error_finding(ValueError("cannot assign module before Module.__init__() call")) is None
    # the message alone (no traceback) is still recognised
    bare = build_error_finding(AttributeError("cannot assign module before Module.__init__() call"), cls=TiedLM)
    assert bare is not None and bare.code == "GS107" and "TiedLM" in bare.where


class SuperFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.width = self.fc.missing_attribute  # an AttributeError of another kind


def test_gs107_healthy_twin_is_not_recognised() -> None:
    with pytest.raises(AttributeError) as info:
        SuperFirst()
    assert build_error_finding(info.value) is None
    assert build_error_finding(info.value, cls=SuperFirst) is None


# --------------------------------------------------------------------------- the forward pass has no side effects


class Counting(nn.Module):
    """Changes a buffer, caches an attribute and draws Python random numbers on every call, even in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(3, 3)
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))
        self.seen_shapes: list[tuple[int, ...]] = []
        self.by_shape: dict[tuple[int, ...], int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.last_input = x
        self.jitter = random.random()
        self.seen_shapes.append(tuple(x.shape))  # caches filled in place
        self.by_shape[tuple(x.shape)] = len(self.seen_shapes)
        return self.fc(self.drop(self.bn(x)))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_forward_restores_buffers_modes_rng_attributes_and_hooks() -> None:
    model = Counting()
    model.train()
    model.bn.eval()  # a mixed state must come back exactly
    with torch.no_grad():
        model.bn.running_mean.fill_(0.5)
    before = _state(model)
    modes = {name: m.training for name, m in model.named_modules()}
    rng = torch.get_rng_state()
    py_rng = random.getstate()
    pre_hooks = dict(module_mod._global_forward_pre_hooks)
    post_hooks = dict(module_mod._global_forward_hooks)
    own_hooks = {name: (dict(m._forward_pre_hooks), dict(m._forward_hooks)) for name, m in model.named_modules()}
    keys = set(vars(model))

    assert check(model, input_shape=(3,)) == []

    after = _state(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert {name: m.training for name, m in model.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)
    assert random.getstate() == py_rng
    assert dict(module_mod._global_forward_pre_hooks) == pre_hooks
    assert dict(module_mod._global_forward_hooks) == post_hooks
    assert {name: (dict(m._forward_pre_hooks), dict(m._forward_hooks))
            for name, m in model.named_modules()} == own_hooks
    assert set(vars(model)) == keys  # `last_input` cached by forward is gone again
    assert model.seen_shapes == [] and model.by_shape == {}
    assert torch.is_grad_enabled()


def test_batchnorm_running_stats_unchanged_in_train_mode_model() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    model.train()
    before = _state(model)
    check(model, torch.randn(8, 3) * 10 + 3)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert model.training and model[1].training


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_forward_on_cuda_makes_input_there_and_keeps_cuda_rng() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Dropout(0.2), nn.Linear(4, 2)).cuda().train()
    before = _state(model)
    rng = torch.cuda.get_rng_state()
    cpu_rng = torch.get_rng_state()
    assert check(model, input_shape=(3,)) == []
    assert torch.equal(torch.cuda.get_rng_state(), rng)
    assert torch.equal(torch.get_rng_state(), cpu_rng)
    after = _state(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(t.is_cuda for t in after.values())
    assert model.training


def test_hooks_removed_and_state_restored_when_forward_raises() -> None:
    class Boom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(3, 3), nn.Linear(5, 5))
            self.hidden = [nn.Linear(3, 3)]  # noqa: GS101 (a specimen)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.encoder(x)

    model = Boom().train()
    pre_hooks = dict(module_mod._global_forward_pre_hooks)
    post_hooks = dict(module_mod._global_forward_hooks)
    rng = torch.get_rng_state()
    with pytest.raises(ForwardPassError) as info:
        check(model, input_shape=(3,))
    err = info.value
    assert isinstance(err, GradscopeError)
    assert "encoder.1" in str(err) and "Linear" in str(err)
    assert "(2, 3)" in str(err)
    assert codes(err.findings) == ["GS101"]  # the static findings survive
    assert isinstance(err.__cause__, RuntimeError)
    assert dict(module_mod._global_forward_pre_hooks) == pre_hooks
    assert dict(module_mod._global_forward_hooks) == post_hooks
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(m.training for m in model.modules())


def test_example_input_forms() -> None:
    class TwoInputs(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 2)
            self.b = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return self.a(x) + self.b(y)

    x, y = torch.randn(2, 3), torch.randn(2, 4)
    assert check(TwoInputs(), (x, y)) == []  # a tuple is positional arguments
    assert check(TwoInputs(), {"x": x, "y": y}) == []  # a dict is keyword arguments
    listy = nn.Linear(3, 3)
    with pytest.raises(ForwardPassError, match=r"\[\(2, 3\), \(2, 3\)\]"):
        check(listy, [torch.randn(2, 3), torch.randn(2, 3)])  # anything else is one argument


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    ((nn.Linear,), {}, "instance"),
    (("model",), {}, "nn.Module"),
    ((nn.Linear(2, 2), torch.randn(2, 2)), {"input_shape": (2,)}, "not both"),
    ((nn.Linear(2, 2),), {"input_shape": (0, 2)}, "input_shape"),
    ((nn.Linear(2, 2),), {"input_shape": "2"}, "input_shape"),
], ids=["class", "not-a-module", "both-inputs", "zero-dim", "string-shape"])
def test_bad_arguments_are_clear_errors(args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(GradscopeError, match=match):
        check(*args, **kwargs)


def test_integer_input_model_with_input_shape_is_a_clear_error() -> None:
    with pytest.raises(ForwardPassError, match="example_input"):
        check(nn.Embedding(10, 3), input_shape=(4,))


# --------------------------------------------------------------------------- hostile names, order, tree


def test_hostile_class_names_survive_unchanged() -> None:
    hostile = type("<script>", (DeepMLP,), {})
    findings = check(hostile(), input_shape=(4,))
    assert findings[0].where == "<script>.hidden"
    assert "`<script>.hidden`" in findings[0].message
    assert all("<script>" in f.where for f in findings)

    hostile_layer = type("<img src=x>", (nn.Linear,), {})

    class Builder(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return hostile_layer(3, 3)(x)

    findings = check(Builder(), input_shape=(3,))
    assert "<img src=x>" in findings[0].where and "<img src=x>" in findings[0].message


def test_output_is_deterministic_and_in_tree_order() -> None:
    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = Masked()
            self.second = DeepMLP()
            self.third = ParamList()
            self.spare = nn.Linear(2, 2)
            self.mask = torch.zeros(2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.second(self.first(x))

    model = Mixed()
    first = check(model, input_shape=(4,))
    assert first == check(model, input_shape=(4,))
    assert [f.where for f in first if f.code != "GS104"] == [
        "Mixed.mask", "first.mask", "second.hidden", "third.scales", "third.table", "spare"]


def test_registration_tree_rows_match_plain_pytorch() -> None:
    model = Outer()
    model.head = nn.Linear(2, 3)
    model.head.weight.requires_grad_(False)
    rows = registration_tree(model)
    assert [r.path for r in rows] == [name for name, _ in model.named_modules()]
    by_path = {r.path: r for r in rows}
    assert by_path[""].class_name == "Outer"
    assert by_path[""].total_params == sum(p.numel() for p in model.parameters()) == 9
    assert by_path[""].trainable_params == 3
    assert by_path["head"].own_params == 9
    assert by_path["encoder"].own_params == 0
    assert [u.to_json() for u in by_path["encoder"].unregistered] == [
        {"attribute": "blocks", "kind": "module", "count": 2, "code": "GS101", "severity": "error"}]
    assert by_path["encoder"].depth == 1 and by_path[""].depth == 0


def test_shared_parameters_are_counted_once_in_totals() -> None:
    rows = registration_tree(TiedLM())
    assert rows[0].total_params == 40


def test_findings_round_trip_through_dicts() -> None:
    for f in check(DeepMLP(), input_shape=(4,)):
        assert Finding.from_dict(f.to_dict()) == f
