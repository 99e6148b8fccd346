"""COCO AP over a fixed pool of images with one image's detections swapped in: the box-selection reward that ranks
selections as dataset AP does.

Per-image AP (:mod:`detgym.metrics.image_ap`) leaves out the classes an image has no ground truth of and never sees
the ranking across images, so a duplicate ranked below its true positive costs nothing there, while it costs
precision in the COCO AP of a dataset. :class:`PoolAP` scores a kept set ``K_i`` of image ``i`` inside a fixed
reference pool ``P`` of images whose detections are fixed (a reference selection, e.g. greedy NMS, on each)::

    AP_P(K_i) = COCO AP of (P without i) plus i, with i's detections K_i          (IoU .50:.05:.95, maxDets 100,
    delta_i(K_i) = AP_P(K_i) - AP_P(reference_i)                                  area all, every category)

exactly as pycocotools computes them with ``params.imgIds`` = the pool's images and ``i`` (a kept box of a class
absent from ``i`` is a false positive of that class; categories without non-ignored GT in the evaluated images
are left out, as pycocotools marks them -1). ``delta`` is 0 for the reference itself.

Why it is fast and exact. pycocotools' AP of category ``k`` at IoU threshold ``t`` depends on the detections of all
evaluated images ranked together by -score (ties: image id, then the image's own order), each a true positive,
false positive or ignored from matching inside its own image. Matching never crosses images, so the pool's
detections of each category are sorted once with their per-threshold states and cumulative TP / FP counts. Image
``i``'s kept detections are matched inside ``i`` (greedy, as ``evaluateImg``), placed by binary search among the
pool's, and ``i``'s own pool detections (when ``i`` is in the pool) are taken out. The curve reads the n-th true
positive's precision ``n / (n + fp + eps)`` made monotone from the right (a running maximum from the right) at the
101 recall points (``searchsorted(..., "left")``): it is walked from the right down to the image's first detection
in the ranking; the pool's true positives ranked before it keep their precision, and their part of the sum comes
from the pool's suffix maxima and recall-point weights summed once at construction. Categories whose kept
detections equal the reference's keep their precomputed value, so a step costs, per category that changed and
threshold, a walk over the pool's true positives ranked after the image's best kept box.
"""

from __future__ import annotations

import numpy as np

from ._backend import kernel, njit
from ._boxes import argsort_desc_stable, coco_iou
from ._cocoparams import AREA_RANGES, EPS, MATCH_THRESHOLDS, MAX_DETS, RECALL_THRESHOLDS
from ._matching import match_detection

__all__ = ["PoolAP"]

_AREA_HI = float(AREA_RANGES[0, 1])  # area "all" is [0, 1e10]
_FP, _TP = 0, 1  # detection states (2: ignored)


