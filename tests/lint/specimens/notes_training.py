"""A training script assembled from a real set of PyTorch notes, mistakes included.

Each line that a rule must flag ends with a marker comment naming the code. Never run: it is
read by the lint tests only.
"""
from typing import List

import matplotlib.pyplot as plt
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x


class ListNet(nn.Module):
    """The notes warn against a Python list of layers; this is what that looks like."""

    def __init__(self):
        super().__init__()
        self.layers = [nn.Linear(10, 10) for _ in range(3)]  # expect: GS101

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


def train_step(model, optimizer, train_loader, loss_fn, epoch, device):
    model.train()
    running_loss = 0.0
    total_correct = 0
    total_samples = 0
    for data, targets in train_loader:
        data = data.to(device)
        targets = targets.to(device)
        predictions = model(data)
        loss = loss_fn(predictions, targets)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), clip_value=1)
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip_norm=1)  # expect: GS507
        optimizer.step()
        class_probs = torch.nn.functional.softmax(predictions, 1)
        class_pred = torch.max(class_probs, 1).indices
        total_correct += sum(targets == class_pred).cpu().item()
        total_samples += targets.size(dim=0)
        running_loss += loss.item()
    train_loss = running_loss / len(train_loader)
    train_accuracy = total_correct / total_samples * 100.0
    print(f"{epoch}: Train Loss: {train_loss:.3f} | Train Accuracy: {train_accuracy:.2f}")
    return train_loss, train_accuracy


def test_classifier(model, test_loader, loss_fn, epoch, device):
    model.eval()
    running_loss = 0.0
    total_correct = 0
    total_samples = 0
    with torch.no_grad():
        for data, targets in test_loader:
            data.to(device)  # expect: GS505
            targets = targets.to(device)
            predictions = model(data)
            running_loss += loss_fn(predictions, targets).item()
            class_probs = torch.nn.functional.softmax(predictions, 1)
            class_pred = torch.max(class_probs, 1).indices
            total_correct += sum(targets == class_pred).cpu().item()
            total_samples += targets.size(dim=0)
    test_loss = running_loss / len(test_loader)
    test_accuracy = total_correct / total_samples * 100.0
    print(f"{epoch}: Test Loss: {test_loss:.3f} | Test Accuracy: {test_accuracy:.2f}%")
    return test_loss, test_accuracy


def plot_losses(train_losses: List[float], test_losses: List[float]):
    epochs = range(len(train_losses))
    plt.plot(epochs, train_losses, "b", label="Training Loss")
    plt.plot(epochs, test_losses, "g", label="Test Loss")
    plt.legend()
    plt.show()


def train_test_loop(epochs, train_loader, test_loader, device):
    model = nn.Sequential(
        nn.Conv2d(1, 10, 5),
        nn.ReLU(),
        nn.Conv2d(10, 20, 5),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8000, 200),
        nn.ReLU(),
        nn.Linear(200, 10))
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    train_losses = []
    test_losses = []
    test_classifier(model, test_loader, loss_fn, -1, device)
    for epoch in range(epochs):
        train_loss, train_acc = train_step(model, optimizer, train_loader, loss_fn, epoch, device)
        train_losses.append(train_loss)
        test_loss, test_acc = test_classifier(model, test_loader, loss_fn, epoch, device)
        test_losses.append(test_loss)
    torch.save(model.state_dict(), "model.pth")
    plot_losses(train_losses, test_losses)


def finetune():
    model = torchvision.models.resnet18(pretrained=True)  # expect: GS508
    for param in model.parameters():
        param.requires_grad = False
    model.fc = nn.Linear(512, 10)
    return model
