"""A two-layer graph convolutional network trained the way Kipf's pygcn (pygcn/train.py,
pygcn/layers.py) trains one: ``GraphConvolution`` layers as ``adj @ (x @ W) + b`` with the
symmetrically normalised adjacency D^-1/2 (A + I) D^-1/2 as a dense matrix, ReLU, functional
dropout that follows ``self.training``, log-softmax and NLL on the training nodes only (a boolean
train mask, as in PyTorch Geometric), Adam with lr 0.01 and weight decay 5e-4, and, as pygcn
does, a validation forward after ``model.eval()`` without ``no_grad``. The graph is a random
stochastic block model with class-dependent node features.
"""
import argparse
import math

import torch
import torch.nn.functional as F
from torch import nn, optim

parser = argparse.ArgumentParser()
parser.add_argument("--seed", type=int, default=42, help="Random seed.")
parser.add_argument("--epochs", type=int, default=60, help="Number of epochs to train.")
parser.add_argument("--lr", type=float, default=0.01, help="Initial learning rate.")
parser.add_argument("--weight_decay", type=float, default=5e-4, help="Weight decay (L2 loss on parameters).")
parser.add_argument("--hidden", type=int, default=16, help="Number of hidden units.")
parser.add_argument("--dropout", type=float, default=0.5, help="Dropout rate (1 - keep probability).")
args = parser.parse_args()
torch.manual_seed(args.seed)


def block_model(n=120, classes=3, features=24, p_in=0.12, p_out=0.01):
    labels = torch.arange(n) % classes
    same = labels.view(-1, 1) == labels.view(1, -1)
    upper = (torch.rand(n, n) < torch.where(same, p_in, p_out)).triu(1)
    adj = (upper | upper.t()).float()
    centres = torch.randn(classes, features)
    x = 0.6 * centres[labels] + torch.randn(n, features)
    return adj, x, labels


def normalize(adj):
    """D^-1/2 (A + I) D^-1/2."""
    adj = adj + torch.eye(adj.size(0))
    d_inv_sqrt = adj.sum(1).pow(-0.5)
    return d_inv_sqrt.view(-1, 1) * adj * d_inv_sqrt.view(1, -1)


adj, features, labels = block_model()
adj = normalize(adj)
perm = torch.randperm(labels.size(0))
train_mask = torch.zeros(labels.size(0), dtype=torch.bool)
val_mask = torch.zeros_like(train_mask)
test_mask = torch.zeros_like(train_mask)
train_mask[perm[:30]] = True
val_mask[perm[30:70]] = True
test_mask[perm[70:]] = True


class GraphConvolution(nn.Module):
    """Simple GCN layer, similar to https://arxiv.org/abs/1609.02907"""

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.FloatTensor(in_features, out_features))
        if bias:
            self.bias = nn.Parameter(torch.FloatTensor(out_features))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        stdv = 1.0 / math.sqrt(self.weight.size(1))
        self.weight.data.uniform_(-stdv, stdv)
        if self.bias is not None:
            self.bias.data.uniform_(-stdv, stdv)

    def forward(self, input, adj):
        support = torch.mm(input, self.weight)
        output = torch.mm(adj, support)
        if self.bias is not None:
            return output + self.bias
        return output


class GCN(nn.Module):
    def __init__(self, nfeat, nhid, nclass, dropout):
        super().__init__()
        self.gc1 = GraphConvolution(nfeat, nhid)
        self.gc2 = GraphConvolution(nhid, nclass)
        self.dropout = dropout

    def forward(self, x, adj):
        x = F.relu(self.gc1(x, adj))
        x = F.dropout(x, self.dropout, training=self.training)
        x = self.gc2(x, adj)
        return F.log_softmax(x, dim=1)


model = GCN(nfeat=features.shape[1], nhid=args.hidden, nclass=int(labels.max()) + 1, dropout=args.dropout)
optimizer = optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)


def accuracy(output, labels):
    preds = output.max(1)[1].type_as(labels)
    return preds.eq(labels).double().mean()


def train(epoch):
    model.train()
    optimizer.zero_grad()
    output = model(features, adj)
    loss_train = F.nll_loss(output[train_mask], labels[train_mask])
    acc_train = accuracy(output[train_mask], labels[train_mask])
    loss_train.backward()
    optimizer.step()

    # Evaluate validation set performance separately, deactivates dropout during validation run.
    model.eval()
    output = model(features, adj)
    loss_val = F.nll_loss(output[val_mask], labels[val_mask])
    acc_val = accuracy(output[val_mask], labels[val_mask])
    if epoch % 10 == 0:
        print(f"Epoch: {epoch + 1:04d} loss_train: {loss_train.item():.4f} acc_train: {acc_train.item():.4f} "
              f"loss_val: {loss_val.item():.4f} acc_val: {acc_val.item():.4f}")


def test():
    model.eval()
    with torch.no_grad():
        output = model(features, adj)
    loss_test = F.nll_loss(output[test_mask], labels[test_mask])
    acc_test = accuracy(output[test_mask], labels[test_mask])
    print(f"Test set results: loss= {loss_test.item():.4f} accuracy= {acc_test.item():.4f}")


for epoch in range(args.epochs):
    train(epoch)
test()
