"""COCO bbox evaluation with pycocotools' numbers, computed by two compiled passes.

``coco_evaluate`` returns the 12 values of pycocotools' ``COCOeval(gt, dt, "bbox").stats`` (AP, AP50,
AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl), equal to them to float rounding (the tests ask
for 1e-12), several times faster. It is the final score of every detgym episode and the ΔmAP reward of
active learning (papers 002/003).

What is kept from pycocotools (``cocoeval.py``, ``coco.py: loadRes``, ``maskApi.c: bbIou``):

* IoUs from the xywh boxes as given, with the same floating-point operations; crowd GTs use the
  detection's area as the union.
* A detection's area is ``w * h`` of its box (loadRes); a GT's area is its ``area`` field (``w * h``
  when absent). A GT is ignored when ``iscrowd`` is true (a stored ``ignore`` field is overwritten by
  pycocotools and plays no role here either) or its area is outside the area range; area ranges are
  inclusive at both ends.
* Per (image, category): detections sorted by -score with a stable sort (ties keep the order of the
  results list), the first 100 kept; GTs ordered non-ignored first (stable); greedy matching per IoU
  threshold: best IoU >= min(t, 1 - 1e-10), last GT on IoU ties, a matched non-crowd GT is not
  matched again, ignored GTs only when no non-ignored GT qualifies; unmatched detections outside the
  area range are ignored.
* Per category, area range and maxDets (1, 10, 100 per image and category): detections of all images
  concatenated in image-id order, stable sort by -score, cumulative TP/FP, precision
  tp / (tp + fp + eps) made monotone from the right, read at 101 recall points with a left
  searchsorted (0 beyond the reached recall); categories without a non-ignored GT are left out (-1).
  A stat with no category to average is -1, as in pycocotools (e.g. APl when no GT is large).

Where this deliberately differs from pycocotools:

* Annotation ids are labels, not flags. pycocotools records a match as the GT's id and tests
  ``dtm == 0`` for "unmatched", so a detection matched to a GT whose id is 0 counts as a false
  positive there; here a dataset whose ids start at 0 scores the same as one starting at 1. Ids are
  not used at all, so duplicated ids are harmless too.
* An empty detection list gives what pycocotools computes for a results set without detections (0
  for every stat with ground truth, -1 for one without), where pycocotools' ``loadRes`` crashes.
* Bad input raises ``ValueError`` (or ``FileNotFoundError``) instead of being silently dropped or
  asserted: detections on images or categories that the GT does not list, GT annotations on unknown
  images or categories, boxes with NaN/inf or negative width/height, NaN scores, missing keys.
"""

from __future__ import annotations

import json
import os
from typing import Any, Iterable, Sequence

import numpy as np

from ._backend import kernel, njit
from ._boxes import coco_iou
from ._cocoparams import (
    AREA_LABELS,
    AREA_RANGES,
    EPS,
    IOU_THRESHOLDS,
    MATCH_THRESHOLDS,
    MAX_DETS,
    RECALL_THRESHOLDS,
    STAT_NAMES,
)
from ._matching import match_detection

__all__ = ["coco_evaluate", "STAT_NAMES"]


# --------------------------------------------------------------------------------------------------
# input loading and validation


def _load_json(path: str | os.PathLike, what: str) -> Any:
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"{what} file not found: {p}")
    try:
        with open(p, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} file {p} is not valid JSON: {e}") from None


