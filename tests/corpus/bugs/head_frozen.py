"""Fine-tuning with the freezing condition inverted: the loop meant to freeze the "pretrained"
backbone and train the new head freezes the head instead, and the optimizer, built from
``model.fc.parameters()`` as fine-tuning tutorials do, holds only those frozen parameters. The
backbone is trainable, gets gradients, and is in no optimizer: nothing trains at all.

Modelled on quangvnai/grit#20 ("Question about freeze training": the freezing loop's condition
freezes the wrong parameters) and lightly-ai/lightly#1169 (the optimizer was given only the
classifier head's parameters, so a backbone meant to train was never updated).

``--fixed`` freezes what was meant: every parameter outside ``fc``.
"""
import argparse

import torch
from torch import nn, optim

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="freeze the backbone, not the head")
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()
torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x):
        return self.fc(self.backbone(x))


g = torch.Generator().manual_seed(0)
labels = torch.randint(0, 3, (192,), generator=g)
images = torch.randn(192, 1, 12, 12, generator=g) * 0.5 + labels.view(-1, 1, 1, 1).float()

model = Net()
# freeze the pretrained backbone, train only the new classifier
for name, param in model.named_parameters():
    frozen = not name.startswith("fc") if args.fixed else name.startswith("fc")
    if frozen:
        param.requires_grad = False
optimizer = optim.SGD(model.fc.parameters(), lr=0.1, momentum=0.9)
criterion = nn.CrossEntropyLoss()

for epoch in range(args.epochs):
    model.train()
    for i in range(0, 192, 32):
        inputs, targets = images[i:i + 32], labels[i:i + 32]
        optimizer.zero_grad()
        loss = criterion(model(inputs), targets)
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f}")
