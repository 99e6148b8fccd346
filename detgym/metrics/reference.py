"""Reference evaluations with pycocotools (and faster-coco-eval): the ground truth of the tests and
benchmarks of ``detgym.metrics``. Slow on purpose: they run the reference code unmodified.
"""

from __future__ import annotations

import contextlib
import copy
import io
from typing import Any

import numpy as np

from ._boxes import to_numpy

__all__ = ["pycocotools_stats", "pycocotools_image_ap", "faster_coco_eval_stats", "single_image_coco"]


def _results_coco(coco_cls: Any, gt: Any, detections: list[dict]) -> Any:
    """``gt.loadRes(detections)``, or the results object loadRes would build for an empty list (it
    crashes on one), so the reference is defined for empty detections too."""
    if len(detections) > 0:
        return gt.loadRes(copy.deepcopy(detections))
    res = coco_cls()
    res.dataset["images"] = list(gt.dataset["images"])
    res.dataset["categories"] = copy.deepcopy(gt.dataset["categories"])
    res.dataset["annotations"] = []
    res.createIndex()
    return res


def pycocotools_stats(gt: dict, detections: list[dict], img_ids: list | None = None) -> np.ndarray:
    """pycocotools ``COCOeval(..., "bbox").stats`` (12 values), output silenced; inputs not modified."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()
        cd = _results_coco(COCO, cg, detections)
        ev = COCOeval(cg, cd, "bbox")
        if img_ids is not None:
            ev.params.imgIds = list(img_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)


def faster_coco_eval_stats(gt: dict, detections: list[dict]) -> np.ndarray:
    """faster-coco-eval's ``COCOeval_faster(..., "bbox").stats`` (needs the ``bench`` extra)."""
    from faster_coco_eval import COCO, COCOeval_faster

    cg = COCO(copy.deepcopy(gt))
    cd = _results_coco(COCO, cg, detections)
    ev = COCOeval_faster(cg, cd, "bbox", print_function=lambda *a, **k: None)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return np.asarray(ev.stats[:12], dtype=np.float64)


def single_image_coco(det_boxes: Any, det_scores: Any, det_labels: Any, gt_boxes: Any, gt_labels: Any,
                      gt_crowd: Any = None) -> tuple[dict, list[dict]]:
    """A one-image COCO GT dict and results list for xyxy boxes, as ``image_ap`` sees them.

    Boxes become ``[x1, y1, x2 - x1, y2 - y1]`` (float64), GT area ``w * h``, annotation ids 1..G,
    categories = every label seen.
    """
    db = np.asarray(to_numpy(det_boxes), dtype=np.float64).reshape(-1, 4)
    gb = np.asarray(to_numpy(gt_boxes), dtype=np.float64).reshape(-1, 4)
    ds = np.asarray(to_numpy(det_scores), dtype=np.float64).reshape(-1)
    dl = np.asarray(to_numpy(det_labels)).reshape(-1).astype(int)
    gl = np.asarray(to_numpy(gt_labels)).reshape(-1).astype(int)
    gc = np.zeros(len(gb), bool) if gt_crowd is None else np.asarray(to_numpy(gt_crowd)).reshape(-1).astype(bool)
    anns = []
    for j, (b, lab, cr) in enumerate(zip(gb, gl, gc)):
        w, h = float(b[2] - b[0]), float(b[3] - b[1])
        anns.append({"id": j + 1, "image_id": 1, "category_id": int(lab),
                     "bbox": [float(b[0]), float(b[1]), w, h], "area": w * h, "iscrowd": int(cr)})
    cats = sorted(set(gl.tolist()) | set(dl.tolist()))
    gt = {"images": [{"id": 1, "width": 1000, "height": 1000}], "annotations": anns,
          "categories": [{"id": int(c), "name": str(c)} for c in cats]}
    dets = [{"image_id": 1, "category_id": int(lab), "score": float(s),
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
            for b, s, lab in zip(db, ds, dl)]
    return gt, dets


def pycocotools_image_ap(det_boxes: Any, det_scores: Any, det_labels: Any, gt_boxes: Any, gt_labels: Any,
                         gt_crowd: Any = None) -> float:
    """pycocotools' ``stats[0]`` for one image (xyxy inputs; -1.0 when the image has no non-ignored GT)."""
    gt, dets = single_image_coco(det_boxes, det_scores, det_labels, gt_boxes, gt_labels, gt_crowd)
    return float(pycocotools_stats(gt, dets)[0])
