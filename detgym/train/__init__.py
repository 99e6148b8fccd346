"""Training: :class:`Trainer` (one iteration with given per-level loss weights), schedules, checkpoints."""

from .checkpoint import atomic_torch_save, load_checkpoint_file
from .config import TrainConfig
from .schedule import lr_factor
from .trainer import NonFiniteLossError, StepResult, Trainer, predict_coco, resolve_device

__all__ = [
    "NonFiniteLossError",
    "StepResult",
    "TrainConfig",
    "Trainer",
    "atomic_torch_save",
    "load_checkpoint_file",
    "lr_factor",
    "predict_coco",
    "resolve_device",
]