def _load_gt(gt: Any) -> tuple[dict, str]:
    """The COCO dataset dict behind ``gt`` and a name for error messages."""
    if isinstance(gt, (str, os.PathLike)):
        src = os.fspath(gt)
        data = _load_json(gt, "ground-truth")
    elif isinstance(gt, dict):
        data, src = gt, "ground truth"
    elif isinstance(getattr(gt, "dataset", None), dict):  # pycocotools / faster-coco-eval COCO object
        data, src = gt.dataset, "ground truth (COCO object)"
    else:
        raise ValueError("gt must be a COCO dataset dict, a path to a COCO JSON file or a pycocotools "
                         f"COCO object, got {type(gt).__name__}")
    if not isinstance(data, dict):
        raise ValueError(f"{src}: a COCO dataset must be a JSON object, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise ValueError(f"{src}: missing key {key!r} (a COCO dataset needs 'images', "
                             "'annotations' and 'categories')")
        if not isinstance(data[key], list):
            raise ValueError(f"{src}: {key!r} must be a list, got {type(data[key]).__name__}")
    return data, src


def _load_dets(detections: Any) -> tuple[list, str]:
    if isinstance(detections, (str, os.PathLike)):
        src = os.fspath(detections)
        dets = _load_json(detections, "detections")
    else:
        dets, src = detections, "detections"
    if isinstance(dets, np.ndarray) or not isinstance(dets, Sequence) or isinstance(dets, (str, bytes)):
        raise ValueError(f"{src}: detections must be a list of COCO result dicts (image_id, category_id, "
                         f"bbox, score), got {type(dets).__name__}")
    return dets, src


def _column(records: Sequence[dict], key: str, src: str, where: str, default: Any = KeyError) -> list:
    try:
        if default is KeyError:
            return [r[key] for r in records]
        return [r.get(key, default) for r in records]
    except (KeyError, TypeError, AttributeError):
        for i, r in enumerate(records):
            if not isinstance(r, dict):
                raise ValueError(f"{src}: {where}[{i}] must be a dict, got {type(r).__name__}") from None
            if key not in r:
                raise ValueError(f"{src}: {where}[{i}] has no {key!r} key") from None
        raise


def _index(values: list, table: dict, src: str, where: str, key: str, target: str) -> np.ndarray:
    try:
        return np.fromiter(map(table.__getitem__, values), dtype=np.int64, count=len(values))
    except (KeyError, TypeError):
        for i, v in enumerate(values):
            try:
                table[v]
            except (KeyError, TypeError):
                raise ValueError(f"{src}: {where}[{i}] has {key}={v!r}, which is not among the ground "
                                 f"truth's {target}") from None
        raise


def _boxes(values: list, src: str, where: str) -> np.ndarray:
    if len(values) == 0:
        return np.zeros((0, 4), dtype=np.float64)
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (ValueError, TypeError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] != 4:
        for i, v in enumerate(values):
            try:
                ok = np.asarray(v, dtype=np.float64).shape == (4,)
            except (ValueError, TypeError):
                ok = False
            if not ok:
                raise ValueError(f"{src}: {where}[{i}] bbox must be 4 numbers [x, y, w, h], got {v!r}")
        raise ValueError(f"{src}: {where} bboxes must be 4 numbers [x, y, w, h]")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{src}: {where}[{i}] bbox has NaN or inf: {values[i]!r}")
    bad = (arr[:, 2] < 0) | (arr[:, 3] < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{src}: {where}[{i}] bbox has a negative width or height (bbox is [x, y, w, h]): "
                         f"{values[i]!r}")
    return arr


def _floats(values: list, src: str, where: str, key: str) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(len(values))
    except (ValueError, TypeError):
        raise ValueError(f"{src}: every {where} {key!r} must be a number") from None
    if np.isnan(arr).any():
        i = int(np.flatnonzero(np.isnan(arr))[0])
        raise ValueError(f"{src}: {where}[{i}] has {key} NaN")
    return arr


def _sorted_ids(values: Iterable, src: str, what: str) -> list:
    try:
        return sorted(set(values))
    except TypeError:
        raise ValueError(f"{src}: {what} ids must be mutually comparable (e.g. all integers)") from None


# --------------------------------------------------------------------------------------------------
# kernels


@njit
def _evaluate_kernel(g_xywh, g_area, g_crowd, g_lo, g_hi, d_xywh, d_area, d_lo, d_hi, pos, area_rng,
                     match_thr, state):  # pragma: no cover - compiled
    """Greedy matching of every (image, category) group, area range and IoU threshold.

    Detections come in evaluation order (group, then -score); results go to row ``pos[d]``
    (accumulation order) of ``state`` [D, A, T] (uint8, zero-filled): _TP = matched to a non-ignored
    GT, _IGNORED = matched to an ignored GT or unmatched with an area outside the range, _FP (0)
    otherwise.
    """
    A = area_rng.shape[0]
    T = match_thr.shape[0]
    thr_min = match_thr[0]
    for t in range(T):
        if match_thr[t] < thr_min:
            thr_min = match_thr[t]
    for grp in range(g_lo.shape[0]):
        d0 = d_lo[grp]
        D = d_hi[grp] - d0
        if D == 0:
            continue
        g0 = g_lo[grp]
        G = g_hi[grp] - g0
        if G == 0:
            for a in range(A):
                lo = area_rng[a, 0]
                hi = area_rng[a, 1]
                for d in range(D):
                    ar = d_area[d0 + d]
                    out = ar < lo or ar > hi
                    for t in range(T):
                        if out:
                            state[pos[d0 + d], a, t] = 2
            continue
        ious = np.empty((D, G), dtype=np.float64)
        for d in range(D):
            i = d0 + d
            for q in range(G):
                j = g0 + q
                ious[d, q] = coco_iou(d_xywh[i, 0], d_xywh[i, 1], d_xywh[i, 2], d_xywh[i, 3],
                                      g_xywh[j, 0], g_xywh[j, 1], g_xywh[j, 2], g_xywh[j, 3], g_crowd[j])
        gorder = np.empty(G, dtype=np.int64)
        gig = np.empty(G, dtype=np.bool_)
        gcr = np.empty(G, dtype=np.bool_)
        gm = np.zeros(G, dtype=np.bool_)
        cstart = np.empty(D + 1, dtype=np.int64)
        cg = np.empty(D * G, dtype=np.int64)
        civ = np.empty(D * G, dtype=np.float64)
        for a in range(A):
            lo = area_rng[a, 0]
            hi = area_rng[a, 1]
            n = 0
            for q in range(G):
                ar = g_area[g0 + q]
                if not (g_crowd[g0 + q] or ar < lo or ar > hi):
                    gorder[n] = q
                    n += 1
            for q in range(G):
                ar = g_area[g0 + q]
                if g_crowd[g0 + q] or ar < lo or ar > hi:
                    gorder[n] = q
                    n += 1
            for qq in range(G):
                q = gorder[qq]
                ar = g_area[g0 + q]
                gig[qq] = g_crowd[g0 + q] or ar < lo or ar > hi
                gcr[qq] = g_crowd[g0 + q]
            nc = 0
            for d in range(D):
                cstart[d] = nc
                for qq in range(G):
                    v = ious[d, gorder[qq]]
                    if v >= thr_min:
                        cg[nc] = qq
                        civ[nc] = v
                        nc += 1
            cstart[D] = nc
            for t in range(T):
                thr = match_thr[t]
                gm[:] = False
                for d in range(D):
                    m = match_detection(cstart[d], cstart[d + 1], cg, civ, gm, gcr, gig, thr)
                    if m == -1:
                        ar = d_area[d0 + d]
                        if ar < lo or ar > hi:
                            state[pos[d0 + d], a, t] = 2
                    else:
                        gm[m] = True
                        state[pos[d0 + d], a, t] = 2 if gig[m] else 1


@njit
def _accumulate_kernel(c_lo, c_hi, rank, state, npig, max_dets, rec_thr, eps, precision,
                       recall):  # pragma: no cover - compiled
    """pycocotools' accumulate on detections already in accumulation order (by category, then -score,
    image, rank); ``state`` [D, A, T] from ``_evaluate_kernel``. precision [T, R, K, A, M] and recall
    [T, K, A, M] must come in filled with -1. One pass over a category's detections per maxDets value
    serves all area ranges and thresholds."""
    A = state.shape[1]
    T = state.shape[2]
    R = rec_thr.shape[0]
    M = max_dets.shape[0]
    K = c_lo.shape[0]
    pmax = 1
    for k in range(K):
        for a in range(A):
            if npig[k, a] > pmax:
                pmax = npig[k, a]
    prbuf = np.zeros((A, T, pmax + 2), dtype=np.float64)
    need = np.zeros((A, R), dtype=np.int64)
    ntp = np.zeros((A, T), dtype=np.int64)
    nfp = np.zeros((A, T), dtype=np.int64)
    for k in range(K):
        any_gt = False
        for a in range(A):
            P = npig[k, a]
            if P == 0:
                continue
            any_gt = True
            # recall point r is first reached at the smallest tp count n with n / P >= r
            n = 0
            for r in range(R):
                while n < P and n / P < rec_thr[r]:
                    n += 1
                need[a, r] = n
        if not any_gt:
            continue
        for mi in range(M):
            md = max_dets[mi]
            ntp[:, :] = 0
            nfp[:, :] = 0
            for j in range(c_lo[k], c_hi[k]):
                if rank[j] >= md:
                    continue
                for a in range(A):
                    for t in range(T):
                        s = state[j, a, t]
                        if s == 0:
                            nfp[a, t] += 1
                        elif s == 1:
                            n = ntp[a, t] + 1
                            ntp[a, t] = n
                            if n > npig[k, a]:  # cannot happen: a non-ignored GT is matched at most once
                                raise AssertionError("more true positives than ground truths")
                            prbuf[a, t, n] = n / (float(nfp[a, t] + n) + eps)
            for a in range(A):
                P = npig[k, a]
                if P == 0:
                    continue
                for t in range(T):
                    nt = ntp[a, t]
                    recall[t, k, a, mi] = nt / P
                    run = 0.0
                    for n in range(nt, 0, -1):
                        if prbuf[a, t, n] > run:
                            run = prbuf[a, t, n]
                        prbuf[a, t, n] = run
                    for r in range(R):
                        n = need[a, r]
                        if n > nt or nt == 0:
                            precision[t, r, k, a, mi] = 0.0
                        else:
                            precision[t, r, k, a, mi] = prbuf[a, t, max(n, 1)]


# --------------------------------------------------------------------------------------------------
# evaluation


def _summarize(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """pycocotools' ``summarize`` for bbox (same slicing and ``np.mean`` over entries > -1)."""
    iou = IOU_THRESHOLDS

    def one(ap: bool, iou_thr: float | None = None, area: str = "all", max_dets: int = 100) -> float:
        a = AREA_LABELS.index(area)
        m = MAX_DETS.index(max_dets)
        if ap:
            s = precision
            if iou_thr is not None:
                s = s[np.where(iou_thr == iou)[0]]
            s = s[:, :, :, a, m]
        else:
            s = recall
            if iou_thr is not None:
                s = s[np.where(iou_thr == iou)[0]]
            s = s[:, :, a, m]
        return -1.0 if len(s[s > -1]) == 0 else float(np.mean(s[s > -1]))

    vals = [one(True), one(True, 0.5), one(True, 0.75), one(True, area="small"), one(True, area="medium"),
            one(True, area="large"), one(False, max_dets=1), one(False, max_dets=10), one(False),
            one(False, area="small"), one(False, area="medium"), one(False, area="large")]
    return dict(zip(STAT_NAMES, vals))


def coco_evaluate(gt: Any, detections: Any) -> dict[str, float]:
    """COCO bbox evaluation: pycocotools' 12 ``COCOeval.stats``, exactly, much faster.

    Args:
        gt: COCO ground truth: a dataset dict (``images``, ``annotations``, ``categories``), a path to a
            COCO JSON file, or a pycocotools / faster-coco-eval ``COCO`` object. Annotations need
            ``image_id``, ``category_id`` and ``bbox`` ([x, y, w, h]); ``iscrowd`` defaults to 0 and
            ``area`` to w * h. Every image listed in ``images`` is evaluated.
        detections: COCO results: a list of dicts with ``image_id``, ``category_id``, ``bbox``
            ([x, y, w, h]) and ``score``, or a path to such a JSON file. May be empty.

    Returns:
        dict with keys AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (floats; -1.0 for a
        stat with no ground truth to measure, as pycocotools).

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: malformed input, naming the file (or "ground truth" / "detections"), the record and
            the key: a missing key, an image or category id the ground truth does not list, a bbox that
            is not 4 finite numbers with w, h >= 0, a NaN score.
    """
    data, gsrc = _load_gt(gt)
    dets, dsrc = _load_dets(detections)
    images, anns, cats = data["images"], data["annotations"], data["categories"]

    img_ids = _sorted_ids(_column(images, "id", gsrc, "images"), gsrc, "image")
    cat_ids = _sorted_ids(_column(cats, "id", gsrc, "categories"), gsrc, "category")
    img_index = {v: i for i, v in enumerate(img_ids)}
    cat_index = {v: i for i, v in enumerate(cat_ids)}
    n_img, n_cat = len(img_ids), len(cat_ids)

    g_img = _index(_column(anns, "image_id", gsrc, "annotations"), img_index, gsrc, "annotations",
                   "image_id", "images")
    g_cat = _index(_column(anns, "category_id", gsrc, "annotations"), cat_index, gsrc, "annotations",
                   "category_id", "categories")
    g_box = _boxes(_column(anns, "bbox", gsrc, "annotations"), gsrc, "annotations")
    g_crowd = np.array([bool(c) for c in _column(anns, "iscrowd", gsrc, "annotations", 0)], dtype=np.bool_)
    g_area_raw = _column(anns, "area", gsrc, "annotations", None)
    if any(a is None for a in g_area_raw):
        g_area_raw = [g_box[i, 2] * g_box[i, 3] if a is None else a for i, a in enumerate(g_area_raw)]
    g_area = _floats(g_area_raw, gsrc, "annotations", "area")

    d_img = _index(_column(dets, "image_id", dsrc, "detections"), img_index, dsrc, "detections",
                   "image_id", "images")
    d_cat = _index(_column(dets, "category_id", dsrc, "detections"), cat_index, dsrc, "detections",
                   "category_id", "categories")
    d_box = _boxes(_column(dets, "bbox", dsrc, "detections"), dsrc, "detections")
    d_score = _floats(_column(dets, "score", dsrc, "detections"), dsrc, "detections", "score")
    return _evaluate_arrays(n_img, n_cat, g_img, g_cat, g_box, g_area, g_crowd, d_img, d_cat, d_box, d_score)


def _evaluate_arrays(n_img: int, n_cat: int, g_img: np.ndarray, g_cat: np.ndarray, g_box: np.ndarray,
                     g_area: np.ndarray, g_crowd: np.ndarray, d_img: np.ndarray, d_cat: np.ndarray,
                     d_box: np.ndarray, d_score: np.ndarray) -> dict[str, float]:
    """The evaluation proper on validated arrays (image / category as indices into the sorted ids)."""
    A, T, R, M = len(AREA_RANGES), len(MATCH_THRESHOLDS), len(RECALL_THRESHOLDS), len(MAX_DETS)
    max_det = MAX_DETS[-1]

    # GT grouped by (image, category), annotation order kept inside a group.
    go = _stable_argsort_int(g_img * n_cat + g_cat, n_img * n_cat)
    g_key = (g_img * n_cat + g_cat)[go]
    g_box, g_area, g_crowd, g_cat = g_box[go], g_area[go], g_crowd[go], g_cat[go]

    # Two orders of the detections, both from one float sort (radix sorts on small ints after):
    #   accumulation: category, -score, image (id order), results-list order  (accumulate's concat +
    #                 stable sort by -score)
    #   evaluation:   image, category, -score, results-list order  (evaluateImg's stable sort)
    by_img = _stable_argsort_int(d_img, n_img)
    by_score = by_img[np.argsort(-d_score[by_img], kind="stable")]
    acc = by_score[_stable_argsort_int(d_cat[by_score], n_cat)]
    ev_in_acc = _stable_argsort_int(d_img[acc], n_img)  # acc order is already by category inside an image
    ev = acc[ev_in_acc]
    nd = len(ev)
    pos = ev_in_acc  # pos[e] = accumulation position of the e-th detection in evaluation order
    d_key = d_img[ev] * n_cat + d_cat[ev]
    starts = np.flatnonzero(np.r_[True, d_key[1:] != d_key[:-1]]) if nd else np.zeros(0, dtype=np.int64)
    ends = np.r_[starts[1:], nd].astype(np.int64)
    rank_ev = np.arange(nd) - np.repeat(starts, ends - starts)
    rank_acc = np.empty(nd, dtype=np.int64)
    rank_acc[pos] = rank_ev
    groups = d_key[starts]
    d_box = np.ascontiguousarray(d_box[ev])
    d_area = d_box[:, 2] * d_box[:, 3]  # loadRes: the area of a result is w * h of its box

    # Only groups with detections need matching (the first 100 of each); other GTs only count in npig.
    d_hi = np.minimum(ends, starts + max_det)
    g_lo = np.searchsorted(g_key, groups, side="left")
    g_hi = np.searchsorted(g_key, groups, side="right")
    state = np.zeros((nd, A, T), dtype=np.uint8)
    kernel(_evaluate_kernel)(np.ascontiguousarray(g_box), g_area, g_crowd, g_lo, g_hi, d_box, d_area,
                             starts.astype(np.int64), d_hi, pos, AREA_RANGES, MATCH_THRESHOLDS, state)

    # Non-ignored GT per category and area range.
    npig = np.zeros((n_cat, A), dtype=np.int64)
    for a in range(A):
        lo, hi = AREA_RANGES[a]
        ok = ~g_crowd & ~((g_area < lo) | (g_area > hi))
        npig[:, a] = np.bincount(g_cat[ok], minlength=n_cat)

    cat_acc = d_cat[acc]
    c_lo = np.searchsorted(cat_acc, np.arange(n_cat), side="left")
    c_hi = np.searchsorted(cat_acc, np.arange(n_cat), side="right")
    precision = -np.ones((T, R, n_cat, A, M))
    recall = -np.ones((T, n_cat, A, M))
    kernel(_accumulate_kernel)(c_lo, c_hi, rank_acc, state, npig, np.asarray(MAX_DETS, dtype=np.int64),
                               RECALL_THRESHOLDS, EPS, precision, recall)
    return _summarize(precision, recall)


def _stable_argsort_int(a: np.ndarray, bound: int) -> np.ndarray:
    """Stable argsort of non-negative ints below ``bound``; NumPy radix-sorts 8/16-bit keys in O(n)."""
    if bound <= 1 << 8:
        return np.argsort(a.astype(np.uint8), kind="stable")
    if bound <= 1 << 16:
        return np.argsort(a.astype(np.uint16), kind="stable")
    return np.argsort(a, kind="stable")