# ------------------------------------------------------------------------------------------------- kernels
@njit
def _prepare_split(boxes, counts, labels, gt_boxes, gt_labels, gt_crowd, gt_offsets, thr_min,
                   area_hi):  # pragma: no cover - compiled
    """Per candidate slot (flat index ``i * n_max + slot``) its matchable GTs (same label, IoU >= ``thr_min``; global
    GT positions, each image's GTs ordered non-ignored first, stable) with their IoUs, and whether its area is
    outside the range; per GT position its ignore and crowd flags."""
    n, n_max = labels.shape
    n_gt = gt_labels.shape[0]
    gpos = np.empty(n_gt, dtype=np.int64)  # original GT row -> position
    gig = np.empty(n_gt, dtype=np.bool_)
    gcr = np.empty(n_gt, dtype=np.bool_)
    gw = np.empty((n_gt, 4), dtype=np.float64)  # xywh by position
    for i in range(n):
        g0 = gt_offsets[i]
        g1 = gt_offsets[i + 1]
        p = g0
        for ignored_pass in range(2):
            for q in range(g0, g1):
                w = gt_boxes[q, 2] - gt_boxes[q, 0]
                h = gt_boxes[q, 3] - gt_boxes[q, 1]
                a = w * h
                ign = gt_crowd[q] or a < 0.0 or a > area_hi
                if ign == (ignored_pass == 1):
                    gpos[q] = p
                    gig[p] = ign
                    gcr[p] = gt_crowd[q]
                    gw[p, 0] = gt_boxes[q, 0]
                    gw[p, 1] = gt_boxes[q, 1]
                    gw[p, 2] = w
                    gw[p, 3] = h
                    p += 1
    glab = np.empty(n_gt, dtype=np.int64)
    for q in range(n_gt):
        glab[gpos[q]] = gt_labels[q]
    cstart = np.zeros(n * n_max + 1, dtype=np.int64)
    d_out = np.zeros(n * n_max, dtype=np.bool_)
    cap = 16
    cg = np.empty(cap, dtype=np.int64)
    civ = np.empty(cap, dtype=np.float64)
    nc = 0
    for i in range(n):
        g0 = gt_offsets[i]
        g1 = gt_offsets[i + 1]
        for s in range(n_max):
            flat = i * n_max + s
            cstart[flat] = nc
            if s >= counts[i]:
                continue
            dx = boxes[i, s, 0]
            dy = boxes[i, s, 1]
            dw = boxes[i, s, 2] - dx
            dh = boxes[i, s, 3] - dy
            a = dw * dh
            d_out[flat] = a < 0.0 or a > area_hi
            for p in range(g0, g1):
                if glab[p] != labels[i, s]:
                    continue
                v = coco_iou(dx, dy, dw, dh, gw[p, 0], gw[p, 1], gw[p, 2], gw[p, 3], gcr[p])
                if v >= thr_min:
                    if nc == cap:
                        cap *= 2
                        cg2 = np.empty(cap, dtype=np.int64)
                        civ2 = np.empty(cap, dtype=np.float64)
                        cg2[:nc] = cg[:nc]
                        civ2[:nc] = civ[:nc]
                        cg = cg2
                        civ = civ2
                    cg[nc] = p
                    civ[nc] = v
                    nc += 1
    cstart[n * n_max] = nc
    return cstart, cg[:nc].copy(), civ[:nc].copy(), d_out, gig, gcr


@njit
def _evaluated(i, keep, score, counts, labels, max_det, cnt, dets):  # pragma: no cover - compiled
    """The slots of image ``i`` that pycocotools evaluates for kept set ``keep`` ranked by ``score``: kept real
    slots by -score (ties: slot order), at most ``max_det`` per category; written to ``dets``, count returned."""
    m = 0
    for s in range(counts[i]):
        if keep[s]:
            dets[m] = s
            m += 1
    order = argsort_desc_stable(score[dets[:m]])
    tmp = dets[:m].copy()
    for c in range(cnt.shape[0]):
        cnt[c] = 0
    out = 0
    for j in range(m):
        s = tmp[order[j]]
        c = labels[i, s]
        cnt[c] += 1
        if cnt[c] <= max_det:
            dets[out] = s
            out += 1
    return out


@njit
def _match(i, dets, m, n_max, gt_offsets, cstart, cg, civ, d_out, gig, gcr, match_thr, gm,
           state):  # pragma: no cover - compiled
    """pycocotools' greedy matching of image ``i``'s evaluated slots ``dets[:m]`` (in rank order) at every
    threshold: ``state[t, d]`` = 1 (true positive), 2 (ignored) or 0 (false positive)."""
    g0 = gt_offsets[i]
    g1 = gt_offsets[i + 1]
    for t in range(match_thr.shape[0]):
        for q in range(g0, g1):
            gm[q] = False
        for d in range(m):
            flat = i * n_max + dets[d]
            j = match_detection(cstart[flat], cstart[flat + 1], cg, civ, gm, gcr, gig, match_thr[t])
            if j == -1:
                state[t, d] = 2 if d_out[flat] else 0
            else:
                gm[j] = True
                state[t, d] = 2 if gig[j] else 1


