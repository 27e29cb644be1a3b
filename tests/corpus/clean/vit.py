"""A small vision transformer trained the way ViT recipes (timm, the DeiT and "ViT from scratch"
tutorials) train one: a strided-convolution patch embedding, a learnable class token and position
embedding, ``nn.TransformerEncoder`` (pre-norm, GELU, dropout 0.1), a linear head on the class
token, AdamW (weight decay 0.05), a linear warm-up then cosine decay through
``torch.optim.lr_scheduler.LambdaLR`` stepped after every optimizer step, and
``clip_grad_norm_(..., 1.0)``. The cosine takes the lr from 1e-3 down to about 7e-6 at the last step
(150 times lower), as intended. The images are 3x16x16 textures of four kinds drawn here.
"""
import argparse
import math

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser()
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=1e-3)
parser.add_argument("--warmup-steps", type=int, default=5)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.manual_seed(args.seed)


def textures(n, generator):
    """Four classes: horizontal stripes, vertical stripes, checkerboard, noise; random phase and colour."""
    labels = torch.randint(0, 4, (n,), generator=generator)
    grid = torch.arange(16.0)
    phase = torch.rand(n, 1, 1, generator=generator) * 6.28
    rows = torch.sin(grid.view(1, 16, 1) * 1.2 + phase).expand(n, 16, 16)
    cols = torch.sin(grid.view(1, 1, 16) * 1.2 + phase).expand(n, 16, 16)
    noise = torch.rand(n, 16, 16, generator=generator) * 2 - 1
    pattern = torch.stack([rows, cols, rows * cols, noise], dim=1)[torch.arange(n), labels]
    colour = torch.rand(n, 3, 1, 1, generator=generator) + 0.5
    images = colour * pattern.unsqueeze(1) + 0.3 * torch.randn(n, 3, 16, 16, generator=generator)
    return images, labels


g = torch.Generator().manual_seed(args.seed)
train_set = TensorDataset(*textures(256, g))
val_set = TensorDataset(*textures(128, g))
train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True)
val_loader = DataLoader(val_set, batch_size=64)


class PatchEmbed(nn.Module):
    def __init__(self, patch=4, in_chans=3, dim=64):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, dim)


class ViT(nn.Module):
    def __init__(self, image=16, patch=4, dim=64, depth=2, heads=4, mlp_ratio=2, classes=4, dropout=0.1):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, 3, dim)
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, dim))
        self.pos_drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim * mlp_ratio, dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def forward(self, x):
        x = self.patch_embed(x)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = self.pos_drop(torch.cat([cls, x], dim=1) + self.pos_embed)
        x = self.encoder(x)
        return self.head(self.norm(x[:, 0]))


model = ViT()
# no weight decay on biases, norms, the class token and the position embedding
skip = ("pos_embed", "cls_token")
decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and not n.startswith(skip)]
no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or n.startswith(skip)]
optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                              lr=args.lr, betas=(0.9, 0.999))
total_steps = args.epochs * len(train_loader)


def warmup_cosine(step):
    if step < args.warmup_steps:
        return (step + 1) / args.warmup_steps
    progress = (step - args.warmup_steps) / max(1, total_steps - args.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine)
criterion = nn.CrossEntropyLoss(label_smoothing=0.1)

for epoch in range(args.epochs):
    model.train()
    for images, targets in train_loader:
        loss = criterion(model(images), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, targets in val_loader:
            correct += (model(images).argmax(1) == targets).sum().item()
    print(f"epoch {epoch} loss {loss.item():.4f} lr {scheduler.get_last_lr()[0]:.2e} "
          f"val acc {correct / len(val_set):.3f}")
