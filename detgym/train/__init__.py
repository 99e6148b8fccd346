"""Training: :class:`Trainer` (one iteration with given per-level loss weights), schedules, checkpoints."""

from .checkpoint import atomic_torch_save, load_checkpoint_file
from .config import TrainConfig
from .recipes import RECIPES, Recipe, get_recipe
from .schedule import lr_factor
from .trainer import NonFiniteLossError, StepResult, Trainer, predict_coco, resolve_device

__all__ = [
    "NonFiniteLossError",
    "RECIPES",
    "Recipe",
    "StepResult",
    "TrainConfig",
    "Trainer",
    "atomic_torch_save",
    "get_recipe",
    "load_checkpoint_file",
    "lr_factor",
    "predict_coco",
    "resolve_device",
]
