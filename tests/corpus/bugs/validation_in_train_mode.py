"""A validation loop with neither ``torch.no_grad()`` nor ``model.eval()``: the validation
forwards build graphs that never reach ``backward()``, run dropout at random, and use batch
statistics in BatchNorm while moving its running statistics toward the validation data.

Modelled on codertimo/BERT-pytorch#92 ("Why not use torch.no_grad when evaluating test data?")
and as791/ZOO_Attack_PyTorch#7 ("Use eval mode during validation": the models have Dropout).

``--fixed`` validates after ``model.eval()`` under ``torch.no_grad()`` and calls
``model.train()`` before training again.
"""
import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="model.eval() and torch.no_grad() for validation")
args = parser.parse_args()
torch.manual_seed(0)


class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 64)
        self.bn = nn.BatchNorm1d(64)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(64, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x)))))


g = torch.Generator().manual_seed(0)
x = torch.randn(320, 8, generator=g)
y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()
train_x, train_y, val_x, val_y = x[:256], y[:256], x[256:], y[256:]

model = Classifier()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
criterion = nn.CrossEntropyLoss()


def validate():
    val_loss, correct = 0.0, 0
    for i in range(0, 64, 32):
        out = model(val_x[i:i + 32])
        val_loss += criterion(out, val_y[i:i + 32]).item()
        correct += (out.argmax(1) == val_y[i:i + 32]).sum().item()
    return val_loss / 2, correct / 64


for epoch in range(3):
    model.train()
    for i in range(0, 256, 32):
        optimizer.zero_grad()
        loss = criterion(model(train_x[i:i + 32]), train_y[i:i + 32])
        loss.backward()
        optimizer.step()
    if args.fixed:
        model.eval()
        with torch.no_grad():
            val_loss, acc = validate()
    else:
        val_loss, acc = validate()
    print(f"epoch {epoch} train loss {loss.item():.4f} val loss {val_loss:.4f} val acc {acc:.3f}")
