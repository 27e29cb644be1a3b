"""The notes' fine-tuning recipe: resnet18 (weights=None: nothing is downloaded), every parameter
frozen, the classifier replaced by a new trainable nn.Linear(512, 10)."""
import torch
import torchvision
from torch import nn

input_shape = (3, 32, 32)
num_classes = 10


def build_model() -> nn.Module:
    model = torchvision.models.resnet18(weights=None)
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(512, 10)
    return model


def build_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
