"""Observation features of the candidates: what an agent sees of each box (layout in :func:`feature_layout`).

Per candidate slot (candidates sorted by score, descending; padded slots all zero):

====================  ===============================================================================  ========
column                feature                                                                          range
====================  ===============================================================================  ========
``valid``             1 for a real candidate, 0 for padding                                            {0, 1}
``x1 y1 x2 y2``       the box divided by the image's width / height                                    [0, 1]
``score``             the detector's confidence                                                        [0, 1]
``class_1..C``        one-hot class (labels 1..C)                                                      {0, 1}
``max_iou_higher``    highest IoU with a higher-scored candidate of the same class (0: none)          [0, 1]
``rank_in_class``     number of higher-scored candidates of the same class, / n_max                    [0, 1)
``overlaps``          number of other same-class candidates with IoU >= 0.5, / n_max                   [0, 1)
====================  ===============================================================================  ========

``max_iou_higher`` is what greedy NMS thresholds on when no suppressed box sits in between; ``rank_in_class``
and ``overlaps`` say how crowded the box's neighbourhood is. All features are computed once, vectorised over images,
when the candidate cache is built, and stored with the candidates, so a step only copies rows.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OVERLAP_IOU", "feature_layout", "image_features", "n_features", "pad_split"]

#: IoU at which two same-class candidates count as overlapping (the ``overlaps`` feature).
OVERLAP_IOU = 0.5
_CHUNK = 256  # images per batched IoU computation ([chunk, n_max, n_max] floats)


def feature_layout(num_classes: int) -> dict[str, slice]:
    """Column ranges of the feature vector for ``num_classes`` classes (see the module docstring)."""
    c = int(num_classes)
    return {
        "valid": slice(0, 1),
        "box": slice(1, 5),
        "score": slice(5, 6),
        "class": slice(6, 6 + c),
        "max_iou_higher": slice(6 + c, 7 + c),
        "rank_in_class": slice(7 + c, 8 + c),
        "overlaps": slice(8 + c, 9 + c),
    }


def n_features(num_classes: int) -> int:
    """Length of one candidate's feature vector."""
    return 9 + int(num_classes)


def pad_split(offsets: np.ndarray, n_max: int, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Concatenated per-image rows (image ``i`` = rows ``offsets[i]:offsets[i+1]``) as padded ``[n, n_max, ...]``.

    Returns the count per image (int64 ``[n]``, at most ``n_max``), then each array padded with zeros.
    """
    counts = np.minimum(np.diff(offsets), n_max).astype(np.int64)
    n = counts.shape[0]
    slot = np.arange(n_max)[None, :]
    valid = slot < counts[:, None]
    rows = (offsets[:-1, None] + slot)[valid]
    out = []
    for arr in arrays:
        padded = np.zeros((n, n_max, *arr.shape[1:]), dtype=arr.dtype)
        padded[valid] = arr[rows]
        out.append(padded)
    return (counts, *out)


def _pairwise_iou(boxes: np.ndarray) -> np.ndarray:
    """IoU of every pair of boxes within each image: ``[B, N, 4]`` -> float32 ``[B, N, N]`` (0 for empty unions)."""
    b = boxes.astype(np.float32)
    x1, y1, x2, y2 = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    area = (x2 - x1) * (y2 - y1)
    iw = np.minimum(x2[:, :, None], x2[:, None, :]) - np.maximum(x1[:, :, None], x1[:, None, :])
    ih = np.minimum(y2[:, :, None], y2[:, None, :]) - np.maximum(y1[:, :, None], y1[:, None, :])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    union = area[:, :, None] + area[:, None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def image_features(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                   image_hw: np.ndarray, num_classes: int) -> np.ndarray:
    """Features of padded, score-sorted candidates: ``[n, n_max, 4]`` boxes (pixels), ``[n, n_max]`` scores and
    labels, ``[n]`` counts and ``[n, 2]`` (height, width) -> float32 ``[n, n_max, 9 + num_classes]``."""
    n, n_max = scores.shape
    layout = feature_layout(num_classes)
    out = np.zeros((n, n_max, n_features(num_classes)), dtype=np.float32)
    for start in range(0, n, _CHUNK):
        sl = slice(start, min(start + _CHUNK, n))
        out[sl] = _chunk_features(boxes[sl], scores[sl], labels[sl], counts[sl], image_hw[sl], num_classes, layout)
    return out


def _chunk_features(boxes, scores, labels, counts, image_hw, num_classes, layout) -> np.ndarray:
    b, n_max = scores.shape
    valid = np.arange(n_max)[None, :] < counts[:, None]
    feats = np.zeros((b, n_max, n_features(num_classes)), dtype=np.float32)
    scale = np.stack([image_hw[:, 1], image_hw[:, 0], image_hw[:, 1], image_hw[:, 0]], axis=1).astype(np.float64)
    feats[..., layout["valid"]] = valid[..., None]
    feats[..., layout["box"]] = np.clip(boxes / scale[:, None, :], 0.0, 1.0)
    feats[..., layout["score"]] = np.clip(scores, 0.0, 1.0)[..., None]
    onehot = np.zeros((b, n_max, num_classes), dtype=np.float32)
    rows, slots = np.nonzero(valid)
    onehot[rows, slots, labels[rows, slots] - 1] = 1.0
    feats[..., layout["class"]] = onehot

    # only the first k slots of this chunk hold candidates: the pairwise part needs no more
    k = max(int(counts.max(initial=0)), 1)
    iou = _pairwise_iou(boxes[:, :k])
    labels_k, valid_k = labels[:, :k], valid[:, :k]
    same = (labels_k[:, :, None] == labels_k[:, None, :]) & valid_k[:, :, None] & valid_k[:, None, :]
    np.einsum("bii->bi", same)[...] = False  # a box is not its own neighbour
    higher = np.tril(np.ones((k, k), dtype=bool), k=-1)[None]  # slot j < i scores at least as high
    same_higher = same & higher
    feats[:, :k, layout["max_iou_higher"]] = np.where(same_higher, iou, 0.0).max(axis=2, initial=0.0)[..., None]
    feats[:, :k, layout["rank_in_class"]] = (same_higher.sum(axis=2) / n_max)[..., None]
    feats[:, :k, layout["overlaps"]] = ((same & (iou >= OVERLAP_IOU)).sum(axis=2) / n_max)[..., None]
    return feats
