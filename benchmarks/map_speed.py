"""Speed of detgym.metrics against pycocotools and faster-coco-eval, after checking equality.

A script, not a timed test::

    python -m benchmarks.map_speed                 # full run (pycocotools on 3000 images takes ~30 s a run)
    python -m benchmarks.map_speed --quick         # smaller, for a smoke check

Part 1, the reward hot path: ``image_ap`` on one image with K candidate subsets (default K=100 subsets
of N=100 candidates, G=10 GT), against one pycocotools evaluation per subset (what a reward computed
with pycocotools would cost: ``loadRes`` + ``evaluate`` + ``accumulate`` + ``summarize``, the GT COCO
object built once), the same with faster-coco-eval, and image_ap's own NumPy fallback.

Part 2: ``coco_evaluate`` on a synthetic detection-like dataset (default 3000 images, about 7 GT and
100 detections per image, 20 categories, crowd GTs), against pycocotools and faster-coco-eval, each
from the same in-memory dicts to the 12 stats.

Every figure is the median of ``--repeats`` runs (the machine is shared: medians, not minima).
faster-coco-eval is optional (the ``bench`` extra); its rows are skipped when it is missing.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time
from typing import Any, Callable

import numpy as np

from detgym.metrics import coco_evaluate, image_ap
from detgym.metrics._backend import NUMBA_AVAILABLE
from detgym.metrics.reference import faster_coco_eval_stats, pycocotools_stats, single_image_coco

try:
    import faster_coco_eval  # noqa: F401

    HAVE_FCE = True
except ImportError:  # pragma: no cover - optional
    HAVE_FCE = False


def median_time(fn: Callable[[], Any], repeats: int, min_seconds: float = 0.2) -> float:
    """Median over ``repeats`` runs of the mean time of one call (each run loops for >= min_seconds)."""
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    loops = max(1, int(min_seconds / max(once, 1e-9)))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        times.append((time.perf_counter() - t0) / loops)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------
# data


def image_case(seed: int, n_cand: int, n_gt: int, n_sub: int, n_labels: int = 3):
    """One image: GT boxes, detector-like candidates (jittered copies of GTs plus background boxes, a
    few with the wrong label), and K random subsets (each candidate kept with probability 1/2)."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n_gt, 2)) * 400
    gb = np.concatenate([xy, xy + 20 + rng.random((n_gt, 2)) * 80], 1)
    gl = rng.integers(1, n_labels + 1, n_gt)
    src = rng.integers(0, n_gt, n_cand)
    near = rng.random(n_cand) < 0.8
    db = np.where(near[:, None], gb[src] + rng.normal(0, 8, (n_cand, 4)), rng.random((n_cand, 4)) * 500)
    db[:, 2:] = np.maximum(db[:, 2:], db[:, :2] + 1)
    dl = np.where(near & (rng.random(n_cand) < 0.9), gl[src], rng.integers(1, n_labels + 1, n_cand))
    ds = np.round(rng.random(n_cand), 3)
    keep = rng.random((n_sub, n_cand)) < 0.5
    return db, ds, dl, gb, gl, keep


