"""The compiled per-image AP in its two halves, shared by ``image_ap`` and ``PreparedAP``.

:func:`prepare_image` computes what depends only on an image's candidates and ground truth (the score order, the
label categories, the GT order and ignore flags, each candidate's matchable GTs with their IoUs, the recall-point
weights); :func:`subsets_ap` scores kept subsets from that. ``image_ap``'s kernel runs both for one image and its K
subsets; ``PreparedAP`` runs the first once per image when a DetBoxSelect table is built and the second at each
step. The rules, and why they equal pycocotools', are in the docstring of :mod:`detgym.metrics.image_ap`.

A prepared image is one block in each of three packed arrays, so that ``PreparedAP`` keeps a whole split in three
arrays and a step touches few cache lines per image (``N`` candidates, ``G`` GTs, ``C`` categories, ``nc``
candidate pairs; a candidate's position p is its rank in the stable order by -score):

* ``ints``: order [N] (the candidate at position p), pcat [N] (its category), cstart [N + 1] (p's candidate GTs
  are ``cg[cstart[p]:cstart[p + 1]]``), npig [C] (non-ignored GTs per category), cg [nc] (GT positions in GT
  order: non-ignored first);
* ``floats``: wts [C * (G + 2)] (row c, column n: how many recall points read the n-th true positive's
  precision), civ [nc] (the IoUs of cg);
* ``flags``: d_out [N] (p's area is outside the range), the ignore and the crowd flags by GT position [G each];
* an ``index`` row per image: the offsets of its blocks in ints / floats / flags, then N, G, C, cv (categories
  with a non-ignored GT), nc.

numba's on-disk cache is keyed on the source of the file that defines a kernel (its content, not its mtime: touching
a file does nothing), while a kernel's cached code holds a copy of everything it calls: after editing this file,
``_matching.py`` or ``_boxes.py``, delete the cached kernels (``detgym/metrics/__pycache__/*.nbi`` and ``*.nbc``).
A stale ``image_ap`` kernel runs the old code, and loaded beside a fresh ``prepare_image`` it makes ``PreparedAP``
fail with "returned a result with an exception set".
"""

from __future__ import annotations

import numpy as np

from ._backend import njit
from ._boxes import argsort_desc_stable, coco_iou
from ._matching import match_detection


@njit
def _xywh(xyxy):  # pragma: no cover - compiled
    """``[x1, y1, x2 - x1, y2 - y1]``: the boxes pycocotools would be handed."""
    out = np.empty((xyxy.shape[0], 4), dtype=np.float64)
    for i in range(xyxy.shape[0]):
        out[i, 0] = xyxy[i, 0]
        out[i, 1] = xyxy[i, 1]
        out[i, 2] = xyxy[i, 2] - xyxy[i, 0]
        out[i, 3] = xyxy[i, 3] - xyxy[i, 1]
    return out


@njit
def prepare_image(d_xyxy, d_score, d_lab, g_xyxy, g_lab, g_crowd, match_thr, rec_thr, area_hi):  # pragma: no cover
    """The subset-independent part of one image's AP (boxes finite with x2 >= x1, y2 >= y1; no NaN score).

    Returns the image's packed blocks (see the module docstring) ``(index, ints, floats, flags)``, ``index`` being
    its ``[1, 8]`` row with block offsets 0.
    """
    N = d_xyxy.shape[0]
    G = g_xyxy.shape[0]
    d_xywh = _xywh(d_xyxy)
    g_xywh = _xywh(g_xyxy)

    # Compact category index over the labels present (order of first appearance; only the
    # summation order of the per-category APs depends on it).
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

    # The blocks are written in place; cg and civ come last, sized for every pair and cut to the nc found.
    ints = np.empty(3 * N + 1 + C + N * G, dtype=np.int64)
    order = ints[:N]
    pcat = ints[N:2 * N]
    cstart = ints[2 * N:3 * N + 1]
    npig = ints[3 * N + 1:3 * N + 1 + C]
    cg = ints[3 * N + 1 + C:]
    floats = np.empty(C * (G + 2) + N * G, dtype=np.float64)
    wts = floats[:C * (G + 2)]
    civ = floats[C * (G + 2):]
    flags = np.empty(N + 2 * G, dtype=np.bool_)
    d_out = flags[:N]
    gig = flags[N:N + G]
    gcr = flags[N + G:]
    order[:] = argsort_desc_stable(d_score)

    # GT order: non-ignored first, stable (pycocotools' mergesort on the ignore flag).
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
    npig[:] = 0
    for qq in range(G):
        q = gorder[qq]
        gig[qq] = g_ign[q]
        gcr[qq] = g_crowd[q]
        if not g_ign[q]:
            npig[gcat[q]] += 1
    cv = 0
    for c in range(C):
        if npig[c] > 0:
            cv += 1

    # Candidate GTs of each detection: same label, IoU >= the lowest threshold, in GT order. Only they can
    # ever match.
    thr_min = match_thr[0]
    for t in range(match_thr.shape[0]):
        if match_thr[t] < thr_min:
            thr_min = match_thr[t]
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

    # Weight of the n-th true positive's interpolated precision: how many recall points first reach
    # recall n / npig (n = 0 reads the first true positive too).
    wts[:] = 0.0
    for c in range(C):
        P = npig[c]
        if P == 0:
            continue
        n = 0
        for r in range(rec_thr.shape[0]):
            while n < P and n / P < rec_thr[r]:
                n += 1
            wts[c * (G + 2) + max(n, 1)] += 1.0

    index = np.zeros((1, 8), dtype=np.int64)
    index[0, 3] = N
    index[0, 4] = G
    index[0, 5] = C
    index[0, 6] = cv
    index[0, 7] = nc
    return index, ints[:3 * N + 1 + C + nc], floats[:C * (G + 2) + nc], flags


