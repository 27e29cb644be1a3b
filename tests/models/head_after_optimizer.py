"""GS303 and GS301: the head is replaced after the optimizer was built (and the backbone is
frozen but still handed to the optimizer)."""
import torch
from torch import nn

input_shape = (20,)
num_classes = 3

model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 10))
for p in model.parameters():
    p.requires_grad = False
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
model[2] = nn.Linear(64, 3)


def build_optimizer(m: nn.Module) -> torch.optim.Optimizer:
    return optimizer
