"""FCOS whose training loss is split by pyramid level (subclasses of torchvision's classes).

torchvision's FCOS (fcos.py) sums the focal loss over all locations of the batch and the GIoU and
centerness losses over the foreground locations, and divides all three by the number of foreground
locations in the batch. Every location's term thus has a level-independent weight, and binning the
terms by the level range of the location splits each scalar exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.fcos import FCOS, FCOSClassificationHead, FCOSHead, FCOSRegressionHead
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from ._candidates import DenseCandidatesMixin
from ._matching import BATCHED_MATCH_MAX_ELEMENTS, pad_targets, shared_anchors
from ._utils import (
    DenseLevelLossMixin,
    RecordsLevelSizes,
    branch_layout,
    group_norm_layer,
    stack_matches,
    sum_by_level,
)

__all__ = [
    "LevelFCOS", "LevelFCOSHead", "LevelFCOSClassificationHead", "LevelFCOSRegressionHead", "match_locations"
]


def match_locations(
    targets: list[dict[str, Tensor]], anchors: Tensor, num_anchors_per_level: list[int], radius: float
) -> Tensor:
    """FCOS's location-to-ground-truth assignment of a batch sharing ``anchors`` ``[A, 4]``: int64 ``[B, A]``.

    torchvision's per-image rule (``FCOS.compute_loss``) on ground truth padded to ``[B, G_max, 4]``: the same
    element-wise ops, with padded rows never matched, so the result is the per-image one exactly (an image
    without objects gets -1 everywhere).
    """
    gt_boxes, valid = pad_targets(targets, anchors.device)  # [B, G, 4]
    gt_centers = (gt_boxes[..., :2] + gt_boxes[..., 2:]) / 2  # [B, G, 2]
    anchor_centers = (anchors[:, :2] + anchors[:, 2:]) / 2  # [A, 2]
    anchor_sizes = anchors[:, 2] - anchors[:, 0]
    # centre sampling: the location must be close enough to the box centre
    pairwise_match = (anchor_centers[None, :, None, :] - gt_centers[:, None, :, :]).abs_().max(
        dim=3
    ).values < radius * anchor_sizes[None, :, None]  # [B, A, G]
    x, y = anchor_centers.unsqueeze(dim=2).unbind(dim=1)  # [A, 1]
    x0, y0, x1, y1 = gt_boxes.unsqueeze(dim=1).unbind(dim=3)  # [B, 1, G]
    pairwise_dist = torch.stack([x - x0, y - y0, x1 - x, y1 - y], dim=3)  # [B, A, G, 4]
    pairwise_match &= pairwise_dist.min(dim=3).values > 0  # inside the box
    # each level is responsible for a range of box sizes
    lower_bound = anchor_sizes * 4
    lower_bound[: num_anchors_per_level[0]] = 0
    upper_bound = anchor_sizes * 8
    upper_bound[-num_anchors_per_level[-1] :] = float("inf")
    pairwise_dist = pairwise_dist.max(dim=3).values
    pairwise_match &= (pairwise_dist > lower_bound[:, None]) & (pairwise_dist < upper_bound[:, None])
    pairwise_match &= valid[:, None, :]
    # the smallest box wins when several match
    gt_areas = (gt_boxes[..., 2] - gt_boxes[..., 0]) * (gt_boxes[..., 3] - gt_boxes[..., 1])  # [B, G]
    pairwise_match = pairwise_match.to(torch.float32) * (1e8 - gt_areas[:, None, :])
    min_values, matched_idx = pairwise_match.max(dim=2)  # [B, A]
    matched_idx[min_values < 1e-5] = -1
    return matched_idx


class LevelFCOSClassificationHead(FCOSClassificationHead):
    """torchvision's FCOS classification branch plus a per-level focal loss."""

    def compute_level_loss(
        self,
        head_outputs: dict[str, Tensor],
        foreground: Tensor,
        gt_labels: Tensor,
        levels: Tensor,
        num_levels: int,
        num_foreground: int,
    ) -> Tensor:
        """Focal loss over all locations, split by level.

        Args:
            head_outputs: uses "cls_logits" ``[N, A, K]``.
            foreground: bool ``[N, A]``.
            gt_labels: int64 ``[M]``, the class of each foreground location (row-major order).
            levels: int64 ``[A]``, the level of each location.
            num_levels: number of levels.
            num_foreground: foreground locations in the batch (torchvision's normaliser).
        """
        cls_logits = head_outputs["cls_logits"]
        gt_classes_targets = torch.zeros_like(cls_logits)
        gt_classes_targets[foreground, gt_labels] = 1.0
        loss = sigmoid_focal_loss(cls_logits, gt_classes_targets, reduction="none").sum(dim=(0, 2))
        return sum_by_level(loss, levels, num_levels) / max(1, num_foreground)


