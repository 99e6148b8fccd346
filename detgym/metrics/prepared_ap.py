"""Per-image COCO AP of kept candidate sets, prepared once per image: DetBoxSelect's reward at a few µs per image.

The reward of paper 001 (eq. 5) is the per-image COCO AP of the kept boxes, :func:`detgym.metrics.image_ap`.
``image_ap`` spends most of a call on what depends only on the image's candidates and ground truth (the score
order, the label categories, each candidate's list of matchable GT boxes with their IoUs, the recall-point weights)
and little on each kept subset. The candidates of a DetBoxSelect image never change, so :class:`PreparedAP` runs
that part once per image when the env loads its cache, and a step runs only the subset part, for one image (single
env) or a batch of B images in one compiled call (the vector env). Both parts are ``image_ap``'s own kernels
(``prepare_image`` and ``subsets_ap`` of :mod:`detgym.metrics._image_kernel`, with ``no_gt="reward"``), so the two
cannot drift apart; the tests compare every image of a split with ``image_ap``.

This module compiles nothing; on the kernels' on-disk cache, see ``_image_kernel``.
"""

from __future__ import annotations

import numpy as np

from detgym.metrics._backend import kernel
from detgym.metrics._cocoparams import AREA_RANGES, EPS, MATCH_THRESHOLDS, MAX_DETS, RECALL_THRESHOLDS
from detgym.metrics._image_kernel import prepare_image, subsets_ap

__all__ = ["PreparedAP"]

_AREA_HI = float(AREA_RANGES[0, 1])  # area "all" is [0, 1e10]


class PreparedAP:
    """``image_ap`` (``no_gt="reward"``) of any kept subset of a split's fixed candidates, prepared per image.

    Each image's prepared data is one contiguous block in each of three packed arrays (integers, floats, flags; the
    layout is in :mod:`detgym.metrics._image_kernel`), so a step touches few cache lines per image.

    Args:
        boxes: float64 ``[n, n_max, 4]`` padded candidates (xyxy pixels; finite, x2 >= x1, y2 >= y1);
        scores: float64 ``[n, n_max]``; labels: int64 ``[n, n_max]``; counts: int64 ``[n]`` real candidates;
        gt_boxes, gt_labels, gt_crowd: the ground truth concatenated over images, ``gt_offsets`` ``[n + 1]``.
    """

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                 gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_crowd: np.ndarray, gt_offsets: np.ndarray) -> None:
        if (np.diff(MATCH_THRESHOLDS) <= 0).any():  # pragma: no cover - a COCO constant
            raise ValueError("the IoU thresholds must increase")
        prepare = kernel(prepare_image)
        rows, blocks = [], ([], [], [])
        for i in range(counts.shape[0]):
            n, g0, g1 = int(counts[i]), int(gt_offsets[i]), int(gt_offsets[i + 1])
            row, *image = prepare(
                np.ascontiguousarray(boxes[i, :n]), np.ascontiguousarray(scores[i, :n]),
                np.ascontiguousarray(labels[i, :n]), np.ascontiguousarray(gt_boxes[g0:g1]),
                np.ascontiguousarray(gt_labels[g0:g1]), np.ascontiguousarray(gt_crowd[g0:g1]), MATCH_THRESHOLDS,
                RECALL_THRESHOLDS, _AREA_HI)
            rows.append(row)
            for packed, block in zip(blocks, image):
                packed.append(block)
        #: Per image: offsets of its blocks in ints / floats / flags, then N, G, C (categories), cv, nc.
        self.index = np.concatenate(rows) if rows else np.zeros((0, 8), dtype=np.int64)
        for k, packed in enumerate(blocks):
            self.index[1:, k] = np.cumsum([block.shape[0] for block in packed[:-1]], dtype=np.int64)
        self.ints, self.floats, self.flags = (np.concatenate(packed) if packed else np.zeros(0, dtype=dtype)
                                              for packed, dtype in zip(blocks, (np.int64, np.float64, np.bool_)))
        # the backend is chosen once: DETGYM_NO_NUMBA set when the table is built selects the Python kernel
        self._kernel = kernel(subsets_ap)
        self._args = (self.index, self.ints, self.floats, self.flags, MATCH_THRESHOLDS,
                      int(RECALL_THRESHOLDS.shape[0]), int(MAX_DETS[-1]), float(EPS), True)

    def __call__(self, images: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Per-image AP of kept slots ``keep`` (C-contiguous bool ``[B, n_max]``) of images ``images`` (int64
        ``[B]``): float64 ``[B]``."""
        out = np.empty(images.shape[0], dtype=np.float64)
        self._kernel(images, keep, *self._args, out)
        return out