@njit
def _category_sums(i, keep, score, want, counts, labels, image_ids, n_max, max_det, gt_offsets, cstart, cg, civ,
                   d_out, gig, gcr, match_thr, rec_thr, eps, pool_pos, img_e_lo, img_entries, e_cat, e_state,
                   cat_lo, e_score, e_img, cum_off, cumtp, cumfp, tp_pos, tp_fp, tp_g, tp_lo, w, w_cum, w_off,
                   wg_sums, wg_off, npig_cat, npig_img, gm, sums, scratch_i):  # pragma: no cover - compiled
    """``sums[k]`` = sum over thresholds and recall points of category ``k``'s interpolated precision with image
    ``i``'s kept set (``keep``, ranked by ``score``) in the pool, for every category with ``want[k]`` and
    non-ignored GT (``npig_cat[k]`` > 0).

    One function without calls in its loops: numba increfs and decrefs every array argument of a call it does not
    inline, which cost more than the walks themselves when the walk was a function of its own.
    """
    T = match_thr.shape[0]
    dets = scratch_i[0]
    cnt = scratch_i[1]
    ins_pos = scratch_i[2]
    rem_pos = scratch_i[3]
    state = scratch_i[4:4 + T]
    ins_state = scratch_i[4 + T:4 + 2 * T]
    rem_state = scratch_i[4 + 2 * T:4 + 3 * T]
    m = _evaluated(i, keep, score, counts, labels, max_det, cnt, dets)
    _match(i, dets, m, n_max, gt_offsets, cstart, cg, civ, d_out, gig, gcr, match_thr, gm, state)
    p = pool_pos[i]
    image_id = image_ids[i]
    for k in range(1, sums.shape[0]):
        P = npig_cat[k]
        if not want[k] or P == 0:
            continue
        lo_k = cat_lo[k]
        hi_k = cat_lo[k + 1]
        # the image's evaluated detections of k, each before the pool detections it outranks (higher score first,
        # then lower image id: pycocotools' stable sort over images in id order)
        n_ins = 0
        for d in range(m):
            s = dets[d]
            if labels[i, s] != k:
                continue
            sc = score[s]
            lo = lo_k
            hi = hi_k
            while lo < hi:
                mid = (lo + hi) // 2
                if e_score[mid] > sc or (e_score[mid] == sc and e_img[mid] < image_id):
                    lo = mid + 1
                else:
                    hi = mid
            ins_pos[n_ins] = lo - lo_k
            for t in range(T):
                ins_state[t, n_ins] = state[t, d]
            n_ins += 1
        # the image's own pool detections of k, taken out
        n_rem = 0
        if p >= 0:
            for j in range(img_e_lo[p], img_e_lo[p + 1]):
                e = img_entries[j]
                if e_cat[e] == k:
                    rem_pos[n_rem] = e - lo_k
                    for t in range(T):
                        rem_state[t, n_rem] = e_state[t, e]
                    n_rem += 1
        # recall-point weights of P non-ignored GTs: the pool's own plus the image's when it is not in the pool
        dk = 0 if p >= 0 else npig_img[i, k]
        wo = w_off[k, dk]
        c0 = cum_off[k]
        total = 0.0
        for t in range(T):
            # The curve from the right (precision made monotone from the right is a running maximum) down to the
            # image's first inserted or removed detection: fractions n / den compared exactly in integers (distinct
            # fractions of such denominators never round to one float), one division per new maximum.
            tp0 = tp_lo[t, k]
            N = cumtp[t, c0 + hi_k - lo_k]
            ins_fp = 0
            n = N
            for b in range(n_ins):
                if ins_state[t, b] == 1:
                    n += 1
                elif ins_state[t, b] == 0:
                    ins_fp += 1
            rem_fp = 0
            for r in range(n_rem):
                if rem_state[t, r] == 1:
                    n -= 1
                elif rem_state[t, r] == 0:
                    rem_fp += 1
            j = N - 1
            b = n_ins - 1
            r = n_rem - 1
            run = 0.0
            run_num = 0
            run_den = 1
            while b >= 0 or r >= 0:
                removal = r >= 0 and (b < 0 or rem_pos[r] >= ins_pos[b])  # at one position the pool's ranks last
                q = rem_pos[r] if removal else ins_pos[b]
                adj = ins_fp - rem_fp  # inserted minus removed false positives ranked before what comes next
                while j >= 0 and (tp_pos[t, tp0 + j] > q or (not removal and tp_pos[t, tp0 + j] == q)):
                    den = tp_fp[t, tp0 + j] + adj + n
                    if n * run_den > run_num * den:
                        run_num = n
                        run_den = den
                        run = n / (float(den) + eps)
                    total += w[wo + n] * run
                    n -= 1
                    j -= 1
                if removal:
                    if rem_state[t, r] == 1:
                        j -= 1  # the removed image's own true positive
                    elif rem_state[t, r] == 0:
                        rem_fp -= 1
                    r -= 1
                else:
                    if ins_state[t, b] == 1:
                        den = cumfp[t, c0 + q] + ins_fp - rem_fp + n
                        if n * run_den > run_num * den:
                            run_num = n
                            run_den = den
                            run = n / (float(den) + eps)
                        total += w[wo + n] * run
                        n -= 1
                    elif ins_state[t, b] == 0:
                        ins_fp -= 1
                    b -= 1
            # The n true positives ranked before the first change are the pool's own: their running maximum is the
            # pool's suffix maximum tp_g wherever that exceeds the pool's maximum after them, else it is walked.
            if n == 0:
                continue
            g_after = tp_g[t, tp0 + n] if n < N else 0.0
            g = 0.0
            while n >= 1 and tp_g[t, tp0 + n - 1] <= g_after:
                pr = n / (float(tp_fp[t, tp0 + n - 1] + n) + eps)
                if pr > g:
                    g = pr
                total += w[wo + n] * (g if g > run else run)
                n -= 1
            # the rest read max(run, tp_g): tp_g where it exceeds run (a prefix, as tp_g never increases), else run
            lo = 0
            hi = n
            while lo < hi:
                mid = (lo + hi) // 2
                if tp_g[t, tp0 + mid] > run:
                    lo = mid + 1
                else:
                    hi = mid
            wg = wg_off[t, k, dk]
            total += wg_sums[wg + lo] + run * (w_cum[wo + n] - w_cum[wo + lo])
        sums[k] = total


