"""Per-image COCO AP of kept sets, for one image or a batch of images in one compiled call (the env's reward).

The reward of paper 001 (eq. 5) is the per-image COCO AP of the selected boxes: :func:`detgym.metrics.image_ap`.
A vectorized env evaluates one kept set on each of B different images per step, so :func:`batch_image_ap` runs
``image_ap``'s compiled kernel over the B images inside one numba function (one Python call per step instead of
B); without numba it calls ``image_ap`` once per image. Both give ``image_ap``'s numbers exactly (tested).
"""

from __future__ import annotations

import numpy as np

from detgym.metrics import image_ap
from detgym.metrics._backend import njit, use_numba
from detgym.metrics._cocoparams import EPS, MATCH_THRESHOLDS, MAX_DETS, RECALL_THRESHOLDS
from detgym.metrics.image_ap import _AREA_HI, _image_ap_kernel

__all__ = ["batch_image_ap"]


@njit
def _batch_kernel(boxes, scores, labels, counts, gt_boxes, gt_labels, gt_crowd, gt_offsets, images, keep,
                  match_thr, rec_thr, area_hi, max_det, eps, out):  # pragma: no cover - compiled
    """``out[b]`` = per-image AP of ``keep[b]`` on image ``images[b]`` (scores ``scores[b]``); returns the first
    failing b + 1, or 0 (see ``_image_ap_kernel``)."""
    for b in range(images.shape[0]):
        i = images[b]
        n = counts[i]
        g0 = gt_offsets[i]
        g1 = gt_offsets[i + 1]
        status = _image_ap_kernel(boxes[i, :n], scores[b, :n], labels[i, :n], gt_boxes[g0:g1], gt_labels[g0:g1],
                                  gt_crowd[g0:g1], keep[b:b + 1, :n], match_thr, rec_thr, area_hi, max_det, eps,
                                  True, out[b:b + 1])
        if status != 0:
            return b + 1
    return 0


def batch_image_ap(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                   gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_crowd: np.ndarray, gt_offsets: np.ndarray,
                   images: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Per-image AP (``image_ap``, ``no_gt="reward"``) of one kept set on each of B images.

    Args:
        boxes: float64 ``[n, n_max, 4]`` padded candidates (xyxy pixels) of the split's n images.
        scores: float64 ``[B, n_max]``: the scores each evaluation ranks by (the candidates' own, or new ones).
        labels: int64 ``[n, n_max]``; ``counts``: int64 ``[n]`` real candidates per image.
        gt_boxes, gt_labels, gt_crowd: the split's ground truth, concatenated; ``gt_offsets`` int64 ``[n + 1]``.
        images: int64 ``[B]`` image indices; ``keep``: bool ``[B, n_max]`` kept slots (padding ignored).

    Returns:
        float64 ``[B]``.
    """
    out = np.empty(images.shape[0], dtype=np.float64)
    if use_numba():
        failed = _batch_kernel(boxes, scores, labels, counts, gt_boxes, gt_labels, gt_crowd, gt_offsets, images,
                               keep, MATCH_THRESHOLDS, RECALL_THRESHOLDS, _AREA_HI, MAX_DETS[-1], EPS, out)
        if failed == 0:
            return out
    for b, i in enumerate(images):  # no numba, or a bad input: image_ap names the problem
        n, g0, g1 = counts[i], gt_offsets[i], gt_offsets[i + 1]
        out[b] = image_ap(boxes[i, :n], scores[b, :n], labels[i, :n], gt_boxes[g0:g1], gt_labels[g0:g1],
                          keep[b:b + 1, :n], gt_crowd[g0:g1])[0]
    return out
