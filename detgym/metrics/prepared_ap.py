"""Per-image COCO AP of kept candidate sets, prepared once per image: DetBoxSelect's reward at a few µs per image.

The reward of paper 001 (eq. 5) is the per-image COCO AP of the kept boxes, :func:`detgym.metrics.image_ap`.
``image_ap`` spends most of a call on what depends only on the image's candidates and ground truth (box checks,
the score order, the label categories, each candidate's list of matchable GT boxes with their IoUs, the recall-point
weights) and little on each kept subset. The candidates of a DetBoxSelect image never change, so
:class:`PreparedAP` runs that part once per image when the env loads its cache, and a step runs only the subset
part, for one image (single env) or a batch of B images in one compiled call (the vector env). The rules are
``image_ap``'s, step for step (its kernel's "per subset" loop with ``no_gt="reward"``), and pycocotools' greedy
match is the very function ``image_ap`` uses (:func:`detgym.metrics._matching.match_detection`); the tests compare
every image of a split with ``image_ap``.

numba's on-disk cache watches only the file that defines a kernel: after editing ``_matching.py`` or ``_boxes.py``,
touch this file, ``coco.py`` and ``image_ap.py`` so the cached kernels are recompiled.
"""

from __future__ import annotations

import numpy as np

from detgym.metrics._backend import njit, use_numba
from detgym.metrics._boxes import argsort_desc_stable, coco_iou
from detgym.metrics._cocoparams import AREA_RANGES, EPS, MATCH_THRESHOLDS, MAX_DETS, RECALL_THRESHOLDS
from detgym.metrics._matching import match_detection

__all__ = ["PreparedAP"]

_AREA_HI = float(AREA_RANGES[0, 1])  # area "all" is [0, 1e10]


@njit
def _prepare(d_xyxy, d_score, d_lab, g_xyxy, g_lab, g_crowd, thr_min, rec_thr, area_hi):  # pragma: no cover
    """The subset-independent part of ``image_ap``'s kernel for one image (see there for the rules).

    Returns (order, pcat, d_out, cstart, cg, civ, gig_o, gcr_o, npig, wts, cv).
    """
    N = d_xyxy.shape[0]
    G = g_xyxy.shape[0]
    d_xywh = np.empty((N, 4), dtype=np.float64)
    for i in range(N):
        d_xywh[i, 0] = d_xyxy[i, 0]
        d_xywh[i, 1] = d_xyxy[i, 1]
        d_xywh[i, 2] = d_xyxy[i, 2] - d_xyxy[i, 0]
        d_xywh[i, 3] = d_xyxy[i, 3] - d_xyxy[i, 1]
    g_xywh = np.empty((G, 4), dtype=np.float64)
    for i in range(G):
        g_xywh[i, 0] = g_xyxy[i, 0]
        g_xywh[i, 1] = g_xyxy[i, 1]
        g_xywh[i, 2] = g_xyxy[i, 2] - g_xyxy[i, 0]
        g_xywh[i, 3] = g_xyxy[i, 3] - g_xyxy[i, 1]
    R = rec_thr.shape[0]
    order = argsort_desc_stable(d_score)
    # compact category index over the labels present, in order of first appearance (GT first)
    labs = np.empty(G + N, dtype=np.int64)
    C = 0
    gcat = np.empty(G, dtype=np.int64)
    dcat = np.empty(N, dtype=np.int64)
    for q in range(G + N):
        lab = g_lab[q] if q < G else d_lab[q - G]
        c = 0
        while c < C and labs[c] != lab:
            c += 1
        if c == C:
            labs[C] = lab
            C += 1
        if q < G:
            gcat[q] = c
        else:
            dcat[q - G] = c
    # GT order: non-ignored first, stable
    g_ign = np.zeros(G, dtype=np.bool_)
    for q in range(G):
        a = g_xywh[q, 2] * g_xywh[q, 3]
        g_ign[q] = g_crowd[q] or a < 0.0 or a > area_hi
    gorder = np.empty(G, dtype=np.int64)
    n = 0
    for q in range(G):
        if not g_ign[q]:
            gorder[n] = q
            n += 1
    for q in range(G):
        if g_ign[q]:
            gorder[n] = q
            n += 1
    gig_o = np.empty(G, dtype=np.bool_)
    gcr_o = np.empty(G, dtype=np.bool_)
    npig = np.zeros(C, dtype=np.int64)
    for qq in range(G):
        q = gorder[qq]
        gig_o[qq] = g_ign[q]
        gcr_o[qq] = g_crowd[q]
        if not g_ign[q]:
            npig[gcat[q]] += 1
    cv = 0
    for c in range(C):
        if npig[c] > 0:
            cv += 1
    # candidate GTs of each detection (sorted position p): same label, IoU >= the lowest threshold, GT order
    cstart = np.zeros(N + 1, dtype=np.int64)
    cg = np.empty(max(N * G, 1), dtype=np.int64)
    civ = np.empty(max(N * G, 1), dtype=np.float64)
    d_out = np.zeros(N, dtype=np.bool_)
    pcat = np.empty(N, dtype=np.int64)
    nc = 0
    for p in range(N):
        i = order[p]
        cstart[p] = nc
        pcat[p] = dcat[i]
        a = d_xywh[i, 2] * d_xywh[i, 3]
        d_out[p] = a < 0.0 or a > area_hi
        for qq in range(G):
            q = gorder[qq]
            if g_lab[q] != d_lab[i]:
                continue
            v = coco_iou(d_xywh[i, 0], d_xywh[i, 1], d_xywh[i, 2], d_xywh[i, 3],
                         g_xywh[q, 0], g_xywh[q, 1], g_xywh[q, 2], g_xywh[q, 3], g_crowd[q])
            if v >= thr_min:
                cg[nc] = qq
                civ[nc] = v
                nc += 1
    cstart[N] = nc
    # weight of the n-th true positive's interpolated precision (recall points first reaching n / npig)
    wts = np.zeros((C, G + 2), dtype=np.float64)
    for c in range(C):
        P = npig[c]
        if P == 0:
            continue
        n = 0
        for r in range(R):
            while n < P and n / P < rec_thr[r]:
                n += 1
            wts[c, max(n, 1)] += 1.0
    return order, pcat, d_out, cstart, cg[:nc], civ[:nc], gig_o, gcr_o, npig, wts, cv


