"""The classic pitfall: layers kept in a plain Python list instead of an `nn.ModuleList`.

    gradscope check examples/list_not_modulelist.py

The model runs, but PyTorch never sees the layers: `model.parameters()` is empty (so the
optimizer has nothing to train), `.to(device)` leaves them behind and `state_dict()` does not save
them. gradscope reports GS101 on `Net.layers`. The fix is one word:
`self.layers = nn.ModuleList([...])`.
"""
from torch import nn

input_shape = (1, 28, 28)
num_classes = 10


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        # The mistake, on purpose: a plain list, so these layers are not registered.
        self.layers = [  # noqa: GS101  (gradscope lint flags this line without the noqa)
            nn.Flatten(),
            nn.Linear(28 * 28, 128),
            nn.ReLU(),
            nn.Linear(128, num_classes),
        ]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x
