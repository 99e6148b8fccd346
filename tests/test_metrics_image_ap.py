"""detgym.metrics.image_ap against pycocotools (the reference), both backends, and its bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detgym.metrics import image_ap
from detgym.metrics._backend import NUMBA_AVAILABLE, use_numba
from detgym.metrics.reference import pycocotools_image_ap

BACKENDS = ["numba", "numpy"] if NUMBA_AVAILABLE else ["numpy"]


def _random_case(rng: np.random.Generator, big: bool = False):
    """Small integer-coordinate images: score ties, IoU ties, crowd GTs, zero-area boxes, labels
    without GT, GTs without detections; ``big`` adds boxes around the 1e10 area limit of area "all"."""
    G = int(rng.integers(0, 8))
    N = int(rng.integers(0, 25))
    L = int(rng.integers(1, 4))
    xy = rng.integers(0, 60, (G, 2)).astype(float)
    gb = np.concatenate([xy, xy + rng.integers(0, 30, (G, 2))], 1)
    if big and G:
        gb[0] = [0, 0, 1e5, 1e5]  # area exactly 1e10: still inside area "all"
        if G > 1:
            gb[1] = [0, 0, 1e5, 1e5 + 1]  # just above: ignored
    gl = rng.integers(1, L + 1, G)
    gc = rng.random(G) < 0.2
    db = np.zeros((N, 4))
    for i in range(N):
        if G and rng.random() < 0.7:
            b = gb[rng.integers(G)] + rng.integers(-3, 4, 4)
            b[2:] = np.maximum(b[2:], b[:2])
        else:
            p = rng.integers(0, 60, 2)
            b = np.r_[p, p + rng.integers(0, 30, 2)]
        db[i] = b
    ds = rng.integers(0, 5, N) / 4.0  # heavy score ties
    dl = rng.integers(1, L + 2, N)  # label L + 1 never has GT
    return db, ds, dl, gb, gl, gc


def _reference(db, ds, dl, gb, gl, gc, keep):
    return np.array([pycocotools_image_ap(db[m], ds[m], dl[m], gb, gl, gc) for m in keep])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_cases_equal_pycocotools(seed):
    rng = np.random.default_rng(seed)
    for case in range(45):
        db, ds, dl, gb, gl, gc = _random_case(rng, big=case % 5 == 0)
        keep = rng.random((4, len(db))) < 0.6
        keep[0] = True  # the full set
        if len(db):
            keep[1] = False  # the empty set
        ref = _reference(db, ds, dl, gb, gl, gc, keep)
        for backend in BACKENDS:
            got = image_ap(db, ds, dl, gb, gl, keep, gc, no_gt="coco", backend=backend)
            assert isinstance(got, np.ndarray) and got.dtype == np.float64 and got.shape == (4,)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9,
                                       err_msg=f"seed {seed} case {case} backend {backend}")


def test_many_candidates_per_category_truncated_to_100():
    rng = np.random.default_rng(3)
    gb = np.array([[0, 0, 40, 40], [50, 50, 90, 90], [0, 50, 40, 90]], float)
    gl = np.array([1, 1, 2])
    N = 230
    j = rng.integers(0, 3, N)
    db = gb[j] + rng.normal(0, 4, (N, 4))
    db[:, 2:] = np.maximum(db[:, 2:], db[:, :2])
    dl = gl[j]
    ds = np.round(rng.random(N), 1)
    keep = rng.random((3, N)) < 0.9
    ref = _reference(db, ds, dl, gb, gl, None, keep)
    for backend in BACKENDS:
        got = image_ap(db, ds, dl, gb, gl, keep, backend=backend, no_gt="coco")
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_huge_boxes_around_the_area_limit():
    """Area "all" is [0, 1e10]: bigger GTs are ignored (and matched only when no regular GT qualifies,
    each at most once); bigger unmatched detections are ignored too."""
    rng = np.random.default_rng(4)
    for case in range(30):
        G, N = int(rng.integers(1, 6)), int(rng.integers(1, 30))
        xy = rng.random((G, 2)) * 1e4
        gb = np.concatenate([xy, xy + 1e5 * (0.97 + 0.06 * rng.random((G, 2)))], 1)  # areas ~0.94e10..1.06e10
        gl = rng.integers(1, 3, G)
        j = rng.integers(0, G, N)
        db = gb[j] + rng.normal(0, 2e3, (N, 4))
        db[:, 2:] = np.maximum(db[:, 2:], db[:, :2])
        ds, dl = np.round(rng.random(N), 1), gl[j]
        keep = rng.random((3, N)) < 0.7
        ref = _reference(db, ds, dl, gb, gl, None, keep)
        for backend in BACKENDS:
            got = image_ap(db, ds, dl, gb, gl, keep, no_gt="coco", backend=backend)
            np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9, err_msg=f"case {case} {backend}")


def test_hand_computed_values():
    gt = [[0, 0, 10, 10]]
    # A false positive ranked above the true positive: precision 1/2 at every recall point.
    dets = [[50, 50, 60, 60], [0, 0, 10, 10]]
    assert image_ap(dets, [0.9, 0.8], [1, 1], gt, [1]) == pytest.approx(0.5, abs=1e-12)
    # True positive first: AP 1.
    assert image_ap(dets, [0.8, 0.9], [1, 1], gt, [1]) == pytest.approx(1.0, abs=1e-12)
    # IoU exactly 0.5 (100 / 200) matches at the 0.50 threshold only: AP = 1/10.
    assert image_ap([[0, 0, 10, 20]], [0.5], [1], gt, [1]) == pytest.approx(0.1, abs=1e-12)
    # A false positive of a label absent from the image costs nothing (COCO leaves that category out).
    assert image_ap([[0, 0, 10, 10], [0, 0, 10, 10]], [0.5, 0.9], [1, 7], gt, [1]) == pytest.approx(1.0)
    # A duplicate on an already matched GT is a false positive, but after full recall it costs nothing;
    # two identical GTs are both matched.
    assert image_ap([[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8], [1, 1], gt, [1]) == pytest.approx(1.0)
    assert image_ap([[0, 0, 10, 10], [0, 0, 10, 10]], [0.8, 0.9], [1, 1], gt + gt, [1, 1]) == pytest.approx(1.0)
    # Only the top 100 detections of a category count: a true positive ranked 101st is lost...
    fps = [[50.0, 50.0, 60.0, 60.0]] * 100
    dets = np.array(fps + [[0.0, 0.0, 10.0, 10.0]])
    scores = np.r_[np.full(100, 0.9), 0.5]
    assert image_ap(dets, scores, np.ones(101, int), gt, [1]) == 0.0
    # ... unless a subset drops one of the 100 (then precision 1/101 at recall 1), or it has another label.
    keep = np.ones((2, 101), bool)
    keep[1, 0] = False
    assert image_ap(dets, scores, np.ones(101, int), gt, [1], keep).tolist() == pytest.approx([0.0, 1 / 100])
    assert image_ap(dets, scores, np.r_[np.full(100, 2), 1], gt, [1]) == pytest.approx(1.0)
    # No detection at all: 0.
    assert image_ap(np.zeros((0, 4)), [], [], gt, [1]) == 0.0


def test_ties_keep_candidate_order():
    # Equal scores: the first candidate is processed first. Here it is the false positive.
    gt = [[0, 0, 10, 10]]
    dets = [[50, 50, 60, 60], [0, 0, 10, 10]]
    assert image_ap(dets, [0.5, 0.5], [1, 1], gt, [1]) == pytest.approx(0.5)
    assert image_ap(dets[::-1], [0.5, 0.5], [1, 1], gt, [1]) == pytest.approx(1.0)


def test_no_gt_image_values():
    gt = np.zeros((0, 4))
    gl = np.zeros(0, dtype=np.int64)
    dets = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    keep = np.array([[False, False], [True, False], [True, True]])
    for backend in BACKENDS:
        # Default "reward": 1 for the empty subset, 0 as soon as a detection hits nothing.
        got = image_ap(dets, [0.9, 0.8], [1, 2], gt, gl, keep, backend=backend).tolist()
        assert got == [1.0, 0.0, 0.0]
        # pycocotools' value: undefined, -1.
        got = image_ap(dets, [0.9, 0.8], [1, 2], gt, gl, keep, backend=backend, no_gt="coco").tolist()
        assert got == [-1.0, -1.0, -1.0]
        assert pycocotools_image_ap(dets, [0.9, 0.8], [1, 2], gt, gl) == -1.0
        # Only a crowd GT: a detection inside the crowd region is ignored, one outside is a false positive.
        crowd_gt, crowd = [[0, 0, 12, 12]], [True]
        got = image_ap(dets, [0.9, 0.8], [1, 1], crowd_gt, [1], keep, crowd, backend=backend).tolist()
        assert got == [1.0, 1.0, 0.0]
    assert image_ap(np.zeros((0, 4)), [], [], gt, gl) == 1.0


def test_crowd_only_category_is_left_out():
    # Category 2 has only a crowd GT: pycocotools leaves it out of the average, so only category 1 counts.
    gb = np.array([[0, 0, 10, 10], [20, 20, 40, 40]], float)
    gl, gc = np.array([1, 2]), np.array([False, True])
    db = np.array([[0, 0, 10, 10], [60, 60, 70, 70]], float)
    ds, dl = np.array([0.9, 0.95]), np.array([1, 2])
    ref = pycocotools_image_ap(db, ds, dl, gb, gl, gc)
    assert ref == pytest.approx(1.0)
    for backend in BACKENDS:
        assert image_ap(db, ds, dl, gb, gl, gt_crowd=gc, backend=backend) == pytest.approx(ref, abs=1e-12)


def test_input_types_and_return_types():
    rng = np.random.default_rng(5)
    db, ds, dl, gb, gl, gc = _random_case(rng)
    while len(db) < 3 or len(gb) == 0:
        db, ds, dl, gb, gl, gc = _random_case(rng)
    ref = image_ap(db, ds, dl, gb, gl, gt_crowd=gc)
    assert isinstance(ref, np.float64)
    as_torch = image_ap(torch.tensor(db, dtype=torch.float32), torch.tensor(ds), torch.tensor(dl),
                        torch.tensor(gb), torch.tensor(gl), gt_crowd=torch.tensor(gc))
    assert as_torch == pytest.approx(ref, abs=1e-12)  # integer coordinates: float32 is exact
    as_list = image_ap(db.tolist(), ds.tolist(), dl.tolist(), gb.tolist(), gl.tolist(), gt_crowd=gc.tolist())
    assert as_list == pytest.approx(ref, abs=1e-12)
    ones = image_ap(db, ds, dl, gb, gl, np.ones((2, len(db)), bool), gc)
    assert ones.tolist() == pytest.approx([ref, ref], abs=1e-12)
    zero_one = image_ap(db, ds, dl, gb, gl, torch.ones((1, len(db)), dtype=torch.int64), gc)
    assert zero_one.tolist() == pytest.approx([ref], abs=1e-12)
    assert image_ap(db, ds, dl, gb, gl, np.zeros((0, len(db)), bool), gc).shape == (0,)


def test_env_var_forces_numpy_fallback(monkeypatch):
    rng = np.random.default_rng(11)
    db, ds, dl, gb, gl, gc = _random_case(rng)
    keep = rng.random((5, len(db))) < 0.5
    a = image_ap(db, ds, dl, gb, gl, keep, gc)
    monkeypatch.setenv("DETGYM_NO_NUMBA", "1")
    assert not use_numba()
    b = image_ap(db, ds, dl, gb, gl, keep, gc)
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-12)
    monkeypatch.setenv("DETGYM_NO_NUMBA", "0")
    assert use_numba() == NUMBA_AVAILABLE


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs(backend):
    gt, gl = [[0, 0, 10, 10]], [1]
    ok = dict(det_scores=[0.5], det_labels=[1], gt_boxes=gt, gt_labels=gl, backend=backend)
    with pytest.raises(ValueError, match="det_boxes"):
        image_ap([[0, 0, float("nan"), 10]], **ok)
    with pytest.raises(ValueError, match="x2 < x1"):
        image_ap([[10, 0, 0, 10]], **ok)
    with pytest.raises(ValueError, match="gt_boxes"):
        image_ap([[0, 0, 10, 10]], [0.5], [1], [[0, 5, 10, 0]], gl, backend=backend)
    with pytest.raises(ValueError, match="gt_boxes"):
        image_ap([[0, 0, 10, 10]], [0.5], [1], [[0, 0, float("inf"), 10]], gl, backend=backend)
    with pytest.raises(ValueError, match="det_scores has NaN"):
        image_ap([[0, 0, 10, 10]], [float("nan")], [1], gt, gl, backend=backend)
    with pytest.raises(ValueError, match=r"det_boxes must have shape \[N, 4\]"):
        image_ap([[0, 0, 10]], **ok)
    with pytest.raises(ValueError, match="det_scores must have shape"):
        image_ap([[0, 0, 10, 10]], [0.5, 0.4], [1], gt, gl, backend=backend)
    with pytest.raises(ValueError, match="det_labels"):
        image_ap([[0, 0, 10, 10]], [0.5], [1, 2], gt, gl, backend=backend)
    with pytest.raises(ValueError, match="det_labels must hold integer"):
        image_ap([[0, 0, 10, 10]], [0.5], [1.5], gt, gl, backend=backend)
    with pytest.raises(ValueError, match=r"keep must be a bool mask of shape \[K, 1\]"):
        image_ap([[0, 0, 10, 10]], [0.5], [1], gt, gl, np.ones((2, 3), bool), backend=backend)
    with pytest.raises(ValueError, match="keep must be a bool mask"):
        image_ap([[0, 0, 10, 10]], [0.5], [1], gt, gl, np.ones(1, bool), backend=backend)
    with pytest.raises(ValueError, match="keep must be boolean"):
        image_ap([[0, 0, 10, 10]], [0.5], [1], gt, gl, np.full((1, 1), 0.5), backend=backend)
    with pytest.raises(ValueError, match="gt_crowd"):
        image_ap([[0, 0, 10, 10]], [0.5], [1], gt, gl, gt_crowd=[True, False], backend=backend)
    with pytest.raises(ValueError, match="no_gt"):
        image_ap([[0, 0, 10, 10]], [0.5], [1], gt, gl, no_gt="zero", backend=backend)
    with pytest.raises(ValueError, match="backend"):
        image_ap([[0, 0, 10, 10]], [0.5], [1], gt, gl, backend="cuda")


@pytest.mark.parametrize("numba_off", ["0", "1"])
def test_unchecked_entry_equals_image_ap(numba_off, monkeypatch):
    """image_ap_unchecked (inputs already float64 / int64 / bool arrays) gives image_ap's values, and image_ap's
    precise error for input the kernel finds wrong."""
    from detgym.metrics.image_ap import image_ap_unchecked

    monkeypatch.setenv("DETGYM_NO_NUMBA", numba_off)
    rng = np.random.default_rng(7)
    for case in range(30):
        db, ds, dl, gb, gl, gc = _random_case(rng)
        keep = rng.random((3, len(db))) < 0.6
        want = image_ap(db, ds, dl, gb, gl, keep, gc)
        got = image_ap_unchecked(db.astype(float), ds.astype(float), dl.astype(np.int64), gb.astype(float),
                                 gl.astype(np.int64), gc.astype(bool), keep)
        np.testing.assert_array_equal(got, want, err_msg=f"case {case}")
    bad = np.array([[5.0, 5.0, 1.0, 1.0]])  # x2 < x1
    with pytest.raises(ValueError, match="det_boxes"):
        image_ap_unchecked(bad, np.ones(1), np.ones(1, dtype=np.int64), bad[:0], np.zeros(0, dtype=np.int64),
                           np.zeros(0, dtype=bool), np.ones((1, 1), dtype=bool))
