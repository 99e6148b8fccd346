"""Ground-truth matching of a whole batch at once, equal to torchvision's per-image loops.

torchvision matches anchors (RetinaNet, the RPN) and locations (FCOS) to ground truth one image at a time: an IoU
matrix and a ``Matcher`` call per image, about 20 small ops each. When the images of a batch share their anchors
(fixed-size inputs: every image of the digits set), the ground truth can be padded to ``[B, G_max, 4]`` and the
whole batch matched with the same element-wise ops, so every IoU value, every ``max`` and every tie is the
per-image one: the matches are identical, not just close. Padded ground-truth rows are masked out of every
maximum and of the low-quality-match rule.

Matching depends on the anchors and the targets only, never on the detector's weights: a vector of detectors
trained on the same batch (:class:`detgym.train.VectorTrainer`) matches once for all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import box_iou

__all__ = ["BATCHED_MATCH_MAX_ELEMENTS", "match_batch", "pad_targets", "shared_anchors"]

#: Largest ``B * G_max * A`` matched in one batched call; beyond it (large images, crowded scenes) matching runs
#: per image, as torchvision does, to bound the memory of the ``[B, G, A, 2]`` intermediates.
BATCHED_MATCH_MAX_ELEMENTS = 4_000_000


def shared_anchors(anchors: Sequence[Tensor]) -> Tensor | None:
    """The anchors every image shares (``None`` when the images' anchors differ)."""
    first = anchors[0]
    for a in anchors[1:]:
        if a is not first and (a.shape != first.shape or not torch.equal(a, first)):
            return None
    return first


def pad_targets(targets: Sequence[dict[str, Tensor]], device: torch.device) -> tuple[Tensor, Tensor]:
    """Ground-truth boxes padded to ``[B, G_max, 4]`` (zeros) and the ``[B, G_max]`` mask of real rows."""
    counts = [int(t["boxes"].shape[0]) for t in targets]
    g = max(counts + [1])
    boxes = torch.zeros(len(targets), g, 4, dtype=torch.float32, device=device)
    valid = torch.zeros(len(targets), g, dtype=torch.bool, device=device)
    for i, (t, n) in enumerate(zip(targets, counts)):
        if n:
            boxes[i, :n] = t["boxes"]
            valid[i, :n] = True
    return boxes, valid


def _match_one(matcher: det_utils.Matcher, gt_boxes: Tensor, anchors: Tensor) -> Tensor:
    """torchvision's per-image rule (RetinaNet.compute_loss): -1 everywhere for an image without objects."""
    if gt_boxes.numel() == 0:
        return torch.full((anchors.size(0),), -1, dtype=torch.int64, device=anchors.device)
    return matcher(box_iou(gt_boxes, anchors))


def match_batch(
    matcher: det_utils.Matcher, targets: Sequence[dict[str, Tensor]], anchors: Sequence[Tensor]
) -> list[Tensor]:
    """``[matcher(box_iou(boxes_i, anchors_i)) for each image]`` (``-1`` for an image without objects), batched.

    Args:
        matcher: torchvision ``Matcher`` (its thresholds and ``allow_low_quality_matches`` are honoured).
        targets: per-image dicts with "boxes" ``[G_i, 4]``.
        anchors: per-image anchors ``[A, 4]``.

    Returns:
        per image the int64 ``[A]`` matches: a ground-truth index, ``Matcher.BELOW_LOW_THRESHOLD`` (-1) or
        ``Matcher.BETWEEN_THRESHOLDS`` (-2); identical to the per-image loop.
    """
    first = shared_anchors(anchors)
    g_max = max(int(t["boxes"].shape[0]) for t in targets)
    if first is None or g_max == 0 or len(targets) * g_max * first.shape[0] > BATCHED_MATCH_MAX_ELEMENTS:
        return [_match_one(matcher, t["boxes"], a) for t, a in zip(targets, anchors)]
    boxes, valid = pad_targets(targets, first.device)
    quality = box_iou(boxes, first).masked_fill(~valid[:, :, None], -1.0)  # [B, G, A]; IoU >= 0 on real rows
    matched_vals, matches = quality.max(dim=1)  # first maximum on ties, as per image
    all_matches = matches.clone()
    below = matched_vals < matcher.low_threshold
    between = (matched_vals >= matcher.low_threshold) & (matched_vals < matcher.high_threshold)
    matches[below] = matcher.BELOW_LOW_THRESHOLD
    matches[between] = matcher.BETWEEN_THRESHOLDS
    if matcher.allow_low_quality_matches:
        # Matcher.set_low_quality_matches_: every anchor that is the best one of some real ground truth gets its
        # original best match back (also when that best IoU is 0, as in torchvision)
        best_per_gt = quality.max(dim=2).values  # [B, G]
        is_best = (quality == best_per_gt[:, :, None]) & valid[:, :, None]
        matches = torch.where(is_best.any(dim=1), all_matches, matches)
    return list(matches.unbind(0))