@njit
def _subset_ap(images, keep, index, ints, floats, flags, match_thr, n_rec, max_det, eps, out):  # pragma: no cover
    """``out[b]`` = AP of kept slots ``keep[b]`` of image ``images[b]``: ``image_ap``'s per-subset loop.

    Image i's prepared data is one block in each packed array (see :class:`PreparedAP`): ``ints`` holds
    order, pcat, cstart (offsets into the image's cg / civ), cg, npig; ``floats`` civ, wts; ``flags`` d_out, the
    GT ignore flags, the GT crowd flags.
    """
    T = match_thr.shape[0]
    max_n = 1
    max_g = 1
    max_c = 1
    for b in range(images.shape[0]):
        i = images[b]
        max_n = max(max_n, index[i, 3])
        max_g = max(max_g, index[i, 4])
        max_c = max(max_c, index[i, 5])
    cnt = np.zeros(max_c, dtype=np.int64)
    basefp = np.zeros(max_c, dtype=np.int64)
    tp = np.zeros(max_c, dtype=np.int64)
    xfp = np.zeros(max_c, dtype=np.int64)
    act = np.empty(max_n, dtype=np.int64)
    actb = np.empty(max_n, dtype=np.int64)
    gm = np.zeros(max_g, dtype=np.bool_)
    prbuf = np.zeros((max_c, max_g + 2), dtype=np.float64)
    for b in range(images.shape[0]):
        i = images[b]
        N = index[i, 3]
        G = index[i, 4]
        C = index[i, 5]
        cv = index[i, 6]
        nc = index[i, 7]
        o = index[i, 0]
        order = ints[o:o + N]
        pcat = ints[o + N:o + 2 * N]
        cstart = ints[o + 2 * N:o + 3 * N + 1]
        cg = ints[o + 3 * N + 1:o + 3 * N + 1 + nc]
        npig = ints[o + 3 * N + 1 + nc:o + 3 * N + 1 + nc + C]
        f = index[i, 1]
        civ = floats[f:f + nc]
        wts = floats[f + nc:f + nc + C * (G + 2)]
        g = index[i, 2]
        d_out = flags[g:g + N]
        gig = flags[g + N:g + N + G]
        gcr = flags[g + N + G:g + N + 2 * G]
        walk_all = cv == 0
        stride = G + 2
        for c in range(C):
            cnt[c] = 0
            basefp[c] = 0
        na = 0
        for p in range(N):
            if not keep[b, order[p]]:
                continue
            c = pcat[p]
            if not walk_all and npig[c] == 0:
                continue
            cnt[c] += 1
            if cnt[c] > max_det:
                continue
            if cstart[p + 1] > cstart[p]:
                act[na] = p
                actb[na] = basefp[c]
                na += 1
            elif not d_out[p]:
                basefp[c] += 1
        if walk_all:
            fp = 0
            for c in range(C):
                fp += basefp[c]
            if fp > 0:
                out[b] = 0.0
                continue
        total = 0.0
        clean = 0
        for t in range(T):
            thr = match_thr[t]
            for q in range(G):
                gm[q] = False
            for c in range(C):
                tp[c] = 0
                xfp[c] = 0
            for a in range(na):
                p = act[a]
                c = pcat[p]
                m = match_detection(cstart[p], cstart[p + 1], cg, civ, gm, gcr, gig, thr)
                if m == -1:
                    if not d_out[p]:
                        xfp[c] += 1
                    continue
                gm[m] = True
                if gig[m]:
                    continue
                tp[c] += 1
                n = tp[c]
                prbuf[c, n] = n / (float(xfp[c] + actb[a] + n) + eps)
            if walk_all:
                fp = 0
                for c in range(C):
                    fp += xfp[c]
                if fp == 0:
                    clean += 1
                continue
            for c in range(C):
                if npig[c] == 0:
                    continue
                run = 0.0
                s = 0.0
                for n in range(tp[c], 0, -1):
                    if prbuf[c, n] > run:
                        run = prbuf[c, n]
                    s += wts[c * stride + n] * run
                total += s
        if walk_all:
            out[b] = clean / T
        else:
            out[b] = total / (T * n_rec * cv)
    return 0