@njit
def _pool_step(images, keep, scores, ref_keep, ref_scores, counts, labels, image_ids, n_max, max_det, gt_offsets,
               cstart, cg, civ, d_out, gig, gcr, match_thr, rec_thr, eps, pool_pos, img_e_lo, img_entries, e_cat,
               e_state, cat_lo, e_score, e_img, cum_off, cumtp, cumfp, tp_pos, tp_fp, tp_g, tp_lo, w, w_cum, w_off,
               wg_sums, wg_off, npig_pool, npig_img, ref_sums, ref_ap, out_ap, out_delta,
               scratch_i):  # pragma: no cover - compiled
    """``out_ap[b]`` / ``out_delta[b]``: the pool AP of image ``images[b]``'s kept set ``keep[b]`` (ranked by
    ``scores[b]``) and its difference to the reference's; only categories whose evaluated detections differ from
    the reference's are recomputed."""
    C1 = npig_pool.shape[0]
    T = match_thr.shape[0]
    R = rec_thr.shape[0]
    gm = np.zeros(gig.shape[0], dtype=np.bool_)
    want = np.zeros(C1, dtype=np.bool_)
    npig_cat = np.zeros(C1, dtype=np.int64)
    sums = np.zeros(C1, dtype=np.float64)
    for b in range(images.shape[0]):
        i = images[b]
        inside = pool_pos[i] >= 0
        kv = 0
        for k in range(1, C1):
            npig_cat[k] = npig_pool[k] if inside else npig_pool[k] + npig_img[i, k]
            if npig_cat[k] > 0:
                kv += 1
            want[k] = False
        any_change = False
        for s in range(counts[i]):
            if keep[b, s] != ref_keep[i, s] or (keep[b, s] and scores[b, s] != ref_scores[i, s]):
                want[labels[i, s]] = True
                any_change = True
        delta = 0.0
        if any_change and kv > 0:
            _category_sums(i, keep[b], scores[b], want, counts, labels, image_ids, n_max, max_det, gt_offsets,
                           cstart, cg, civ, d_out, gig, gcr, match_thr, rec_thr, eps, pool_pos, img_e_lo,
                           img_entries, e_cat, e_state, cat_lo, e_score, e_img, cum_off, cumtp, cumfp, tp_pos,
                           tp_fp, tp_g, tp_lo, w, w_cum, w_off, wg_sums, wg_off, npig_cat, npig_img, gm, sums,
                           scratch_i)
            for k in range(1, C1):
                if want[k] and npig_cat[k] > 0:
                    delta += sums[k] - ref_sums[i, k]
            delta /= T * R * kv
        out_delta[b] = delta
        out_ap[b] = ref_ap[i] + delta


