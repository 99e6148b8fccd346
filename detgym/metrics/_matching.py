"""pycocotools' greedy match of one detection (``cocoeval.evaluateImg``), shared by the compiled kernels.

``coco_evaluate`` and ``image_ap`` both walk each detection's candidate GT list with the same rules;
one function keeps the two metrics from drifting apart. Called from a kernel, numba compiles it into
the caller and LLVM inlines it, so sharing it costs nothing on the hot path (see ``match_detection``
for the shape this needs). numba's on-disk cache only watches the file that defines a kernel: after
editing this file, delete the cached kernels (``detgym/metrics/__pycache__/*.nbi`` and ``*.nbc``) so that
those that compile it in (``coco.py``, ``_image_kernel.py``, ``image_ap.py``) are rebuilt.
"""

from __future__ import annotations

import numpy as np

from ._backend import njit


@njit
def match_detection(j0: int, j1: int, cg: np.ndarray, civ: np.ndarray, gt_matched: np.ndarray,
                    gt_crowd: np.ndarray, gt_ignored: np.ndarray, thr: float) -> int:
    """The GT position one detection matches at IoU threshold ``thr``, or -1.

    ``cg[j0:j1]`` are the detection's candidate GTs (positions in GT order: non-ignored GTs first) and
    ``civ[j0:j1]`` their IoUs; ``gt_matched``, ``gt_crowd`` and ``gt_ignored`` are indexed by GT
    position. Rules of pycocotools: the best IoU >= ``thr`` wins, the last candidate on ties; a matched
    non-crowd GT is not matched again; ignored GTs only when no non-ignored GT qualifies. The caller
    marks the returned GT in ``gt_matched``.
    """
    # A while loop with a single exit and no write to an array: numba's reference-count pruning then
    # drops the per-call incref/decref of the array arguments and LLVM inlines the call. A for loop
    # with ``break`` (two exits), or marking ``gt_matched`` here, kept them and made image_ap ~10x slower.
    m = -1
    best = thr
    j = j0
    while j < j1:
        q = cg[j]
        if gt_matched[q] and not gt_crowd[q]:
            j += 1
        elif m > -1 and not gt_ignored[m] and gt_ignored[q]:
            # Candidates come in GT order: from the first ignored GT on, none beats a non-ignored match.
            j = j1
        else:
            v = civ[j]
            # ">=": a later candidate with an equal IoU replaces the earlier one, as in pycocotools
            # (whose "skip if < best" is the same test: candidate IoUs passed ">= thr_min", no NaN).
            if v >= best:
                best = v
                m = q
            j += 1
    return m
