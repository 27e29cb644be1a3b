"""A model whose class name carries an ANSI escape, a bell, a C1 control and a bidi override."""
from torch import nn

input_shape = (20,)
num_classes = 3

HOSTILE = "Evil\x1b[31mRed\x07\x85\u202eesreveR"


def _forward(self, x):  # type: ignore[no-untyped-def]
    return self.body(x)


def _init(self) -> None:  # type: ignore[no-untyped-def]
    nn.Module.__init__(self)
    self.body = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 3))


Hostile = type(HOSTILE, (nn.Module,), {"__init__": _init, "forward": _forward})


def build_model() -> nn.Module:
    return Hostile()