class LevelFCOSRegressionHead(FCOSRegressionHead):
    """torchvision's FCOS box + centerness branch plus per-level GIoU and centerness losses."""

    def compute_level_loss(
        self,
        box_coder: det_utils.BoxLinearCoder,
        head_outputs: dict[str, Tensor],
        anchors: Tensor,
        gt_boxes: Tensor,
        img: Tensor,
        loc: Tensor,
        levels: Tensor,
        num_levels: int,
        num_foreground: int,
    ) -> tuple[Tensor, Tensor]:
        """GIoU and centerness losses over the foreground locations ``(img, loc)``, split by level.

        Args:
            box_coder: the head's ``BoxLinearCoder``.
            head_outputs: uses "bbox_regression" ``[N, A, 4]`` and "bbox_ctrness" ``[N, A, 1]``.
            anchors: ``[N, A, 4]`` stacked anchors.
            gt_boxes: ``[M, 4]`` ground truth matched to each foreground location.
            img, loc: int64 ``[M]`` image and location index of each foreground location.
            levels: int64 ``[A]``; num_levels: number of levels; num_foreground: ``M`` (normaliser).
        """
        fg_anchors = anchors[img, loc]
        # Decoding / encoding are element-wise, so restricting them to the foreground changes nothing.
        pred_boxes = box_coder.decode(head_outputs["bbox_regression"][img, loc], fg_anchors)
        loss_reg = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="none")
        targets = box_coder.encode(fg_anchors, gt_boxes)
        left_right = targets[:, [0, 2]]
        top_bottom = targets[:, [1, 3]]
        gt_ctrness = torch.sqrt(
            (left_right.min(dim=-1)[0] / left_right.max(dim=-1)[0])
            * (top_bottom.min(dim=-1)[0] / top_bottom.max(dim=-1)[0])
        )
        pred_ctrness = head_outputs["bbox_ctrness"][img, loc, 0]
        loss_ctr = nn.functional.binary_cross_entropy_with_logits(pred_ctrness, gt_ctrness, reduction="none")
        norm = max(1, num_foreground)
        lv = levels[loc]
        return sum_by_level(loss_reg, lv, num_levels) / norm, sum_by_level(loss_ctr, lv, num_levels) / norm


class LevelFCOSHead(RecordsLevelSizes, FCOSHead):
    """FCOS head whose ``compute_loss`` returns ``[num_levels]`` tensors.

    Unlike torchvision's FCOSHead it takes the branch norm layer and conv count (torchvision fixes
    GroupNorm(32) and passes ``num_convs`` only). ``forward`` records the locations per level for the
    ``compute_loss`` call that torchvision's ``FCOS.forward`` makes right after it.

    Args:
        in_channels: FPN channels.
        num_anchors: must be 1 (FCOS).
        num_classes: logits per location (torchvision convention; label 0 is never a target here).
        num_convs: conv blocks per branch (torchvision: 4).
        norm_layer: branch norm (torchvision: ``partial(nn.GroupNorm, 32)``).
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        num_convs: int = 4,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
    ) -> None:
        nn.Module.__init__(self)  # the branches are built here, as level-aware subclasses
        if norm_layer is None:
            norm_layer = group_norm_layer(32)
        self.box_coder = det_utils.BoxLinearCoder(normalize_by_size=True)
        self.classification_head = LevelFCOSClassificationHead(
            in_channels, num_anchors, num_classes, num_convs, norm_layer=norm_layer
        )
        self.regression_head = LevelFCOSRegressionHead(in_channels, num_anchors, num_convs, norm_layer=norm_layer)

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        """torchvision's head outputs; also records the number of locations per level."""
        self._record_level_sizes(x)
        return super().forward(x)

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """Per-level classification / bbox_regression / bbox_ctrness for the last ``forward``."""
        levels, num_levels = self._level_ids(head_outputs)
        matched, gt_index, all_boxes, all_labels = stack_matches(targets, matched_idxs)
        foreground = matched >= 0
        img, loc = torch.nonzero(foreground, as_tuple=True)
        gt_fg = gt_index[img, loc]
        num_foreground = int(img.numel())
        cls = self.classification_head.compute_level_loss(
            head_outputs, foreground, all_labels[gt_fg], levels, num_levels, num_foreground
        )
        reg, ctr = self.regression_head.compute_level_loss(
            self.box_coder,
            head_outputs,
            torch.stack(anchors),
            all_boxes[gt_fg],
            img,
            loc,
            levels,
            num_levels,
            num_foreground,
        )
        return {"classification": cls, "bbox_regression": reg, "bbox_ctrness": ctr}


