"""detgym.metrics: the reward engine of detgym.

- ``coco_evaluate(gt, detections)``: pycocotools' 12 COCO bbox stats, exactly, much faster (module
  ``coco``).
- ``image_ap(...)``: per-image COCO AP of K candidate subsets at once, the box-selection reward of paper
  001 (module ``image_ap``); ``prepared_ap.PreparedAP`` runs its subset-independent part once per image, for
  envs whose candidates never change (DetBoxSelect).
- ``sequence_accuracy`` / ``detections_to_string`` / ``predictions_to_strings``: the left-to-right
  digit strings of paper 004 (module ``sequence``).
- ``reference``: the same numbers from pycocotools / faster-coco-eval, for tests and benchmarks.

numba compiles the kernels (cached on disk after the first run); without numba, or with
``DETGYM_NO_NUMBA=1``, pure NumPy / Python fallbacks give the same numbers, slower.
"""

from ._cocoparams import STAT_NAMES
from .coco import coco_evaluate
from .image_ap import image_ap
from .sequence import NO_DIGITS, detections_to_string, predictions_to_strings, sequence_accuracy

__all__ = [
    "STAT_NAMES",
    "coco_evaluate",
    "image_ap",
    "NO_DIGITS",
    "detections_to_string",
    "predictions_to_strings",
    "sequence_accuracy",
]
