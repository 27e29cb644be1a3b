"""A model file whose import never ends: it prints "importing" (flushed) and waits for a signal,
as a slow import (a dataset download, a big checkpoint) does when the user presses Ctrl-C."""
import time

from torch import nn

print("importing", flush=True)
while True:
    time.sleep(0.05)

model = nn.Linear(2, 2)
