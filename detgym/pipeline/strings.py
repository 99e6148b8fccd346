"""Digit strings (paper 004, task 2) from COCO results and from ground truth.

Detections of an image are kept at ``score >= threshold``, read left to right by box x-centre and
their category names concatenated (the digits set's and the paper's categories are named "0".."9");
an image with nothing kept reads ``"-1"``. The same rule, applied to the ground-truth boxes, gives the
true strings, so an image without digits is right when nothing is detected. Both use
:func:`detgym.metrics.detections_to_string`, the metric's own reading.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from detgym.metrics import NO_DIGITS, detections_to_string

__all__ = ["DetectionTable", "ground_truth_strings"]


class DetectionTable:
    """COCO results (``image_id``, ``category_id``, ``bbox`` xywh, ``score``) as arrays, grouped by image.

    Built once per prediction run, then :meth:`strings` and :meth:`results` at any threshold are cheap.
    """

    def __init__(self, results: Sequence[Mapping[str, Any]], image_ids: Iterable[int]) -> None:
        self.image_ids = [int(i) for i in image_ids]
        n = len(results)
        self.img = np.fromiter((int(r["image_id"]) for r in results), dtype=np.int64, count=n)
        self.cat = np.fromiter((int(r["category_id"]) for r in results), dtype=np.int64, count=n)
        self.score = np.fromiter((float(r["score"]) for r in results), dtype=np.float64, count=n)
        xywh = np.asarray([r["bbox"] for r in results], dtype=np.float64).reshape(n, 4)
        self.xyxy = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        self._results = list(results)
        order = np.argsort(self.img, kind="stable")
        bounds = np.searchsorted(self.img[order], np.asarray(self.image_ids, dtype=np.int64), side="left")
        ends = np.searchsorted(self.img[order], np.asarray(self.image_ids, dtype=np.int64), side="right")
        self._rows = {iid: order[a:b] for iid, a, b in zip(self.image_ids, bounds, ends)}

    def __len__(self) -> int:
        return len(self._results)

    def results(self, threshold: float) -> list[dict[str, Any]]:
        """The COCO results with ``score >= threshold``."""
        keep = np.nonzero(self.score >= threshold)[0]
        return [self._results[i] for i in keep]

    def strings(self, threshold: float, names: Mapping[int, str]) -> dict[int, str]:
        """Image id -> digit string at ``threshold`` (``"-1"`` when nothing is kept)."""
        out = {}
        for iid in self.image_ids:
            rows = self._rows.get(iid)
            if rows is None or rows.size == 0:
                out[iid] = NO_DIGITS
                continue
            out[iid] = detections_to_string(self.xyxy[rows], self.cat[rows], self.score[rows], threshold, names)
        return out


def ground_truth_strings(dataset: Any, names: Mapping[int, str]) -> dict[int, str]:
    """Image id -> true string of a :class:`detgym.data.DetectionDataset` (category names read left to right)."""
    l2c = dataset.label_to_category_id
    out = {}
    for iid, t in zip(dataset.image_ids, dataset.targets):
        cats = [l2c[int(v)] for v in t["labels"].tolist()]
        out[int(iid)] = detections_to_string(t["boxes"], np.asarray(cats, dtype=np.int64), None, 0.0, names)
    return out
