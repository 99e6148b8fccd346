"""The NMS family of box selectors on one image's candidates, and the same rules as dataset-level post-processors.

Every rule maps one image's score-sorted candidates (``boxes`` xyxy ``[N, 4]``, ``scores`` ``[N]``, ``labels``
``[N]``) to new scores ``[N]`` where 0 drops a box: a selector (greedy NMS, top-k, score threshold, keep-all, the
ground-truth oracle) keeps some boxes with their own scores, a re-scorer (soft-NMS) changes them. The agents in
:mod:`detgym.agents.box_heuristics` are thin over these functions, and :func:`postprocess` / :func:`evaluate_rule` run
them over a whole split for :func:`detgym.metrics.coco_evaluate` (the "greedy NMS" and "soft-NMS" rows of table 1
of paper 001).

* :func:`greedy_nms`: class-wise greedy NMS (``torchvision.ops.batched_nms``), IoU 0.5 as in paper 001.
* :func:`soft_nms`: Bodla et al., "Soft-NMS: Improving Object Detection With One Line of Code" (ICCV 2017),
  Algorithm 1, class-wise: the highest-scored remaining box ``M`` is kept and every remaining box ``b_i`` of its
  class is re-scored ``s_i <- s_i f(iou(M, b_i))``, linear ``f = 1 - iou`` when ``iou >= N_t`` (else 1) or Gaussian
  ``f = exp(-iou^2 / sigma)``; boxes whose final score is below ``score_thresh`` (0.001, the authors' code) drop.
* :func:`oracle_keep`: per ground-truth box one same-class candidate overlapping it at IoU >= 0.5 (the lowest COCO
  threshold; lower can never match): the one with the highest IoU (``match="iou"``), or the one COCO's matching
  gives it, the highest-scored (``match="score"``): the headroom a learned selector could reach.

The ``nms`` rule also takes a detector's post-processing knobs around it (torchvision's ``box_score_thresh`` and
``box_detections_per_img``): a score threshold (the same before or after greedy NMS, which only suppresses a box by
higher-scored ones) and the ``detections_per_img`` highest-scored survivors.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms, box_iou

from detgym._validation import check_choice

__all__ = [
    "ORACLE_MATCHES",
    "RULES",
    "SOFT_NMS_METHODS",
    "coco_detections",
    "evaluate_rule",
    "greedy_nms",
    "keep_all",
    "oracle_keep",
    "postprocess",
    "rescore",
    "score_threshold",
    "soft_nms",
    "topk",
]

SOFT_NMS_METHODS: tuple[str, ...] = ("linear", "gaussian")
#: How the oracle picks a ground-truth box's candidate (:func:`oracle_keep`).
ORACLE_MATCHES: tuple[str, ...] = ("iou", "score")


def _tensor(x: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=dtype)


def greedy_nms(boxes: Any, scores: Any, labels: Any, iou: float = 0.5) -> np.ndarray:
    """Class-wise greedy NMS: bool keep mask ``[N]`` (a box is suppressed by a kept higher-scored box of its class
    with IoU > ``iou``, torchvision's rule)."""
    scores = np.asarray(scores)
    keep = np.zeros(scores.shape[0], dtype=bool)
    if scores.shape[0]:
        idx = batched_nms(_tensor(boxes, torch.float64), _tensor(scores, torch.float64),
                          _tensor(labels, torch.int64), float(iou))
        keep[idx.numpy()] = True
    return keep


def _same_class_iou(boxes: Any, labels: Any) -> np.ndarray:
    """``[N, N]`` IoU, 0 between boxes of different classes (so a class-wise rule can run on all boxes at once)."""
    labels = np.asarray(labels)
    iou = box_iou(_tensor(boxes, torch.float64), _tensor(boxes, torch.float64)).numpy()
    iou[labels[:, None] != labels[None, :]] = 0.0
    return iou


def soft_nms(boxes: Any, scores: Any, labels: Any, *, method: str = "linear", iou: float = 0.3, sigma: float = 0.5,
             score_thresh: float = 0.001) -> np.ndarray:
    """Class-wise soft-NMS (Bodla et al., Algorithm 1): the new score of every box, 0 for the dropped ones.

    Args:
        boxes, scores, labels: one image's candidates (``[N, 4]`` xyxy, ``[N]``, ``[N]``).
        method: ``"linear"`` (re-score by ``1 - iou`` when ``iou >= iou``) or ``"gaussian"`` (by
            ``exp(-iou^2 / sigma)``).
        iou: ``N_t`` of the linear rule (the paper's 0.3); unused by the Gaussian rule.
        sigma: the Gaussian rule's ``sigma`` (the paper's 0.5).
        score_thresh: final scores below it become 0 (dropped).

    Returns:
        float64 ``[N]``.

    The boxes of all classes are processed together with cross-class IoU 0 (``f(0) = 1``), which re-scores every
    box exactly as running the algorithm class by class: a box is only ever decayed by kept boxes of its class, and
    within a class they are picked in the same order.
    """
    if method not in SOFT_NMS_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, SOFT_NMS_METHODS))}; got {method!r}")
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0 (the paper's 0.5), got {sigma!r}")
    s = np.array(scores, dtype=np.float64, copy=True)
    n = s.shape[0]
    if n == 0:
        return s
    overlap = _same_class_iou(boxes, labels)
    remaining = np.ones(n, dtype=bool)
    for _ in range(n):
        m = int(np.where(remaining, s, -np.inf).argmax())  # M: highest remaining score (first on ties)
        remaining[m] = False
        o = overlap[m]
        if method == "linear":
            decay = np.where(o >= iou, 1.0 - o, 1.0)
        else:
            decay = np.exp(-(o * o) / sigma)
        s = np.where(remaining, s * decay, s)
    s[s < score_thresh] = 0.0
    return s


def topk(scores: Any, k: int = 5) -> np.ndarray:
    """Keep the ``k`` highest-scored candidates (``scores`` sorted descending: the first k)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    keep = np.zeros(np.asarray(scores).shape[0], dtype=bool)
    keep[:k] = True
    return keep


def score_threshold(scores: Any, threshold: float = 0.5) -> np.ndarray:
    """Keep the candidates scoring at least ``threshold`` (paper 001's figure 3 shows boxes above 0.5)."""
    return np.asarray(scores) >= threshold


def keep_all(scores: Any) -> np.ndarray:
    """Keep every candidate (no NMS at all)."""
    return np.ones(np.asarray(scores).shape[0], dtype=bool)


def oracle_keep(boxes: Any, labels: Any, gt_boxes: Any, gt_labels: Any, gt_crowd: Any = None,
                min_iou: float = 0.5, match: str = "iou", scores: Any = None) -> np.ndarray:
    """Per non-crowd ground-truth box, keep one same-class candidate overlapping it at IoU >= ``min_iou``.

    ``match="iou"``: the candidate with the highest IoU (two ground-truth boxes may pick the same one: it is kept
    once). ``match="score"``: as COCO's matching (``evaluateImg``), the candidates in ``scores`` order (descending,
    stable; needs ``scores``): each takes the unmatched ground-truth box it overlaps most, so an object keeps the
    highest-scored candidate no other object took. The kept boxes keep their scores: against other images'
    detections (a dataset's AP, DetBoxSelect-v1's pool reward) the highest-IoU candidate, often a lower-scored one,
    ranks lower.
    """
    check_choice("match", match, ORACLE_MATCHES)
    labels = np.asarray(labels)
    keep = np.zeros(labels.shape[0], dtype=bool)
    gt_labels = np.asarray(gt_labels)
    if gt_crowd is not None:
        real = ~np.asarray(gt_crowd, dtype=bool)
        gt_boxes, gt_labels = np.asarray(gt_boxes)[real], gt_labels[real]
    if labels.shape[0] == 0 or gt_labels.shape[0] == 0:
        return keep
    iou = box_iou(_tensor(gt_boxes, torch.float64).reshape(-1, 4), _tensor(boxes, torch.float64)).numpy()
    iou[gt_labels[:, None] != labels[None, :]] = -1.0
    if match == "iou":
        best = iou.argmax(axis=1)
        good = iou[np.arange(len(best)), best] >= min_iou
        keep[best[good]] = True
        return keep
    if scores is None:
        raise ValueError("match='score' ranks the candidates by their scores: pass scores=...")
    free = np.ones(gt_labels.shape[0], dtype=bool)
    for d in np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable"):
        overlap = np.where(free, iou[:, d], -1.0)
        g = int(overlap.argmax())
        if overlap[g] >= min_iou:
            free[g] = False
            keep[d] = True
    return keep


def rescore(scores: Any, keep: np.ndarray) -> np.ndarray:
    """A selector's keep mask as new scores: its own score where kept, 0 elsewhere (float64)."""
    return np.where(keep, np.asarray(scores, dtype=np.float64), 0.0)


def _nms_rule(c: Mapping[str, Any], iou: float = 0.5, score_thresh: float = 0.0,
              detections_per_img: int | None = None) -> np.ndarray:
    keep = greedy_nms(c["boxes"], c["scores"], c["labels"], iou) & score_threshold(c["scores"], score_thresh)
    if detections_per_img is not None:
        if isinstance(detections_per_img, bool) or not isinstance(detections_per_img, (int, np.integer)) \
                or detections_per_img < 0:
            raise ValueError(f"detections_per_img must be an integer >= 0 or None, got {detections_per_img!r}")
        kept = np.flatnonzero(keep)
        keep[kept[np.argsort(-np.asarray(c["scores"])[kept], kind="stable")[detections_per_img:]]] = False
    return rescore(c["scores"], keep)


def _soft_rule(method: str) -> Callable[..., np.ndarray]:
    def rule(c: Mapping[str, Any], **params: Any) -> np.ndarray:
        defaults = {"iou": 0.3, "sigma": 0.5, "score_thresh": 0.001}
        return soft_nms(c["boxes"], c["scores"], c["labels"], method=method, **{**defaults, **params})

    return rule


def _oracle_rule(c: Mapping[str, Any], min_iou: float = 0.5, match: str = "iou") -> np.ndarray:
    if "gt_boxes" not in c:
        raise ValueError("the oracle needs the ground truth: candidates with 'gt_boxes', 'gt_labels' (and 'gt_crowd')")
    keep = oracle_keep(c["boxes"], c["labels"], c["gt_boxes"], c["gt_labels"], c.get("gt_crowd"), min_iou, match,
                       c["scores"])
    return rescore(c["scores"], keep)


#: Rule name -> ``rule(candidates, **params) -> new scores [N]`` (0 = dropped). ``candidates`` is a dict with
#: ``boxes``, ``scores``, ``labels`` (the oracle also ``gt_boxes``, ``gt_labels``, ``gt_crowd``).
RULES: dict[str, Callable[..., np.ndarray]] = {
    "nms": _nms_rule,
    "soft_nms_linear": _soft_rule("linear"),
    "soft_nms_gaussian": _soft_rule("gaussian"),
    "topk": lambda c, k=5: rescore(c["scores"], topk(c["scores"], k)),
    "threshold": lambda c, threshold=0.5: rescore(c["scores"], score_threshold(c["scores"], threshold)),
    "keep_all": lambda c: rescore(c["scores"], keep_all(c["scores"])),
    "oracle": _oracle_rule,
}


def _rule(name: str) -> Callable[..., np.ndarray]:
    if name not in RULES:
        raise ValueError(f"rule must be one of {', '.join(map(repr, RULES))}; got {name!r}")
    return RULES[name]


def postprocess(candidates: Sequence[Mapping[str, Any]], rule: str, **params: Any) -> list[dict[str, np.ndarray]]:
    """Apply ``rule`` to every image's candidates: per image ``{"boxes", "scores", "labels"}`` of the kept boxes
    (new scores), score-descending (stable), like a detector's post-processed output."""
    fn = _rule(rule)
    out = []
    for c in candidates:
        scores = fn(c, **params)
        kept = np.flatnonzero(scores > 0)
        kept = kept[np.argsort(-scores[kept], kind="stable")]
        out.append({"boxes": np.asarray(c["boxes"])[kept], "scores": scores[kept],
                    "labels": np.asarray(c["labels"])[kept]})
    return out


def coco_detections(detections: Sequence[Mapping[str, Any]], image_ids: Sequence[int],
                    label_to_category_id: Mapping[int, int]) -> list[dict[str, Any]]:
    """Per-image ``{"boxes" xyxy, "scores", "labels"}`` as one COCO results list (bbox xywh)."""
    results = []
    for det, image_id in zip(detections, image_ids):
        b = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)
        xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()
        for bb, s, lab in zip(xywh, np.asarray(det["scores"]).tolist(), np.asarray(det["labels"]).tolist()):
            results.append({"image_id": int(image_id), "category_id": int(label_to_category_id[int(lab)]),
                            "bbox": bb, "score": float(s)})
    return results


def evaluate_rule(env: Any, rule: str, **params: Any) -> dict[str, float]:
    """COCO stats (:func:`detgym.metrics.coco_evaluate`) of ``rule`` on every image of a DetBoxSelect env's split.

    Args:
        env: a DetBoxSelect / Seq / Rescore env (any wrappers) or its native vector env.
        rule: a :data:`RULES` name; ``params`` its parameters (``iou``, ``k``, ``threshold``, ``sigma``, ...).
    """
    from detgym.metrics import coco_evaluate

    base = getattr(env, "unwrapped", env)
    base = getattr(base, "single_env", base)
    table = base.table
    candidates = []
    for i in range(len(table)):
        c = dict(table.candidates(i))
        if rule == "oracle":
            gt = table.ground_truth(i)
            c.update(gt_boxes=gt["boxes"], gt_labels=gt["labels"], gt_crowd=gt["crowd"])
        candidates.append(c)
    coco = base.coco_gt()
    dets = coco_detections(postprocess(candidates, rule, **params), table.image_ids.tolist(),
                           table.label_to_category_id)
    return coco_evaluate(coco, dets)
