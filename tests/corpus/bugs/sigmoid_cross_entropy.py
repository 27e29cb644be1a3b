"""A classifier whose ``forward`` ends in ``torch.sigmoid``, trained with ``CrossEntropyLoss``,
which applies log-softmax itself: the "logits" it gets all lie in (0, 1), so the softmax over
them is nearly flat, the loss cannot fall much below log(classes) and the gradients are small.
The rows do not sum to 1, so this is not the double-softmax case.

Modelled on opendataval/opendataval#25 ("no need to have sigmoid function if to use
cross_entropy": ``x = F.sigmoid(x)`` at the end of the model, then ``F.cross_entropy``).

``--fixed`` returns the raw logits.
"""
import argparse

import torch
from torch import nn

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="return logits, no sigmoid")
args = parser.parse_args()
torch.manual_seed(0)


class Classifier(nn.Module):
    def __init__(self, classes=4):
        super().__init__()
        self.hidden = nn.Linear(12, 32)
        self.out = nn.Linear(32, classes)

    def forward(self, x):
        x = self.out(torch.relu(self.hidden(x)))
        return x if args.fixed else torch.sigmoid(x)


g = torch.Generator().manual_seed(0)
x = torch.randn(256, 12, generator=g)
y = x[:, :4].argmax(1)
model = Classifier()
criterion = nn.CrossEntropyLoss()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
for epoch in range(4):
    for i in range(0, 256, 64):
        loss = criterion(model(x[i:i + 64]), y[i:i + 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f}")
