"""Training: :class:`Trainer` (one iteration with given per-level loss weights), :class:`VectorTrainer` (several
detectors in lockstep on one minibatch sequence), schedules, checkpoints."""

from .checkpoint import UnsafeCheckpointError, atomic_torch_save, load_checkpoint_file, load_plain
from .config import TrainConfig
from .detections import detections_to_coco, predict_batches, predict_coco
from .recipes import RECIPES, Recipe, get_recipe
from .schedule import lr_factor
from .trainer import MinibatchOrder, NonFiniteLossError, StepResult, Trainer, backbone_trunk, resolve_device
from .vector import VectorStep, VectorTrainer

__all__ = [
    "MinibatchOrder",
    "NonFiniteLossError",
    "RECIPES",
    "Recipe",
    "StepResult",
    "TrainConfig",
    "Trainer",
    "UnsafeCheckpointError",
    "VectorStep",
    "VectorTrainer",
    "atomic_torch_save",
    "backbone_trunk",
    "detections_to_coco",
    "get_recipe",
    "load_checkpoint_file",
    "load_plain",
    "lr_factor",
    "predict_batches",
    "predict_coco",
    "resolve_device",
]
