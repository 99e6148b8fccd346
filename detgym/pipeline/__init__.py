"""The digit-detection pipeline of paper 004 as library calls behind ``detgym train / find-threshold / predict``.

* :mod:`.run`: the run directory (config.json, best.pt / last.pt, history, threshold.json, plots, tb/);
* :mod:`.train`: the epoch loop on top of :class:`detgym.train.Trainer` (warmup + cosine, backbone at 0.5x
  lr, augmentation off for the last epochs, val mAP / loss / accuracy every epoch, Ctrl-C and resume);
* :mod:`.threshold`: the confidence-threshold sweep on the val split (mAP and sequence accuracy);
* :mod:`.predict`: pred.json (COCO results) and pred.csv (digit strings) for an image directory;
* :mod:`.strings`: left-to-right digit strings of detections and ground truth;
* :mod:`.plots`: PNG plots of a run's history.
"""

from .predict import PredictReport, assign_image_ids, list_images, predict_directory
from .run import RunConfig, RunDir, build_run_model, load_model_weights
from .threshold import find_threshold, format_table, pick_best, sweep_thresholds, threshold_grid
from .train import TrainOptions, TrainOutcome, resolve_run_config, train_run, validation_loss

__all__ = [
    "PredictReport",
    "RunConfig",
    "RunDir",
    "TrainOptions",
    "TrainOutcome",
    "assign_image_ids",
    "build_run_model",
    "find_threshold",
    "format_table",
    "list_images",
    "load_model_weights",
    "pick_best",
    "predict_directory",
    "resolve_run_config",
    "sweep_thresholds",
    "threshold_grid",
    "train_run",
    "validation_loss",
]
