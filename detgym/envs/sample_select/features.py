"""What the current detector says about each image: its ``embed()`` vector and detection statistics.

The statistics (:data:`~detgym.envs.sample_select.observation.DETECTION_STATS`) are computed on the detector's
final detections (after NMS, exactly ``model(images)``):

* ``n_detections``: how many detections the detector reports (its own score threshold and NMS);
* ``mean_score`` / ``max_score``: of those detections (0 when there are none);
* ``mean_entropy`` / ``sum_entropy``: Shannon entropy of each detection's foreground class distribution,
  divided by ``log C`` so that one detection's entropy lies in [0, 1] (the "mean / sum entropy" sampling of
  MGRAL's Fig. 4). RetinaNet / FCOS score classes with independent sigmoids, Faster R-CNN with a softmax whose
  column 0 is background; either way the foreground scores ``p_1..p_C`` of the detection's logit row are
  normalised to sum to 1.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from .observation import DETECTION_STATS

__all__ = ["SIGMOID_FAMILIES", "image_features", "pairwise_nearest"]

#: Detector families whose class scores are independent sigmoids (the others use a softmax with background).
SIGMOID_FAMILIES: tuple[str, ...] = ("retinanet", "fcos")


def _kept_rows(model: Any, cand: dict[str, torch.Tensor]) -> torch.Tensor:
    """Indices (into ``cand``) of the candidates that the model's NMS keeps, in its output order.

    ``postprocess`` runs NMS on ``nms_boxes`` and returns the ``boxes`` entry of the kept rows, so handing it a
    ``boxes`` entry that holds each row's own index reads the kept indices back exactly (no re-implemented NMS).
    """
    k = cand["scores"].shape[0]
    index = torch.arange(k, dtype=torch.float32, device=cand["scores"].device)[:, None].expand(k, 4)
    probe = {key: cand[key] for key in ("scores", "labels", "nms_boxes", "nms_order")}
    kept = model.postprocess([{**probe, "boxes": index}])[0]["boxes"]
    return kept[:, 0].long()


def _detection_stats(model: Any, cand: dict[str, torch.Tensor], sigmoid: bool, num_classes: int) -> np.ndarray:
    rows = _kept_rows(model, cand)
    out = np.zeros(len(DETECTION_STATS), dtype=np.float32)
    if rows.numel() == 0:
        return out
    scores = cand["scores"][rows].float()
    logits = cand["class_logits"][cand["logit_index"][rows]].float()
    probs = torch.sigmoid(logits) if sigmoid else torch.softmax(logits, dim=-1)
    fg = probs[:, -num_classes:]  # column 0 (when present) is background
    fg = fg / fg.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    entropy = -(fg * fg.clamp_min(1e-12).log()).sum(dim=-1) / math.log(max(num_classes, 2))
    out[:] = [rows.numel(), scores.mean(), scores.max(), entropy.mean(), entropy.sum()]
    return out


@torch.no_grad()
def image_features(
    model: Any, family: str, dataset: Any, indices: Sequence[int], *, device: Any = "cpu", batch_size: int = 32,
    stats: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """``embed()`` vectors ``[n, D]`` and detection statistics ``[n, 5]`` (float32) of images ``indices``.

    Args:
        model: a detgym detector (``embed``, ``candidates``, ``postprocess``).
        family: its family name (``"retinanet"``, ``"fcos"``, ``"fasterrcnn"``): how its class scores are formed.
        dataset: a :class:`~detgym.data.DetectionDataset` (only its images are read: labels stay hidden).
        indices: the images, in the order of the returned rows.
        device: where the model lives.
        batch_size: images per forward pass.
        stats: ``False`` skips the detections (the statistics are then zeros).
    """
    idx = [int(i) for i in indices]
    dim = int(model.embed_dim)
    emb = np.zeros((len(idx), dim), dtype=np.float32)
    out = np.zeros((len(idx), len(DETECTION_STATS)), dtype=np.float32)
    sigmoid = family in SIGMOID_FAMILIES
    num_classes = int(dataset.num_classes)
    for start in range(0, len(idx), batch_size):
        chunk = idx[start : start + batch_size]
        images, _ = dataset.batch(chunk, device=device)
        emb[start : start + len(chunk)] = model.embed(images).float().cpu().numpy()
        if stats:
            for j, cand in enumerate(model.candidates(images)):
                out[start + j] = _detection_stats(model, cand, sigmoid, num_classes)
    return emb, out


def pairwise_nearest(queries: np.ndarray, references: np.ndarray) -> np.ndarray:
    """For each row of ``queries`` ``[m, D]``, the L2 distance to its nearest row of ``references`` ``[n, D]``
    (``inf`` when ``n == 0``)."""
    if references.shape[0] == 0:
        return np.full(queries.shape[0], np.inf)
    q = queries.astype(np.float64)
    r = references.astype(np.float64)
    sq = (q * q).sum(1)[:, None] + (r * r).sum(1)[None, :] - 2.0 * q @ r.T
    return np.sqrt(np.maximum(sq.min(axis=1), 0.0))
