"""detgym.metrics.pool_ap.PoolAP against pycocotools run on the pool's images plus the scored one, both backends."""

from __future__ import annotations

import numpy as np
import pytest

from detgym.metrics._backend import NUMBA_AVAILABLE
from detgym.metrics.pool_ap import PoolAP, recall_weights
from detgym.metrics.reference import pycocotools_stats

BACKENDS = ["numba", "numpy"] if NUMBA_AVAILABLE else ["numpy"]


def _split(rng: np.random.Generator, n: int = 10, n_max: int = 10, n_classes: int = 3) -> dict:
    """Padded candidates of small integer boxes: score ties inside and across images, crowd GTs, classes without
    GT, images without candidates or GT."""
    counts = rng.integers(0, n_max + 1, n)
    boxes, scores = np.zeros((n, n_max, 4)), np.zeros((n, n_max))
    labels = np.zeros((n, n_max), dtype=np.int64)
    gt_boxes, gt_labels, gt_crowd, offsets = [], [], [], [0]
    for i in range(n):
        g = int(rng.integers(0, 5))
        xy = rng.integers(0, 50, (g, 2)).astype(float)
        gb = np.concatenate([xy, xy + rng.integers(1, 25, (g, 2))], 1)
        gl = rng.integers(1, n_classes + 1, g)
        gt_boxes.append(gb), gt_labels.append(gl), gt_crowd.append(rng.random(g) < 0.15)
        offsets.append(offsets[-1] + g)
        for s in range(counts[i]):
            if g and rng.random() < 0.7:
                b = gb[rng.integers(g)] + rng.integers(-3, 4, 4)
                b[2:] = np.maximum(b[2:], b[:2])
                label = gl[rng.integers(g)] if rng.random() < 0.8 else rng.integers(1, n_classes + 1)
            else:
                p = rng.integers(0, 50, 2)
                b, label = np.r_[p, p + rng.integers(0, 25, 2)], rng.integers(1, n_classes + 1)
            boxes[i, s], labels[i, s] = b, label
        scores[i, :counts[i]] = np.sort(rng.integers(0, 6, counts[i]) / 5.0)[::-1]
    return {"boxes": boxes, "scores": scores, "labels": labels, "counts": counts,
            "gt_boxes": np.concatenate(gt_boxes).reshape(-1, 4),
            "gt_labels": np.concatenate(gt_labels).astype(np.int64),
            "gt_crowd": np.concatenate(gt_crowd).astype(bool), "gt_offsets": np.asarray(offsets),
            "image_ids": rng.permutation(np.arange(1, 3 * n))[:n], "num_classes": n_classes}


def _pycocotools_ap(split: dict, images: list[int], kept: dict[int, tuple[np.ndarray, np.ndarray]]) -> float:
    """pycocotools' AP over ``images`` with image j's detections = its slots ``kept[j][0]`` scored ``kept[j][1]``."""
    ids, off = split["image_ids"], split["gt_offsets"]
    annotations = []
    for i in images:
        for q in range(off[i], off[i + 1]):
            x1, y1, x2, y2 = split["gt_boxes"][q]
            annotations.append({"id": len(annotations) + 1, "image_id": int(ids[i]),
                                "category_id": int(split["gt_labels"][q]), "bbox": [x1, y1, x2 - x1, y2 - y1],
                                "area": (x2 - x1) * (y2 - y1), "iscrowd": int(split["gt_crowd"][q])})
    gt = {"images": [{"id": int(i)} for i in ids], "annotations": annotations,
          "categories": [{"id": c} for c in range(1, split["num_classes"] + 1)]}
    results = []
    for i, (keep, scores) in kept.items():
        for s in np.flatnonzero(keep[:split["counts"][i]]):
            x1, y1, x2, y2 = split["boxes"][i, s]
            results.append({"image_id": int(ids[i]), "category_id": int(split["labels"][i, s]),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(scores[s])})
    return float(pycocotools_stats(gt, results, img_ids=[int(ids[i]) for i in images])[0])


