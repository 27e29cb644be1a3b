"""A move-prediction model trained with legal-move masking: illegal moves' logits are set to
-inf before ``cross_entropy``. The batches are drawn in shuffled order but the mask is sliced in
the *unshuffled* order, so for some rows the target move is masked: the loss is +inf at every
step, while every gradient stays finite (the masked logits get a zero gradient) and Adam keeps
training. The printed loss is ``inf``; nothing else fails.

Modelled on the -inf masking discussions in pytorch/pytorch#63004 ("ignore_index does not work
as described with nn.CrossEntropyLoss", whose examples mask logits to -inf) and in
google-deepmind/optax#896 ("softmax_cross_entropy handles -inf logits incorrectly").

``--fixed`` slices the mask with the same shuffled indices as the batch.
"""
import argparse

import torch
from torch import nn
from torch.nn import functional as F

parser = argparse.ArgumentParser()
parser.add_argument("--fixed", action="store_true", help="index the mask like the batch")
args = parser.parse_args()
torch.manual_seed(0)

MOVES, N = 6, 256
g = torch.Generator().manual_seed(0)
legal = torch.rand(N, MOVES, generator=g) < 0.6
legal[:, 0] |= ~legal.any(1)  # at least one legal move per position
board = torch.cat([legal.float(), torch.randn(N, 10, generator=g)], dim=1)
preference = board[:, MOVES:] @ torch.randn(10, MOVES, generator=g)
target = preference.masked_fill(~legal, float("-inf")).argmax(1)  # the best legal move

model = nn.Sequential(nn.Linear(MOVES + 10, 64), nn.ReLU(), nn.Linear(64, MOVES))
optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
for epoch in range(4):
    perm = torch.randperm(N)
    for i in range(0, N, 64):
        idx = perm[i:i + 64]
        mask = legal[idx] if args.fixed else legal[i:i + 64]
        logits = model(board[idx]).masked_fill(~mask, float("-inf"))
        loss = F.cross_entropy(logits, target[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch} loss {loss.item():.4f}")
