"""A small, healthy CNN for 28x28 greyscale images: `gradscope check` finds nothing wrong with it.

    gradscope check examples/healthy_cnn.py

The data is synthetic so the example runs anywhere: each image is noise with one bright square
whose position gives its class. Replace `build_loaders` with your own DataLoaders (for example
torchvision's MNIST) for real training.
"""
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

input_shape = (1, 28, 28)   # one sample: channels, height, width (no batch dimension)
num_classes = 10
loss_fn = nn.CrossEntropyLoss()


def build_model():
    return nn.Sequential(
        nn.Conv2d(1, 10, 5),      # 28x28 -> 24x24
        nn.ReLU(),
        nn.Conv2d(10, 20, 5),     # 24x24 -> 20x20
        nn.ReLU(),
        nn.Flatten(),             # 20 * 20 * 20 = 8000
        nn.Linear(8000, 200),
        nn.ReLU(),
        nn.Linear(200, num_classes),
    )


def build_optimizer(model):
    return torch.optim.Adam(model.parameters(), lr=1e-3)


def _squares(count, seed):
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (count,), generator=generator)
    images = 0.1 * torch.randn(count, *input_shape, generator=generator)
    for i, label in enumerate(labels.tolist()):
        row, col = divmod(label, 5)
        images[i, 0, 4 + 12 * row: 10 + 12 * row, 2 + 5 * col: 6 + 5 * col] += 1.0
    return TensorDataset(images, labels)


def build_loaders():
    train = DataLoader(_squares(512, seed=0), batch_size=64, shuffle=True)
    test = DataLoader(_squares(128, seed=1), batch_size=64)
    return train, test
