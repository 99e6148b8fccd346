"""Box input checks and the exact pycocotools box IoU.

pycocotools computes IoUs from xywh boxes in C doubles (``maskApi.c: bbIou``); repeating the same
operations in the same order gives bit-identical IoUs, so a box that lands exactly on a threshold is
judged the same way here and there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend import njit


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy view of a torch tensor (detached, on CPU), NumPy array or nested sequence."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch here
        return x.detach().cpu().numpy()
    return np.asarray(x)


def check_boxes(boxes: Any, name: str, fmt: str = "xyxy") -> np.ndarray:
    """Validate boxes and return them as float64 [N, 4] in the given format (``xyxy`` or ``xywh``).

    Raises ValueError naming ``name`` for a wrong shape, a non-finite coordinate, or a negative
    extent (x2 < x1 / y2 < y1 for xyxy, w < 0 / h < 0 for xywh).
    """
    arr = to_numpy(boxes)
    if arr.size == 0:
        return np.zeros((0, 4), dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape [N, 4] ({fmt}), got {tuple(arr.shape)}")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
        raise ValueError(f"{name} has a non-finite coordinate (NaN or inf) in box {bad}: {arr[bad].tolist()}")
    if fmt == "xyxy":
        neg = (arr[:, 2] < arr[:, 0]) | (arr[:, 3] < arr[:, 1])
        what = "x2 < x1 or y2 < y1 (boxes must be xyxy)"
    else:
        neg = (arr[:, 2] < 0) | (arr[:, 3] < 0)
        what = "a negative width or height (boxes must be xywh)"
    if neg.any():
        bad = int(np.flatnonzero(neg)[0])
        raise ValueError(f"{name} box {bad} has {what}: {arr[bad].tolist()}")
    return arr


def xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    """[x1, y1, x2 - x1, y2 - y1]: what one would hand pycocotools for these boxes."""
    out = b.copy()
    out[:, 2] = b[:, 2] - b[:, 0]
    out[:, 3] = b[:, 3] - b[:, 1]
    return out


@njit
def coco_iou(dx: float, dy: float, dw: float, dh: float,
             gx: float, gy: float, gw: float, gh: float, crowd: bool) -> float:
    """IoU of one detection and one GT box (xywh), as pycocotools' ``bbIou``.

    For a crowd GT the union is the detection's area alone (COCO's rule: a detection inside a crowd
    region is not penalised).
    """
    w = min(dw + dx, gw + gx) - max(dx, gx)
    if w <= 0:
        return 0.0
    h = min(dh + dy, gh + gy) - max(dy, gy)
    if h <= 0:
        return 0.0
    i = w * h
    da = dw * dh
    if crowd:
        u = da
    else:
        u = da + gw * gh - i
    return i / u


def coco_iou_matrix(d: np.ndarray, g: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """Vectorised ``coco_iou`` for all pairs: [D, 4] xywh x [G, 4] xywh -> float64 [D, G]."""
    dx, dy, dw, dh = (d[:, j : j + 1] for j in range(4))
    gx, gy, gw, gh = (g[None, :, j] for j in range(4))
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    i = w * h
    da = dw * dh
    u = np.where(crowd[None, :], da, da + gw * gh - i)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = i / u
    return np.where((w > 0) & (h > 0), out, 0.0)


@njit
def argsort_desc_stable(x: np.ndarray) -> np.ndarray:
    """Indices sorting ``x`` descending, ties in index order: ``np.argsort(-x, kind="mergesort")``.

    A hand-written bottom-up merge sort: numba's own argsort costs seconds of compile time.
    """
    n = x.shape[0]
    idx = np.arange(n)
    # Short runs by insertion sort, then merge passes.
    run = 16
    for lo in range(0, n, run):
        hi = min(lo + run, n)
        for i in range(lo + 1, hi):
            v = idx[i]
            j = i - 1
            while j >= lo and x[idx[j]] < x[v]:
                idx[j + 1] = idx[j]
                j -= 1
            idx[j + 1] = v
    buf = np.empty(n, dtype=np.int64)
    width = run
    while width < n:
        for lo in range(0, n, 2 * width):
            mid = min(lo + width, n)
            hi = min(lo + 2 * width, n)
            i, j, k = lo, mid, lo
            while i < mid and j < hi:
                if x[idx[j]] > x[idx[i]]:  # strictly greater: equal keys keep left (earlier) first
                    buf[k] = idx[j]
                    j += 1
                else:
                    buf[k] = idx[i]
                    i += 1
                k += 1
            while i < mid:
                buf[k] = idx[i]
                i += 1
                k += 1
            while j < hi:
                buf[k] = idx[j]
                j += 1
                k += 1
        idx, buf = buf, idx
        width *= 2
    return idx