@njit
def subsets_ap(images, keep, index, ints, floats, flags, match_thr, n_rec, max_det, eps, no_gt_reward,
               out):  # pragma: no cover - compiled
    """``out[b]`` = AP of the candidates kept by ``keep[b]`` (bool, by candidate slot) of prepared image
    ``images[b]`` (a row of ``index``; blocks in ``ints`` / ``floats`` / ``flags``).

    An image without non-ignored GT scores the fraction of thresholds without a false positive, or -1.0 (as
    pycocotools) when ``no_gt_reward`` is false.
    """
    # One function for the whole batch, not a call per subset: numba increfs and decrefs every array argument of
    # a call it cannot inline (a call per subset made image_ap ~15% slower).
    T = match_thr.shape[0]
    # Scratch arrays sized for the largest image of the batch, allocated once per call, not per subset.
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
    B = images.shape[0]
    b = 0
    while b < B:
        # consecutive rows of one image (image_ap's K subsets) share one unpacking of its blocks
        i = images[b]
        end = b + 1
        while end < B and images[end] == i:
            end += 1
        N = index[i, 3]
        G = index[i, 4]
        C = index[i, 5]
        cv = index[i, 6]
        nc = index[i, 7]
        o = index[i, 0]
        order = ints[o:o + N]
        pcat = ints[o + N:o + 2 * N]
        cstart = ints[o + 2 * N:o + 3 * N + 1]
        npig = ints[o + 3 * N + 1:o + 3 * N + 1 + C]
        cg = ints[o + 3 * N + 1 + C:o + 3 * N + 1 + C + nc]
        f = index[i, 1]
        wts = floats[f:f + C * (G + 2)]
        civ = floats[f + C * (G + 2):f + C * (G + 2) + nc]
        g = index[i, 2]
        d_out = flags[g:g + N]
        gig = flags[g + N:g + N + G]
        gcr = flags[g + N + G:g + N + 2 * G]
        walk_all = cv == 0
        stride = G + 2
        for k in range(b, end):
            if walk_all and not no_gt_reward:
                out[k] = -1.0
                continue
            # The kept detections that are evaluated, in score order (the top max_det of each category; a category
            # without non-ignored GT is left out of the mean): those with candidate GTs are matched per threshold
            # below, the others are false positives at every threshold (unless outside the area range).
            for c in range(C):
                cnt[c] = 0
                basefp[c] = 0
            na = 0
            for p in range(N):
                if not keep[k, order[p]]:
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
                    out[k] = 0.0
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
                        # an unsigned index: numba then skips the negative-index wraparound it adds to a signed
                        # one, which LLVM cannot drop for a computed flat index (measured: ~4% of image_ap)
                        s += wts[np.uint64(c * stride + n)] * run
                    total += s
            if walk_all:
                out[k] = clean / T
            else:
                out[k] = total / (T * n_rec * cv)
        b = end
    return 0
