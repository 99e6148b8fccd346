"""Per-image COCO AP of many candidate subsets at once: the reward engine of box selection (paper 001).

``image_ap`` returns, for each subset of an image's candidate detections, exactly what pycocotools
gives for that image alone (``COCOeval`` with ``params.imgIds=[image]``, ``stats[0]``: IoU .50:.05:.95,
101 recall points, maxDets 100, area "all"). Paper 001 (eq. 5-11) samples k box sets per image and
rewards each with its AP, so one call evaluates all K subsets of one image: the IoU matrix, the score
order and the GT candidate lists are computed once per image and the subsets are boolean masks over
the candidates. The compiled kernel's two halves (per image, per subset) are in ``_image_kernel``,
shared with ``PreparedAP``, which runs the first once per image of a DetBoxSelect split.

Why the fast path is exact (the rules of pycocotools' ``evaluateImg`` / ``accumulate``, restricted to
one image):

* A subset's detection order is the restriction of the global stable order by -score
  (``np.argsort(-score, kind="mergesort")``), so sorting once serves every subset.
* Greedy matching, per IoU threshold t, detections in that order: among GTs of the same label not yet
  matched (crowd GTs may match many times), take the one with the highest IoU >= min(t, 1 - 1e-10),
  the last one on ties, non-ignored GTs first and ignored ones (crowd, area outside [0, 1e10]) only
  when no non-ignored GT qualifies. Only GTs with IoU >= 0.5 can ever match, so each detection keeps a
  short candidate list; a detection without candidates is a false positive at every threshold.
* Precision at the n-th true positive is n / (n + fp + eps); made monotone from the right it is the
  suffix maximum over later true positives; recall point r reads it at the first n with
  n / npig >= r (``searchsorted(..., side="left")``), or 0 if recall never reaches r. Ignored detections
  only repeat the previous precision/recall value and change nothing.
* Per-image AP = mean over the categories with at least one non-ignored GT in the image; categories
  with only crowd GTs, or only detections, are left out (pycocotools marks them -1). A false positive
  of a label absent from the image therefore costs nothing, as in COCO.
* At most 100 detections per category are evaluated (the top 100 of the subset by score).
* Precision keeps pycocotools' ``+ np.spacing(1)`` in the denominator, so a perfect subset scores
  1 - 2.2e-16 (0.9999999999999998), exactly as pycocotools does.

Images with no non-ignored GT (no GT at all, or only crowd GTs): pycocotools gives -1 (undefined).
As a reward, -1 is not useful; ``no_gt="reward"`` (default) scores such an image by the fraction of
the 10 IoU thresholds at which the subset has no false positive: 1.0 for an empty subset (or one whose
every detection falls in a crowd region), 0.0 when a detection hits nothing. ``no_gt="coco"`` returns
pycocotools' -1.0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._backend import NUMBA_AVAILABLE, njit, use_numba
from ._boxes import check_boxes, coco_iou_matrix, to_numpy, xyxy_to_xywh
from ._cocoparams import AREA_RANGES, EPS, MATCH_THRESHOLDS, MAX_DETS, RECALL_THRESHOLDS
from ._image_kernel import prepare_image, subsets_ap

__all__ = ["image_ap", "image_ap_unchecked"]

_AREA_HI = float(AREA_RANGES[0, 1])  # area "all" is [0, 1e10]; boxes outside it are ignored
_MAX_DET = MAX_DETS[-1]


@njit
def _inputs_ok(d_xyxy, d_score, g_xyxy):  # pragma: no cover - compiled
    """False when a box is not finite with x2 >= x1, y2 >= y1 or a score is NaN."""
    for boxes in (d_xyxy, g_xyxy):
        for i in range(boxes.shape[0]):
            for j in range(4):
                if not np.isfinite(boxes[i, j]):
                    return False
            if boxes[i, 2] < boxes[i, 0] or boxes[i, 3] < boxes[i, 1]:
                return False
    for i in range(d_score.shape[0]):
        if np.isnan(d_score[i]):
            return False
    return True


@njit
def _image_ap_kernel(d_xyxy, d_score, d_lab, g_xyxy, g_lab, g_crowd, keep, match_thr, rec_thr,
                     area_hi, max_det, eps, no_gt_reward, out):  # pragma: no cover - compiled
    """Numba kernel: per-subset COCO AP of one image, written to ``out`` [K]; see the module docstring.

    Returns 0, or 1 when a box is not finite with x2 >= x1, y2 >= y1 or a score is NaN (the caller
    then finds and reports the culprit).
    """
    if not _inputs_ok(d_xyxy, d_score, g_xyxy):
        return 1
    index, ints, floats, flags = prepare_image(d_xyxy, d_score, d_lab, g_xyxy, g_lab, g_crowd, match_thr, rec_thr,
                                               area_hi)
    subsets_ap(np.zeros(keep.shape[0], dtype=np.int64), keep, index, ints, floats, flags, match_thr,
               rec_thr.shape[0], max_det, eps, no_gt_reward, out)
    return 0


def _image_ap_numpy(d_xywh, d_score, d_lab, g_xywh, g_lab, g_crowd, keep, no_gt_reward):
    """Vectorised NumPy fallback: the same rules, with subsets and thresholds as array lanes.

    Written independently of the kernel (it follows pycocotools' accumulate with cumulative sums and
    a searchsorted-equivalent) so the two cross-check each other in the tests.
    """
    N, G, K = d_xywh.shape[0], g_xywh.shape[0], keep.shape[0]
    thr = MATCH_THRESHOLDS
    T, R = thr.shape[0], RECALL_THRESHOLDS.shape[0]
    order = np.argsort(-d_score, kind="stable")
    d = d_xywh[order]
    labs, inv = np.unique(np.concatenate((g_lab, d_lab)), return_inverse=True)
    C = labs.shape[0]
    gcat, dcat = inv[:G], inv[G:][order]
    g_area = g_xywh[:, 2] * g_xywh[:, 3]
    g_ign = g_crowd | (g_area < 0) | (g_area > _AREA_HI)
    gord = np.argsort(g_ign, kind="stable")
    g, gcat, g_ign, g_cr = g_xywh[gord], gcat[gord], g_ign[gord], g_crowd[gord]
    npig = np.bincount(gcat[~g_ign], minlength=C)
    valid = npig > 0
    walk_all = not valid.any()
    if walk_all and not no_gt_reward:
        return np.full(K, -1.0)

    iou = coco_iou_matrix(d, g, g_cr)
    cand = (iou >= thr.min()) & (dcat[:, None] == gcat[None, :])
    d_area = d[:, 2] * d[:, 3]
    d_out = (d_area < 0) | (d_area > _AREA_HI)

    kk = keep[:, order] & (valid[dcat] | walk_all)[None, :]
    for c in np.flatnonzero(np.bincount(dcat, minlength=C) > _MAX_DET):
        in_c = dcat == c
        kk &= ~(in_c & (np.cumsum(kk & in_c, axis=1) > _MAX_DET))

    has_c = cand.any(axis=1)
    tpf = np.zeros((K, T, N), dtype=bool)
    fpf = np.zeros((K, T, N), dtype=bool)
    fpf[:, :, ~has_c] = (kk[:, ~has_c] & ~d_out[~has_c])[:, None, :]
    gm = np.zeros((K, T, G), dtype=bool)
    kidx = np.arange(K)[:, None]
    tidx = np.arange(T)[None, :]
    for p in np.flatnonzero(has_c):
        act = kk[:, p][:, None]
        if not act.any():
            continue
        m = np.full((K, T), -1)
        best = np.broadcast_to(thr[None, :], (K, T)).copy()
        m_ign = np.zeros((K, T), dtype=bool)
        for q in np.flatnonzero(cand[p]):
            v = iou[p, q]
            avail = ~gm[:, :, q] | g_cr[q]
            blocked = (m > -1) & ~m_ign & g_ign[q]
            upd = act & avail & ~blocked & (v >= best)
            best = np.where(upd, v, best)
            m = np.where(upd, q, m)
            m_ign = np.where(upd, g_ign[q], m_ign)
        matched = m > -1
        gm[kidx, tidx, np.maximum(m, 0)] |= matched
        tpf[:, :, p] = matched & ~m_ign
        fpf[:, :, p] = act & ~matched & ~d_out[p]

    if walk_all:
        return (~fpf.any(axis=2)).sum(axis=1) / T

    rec = RECALL_THRESHOLDS
    q_all = np.zeros((K, T, R, int(valid.sum())))
    for ci, c in enumerate(np.flatnonzero(valid)):
        sel = dcat == c
        nd = int(sel.sum())
        if nd == 0:
            continue
        tpc = np.cumsum(tpf[:, :, sel], axis=2).astype(float)
        fpc = np.cumsum(fpf[:, :, sel], axis=2).astype(float)
        pr = tpc / (fpc + tpc + EPS)
        prm = np.maximum.accumulate(pr[:, :, ::-1], axis=2)[:, :, ::-1]
        P = int(npig[c])
        # searchsorted(rc, rec, "left") with rc = tp / P: the first position whose tp count reaches the
        # smallest n with n / P >= r.
        levels = np.arange(P + 1)
        need = np.argmax((levels / P)[:, None] >= rec[None, :], axis=0)
        first = (tpc[:, :, :, None] < levels[None, None, None, :]).sum(axis=2)  # [K, T, P + 1]
        idx = first[:, :, need]  # [K, T, R]
        q = np.take_along_axis(prm, np.minimum(idx, nd - 1), axis=2)
        q_all[:, :, :, ci] = np.where(idx < nd, q, 0.0)
    # Explicit width: reshape(K, -1) is ambiguous for K = 0 subsets (an empty keep mask).
    return q_all.reshape(K, T * R * q_all.shape[3]).mean(axis=1)


def _array(x: Any, name: str, dtype: Any, ndim: int, n: int | None = None) -> np.ndarray:
    """``x`` as a C-contiguous array of ``dtype``; an empty input becomes shape [0] / [0, 4]."""
    arr = to_numpy(x)
    if arr.size == 0 and arr.ndim != ndim:
        arr = arr.reshape((0,) if ndim == 1 else (0, 4))
    if arr.ndim != ndim or (n is not None and arr.shape[0] != n):
        want = f"[{n}]" if ndim == 1 else "[N, 4]"
        raise ValueError(f"{name} must have shape {want}, got {tuple(arr.shape)}")
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def _flags(x: Any, name: str, ndim: int, shape: tuple) -> np.ndarray:
    """A bool array of the given shape (None = any size); 0/1 integers are accepted."""
    arr = to_numpy(x)
    if arr.size == 0 and arr.ndim != ndim and ndim == 1:
        arr = arr.reshape(0)
    if arr.ndim != ndim or any(w is not None and w != a for w, a in zip(shape, arr.shape)):
        want = "[" + ", ".join("K" if w is None else str(w) for w in shape) + "]"
        what = " (K subsets of the candidates)" if name == "keep" else ""
        raise ValueError(f"{name} must be a bool mask of shape {want}{what}, got {tuple(arr.shape)}")
    if arr.dtype.kind != "b":
        if arr.dtype.kind not in "iuf" or (arr.size and not ((arr == 0) | (arr == 1)).all()):
            raise ValueError(f"{name} must be boolean (or 0/1), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.bool_)


def _labels(x: Any, name: str, n: int) -> np.ndarray:
    arr = to_numpy(x)
    if arr.size == 0:
        arr = arr.reshape(0)
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"{name} must have shape [{n}] (one label per box), got {tuple(arr.shape)}")
    if arr.dtype.kind in "iub":
        return np.ascontiguousarray(arr, dtype=np.int64)
    if arr.dtype.kind == "f" and np.isfinite(arr).all() and (arr == np.round(arr)).all():
        return arr.astype(np.int64)
    raise ValueError(f"{name} must hold integer class labels, got dtype {arr.dtype}")


def image_ap(det_boxes: Any, det_scores: Any, det_labels: Any, gt_boxes: Any, gt_labels: Any,
             keep: Any = None, gt_crowd: Any = None, *, no_gt: str = "reward",
             backend: str | None = None) -> np.float64 | np.ndarray:
    """Per-image COCO AP (IoU .50:.05:.95, 101 recall points, maxDets 100, area "all").

    Equal (to float rounding, tested to 1e-9) to pycocotools' ``stats[0]`` on this image alone, with
    each box handed to pycocotools as ``[x1, y1, x2 - x1, y2 - y1]`` and area ``w * h``. Used as the
    box-set reward of paper 001 (eq. 5: the reward of a sampled set is its per-image AP).

    Args:
        det_boxes: [N, 4] candidate boxes, xyxy (torch tensor, NumPy array or nested list).
        det_scores: [N] confidence scores; ties keep candidate order (stable sort, as pycocotools).
        det_labels: [N] integer class labels.
        gt_boxes: [G, 4] ground-truth boxes, xyxy.
        gt_labels: [G] integer class labels (the same label space as ``det_labels``).
        keep: optional bool mask [K, N]: row k selects the candidates of subset k. The IoUs and the
            score order are computed once and the K subsets evaluated together.
        gt_crowd: optional bool [G] iscrowd flags (crowd GTs are ignored regions, see COCO).
        no_gt: value for an image without any non-ignored GT, where pycocotools' AP is undefined (-1):
            ``"reward"`` (default) = fraction of the 10 IoU thresholds at which the subset has no false
            positive (1.0 for an empty subset, 0.0 if a detection hits nothing); ``"coco"`` = -1.0.
        backend: ``"numba"``, ``"numpy"`` or None (numba unless unavailable or ``DETGYM_NO_NUMBA=1``).

    Returns:
        NumPy float64 either way: a scalar (``np.float64``, also a Python float) when ``keep`` is None, else an
        array [K].

    Raises:
        ValueError: wrong shapes, NaN/inf coordinates, x2 < x1 or y2 < y1, NaN scores, non-integer
            labels, a ``keep`` mask that is not [K, N] boolean, an unknown ``no_gt`` / ``backend``.
    """
    if no_gt not in ("reward", "coco"):
        raise ValueError(f"no_gt must be 'reward' or 'coco', got {no_gt!r}")
    if backend is None:
        backend = "numba" if use_numba() else "numpy"
    elif backend not in ("numba", "numpy"):
        raise ValueError(f"backend must be 'numba', 'numpy' or None, got {backend!r}")
    elif backend == "numba" and not NUMBA_AVAILABLE:
        raise ValueError("backend='numba' needs numba installed; use backend='numpy' or None")
    db = _array(det_boxes, "det_boxes", np.float64, 2)
    gb = _array(gt_boxes, "gt_boxes", np.float64, 2)
    N, G = db.shape[0], gb.shape[0]
    if db.shape[1] != 4:
        raise ValueError(f"det_boxes must have shape [N, 4] (xyxy), got {tuple(db.shape)}")
    if gb.shape[1] != 4:
        raise ValueError(f"gt_boxes must have shape [G, 4] (xyxy), got {tuple(gb.shape)}")
    ds = _array(det_scores, "det_scores", np.float64, 1, N)
    dl = _labels(det_labels, "det_labels", N)
    gl = _labels(gt_labels, "gt_labels", G)
    gc = np.zeros(G, dtype=np.bool_) if gt_crowd is None else _flags(gt_crowd, "gt_crowd", 1, (G,))
    single = keep is None
    kp = np.ones((1, N), dtype=np.bool_) if single else _flags(keep, "keep", 2, (None, N))
    reward = no_gt == "reward"
    out = None
    if backend == "numba":
        out = np.empty(kp.shape[0], dtype=np.float64)
        status = _image_ap_kernel(db, ds, dl, gb, gl, gc, kp, MATCH_THRESHOLDS, RECALL_THRESHOLDS,
                                  _AREA_HI, _MAX_DET, EPS, reward, out)
    if backend != "numba" or status != 0:
        # Full checks with precise messages (the kernel only says that something is wrong).
        db = check_boxes(db, "det_boxes", "xyxy")
        gb = check_boxes(gb, "gt_boxes", "xyxy")
        if np.isnan(ds).any():
            raise ValueError(f"det_scores has NaN at index {int(np.flatnonzero(np.isnan(ds))[0])}")
        out = _image_ap_numpy(xyxy_to_xywh(db), ds, dl, xyxy_to_xywh(gb), gl, gc, kp, reward)
    return out[0] if single else out


def image_ap_unchecked(det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray, gt_boxes: np.ndarray,
                       gt_labels: np.ndarray, gt_crowd: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """:func:`image_ap` of the ``K`` subsets ``keep`` (float64 ``[K]``) for inputs already in its own form: float64
    xyxy boxes and scores, int64 labels, bool ``gt_crowd`` and ``keep`` ``[K, N]``, all NumPy. Nothing is
    converted, and the inputs are checked only when the compiled kernel finds them wrong (then :func:`image_ap`
    raises its precise error): the hot path of callers that validated their arrays once (DetBoxSelect's table),
    where the conversions cost four times the kernel."""
    if not use_numba():
        return image_ap(det_boxes, det_scores, det_labels, gt_boxes, gt_labels, keep, gt_crowd)
    out = np.empty(keep.shape[0], dtype=np.float64)
    status = _image_ap_kernel(det_boxes, det_scores, det_labels, gt_boxes, gt_labels, gt_crowd, keep,
                              MATCH_THRESHOLDS, RECALL_THRESHOLDS, _AREA_HI, _MAX_DET, EPS, True, out)
    if status != 0:
        return image_ap(det_boxes, det_scores, det_labels, gt_boxes, gt_labels, keep, gt_crowd)
    return out
