"""A model trained only through direct ``model.forward(x)`` calls (so the root module's call hooks
never fire; only its submodules' do), and with no ``zero_grad()`` anywhere: every step adds the
new gradient to all the previous ones.

Modelled on Lightning-AI/pytorch-lightning#632 ("Call or Forward?": the README itself called
``model.forward(x)``), allenai/allennlp#456 ("Use model(**inputs) rather than
model.forward(**inputs)") and pytorch/pytorch#47175 (a missing ``zero_grad``).

``--fixed`` adds ``optimizer.zero_grad()`` (the direct ``forward`` calls stay: they are not the
bug this specimen measures).
"""
import argparse

import torch
from torch import nn
from torch.nn import functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="zero the gradients every step")
args = parser.parse_args()
torch.manual_seed(0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 32)
        self.fc2 = nn.Linear(32, 3)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


g = torch.Generator().manual_seed(0)
x = torch.randn(128, 8, generator=g)
y = (x[:, 0] > 0).long() + (x[:, 1] > 1).long()

model = Net()
optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
for step in range(10):
    if args.fixed:
        optimizer.zero_grad()
    output = model.forward(x)
    loss = F.cross_entropy(output, y)
    loss.backward()
    optimizer.step()
    print(f"step {step} loss {loss.item():.4f}")
