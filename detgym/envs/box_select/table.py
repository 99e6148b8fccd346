"""One split of the candidate cache laid out for fast episodes: padded arrays, features, NMS baseline, rewards.

An :class:`ImageTable` is built once when an env is made (tens of milliseconds for a few thousand images) and is
read-only afterwards; a step only indexes it and calls the AP kernel. Tables are shared between the envs of one
process that read the same cache entry (a vector env's copies, an SB3 learner and its evaluation env), and so are
the reference pools of the ``pool_ap`` reward built on them (:meth:`ImageTable.pool_ap`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torchvision.ops import batched_nms

from detgym.metrics.image_ap import image_ap_unchecked
from detgym.metrics.pool_ap import PoolAP
from detgym.metrics.prepared_ap import PreparedAP

from .candidates import CacheError, SplitCandidates
from .features import n_features, pad_split

__all__ = ["ImageTable", "greedy_nms_keep"]


def greedy_nms_keep(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou: float) -> np.ndarray:
    """Class-wise greedy NMS (``torchvision.ops.batched_nms``) as a bool keep mask over score-sorted candidates."""
    keep = np.zeros(scores.shape[0], dtype=bool)
    if scores.shape[0]:
        idx = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(labels), float(iou))
        keep[idx.numpy()] = True
    return keep


@dataclass
class ImageTable:
    """A split's candidates (padded to ``n_max`` slots), ground truth, features and greedy-NMS result."""

    num_classes: int
    n_max: int
    image_ids: np.ndarray  # int64 [n]
    image_hw: np.ndarray  # int64 [n, 2]
    counts: np.ndarray  # int64 [n]
    boxes: np.ndarray  # float64 [n, n_max, 4] (float32 values: what the cache holds)
    scores: np.ndarray  # float64 [n, n_max]
    labels: np.ndarray  # int64 [n, n_max] (0 in padding)
    gt_offsets: np.ndarray  # int64 [n + 1]
    gt_boxes: np.ndarray  # float64 [G, 4]
    gt_labels: np.ndarray  # int64 [G]
    gt_crowd: np.ndarray  # bool [G]
    features: np.ndarray  # float32 [n, n_max, F]
    nms_keep: np.ndarray  # bool [n, n_max]
    nms_ap: np.ndarray  # float64 [n]
    category_ids: np.ndarray  # int64 [n, n_max]: COCO category id of each slot (0 in padding)
    label_to_category_id: dict[int, int] = field(default_factory=dict)
    prepared: PreparedAP | None = field(default=None, repr=False)
    gt_classes: np.ndarray | None = None  # bool [n, num_classes + 1]: a non-crowd GT of that label in the image
    _coco: Any = field(default=None, repr=False)
    _coco_results: dict[int, list[dict]] = field(default_factory=dict, repr=False)
    _pools: dict[tuple[int, int], PoolAP] = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, split: SplitCandidates, n_max: int, num_classes: int, nms_iou: float,
              label_to_category_id: dict[int, int]) -> "ImageTable":
        counts, boxes, scores, labels = pad_split(split.cand_offsets, n_max, split.boxes, split.scores, split.labels)
        boxes, scores = boxes.astype(np.float64), scores.astype(np.float64)
        features = split.features
        if features.shape[1:] != (n_max, n_features(num_classes)):
            expected = (n_max, n_features(num_classes))
            raise CacheError(f"cached features have shape {features.shape[1:]}, expected {expected}")
        nms_keep = np.zeros(scores.shape, dtype=bool)
        for i, n in enumerate(counts):
            nms_keep[i, :n] = greedy_nms_keep(boxes[i, :n], scores[i, :n], labels[i, :n], nms_iou)
        lut = np.zeros(max(label_to_category_id) + 1, dtype=np.int64)
        lut[list(label_to_category_id)] = list(label_to_category_id.values())
        table = cls(
            num_classes=int(num_classes), n_max=int(n_max), image_ids=split.image_ids, image_hw=split.image_hw,
            counts=counts, boxes=boxes, scores=scores, labels=labels, gt_offsets=split.gt_offsets,
            gt_boxes=split.gt_boxes.astype(np.float64), gt_labels=split.gt_labels, gt_crowd=split.gt_crowd,
            features=features, nms_keep=nms_keep, nms_ap=np.zeros(len(counts)), category_ids=lut[labels],
            label_to_category_id=dict(label_to_category_id),
        )
        gt_classes = np.zeros((len(counts), num_classes + 1), dtype=bool)
        real = ~split.gt_crowd
        gt_classes[np.repeat(np.arange(len(counts)), np.diff(split.gt_offsets))[real], split.gt_labels[real]] = True
        table.gt_classes = gt_classes
        table.prepared = PreparedAP(boxes, scores, labels, counts, table.gt_boxes, split.gt_labels, split.gt_crowd,
                                    split.gt_offsets)
        table.nms_ap = table.ap(np.arange(len(counts)), nms_keep)
        return table

    def __len__(self) -> int:
        return int(self.counts.shape[0])

    def ap(self, images: np.ndarray, keep: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """Per-image AP (:func:`detgym.metrics.image_ap`) of kept slots ``keep`` (bool ``[B, n_max]``) of images
        ``images`` (``[B]``), ranked by the candidates' scores (prepared: one compiled call for the batch) or by new
        ``scores`` (float64 ``[B, n_max]``: one compiled ``image_ap`` call per image on the table's own arrays)."""
        images = np.asarray(images, dtype=np.int64)
        keep = np.ascontiguousarray(keep, dtype=bool)
        if scores is None:
            return self.prepared(images, keep)
        scores = np.ascontiguousarray(scores, dtype=np.float64)
        out = np.empty(images.shape[0], dtype=np.float64)
        for b, i in enumerate(images):
            n, g0, g1 = self.counts[i], self.gt_offsets[i], self.gt_offsets[i + 1]
            out[b] = image_ap_unchecked(self.boxes[i, :n], scores[b, :n], self.labels[i, :n], self.gt_boxes[g0:g1],
                                        self.gt_labels[g0:g1], self.gt_crowd[g0:g1], keep[b:b + 1, :n])[0]
        return out

    def penalize_absent(self, images: np.ndarray, keep: np.ndarray, ap: np.ndarray) -> np.ndarray:
        """``ap`` with every class that has kept boxes but no (non-crowd) GT in the image added to the per-class mean
        with AP 0: ``ap * cv / (cv + n_absent)`` for the ``cv`` classes with GT (unchanged for images without GT,
        whose no-GT value already counts every kept box)."""
        images = np.asarray(images, dtype=np.int64)
        labels = self.labels[images]
        real = np.arange(self.n_max)[None, :] < self.counts[images][:, None]
        gt = self.gt_classes[images]
        absent = keep & real & ~np.take_along_axis(gt, labels, axis=1)
        seen = np.zeros(gt.shape, dtype=bool)
        rows, slots = np.nonzero(absent)
        seen[rows, labels[rows, slots]] = True
        cv = gt.sum(axis=1)
        return np.where(cv > 0, ap * cv / np.maximum(cv + seen.sum(axis=1), 1), ap)

    def pool_images(self, pool_size: int, pool_seed: int) -> np.ndarray:
        """The reference pool's images: ``pool_size`` distinct image indices drawn with ``pool_seed``, sorted."""
        rng = np.random.default_rng(int(pool_seed))
        return np.sort(rng.choice(len(self), int(pool_size), replace=False))

    def pool_ap(self, pool_size: int, pool_seed: int) -> PoolAP:
        """The :class:`~detgym.metrics.pool_ap.PoolAP` of the pool :meth:`pool_images` with every image's greedy NMS
        result as its reference (built once per table and pool; ``pool_size`` at most the split's images)."""
        key = (int(pool_size), int(pool_seed))
        pool = self._pools.get(key)
        if pool is None:
            pool = PoolAP(self.boxes, self.scores, self.labels, self.counts, self.gt_boxes, self.gt_labels,
                          self.gt_crowd, self.gt_offsets, self.image_ids, self.num_classes,
                          self.pool_images(*key), self.nms_keep)
            self._pools[key] = pool
        return pool

    def ground_truth(self, i: int) -> dict[str, np.ndarray]:
        """Image ``i``'s ground truth: ``boxes`` float64 ``[G, 4]`` xyxy pixels, ``labels``, ``crowd``."""
        g0, g1 = self.gt_offsets[i], self.gt_offsets[i + 1]
        return {"boxes": self.gt_boxes[g0:g1], "labels": self.gt_labels[g0:g1], "crowd": self.gt_crowd[g0:g1]}

    def candidates(self, i: int) -> dict[str, np.ndarray]:
        """Image ``i``'s real candidates in slot order: ``boxes`` float64 ``[n, 4]`` xyxy pixels, ``scores``,
        ``labels``."""
        n = self.counts[i]
        return {"boxes": self.boxes[i, :n], "scores": self.scores[i, :n], "labels": self.labels[i, :n]}

    def coco_results(self, i: int) -> list[dict]:
        """Image ``i``'s candidates as COCO result dicts (``image_id``, ``category_id``, ``bbox`` xywh pixels,
        ``score``), in slot order: a new list of dicts built once per image and shared (copy a dict before
        changing it; pycocotools' ``loadRes`` adds ``area`` / ``id`` / ``iscrowd`` keys, which is harmless)."""
        cached = self._coco_results.get(i)
        if cached is None:
            n = int(self.counts[i])
            b = self.boxes[i, :n]
            xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1).tolist()
            image_id = int(self.image_ids[i])
            cached = [{"image_id": image_id, "category_id": c, "bbox": bb, "score": sc}
                      for c, bb, sc in zip(self.category_ids[i, :n].tolist(), xywh, self.scores[i, :n].tolist())]
            self._coco_results[i] = cached
        return list(cached)