class PreparedAP:
    """``image_ap`` (``no_gt="reward"``) of any kept subset of a split's fixed candidates, prepared per image.

    Each image's prepared data is one contiguous block in each of three packed arrays (integers, floats, flags), so a
    step touches few cache lines per image.

    Args:
        boxes: float64 ``[n, n_max, 4]`` padded candidates (xyxy pixels; finite, x2 >= x1, y2 >= y1);
        scores: float64 ``[n, n_max]``; labels: int64 ``[n, n_max]``; counts: int64 ``[n]`` real candidates;
        gt_boxes, gt_labels, gt_crowd: the ground truth concatenated over images, ``gt_offsets`` ``[n + 1]``.
    """

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                 gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_crowd: np.ndarray, gt_offsets: np.ndarray) -> None:
        if (np.diff(MATCH_THRESHOLDS) <= 0).any():  # pragma: no cover - a COCO constant
            raise ValueError("the IoU thresholds must increase")
        prepare = _prepare if use_numba() else getattr(_prepare, "py_func", _prepare)
        n_images = counts.shape[0]
        #: Per image: offsets of its blocks in ints / floats / flags, then N, G, C (categories), cv, nc.
        self.index = np.zeros((n_images, 8), dtype=np.int64)
        ints, floats, flags = [], [], []
        sizes = [0, 0, 0]
        thr_min = float(MATCH_THRESHOLDS.min())
        for i in range(n_images):
            n, g0, g1 = int(counts[i]), int(gt_offsets[i]), int(gt_offsets[i + 1])
            order, pcat, d_out, cstart, cg, civ, gig_o, gcr_o, npig, wts, cv = prepare(
                np.ascontiguousarray(boxes[i, :n]), np.ascontiguousarray(scores[i, :n]),
                np.ascontiguousarray(labels[i, :n]), np.ascontiguousarray(gt_boxes[g0:g1]),
                np.ascontiguousarray(gt_labels[g0:g1]), np.ascontiguousarray(gt_crowd[g0:g1]), thr_min,
                RECALL_THRESHOLDS, _AREA_HI)
            self.index[i] = (*sizes, n, g1 - g0, npig.shape[0], cv, cg.shape[0])
            blocks = (np.concatenate([order, pcat, cstart, cg, npig]).astype(np.int64),
                      np.concatenate([civ, wts.ravel()]).astype(np.float64),
                      np.concatenate([d_out, gig_o, gcr_o]).astype(np.bool_))
            for k, (packed, block) in enumerate(zip((ints, floats, flags), blocks)):
                packed.append(block)
                sizes[k] += block.shape[0]
        self.ints = np.concatenate(ints) if ints else np.zeros(0, dtype=np.int64)
        self.floats = np.concatenate(floats) if floats else np.zeros(0, dtype=np.float64)
        self.flags = np.concatenate(flags) if flags else np.zeros(0, dtype=np.bool_)
        # the backend is chosen once: DETGYM_NO_NUMBA set when the table is built selects the Python kernel
        self._kernel = _subset_ap if use_numba() else getattr(_subset_ap, "py_func", _subset_ap)
        self._args = (self.index, self.ints, self.floats, self.flags, MATCH_THRESHOLDS,
                      int(RECALL_THRESHOLDS.shape[0]), int(MAX_DETS[-1]), float(EPS))

    def __call__(self, images: np.ndarray, keep: np.ndarray) -> np.ndarray:
        """Per-image AP of kept slots ``keep`` (C-contiguous bool ``[B, n_max]``) of images ``images`` (int64
        ``[B]``): float64 ``[B]``."""
        out = np.empty(images.shape[0], dtype=np.float64)
        self._kernel(images, keep, *self._args, out)
        return out
