"""pycocotools' default bbox evaluation parameters (``cocoeval.Params.setDetParams``), bit for bit.

The thresholds come from the same ``np.linspace`` calls as pycocotools: ``np.arange`` would give slightly
different floats, and an IoU or recall that lands exactly on a threshold would then be judged differently.
"""

from __future__ import annotations

import numpy as np

IOU_THRESHOLDS: np.ndarray = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_THRESHOLDS: np.ndarray = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS: tuple[int, int, int] = (1, 10, 100)
# all, small, medium, large; both ends inclusive (an object of area exactly 32**2 is small AND medium).
AREA_RANGES: np.ndarray = np.array(
    [[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], dtype=np.float64
)
AREA_LABELS: tuple[str, ...] = ("all", "small", "medium", "large")
# pycocotools divides tp by (tp + fp + np.spacing(1)); the same epsilon keeps precision bit-identical.
EPS: float = float(np.spacing(1))
# The IoU a match needs is min(t, 1 - 1e-10) (cocoeval.evaluateImg).
MATCH_THRESHOLDS: np.ndarray = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)

STAT_NAMES: tuple[str, ...] = (
    "AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
