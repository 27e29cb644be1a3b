"""Fine-tuning done the way PyTorch's transfer-learning tutorial ("ConvNet as fixed feature
extractor") and the timm/torchvision recipes do it: a CNN backbone with BatchNorm, frozen with
``requires_grad_(False)`` and kept in eval mode (``train()`` is overridden so that
``model.train()`` leaves it there), a new linear head, and an optimizer built from the trainable
parameters only. The backbone's "pretrained" weights are a seeded initialisation standing in for
a checkpoint; the images are 3x16x16 images of two kinds drawn here.
"""
import argparse

import torch
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--lr", type=float, default=0.05)
args = parser.parse_args()
torch.manual_seed(0)


def make_backbone():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten())


class FineTuned(nn.Module):
    def __init__(self, backbone, num_classes):
        super().__init__()
        self.backbone = backbone
        self.backbone.requires_grad_(False)
        self.head = nn.Linear(32, num_classes)

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()  # frozen: BatchNorm keeps its pretrained running statistics
        return self

    def forward(self, x):
        return self.head(self.backbone(x))


def patterns(n, generator):
    """Two classes: warm stripes or cool blobs, under noise."""
    labels = torch.randint(0, 2, (n,), generator=generator)
    grid = torch.arange(16.0)
    stripes = torch.sin(grid * 1.5).view(1, 1, 16, 1) * torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    blob = torch.exp(-((grid - 8) ** 2).view(16, 1) / 10 - ((grid - 8) ** 2).view(1, 16) / 10)
    blobs = blob.view(1, 1, 16, 16) * torch.tensor([0.2, 0.5, 1.0]).view(1, 3, 1, 1)
    images = torch.where(labels.view(n, 1, 1, 1) == 1, stripes.expand(n, 3, 16, 16), blobs.expand(n, 3, 16, 16))
    return images + 0.3 * torch.randn(n, 3, 16, 16, generator=generator), labels


backbone = make_backbone()
backbone.load_state_dict(make_backbone().state_dict())  # the "pretrained" checkpoint
model = FineTuned(backbone, num_classes=2)
params_to_update = [p for p in model.parameters() if p.requires_grad]
optimizer = optim.Adam(params_to_update, lr=args.lr)
criterion = nn.CrossEntropyLoss()

g = torch.Generator().manual_seed(1)
train_loader = DataLoader(TensorDataset(*patterns(192, g)), batch_size=32, shuffle=True)
val_loader = DataLoader(TensorDataset(*patterns(128, g)), batch_size=64)

for epoch in range(args.epochs):
    model.train()
    running_loss = 0.0
    for inputs, labels in train_loader:
        optimizer.zero_grad()
        outputs = model(inputs)
        loss = criterion(outputs, labels)
        loss.backward()
        optimizer.step()
        running_loss += loss.item() * inputs.size(0)
    model.eval()
    correct = 0
    with torch.no_grad():
        for inputs, labels in val_loader:
            correct += (model(inputs).argmax(1) == labels).sum().item()
    print(f"epoch {epoch} train loss {running_loss / len(train_loader.dataset):.4f} val acc {correct / 128:.3f}")