def _check(split: dict, pool: np.ndarray, reference: np.ndarray, rng: np.random.Generator, trials: int) -> None:
    n, n_max = split["scores"].shape
    metric = PoolAP(**split, pool=pool, reference_keep=reference)
    real = np.arange(n_max)[None, :] < split["counts"][:, None]
    for trial in range(trials):
        i = int(rng.integers(n))
        keep = (rng.random(n_max) < 0.6) & real[i]
        scores = split["scores"][i] if trial % 2 else rng.integers(0, 6, n_max) / 5.0  # new scores: ties too
        images = sorted(set(pool.tolist()) | {i})
        others = {j: (reference[j], split["scores"][j]) for j in pool.tolist() if j != i}
        want = _pycocotools_ap(split, images, {**others, i: (keep, scores)})
        want_ref = _pycocotools_ap(split, images, {**others, i: (reference[i], split["scores"][i])})
        ap, delta = metric(np.array([i]), keep[None], scores[None])
        assert ap[0] == pytest.approx(want, abs=1e-12)
        assert delta[0] == pytest.approx(want - want_ref, abs=1e-12)
        assert metric.reference_ap[i] == pytest.approx(want_ref, abs=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pool_ap_equals_pycocotools(backend, seed, monkeypatch):
    monkeypatch.setenv("DETGYM_NO_NUMBA", "1" if backend == "numpy" else "0")
    rng = np.random.default_rng(seed)
    for _ in range(4 if backend == "numba" else 1):
        split = _split(rng)
        n, n_max = split["scores"].shape
        pool = rng.choice(n, int(rng.integers(1, n + 1)), replace=False)
        reference = (rng.random((n, n_max)) < 0.6) & (np.arange(n_max)[None, :] < split["counts"][:, None])
        _check(split, pool, reference, rng, trials=6 if backend == "numba" else 3)


def test_more_than_100_detections_per_category_are_cut_as_pycocotools():
    rng = np.random.default_rng(3)
    split = _split(rng, n=4, n_max=130, n_classes=1)
    split["counts"][:] = 130
    split["boxes"][:, :, :2] = rng.integers(0, 40, (4, 130, 2))
    split["boxes"][:, :, 2:] = split["boxes"][:, :, :2] + rng.integers(1, 20, (4, 130, 2))
    split["labels"][:] = 1
    split["scores"][:] = np.sort(rng.integers(0, 50, (4, 130)) / 49.0, axis=1)[:, ::-1]
    reference = rng.random((4, 130)) < 0.9
    _check(split, np.array([0, 2]), reference, rng, trials=4)


def test_reference_scores_zero_and_batches_match_single_calls():
    rng = np.random.default_rng(4)
    split = _split(rng, n=12)
    n, n_max = split["scores"].shape
    reference = (rng.random((n, n_max)) < 0.5) & (np.arange(n_max)[None, :] < split["counts"][:, None])
    metric = PoolAP(**split, pool=np.arange(0, n, 2), reference_keep=reference)
    images = np.arange(n)
    ap, delta = metric(images, reference)
    assert (delta == 0.0).all() and (ap == metric.reference_ap).all()
    keep = rng.random((n, n_max)) < 0.5
    ap, delta = metric(images, keep)
    for b in range(n):
        one = metric(images[b:b + 1], keep[b:b + 1])
        assert one[0][0] == ap[b] and one[1][0] == delta[b]


def test_recall_weights_count_the_101_points():
    for n_gt in (1, 3, 7, 100, 250):
        w = recall_weights(n_gt)
        assert w.sum() == 101 and w[0] == 0 and w[n_gt + 1] == 0
    assert recall_weights(0).sum() == 0


def test_bad_pool_is_refused():
    rng = np.random.default_rng(5)
    split = _split(rng, n=4)
    reference = np.zeros(split["scores"].shape, dtype=bool)
    for pool in ([], [0, 0], [4], [-1]):
        with pytest.raises(ValueError, match="pool"):
            PoolAP(**split, pool=np.asarray(pool, dtype=np.int64), reference_keep=reference)