class LevelFCOS(DenseCandidatesMixin, DenseLevelLossMixin, FCOS):
    """torchvision FCOS with ``level_names``, ``num_levels`` and ``level_losses``.

    Also ``candidates`` (pre-NMS boxes with their logit rows), ``postprocess`` (the model's NMS on them) and
    ``embed`` / ``embed_dim`` (pooled FPN features), see :class:`~detgym.models._candidates.CandidatesMixin`.

    Args:
        backbone: feature extractor with ``out_channels`` returning one map per level.
        num_classes: logits per location in torchvision's convention; ground-truth labels must lie in
            ``1..num_classes-1`` (``build_detector`` passes its object-class count + 1).
        level_names: one name per feature map, e.g. ("P3", ..., "P7").
        head: a :class:`LevelFCOSHead` (torchvision's default head layout when None).
        **kwargs: any other ``torchvision.models.detection.FCOS`` argument.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        level_names: Sequence[str],
        head: Optional[LevelFCOSHead] = None,
        **kwargs: Any,
    ) -> None:
        if head is None:
            head = LevelFCOSHead(backbone.out_channels, 1, num_classes)
        if not isinstance(head, LevelFCOSHead):
            raise ValueError(f"head must be a LevelFCOSHead, got {type(head).__name__}")
        super().__init__(backbone, num_classes, head=head, **kwargs)
        self._init_dense_levels(level_names, num_classes)

    @classmethod
    def from_torchvision(cls, model: FCOS, level_names: Sequence[str]) -> "LevelFCOS":
        """Level-aware copy sharing ``model``'s backbone, anchors and transform (head re-wrapped).

        The head is rebuilt as a :class:`LevelFCOSHead` of the same layout and loaded with
        ``model.head``'s weights.
        """
        cls_head = model.head.classification_head
        in_channels, num_convs, norm_layer = branch_layout(cls_head)
        if norm_layer is None:
            raise ValueError("unsupported FCOS head layout (expected conv-GroupNorm-ReLU blocks)")
        head = LevelFCOSHead(
            in_channels, cls_head.num_anchors, cls_head.num_classes, num_convs=num_convs, norm_layer=norm_layer
        )
        return cls._adopt_dense(model, level_names, head, center_sampling_radius=model.center_sampling_radius)

    def match_targets(
        self, targets: list[dict[str, Tensor]], anchors: list[Tensor], num_anchors_per_level: list[int]
    ) -> list[Tensor]:
        """torchvision's FCOS assignment (``FCOS.compute_loss``: centre sampling, inside the box, the level's size
        range, smallest box wins), all images at once when they share their locations (identical matches)."""
        radius = self.center_sampling_radius
        shared = shared_anchors(anchors)
        g_max = max(int(t["boxes"].shape[0]) for t in targets)
        if shared is not None and len(targets) * g_max * shared.shape[0] <= BATCHED_MATCH_MAX_ELEMENTS:
            return list(match_locations(targets, shared, num_anchors_per_level, radius).unbind(0))
        return [match_locations([t], a, num_anchors_per_level, radius)[0] for t, a in zip(targets, anchors)]

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        num_anchors_per_level: list[int],
    ) -> dict[str, Tensor]:
        """torchvision's ``compute_loss`` with the batched matching (per-level values, see the head)."""
        matched_idxs = self.match_targets(targets, anchors, num_anchors_per_level)
        return self.head.compute_loss(targets, head_outputs, anchors, matched_idxs)

    def _level_scores(self, head_outputs: dict[str, list[Tensor]], image: int, level: int) -> Tensor:
        """Per-location, per-class scores of one level: ``sqrt(sigmoid(cls_logits) * sigmoid(ctrness))``."""
        logits = head_outputs["cls_logits"][level][image]
        ctrness = head_outputs["bbox_ctrness"][level][image]
        return torch.sqrt(torch.sigmoid(logits) * torch.sigmoid(ctrness))

    def _decode_boxes(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from the regression of the given locations (torchvision's ``BoxLinearCoder.decode``)."""
        return self.box_coder.decode(deltas, anchors)
