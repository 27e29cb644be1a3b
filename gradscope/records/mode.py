"""The mode probe's record: forwards whose train/eval mode did not fit what they did."""
from __future__ import annotations

from dataclasses import dataclass, field

from gradscope.records.base import ProbeRecord


@dataclass(frozen=True)
class ModeRecord(ProbeRecord, probe="mode"):
    evaluation_forwards: int = 0
    evaluation_in_train_mode: dict[str, int] = field(default_factory=dict)  # module -> forwards
    training_steps_in_eval_mode: int = 0
    first_evaluation_in_train_mode_step: int | None = None
    first_training_in_eval_mode_step: int | None = None
    functional_dropout_in_evaluation: dict[str, int] = field(default_factory=dict)  # module -> calls
    first_functional_dropout_step: int | None = None
    unbackwarded_training_forwards: int = 0    # grad-enabled forwards whose output no backward reached
    unbackwarded_in_train_mode: list[str] = field(default_factory=list)  # Dropout/BatchNorm in train mode then
    first_unbackwarded_step: int | None = None
