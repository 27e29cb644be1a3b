"""False-alarm corpus for the registration checks: every torchvision model, and PyTorch's transformers.

Static checks read structure only, so the corpus builds each model on the meta device (no memory,
no random init: the whole zoo holds about 10 billion parameters). A builder that needs real
numbers while building (RegNet computes its block widths with tensors) is built on the CPU and
freed at once. The forward checks use real models: small classifiers at small inputs, tiny
configurations of the transformer families, one detector.
"""
from __future__ import annotations

import gc
import inspect
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import torch
import torchvision
from torch import nn

from gradscope.findings import Finding, Severity
from gradscope.registration import check

pytestmark = pytest.mark.slow

# Models whose construction or static findings get special treatment, and why.
EXPECTED_INFO = {  # plain lists of tensors that the module rebuilds or moves itself: GS103 at severity info
    "fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_mobilenet_v3_large_fpn", "fasterrcnn_resnet50_fpn",
    "fasterrcnn_resnet50_fpn_v2", "fcos_resnet50_fpn", "keypointrcnn_resnet50_fpn", "maskrcnn_resnet50_fpn",
    "maskrcnn_resnet50_fpn_v2", "raft_large", "raft_small", "retinanet_resnet50_fpn", "retinanet_resnet50_fpn_v2",
    "ssd300_vgg16", "ssdlite320_mobilenet_v3_large",
}


def builder_kwargs(name: str) -> dict[str, object]:
    """weights=None everywhere (no downloads), weights_backbone=None where the builder takes it."""
    kwargs: dict[str, object] = {"weights": None}
    if "weights_backbone" in inspect.signature(torchvision.models.get_model_builder(name)).parameters:
        kwargs["weights_backbone"] = None
    if name in {"googlenet", "inception_v3", "quantized_googlenet", "quantized_inception_v3"}:
        kwargs["init_weights"] = False  # silences the "default init will change" warning; structure unchanged
    return kwargs


