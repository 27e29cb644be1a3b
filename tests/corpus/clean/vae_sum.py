"""A variational autoencoder trained the way PyTorch's examples/vae/main.py trains one: a 784-400-20
encoder and decoder, the reconstruction BCE *summed* over pixels and batch
(``reduction="sum"``) plus the KL term, Adam at 1e-3, a test pass under ``torch.no_grad()``.
The loss (and so every gradient) is of the order of the number of pixels in a batch: large, and
healthy. The binarised 28x28 "digits" are random strokes drawn here, so nothing is downloaded.
"""
import argparse

import torch
from torch import nn, optim
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

parser = argparse.ArgumentParser(description="VAE on synthetic strokes")
parser.add_argument("--batch-size", type=int, default=128)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--seed", type=int, default=1)
args = parser.parse_args()
torch.manual_seed(args.seed)


def strokes(n, generator):
    """n binarised 28x28 images of three horizontal or vertical bars each."""
    images = torch.zeros(n, 1, 28, 28)
    rows = torch.randint(2, 24, (n, 3), generator=generator)
    cols = torch.randint(2, 24, (n, 3), generator=generator)
    lengths = torch.randint(6, 20, (n, 3), generator=generator)
    vertical = torch.rand(n, 3, generator=generator) < 0.5
    for i in range(n):
        for k in range(3):
            r, c, length = int(rows[i, k]), int(cols[i, k]), int(lengths[i, k])
            if vertical[i, k]:
                images[i, 0, r:r + length, c:c + 2] = 1.0
            else:
                images[i, 0, r:r + 2, c:c + length] = 1.0
    return images


g = torch.Generator().manual_seed(args.seed)
train_images, test_images = strokes(1024, g), strokes(256, g)
train_loader = DataLoader(TensorDataset(train_images, torch.zeros(1024)), batch_size=args.batch_size, shuffle=True)
test_loader = DataLoader(TensorDataset(test_images, torch.zeros(256)), batch_size=args.batch_size)


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def reparameterize(self, mu, logvar):
        std = torch.exp(0.5 * logvar)
        eps = torch.randn_like(std)
        return mu + eps * std

    def decode(self, z):
        h3 = F.relu(self.fc3(z))
        return torch.sigmoid(self.fc4(h3))

    def forward(self, x):
        mu, logvar = self.encode(x.view(-1, 784))
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar


model = VAE()
optimizer = optim.Adam(model.parameters(), lr=1e-3)


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    # see Appendix B from the VAE paper: Kingma and Welling, Auto-Encoding Variational Bayes, 2014
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def train(epoch):
    model.train()
    train_loss = 0
    for data, _ in train_loader:
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        train_loss += loss.item()
        optimizer.step()
    print(f"====> Epoch: {epoch} Average loss: {train_loss / len(train_loader.dataset):.4f}")


def test(epoch):
    model.eval()
    test_loss = 0
    with torch.no_grad():
        for data, _ in test_loader:
            recon_batch, mu, logvar = model(data)
            test_loss += loss_function(recon_batch, data, mu, logvar).item()
    print(f"====> Test set loss: {test_loss / len(test_loader.dataset):.4f}")


for epoch in range(1, args.epochs + 1):
    train(epoch)
    test(epoch)
