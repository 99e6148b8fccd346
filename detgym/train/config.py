"""Training configuration: one dataclass, defaults tuned for the tiny detectors on the digits set."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from detgym._validation import check_choice, replace_fields

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("cosine", "multistep", "constant")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Hyper-parameters of :class:`detgym.train.Trainer`.

    The learning rate follows a linear warmup from ``lr * warmup_factor`` to ``lr`` over ``warmup_iters``
    iterations, then ``schedule``: ``"cosine"`` decays to ``lr * min_lr_ratio`` at ``iterations``,
    ``"multistep"`` multiplies by ``gamma`` at each fraction of ``iterations`` in ``milestones`` (torchvision's
    detection references use 2/3 and 8/9 of the schedule), ``"constant"`` keeps ``lr``.
    ``backbone_lr_mult`` scales the backbone's learning rate (paper 004 trains it at 0.5x the head's).
    """

    iterations: int = 1000
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_iters: int = 100
    warmup_factor: float = 1e-3
    min_lr_ratio: float = 0.01
    milestones: tuple[float, ...] = (2 / 3, 8 / 9)
    gamma: float = 0.1
    backbone_lr_mult: float = 1.0
    grad_clip: float | None = 10.0
    amp: bool = True
    device: str = "auto"
    seed: int = 0
    eval_batch_size: int = 16

    def __post_init__(self) -> None:
        check_choice("TrainConfig.optimizer", self.optimizer, OPTIMIZERS)
        check_choice("TrainConfig.schedule", self.schedule, SCHEDULES)
        check_choice("TrainConfig.device", self.device, DEVICES)
        for name in ("iterations", "batch_size", "eval_batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if self.warmup_iters < 0:
            raise ValueError(f"TrainConfig.warmup_iters must be >= 0, got {self.warmup_iters!r}")
        if not self.lr > 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr!r}")
        if any(not 0 < m <= 1 for m in self.milestones):
            raise ValueError(f"TrainConfig.milestones are fractions of the schedule in (0, 1], got {self.milestones!r}")
        self.milestones = tuple(sorted(self.milestones))

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again); unknown names raise ValueError listing the fields."""
        return replace_fields(self, **changes)