@contextmanager
def built(factory: Callable[[], nn.Module]) -> Iterator[nn.Module]:
    """Build on the meta device, or on the CPU when the builder needs real numbers; free it afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation chatter of quantization and old builders
        try:
            with torch.device("meta"):
                model = factory()
            on_cpu = False
        except NotImplementedError:  # "Cannot copy out of meta tensor": the builder reads tensor values
            model = factory()
            on_cpu = True
    try:
        yield model
    finally:
        del model
        if on_cpu:
            gc.collect()  # big CPU models (RegNetY-128GF: 2.6 GB) must go before the next one


def serious(findings: list[Finding]) -> list[str]:
    return [f"{f.code} {f.where}: {f.message}" for f in findings if f.severity >= Severity.WARNING]


@pytest.mark.parametrize("name", torchvision.models.list_models())
def test_torchvision_model_has_no_static_warning_or_error(name: str) -> None:
    with built(lambda: torchvision.models.get_model(name, **builder_kwargs(name))) as model:
        findings = check(model)
    assert serious(findings) == []
    if name in EXPECTED_INFO:
        assert [f.code for f in findings] == ["GS103"]  # the cache is seen and called harmless
    else:
        assert findings == []


PYTORCH_MODELS: dict[str, Callable[[], nn.Module]] = {
    "nn.Transformer": lambda: nn.Transformer(),
    "nn.TransformerEncoder": lambda: nn.TransformerEncoder(nn.TransformerEncoderLayer(512, 8), num_layers=6),
    "nn.LSTM": lambda: nn.LSTM(128, 256, num_layers=3, bidirectional=True),
}


@pytest.mark.parametrize("name", sorted(PYTORCH_MODELS))
def test_pytorch_model_has_no_static_finding(name: str) -> None:
    with built(PYTORCH_MODELS[name]) as model:
        assert check(model) == []


# --------------------------------------------------------------------------- with a forward pass

FORWARD_CLASSIFIERS = [  # (name, extra builder kwargs, one sample's shape)
    ("resnet18", {}, (3, 64, 64)),
    ("mobilenet_v3_small", {}, (3, 64, 64)),
    ("efficientnet_b0", {}, (3, 64, 64)),
    ("squeezenet1_1", {}, (3, 64, 64)),
    ("shufflenet_v2_x0_5", {}, (3, 64, 64)),
    ("mnasnet0_5", {}, (3, 64, 64)),
    ("googlenet", {"aux_logits": False, "init_weights": False}, (3, 64, 64)),
    ("densenet121", {}, (3, 32, 32)),
    ("lraspp_mobilenet_v3_large", {"weights_backbone": None}, (3, 64, 64)),
    ("quantized_mobilenet_v3_large", {}, (3, 64, 64)),
    ("r3d_18", {}, (3, 4, 32, 32)),
]


@pytest.mark.parametrize(("name", "extra", "shape"), FORWARD_CLASSIFIERS, ids=[c[0] for c in FORWARD_CLASSIFIERS])
def test_torchvision_forward_has_no_warning_or_error(name: str, extra: dict, shape: tuple[int, ...]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = torchvision.models.get_model(name, weights=None, **extra)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    findings = check(model, input_shape=shape)
    assert serious(findings) == []
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched
    assert model.training


class LSTMClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.lstm = nn.LSTM(16, 32, num_layers=2, batch_first=True, bidirectional=True, dropout=0.1)
        self.head = nn.Linear(64, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(tokens))
        return self.head(out[:, -1])


def tiny_vit() -> nn.Module:
    return torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                hidden_dim=32, mlp_dim=64, num_classes=10)


def tiny_swin() -> nn.Module:
    return torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                              window_size=[4, 4], num_classes=10)


def tiny_swin_v2() -> nn.Module:
    from torchvision.models.swin_transformer import PatchMergingV2, SwinTransformerBlockV2

    return torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2],
                                              window_size=[4, 4], num_classes=10, block=SwinTransformerBlockV2,
                                              downsample_layer=PatchMergingV2)


def tiny_convnext() -> nn.Module:
    from torchvision.models.convnext import CNBlockConfig

    return torchvision.models.ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=10)


def tiny_maxvit() -> nn.Module:
    return torchvision.models.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2, block_channels=[16, 32],
                                     block_layers=[1, 1], head_dim=8, stochastic_depth_prob=0.1, num_classes=10)


def transformer_encoder() -> nn.Module:
    layer = nn.TransformerEncoderLayer(16, 2, dim_feedforward=32, batch_first=True)
    return nn.TransformerEncoder(layer, num_layers=2)


def transformer() -> nn.Module:
    return nn.Transformer(d_model=16, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=32,
                          batch_first=True)


FORWARD_OTHERS: dict[str, tuple[Callable[[], nn.Module], Callable[[], object]]] = {
    "vit-tiny": (tiny_vit, lambda: torch.randn(2, 3, 32, 32)),
    "swin-tiny": (tiny_swin, lambda: torch.randn(2, 3, 32, 32)),
    "swin_v2-tiny": (tiny_swin_v2, lambda: torch.randn(2, 3, 32, 32)),
    "convnext-tiny": (tiny_convnext, lambda: torch.randn(2, 3, 32, 32)),
    "maxvit-tiny": (tiny_maxvit, lambda: torch.randn(2, 3, 32, 32)),
    "lstm-classifier": (LSTMClassifier, lambda: torch.randint(0, 50, (2, 7))),
    "nn.TransformerEncoder": (transformer_encoder, lambda: torch.randn(2, 5, 16)),
    "nn.Transformer": (transformer, lambda: (torch.randn(2, 5, 16), torch.randn(2, 4, 16))),
    "fasterrcnn_mobilenet_v3_large_320_fpn": (
        lambda: torchvision.models.get_model("fasterrcnn_mobilenet_v3_large_320_fpn", weights=None,
                                             weights_backbone=None),
        lambda: ([torch.rand(3, 64, 80), torch.rand(3, 48, 64)],)),
}


@pytest.mark.parametrize("name", sorted(FORWARD_OTHERS))
def test_forward_on_transformers_recurrent_and_detection_models(name: str) -> None:
    factory, make_input = FORWARD_OTHERS[name]
    torch.manual_seed(0)
    model = factory()
    findings = check(model, make_input())
    assert serious(findings) == []
    if name.startswith("fasterrcnn"):
        assert [(f.code, f.severity) for f in findings] == [("GS103", Severity.INFO)]
    else:
        assert findings == []