def dataset(seed: int, n_img: int, n_cat: int = 20, dets_per_img: int = 100):
    """A COCO GT dict and results list that look like a detector's output on a real dataset."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    aid = 1
    for i in range(n_img):
        images.append({"id": i + 1, "width": 640, "height": 480, "file_name": f"{i + 1}.jpg"})
        G = int(rng.integers(1, 15))
        gx, gy = rng.random(G) * 560, rng.random(G) * 400
        gw = np.exp(rng.uniform(np.log(8), np.log(300), G))
        gh = gw * np.exp(rng.normal(0, 0.4, G))
        gc = rng.integers(1, n_cat + 1, G)
        crowd = rng.random(G) < 0.02
        for j in range(G):
            anns.append({"id": aid, "image_id": i + 1, "category_id": int(gc[j]), "iscrowd": int(crowd[j]),
                         "bbox": [float(gx[j]), float(gy[j]), float(gw[j]), float(gh[j])],
                         "area": float(gw[j] * gh[j])})
            aid += 1
        n = dets_per_img
        src = rng.integers(0, G, n)
        near = rng.random(n) < 0.5
        jit = rng.normal(0, 0.15, (n, 4))
        bx = np.where(near, gx[src] + jit[:, 0] * gw[src], rng.random(n) * 560)
        by = np.where(near, gy[src] + jit[:, 1] * gh[src], rng.random(n) * 400)
        bw = np.where(near, gw[src] * np.exp(jit[:, 2]), np.exp(rng.uniform(np.log(8), np.log(300), n)))
        bh = np.where(near, gh[src] * np.exp(jit[:, 3]), bw * np.exp(rng.normal(0, 0.4, n)))
        bc = np.where(near & (rng.random(n) < 0.9), gc[src], rng.integers(1, n_cat + 1, n))
        sc = np.round(np.where(near, rng.beta(5, 2, n), rng.beta(2, 5, n)), 3)
        for k in range(n):
            dets.append({"image_id": i + 1, "category_id": int(bc[k]), "score": float(sc[k]),
                         "bbox": [float(bx[k]), float(by[k]), float(bw[k]), float(bh[k])]})
    cats = [{"id": c, "name": str(c)} for c in range(1, n_cat + 1)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


# --------------------------------------------------------------------------------------------------
# reference runners with the GT object built outside the timed region


def _pycocotools_runner(gt: dict) -> Callable[[list], float]:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()

    def run(dets: list) -> float:
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(cg, cg.loadRes(dets), "bbox")
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        return float(ev.stats[0])

    return run


def _fce_runner(gt: dict) -> Callable[[list], float]:
    from faster_coco_eval import COCO, COCOeval_faster

    cg = COCO(copy.deepcopy(gt))

    def run(dets: list) -> float:
        ev = COCOeval_faster(cg, cg.loadRes(dets), "bbox", print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return float(ev.stats[0])

    return run


def _pycocotools_full(gt: dict, dets: list) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = gt
        cg.createIndex()
        ev = COCOeval(cg, cg.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()


def _fce_full(gt: dict, dets: list) -> None:
    from faster_coco_eval import COCO, COCOeval_faster

    cg = COCO(gt)
    ev = COCOeval_faster(cg, cg.loadRes(dets), "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()


def _timed_fresh(fn: Callable[[dict, list], None], gt: dict, dets: list, repeats: int) -> float:
    """Median wall time of fn on fresh copies (the references modify their inputs)."""
    times = []
    for _ in range(repeats):
        g, d = copy.deepcopy(gt), copy.deepcopy(dets)
        t0 = time.perf_counter()
        fn(g, d)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------------------------------


def bench_image_ap(args: argparse.Namespace) -> None:
    db, ds, dl, gb, gl, keep = image_case(args.seed, args.candidates, args.gt, args.subsets)
    K = keep.shape[0]
    print(f"\n== image_ap: one image, K={K} subsets of N={args.candidates} candidates, G={args.gt} GT "
          f"(median of {args.repeats}) ==")

    t0 = time.perf_counter()
    ours = image_ap(db, ds, dl, gb, gl, keep)
    print(f"first call (numba compile or cache load): {time.perf_counter() - t0:.2f} s")
    fallback = image_ap(db, ds, dl, gb, gl, keep, backend="numpy")
    gt_one, _ = single_image_coco(db, ds, dl, gb, gl)
    per_subset = [single_image_coco(db[m], ds[m], dl[m], gb, gl)[1] for m in keep]
    pyc = _pycocotools_runner(gt_one)
    ref = np.array([pyc(copy.deepcopy(d)) for d in per_subset])
    err = {"numpy fallback": np.abs(fallback - ref).max(), "numba": np.abs(ours - ref).max()}
    if HAVE_FCE:
        fce = _fce_runner(gt_one)
        err["faster-coco-eval"] = np.abs(np.array([fce(copy.deepcopy(d)) for d in per_subset]) - ref).max()
    print("max |AP - pycocotools| over the K subsets: " + ", ".join(f"{k} {v:.1e}" for k, v in err.items()))
    assert err["numba"] <= 1e-9 and err["numpy fallback"] <= 1e-9, err
    print(f"mean AP of the subsets: {ref.mean():.4f}")

    rows = []
    if NUMBA_AVAILABLE:
        t = median_time(lambda: image_ap(db, ds, dl, gb, gl, keep, backend="numba"), args.repeats)
        rows.append(("detgym image_ap (numba), one call", t, t / K))
    t = median_time(lambda: image_ap(db, ds, dl, gb, gl, keep, backend="numpy"), args.repeats)
    rows.append(("detgym image_ap (NumPy fallback)", t, t / K))
    n_ref = min(K, args.ref_subsets)

    def per_subset_time(evaluate) -> float:
        """Median seconds per call over ``repeats`` batches of n_ref distinct subsets, each on a fresh copy
        (loadRes modifies its input)."""
        copies = [copy.deepcopy(per_subset[i % K]) for i in range(n_ref * args.repeats)]
        times = []
        for r in range(args.repeats):
            batch = copies[r * n_ref:(r + 1) * n_ref]
            t0 = time.perf_counter()
            for d in batch:
                evaluate(d)
            times.append((time.perf_counter() - t0) / n_ref)
        return statistics.median(times)

    rows.append(("pycocotools, one evaluation per subset", None, per_subset_time(pyc)))
    if HAVE_FCE:
        rows.append(("faster-coco-eval, one evaluation per subset", None, per_subset_time(fce)))

    base = rows[0][2]
    print(f"{'method':<46}{'per call':>12}{'per subset':>14}{'x image_ap':>12}")
    for name, call, sub in rows:
        c = f"{call * 1e3:.3f} ms" if call is not None else "-"
        print(f"{name:<46}{c:>12}{sub * 1e6:>11.2f} us{sub / base:>11.1f}x")


def bench_coco(args: argparse.Namespace) -> None:
    gt, dets = dataset(args.seed, args.images)
    print(f"\n== coco_evaluate: {len(gt['images'])} images, {len(gt['annotations'])} GT, {len(dets)} "
          f"detections, {len(gt['categories'])} categories (median of {args.repeats}) ==")
    t0 = time.perf_counter()
    coco_evaluate(*dataset(args.seed + 1, 3))
    print(f"first call on a tiny set (numba compile or cache load): {time.perf_counter() - t0:.2f} s")
    ours = np.array(list(coco_evaluate(gt, dets).values()))
    ref = pycocotools_stats(gt, dets)
    err = {"detgym": np.abs(ours - ref).max()}
    if HAVE_FCE:
        err["faster-coco-eval"] = np.abs(faster_coco_eval_stats(gt, dets) - ref).max()
    print("max |stat - pycocotools| over the 12 stats: " + ", ".join(f"{k} {v:.1e}" for k, v in err.items()))
    assert err["detgym"] <= 1e-12, err
    print("stats: " + ", ".join(f"{k} {v:.4f}" for k, v in zip(("AP", "AP50", "AP75"), ours)))

    rows = [("detgym coco_evaluate", median_time(lambda: coco_evaluate(gt, dets), args.repeats, 0))]
    if HAVE_FCE:
        rows.append(("faster-coco-eval COCOeval_faster", _timed_fresh(_fce_full, gt, dets, args.repeats)))
    rows.append(("pycocotools COCOeval", _timed_fresh(_pycocotools_full, gt, dets, args.repeats)))
    base = rows[0][1]
    print(f"{'method':<46}{'seconds':>12}{'x coco_evaluate':>18}")
    for name, t in rows:
        print(f"{name:<46}{t:>12.3f}{t / base:>17.1f}x")


def main(argv: list[str] | None = None) -> None:
    """Parse the options and run both parts."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--subsets", type=int, default=100, help="K, candidate subsets per image")
    p.add_argument("--candidates", type=int, default=100, help="N, candidate boxes per image")
    p.add_argument("--gt", type=int, default=10, help="G, ground-truth boxes per image")
    p.add_argument("--ref-subsets", type=int, default=20, help="subsets timed per repeat with the references")
    p.add_argument("--images", type=int, default=3000, help="images of the coco_evaluate dataset")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats (medians are reported)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="300 images, 2 repeats")
    p.add_argument("--skip-coco", action="store_true", help="only the image_ap part")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.ref_subsets = 300, 2, 10
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass
    bench_image_ap(args)
    if not args.skip_coco:
        bench_coco(args)


if __name__ == "__main__":
    main()