@njit
def _evaluated_states(i, keep, score, counts, labels, n_max, max_det, gt_offsets, cstart, cg, civ, d_out, gig, gcr,
                      match_thr, n_labels):  # pragma: no cover - compiled
    """Image ``i``'s evaluated slots for ``keep`` ranked by ``score`` (rank order) and their states ``[T, m]``."""
    dets = np.empty(n_max, dtype=np.int64)
    cnt = np.zeros(n_labels, dtype=np.int64)
    m = _evaluated(i, keep, score, counts, labels, max_det, cnt, dets)
    state = np.zeros((match_thr.shape[0], m), dtype=np.int64)
    gm = np.zeros(gig.shape[0], dtype=np.bool_)
    _match(i, dets, m, n_max, gt_offsets, cstart, cg, civ, d_out, gig, gcr, match_thr, gm, state)
    return dets[:m].copy(), state


@njit
def _reference_sums(keep, scores, counts, labels, image_ids, n_max, max_det, gt_offsets, cstart, cg, civ, d_out,
                    gig, gcr, match_thr, rec_thr, eps, pool_pos, img_e_lo, img_entries, e_cat, e_state, cat_lo,
                    e_score, e_img, cum_off, cumtp, cumfp, tp_pos, tp_fp, tp_g, tp_lo, w, w_cum, w_off, wg_sums,
                    wg_off, npig_pool, npig_img, pool_sums, ref_sums, ref_ap,
                    scratch_i):  # pragma: no cover - compiled
    """Every image's ``AP_P(reference_i)`` and its per-category precision sums (the categories image ``i`` touches
    are recomputed, the others are the pool's own)."""
    C1 = npig_pool.shape[0]
    T = match_thr.shape[0]
    R = rec_thr.shape[0]
    gm = np.zeros(gig.shape[0], dtype=np.bool_)
    want = np.zeros(C1, dtype=np.bool_)
    npig_cat = np.zeros(C1, dtype=np.int64)
    for i in range(counts.shape[0]):
        inside = pool_pos[i] >= 0
        kv = 0
        for k in range(1, C1):
            npig_cat[k] = npig_pool[k] if inside else npig_pool[k] + npig_img[i, k]
            if npig_cat[k] > 0:
                kv += 1
            want[k] = npig_img[i, k] > 0
        for s in range(counts[i]):
            if keep[i, s]:
                want[labels[i, s]] = True
        for k in range(C1):
            ref_sums[i, k] = pool_sums[k]
        _category_sums(i, keep[i], scores[i], want, counts, labels, image_ids, n_max, max_det, gt_offsets, cstart,
                       cg, civ, d_out, gig, gcr, match_thr, rec_thr, eps, pool_pos, img_e_lo, img_entries, e_cat,
                       e_state, cat_lo, e_score, e_img, cum_off, cumtp, cumfp, tp_pos, tp_fp, tp_g, tp_lo, w, w_cum,
                       w_off, wg_sums, wg_off, npig_cat, npig_img, gm, ref_sums[i], scratch_i)
        total = 0.0
        for k in range(1, C1):
            if npig_cat[k] > 0:
                total += ref_sums[i, k]
        ref_ap[i] = total / (T * R * kv) if kv > 0 else -1.0


# ------------------------------------------------------------------------------------------------- the class
def recall_weights(n_gt: int) -> np.ndarray:
    """``w[n]`` (n = 1..n_gt) = how many of the 101 recall points read the n-th true positive's interpolated
    precision for ``n_gt`` non-ignored GTs (point r reads the first n with n / n_gt >= r; r = 0 reads n = 1):
    float64 ``[n_gt + 2]``, all zero when ``n_gt`` is 0."""
    w = np.zeros(n_gt + 2)
    if n_gt > 0:
        n = 0
        for r in RECALL_THRESHOLDS:
            while n < n_gt and n / n_gt < r:
                n += 1
            w[max(n, 1)] += 1.0
    return w


class PoolAP:
    """COCO AP over a fixed pool of images with one image's kept detections swapped in (module docstring).

    Built once from a split's padded candidates (the arrays of a DetBoxSelect
    :class:`~detgym.envs.box_select.table.ImageTable`), the pool's images and a reference keep-mask of every image
    (greedy NMS in the env); afterwards a call only merges the scored images' boxes into the pool.

    Args:
        boxes: float64 ``[n, n_max, 4]`` padded candidates (xyxy pixels; finite, x2 >= x1, y2 >= y1);
        scores: float64 ``[n, n_max]`` (the reference's ranking); labels: int64 ``[n, n_max]`` in 1..num_classes;
        counts: int64 ``[n]`` real candidates per image;
        gt_boxes, gt_labels, gt_crowd: the ground truth concatenated over images, ``gt_offsets`` ``[n + 1]``;
        image_ids: int64 ``[n]`` (pycocotools ranks equal scores of different images by image id);
        num_classes: the categories are the labels 1..num_classes;
        pool: int64 ``[P]`` distinct image indices forming the pool;
        reference_keep: bool ``[n, n_max]``, the reference selection of every image (the pool's detections are the
            reference selections of the pool's images).

    Attributes:
        reference_ap: float64 ``[n]``, ``AP_P(reference_i)`` of every image (-1 when no category has ground truth).
    """

    def __init__(self, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, counts: np.ndarray,
                 gt_boxes: np.ndarray, gt_labels: np.ndarray, gt_crowd: np.ndarray, gt_offsets: np.ndarray,
                 image_ids: np.ndarray, num_classes: int, pool: np.ndarray, reference_keep: np.ndarray) -> None:
        n, n_max = scores.shape
        pool = np.asarray(pool, dtype=np.int64)
        if pool.ndim != 1 or pool.size == 0 or np.unique(pool).size != pool.size or pool.min() < 0 or pool.max() >= n:
            raise ValueError(f"pool must hold distinct image indices in 0..{n - 1}, got {pool!r}")
        if reference_keep.shape != (n, n_max):
            raise ValueError(f"reference_keep must be bool [{n}, {n_max}], got {reference_keep.shape}")
        self.n_max, self.num_classes = int(n_max), int(num_classes)
        self.counts = np.ascontiguousarray(counts, dtype=np.int64)
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.scores = np.ascontiguousarray(scores, dtype=np.float64)
        self.image_ids = np.ascontiguousarray(image_ids, dtype=np.int64)
        self.gt_offsets = np.ascontiguousarray(gt_offsets, dtype=np.int64)
        self.reference_keep = np.ascontiguousarray(reference_keep, dtype=bool)
        self.pool = np.sort(pool)
        self.pool_pos = np.full(n, -1, dtype=np.int64)
        self.pool_pos[self.pool] = np.arange(self.pool.size)
        gt_boxes = np.ascontiguousarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
        gt_labels = np.ascontiguousarray(gt_labels, dtype=np.int64)
        gt_crowd = np.ascontiguousarray(gt_crowd, dtype=bool)
        self.cstart, self.cg, self.civ, self.d_out, self.gig, self.gcr = kernel(_prepare_split)(
            np.ascontiguousarray(boxes, dtype=np.float64), self.counts, self.labels, gt_boxes, gt_labels, gt_crowd,
            self.gt_offsets, float(MATCH_THRESHOLDS.min()), _AREA_HI)
        area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
        counted = ~gt_crowd & (area >= 0.0) & (area <= _AREA_HI)
        #: Non-ignored GTs per image and label, int64 ``[n, num_classes + 1]``.
        self.npig_img = np.zeros((n, self.num_classes + 1), dtype=np.int64)
        np.add.at(self.npig_img, (np.repeat(np.arange(n), np.diff(self.gt_offsets))[counted], gt_labels[counted]), 1)
        self.npig_pool = self.npig_img[self.pool].sum(axis=0)
        self._build_pool()
        T = MATCH_THRESHOLDS.shape[0]
        # scratch rows of the kernels (one per instance: not thread-safe, like an env)
        self._scratch_i = np.zeros((4 + 3 * T, max(self.n_max, self.num_classes + 1)), dtype=np.int64)
        self._consts = (MATCH_THRESHOLDS, RECALL_THRESHOLDS, float(EPS))
        # the pool's own sums: any pool image with its reference selection leaves the pool as it is
        pool_sums = np.zeros(self.num_classes + 1)
        kernel(_category_sums)(int(self.pool[0]), self.reference_keep[self.pool[0]], self.scores[self.pool[0]],
                               self.npig_pool > 0, *self._image_args(), *self._pool_args(), self.npig_pool,
                               self.npig_img, np.zeros(self.gig.shape[0], dtype=bool), pool_sums, self._scratch_i)
        self.reference_ap = np.zeros(n)
        self._ref_sums = np.zeros((n, self.num_classes + 1))
        kernel(_reference_sums)(self.reference_keep, self.scores, *self._image_args(), *self._pool_args(),
                                self.npig_pool, self.npig_img, pool_sums, self._ref_sums, self.reference_ap,
                                self._scratch_i)
        # the backend is chosen once, as PreparedAP's; a step passes these unchanged (built once: a call's own
        # Python costs as much as its kernel's work)
        self._step_kernel = kernel(_pool_step)
        self._step_args = (self.reference_keep, self.scores, *self._image_args(), *self._pool_args(), self.npig_pool,
                           self.npig_img, self._ref_sums, self.reference_ap)

    def _image_args(self) -> tuple:
        return (self.counts, self.labels, self.image_ids, self.n_max, int(MAX_DETS[-1]), self.gt_offsets,
                self.cstart, self.cg, self.civ, self.d_out, self.gig, self.gcr, *self._consts)

    def _pool_args(self) -> tuple:
        return (self.pool_pos, self.img_e_lo, self.img_entries, self.e_cat, self.e_state, self.cat_lo, self.e_score,
                self.e_img, self.cum_off, self.cumtp, self.cumfp, self.tp_pos, self.tp_fp, self.tp_g, self.tp_lo,
                self.w, self.w_cum, self.w_off, self.wg_sums, self.wg_off)

    def _build_pool(self) -> None:
        """Sort the pool's reference detections by (category, -score, image id, slot), with their states and the
        cumulative true / false positives of each category and threshold."""
        T, C1 = MATCH_THRESHOLDS.shape[0], self.num_classes + 1
        run = kernel(_evaluated_states)
        parts: list[tuple[np.ndarray, ...]] = []
        for p, i in enumerate(self.pool):
            dets, state = run(int(i), self.reference_keep[i], self.scores[i], self.counts, self.labels, self.n_max,
                              int(MAX_DETS[-1]), self.gt_offsets, self.cstart, self.cg, self.civ, self.d_out,
                              self.gig, self.gcr, MATCH_THRESHOLDS, C1)
            parts.append((self.labels[i, dets], self.scores[i, dets], np.full(dets.size, self.image_ids[i]), dets,
                          np.full(dets.size, p), state))
        cat, score, img, slot, owner = (np.concatenate([part[j] for part in parts]) for j in range(5))
        state = np.concatenate([part[5] for part in parts], axis=1)
        order = np.lexsort((slot, img, -score, cat))
        self.e_cat, self.e_score, self.e_img = cat[order], score[order], img[order]
        self.e_state = np.ascontiguousarray(state[:, order])
        owner = owner[order]
        E = self.e_cat.size
        self.cat_lo = np.searchsorted(self.e_cat, np.arange(C1 + 1)).astype(np.int64)
        self.cum_off = (self.cat_lo[:C1] + np.arange(C1)).astype(np.int64)
        self.cumtp = np.zeros((T, E + C1), dtype=np.int64)
        self.cumfp = np.zeros((T, E + C1), dtype=np.int64)
        for k in range(C1):
            lo, hi, c0 = self.cat_lo[k], self.cat_lo[k + 1], self.cum_off[k]
            self.cumtp[:, c0 + 1:c0 + 1 + hi - lo] = np.cumsum(self.e_state[:, lo:hi] == _TP, axis=1)
            self.cumfp[:, c0 + 1:c0 + 1 + hi - lo] = np.cumsum(self.e_state[:, lo:hi] == _FP, axis=1)
        # per threshold, the pool's true positives in order: position in their category, false positives before
        self.tp_pos = np.zeros((T, max(E, 1)), dtype=np.int64)
        self.tp_fp = np.zeros((T, max(E, 1)), dtype=np.int64)
        self.tp_lo = np.zeros((T, C1 + 1), dtype=np.int64)
        for t in range(T):
            tps = np.flatnonzero(self.e_state[t] == _TP)
            local = tps - self.cat_lo[self.e_cat[tps]]
            self.tp_pos[t, :tps.size] = local
            self.tp_fp[t, :tps.size] = self.cumfp[t, self.cum_off[self.e_cat[tps]] + local]
            self.tp_lo[t] = np.searchsorted(tps, self.cat_lo)
        # the pool's own precision at each true positive, and its maximum from there to the category's end
        self.tp_g = np.zeros((T, max(E, 1)), dtype=np.float64)
        for t in range(T):
            for k in range(C1):
                lo, hi = self.tp_lo[t, k], self.tp_lo[t, k + 1]
                n = np.arange(1, hi - lo + 1)
                precision = n / ((self.tp_fp[t, lo:hi] + n).astype(np.float64) + EPS)
                self.tp_g[t, lo:hi] = np.maximum.accumulate(precision[::-1])[::-1]
        self._build_weights()
        by_owner = np.argsort(owner, kind="stable")
        self.img_entries = by_owner.astype(np.int64)
        self.img_e_lo = np.searchsorted(owner[by_owner], np.arange(self.pool.size + 1)).astype(np.int64)

    def _build_weights(self) -> None:
        """Recall-point weights of every category's possible GT count (the pool's, plus d of an image outside the
        pool), and per threshold their running sums weighted by the pool's suffix maximum precision ``tp_g``."""
        T, C1 = MATCH_THRESHOLDS.shape[0], self.num_classes + 1
        outside = np.ones(self.counts.shape[0], dtype=bool)
        outside[self.pool] = False
        d_max = self.npig_img[outside].max(axis=0, initial=0)
        self.w_off = np.zeros((C1, int(d_max.max(initial=0)) + 1), dtype=np.int64)
        self.wg_off = np.zeros((T, C1, self.w_off.shape[1]), dtype=np.int64)
        w_rows, wg_rows, w_at, wg_at = [], [], 0, 0
        for k in range(C1):
            for d in range(int(d_max[k]) + 1):
                w = recall_weights(int(self.npig_pool[k]) + d)
                self.w_off[k, d] = w_at
                w_rows.append(w)
                w_at += w.size
                for t in range(T):
                    lo, hi = self.tp_lo[t, k], self.tp_lo[t, k + 1]
                    self.wg_off[t, k, d] = wg_at
                    row = np.concatenate([[0.0], np.cumsum(w[1:hi - lo + 1] * self.tp_g[t, lo:hi])])
                    wg_rows.append(row)
                    wg_at += row.size
        self.w = np.concatenate(w_rows)
        self.w_cum = np.concatenate([np.cumsum(w) for w in w_rows])
        self.wg_sums = np.concatenate(wg_rows)

    def __call__(self, images: np.ndarray, keep: np.ndarray,
                 scores: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Pool AP of kept sets and their difference to the reference's.

        Args:
            images: int64 ``[B]`` image indices (any image of the split, in the pool or not).
            keep: bool ``[B, n_max]`` kept slots (padding slots must be False or are ignored).
            scores: float64 ``[B, n_max]`` new scores ranking the kept slots (default: the candidates' own).

        Returns:
            ``(ap, delta)``, float64 ``[B]`` each: ``AP_P(K_i)`` and ``AP_P(K_i) - AP_P(reference_i)``.
        """
        images = np.ascontiguousarray(images, dtype=np.int64)
        keep = np.ascontiguousarray(keep, dtype=bool)
        scores = self.scores[images] if scores is None else np.ascontiguousarray(scores, dtype=np.float64)
        ap = np.empty(images.shape[0])
        delta = np.empty(images.shape[0])
        self._step_kernel(images, keep, scores, *self._step_args, ap, delta, self._scratch_i)
        return ap, delta
