"""RetinaNet whose training loss is split by pyramid level (subclasses of torchvision's classes).

The per-level split follows torchvision's normalisation exactly (retinanet.py): for image i the focal
loss is summed over its non-ignored anchors and divided by ``max(1, #foreground_i)``, the box loss is
summed over its foreground anchors and divided by the same count, and both are averaged over the
images. Each anchor's term therefore carries a level-independent weight, so binning the terms by the
level range of the anchor (anchors are concatenated level by level) splits the scalar exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection.retinanet import (
    RetinaNet,
    RetinaNetClassificationHead,
    RetinaNetHead,
    RetinaNetRegressionHead,
)
from torchvision.ops import sigmoid_focal_loss

from ._candidates import DenseCandidatesMixin
from ._matching import match_batch
from ._utils import (
    BETWEEN_THRESHOLDS,
    DenseLevelLossMixin,
    RecordsLevelSizes,
    box_loss_per_box,
    branch_layout,
    stack_matches,
    sum_by_level,
)

__all__ = [
    "LevelRetinaNet",
    "LevelRetinaNetHead",
    "LevelRetinaNetClassificationHead",
    "LevelRetinaNetRegressionHead",
]


def _truncate_convs(head: nn.Module, num_convs: int) -> None:
    # torchvision hard-codes 4 conv blocks in the RetinaNet branches; dropping the last ones keeps the
    # module names (conv.0, conv.1, ...) and the init of the remaining blocks identical.
    if not 1 <= num_convs <= 4:
        raise ValueError(f"num_convs must be in 1..4 for RetinaNet heads, got {num_convs}")
    if num_convs != 4:
        head.conv = nn.Sequential(*list(head.conv.children())[:num_convs])


class LevelRetinaNetClassificationHead(RetinaNetClassificationHead):
    """torchvision's classification branch plus a per-level focal loss (``num_convs`` conv blocks)."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        prior_probability: float = 0.01,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
        num_convs: int = 4,
    ) -> None:
        super().__init__(in_channels, num_anchors, num_classes, prior_probability, norm_layer=norm_layer)
        _truncate_convs(self, num_convs)

    def compute_level_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        matched_idxs: list[Tensor],
        levels: Tensor,
        num_levels: int,
    ) -> Tensor:
        """Focal loss of torchvision's ``compute_loss`` split by level.

        Args:
            targets: per-image targets (after the transform).
            head_outputs: the head's outputs; uses "cls_logits" ``[N, A, K]``.
            matched_idxs: per-image matcher output ``[A]``.
            levels: int64 ``[A]``, the level of every anchor.
            num_levels: number of levels.

        Returns:
            ``[num_levels]`` tensor whose sum is ``compute_loss(targets, head_outputs, matched_idxs)``.
        """
        cls_logits = head_outputs["cls_logits"]
        matched, gt_index, _, all_labels = stack_matches(targets, matched_idxs)
        foreground = matched >= 0
        gt_classes_target = torch.zeros_like(cls_logits)
        gt_classes_target[foreground, all_labels[gt_index[foreground]]] = 1.0
        valid = (matched != BETWEEN_THRESHOLDS).to(cls_logits.dtype)
        # Ignored anchors get weight 0 rather than being dropped so that the batch stays one dense tensor.
        loss = sigmoid_focal_loss(cls_logits, gt_classes_target, reduction="none").sum(dim=-1) * valid
        num_foreground = foreground.sum(dim=1).clamp(min=1).to(cls_logits.dtype)
        per_anchor = (loss / num_foreground[:, None]).sum(dim=0) / len(targets)
        return sum_by_level(per_anchor, levels, num_levels)


class LevelRetinaNetRegressionHead(RetinaNetRegressionHead):
    """torchvision's box-regression branch plus a per-level box loss (``num_convs`` conv blocks)."""

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
        num_convs: int = 4,
    ) -> None:
        super().__init__(in_channels, num_anchors, norm_layer=norm_layer)
        _truncate_convs(self, num_convs)

    def compute_level_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
        levels: Tensor,
        num_levels: int,
    ) -> Tensor:
        """Box loss of torchvision's ``compute_loss`` (``_loss_type`` l1 for v1, giou for v2) split by level."""
        bbox_regression = head_outputs["bbox_regression"]
        matched, gt_index, all_boxes, _ = stack_matches(targets, matched_idxs)
        img, anchor = torch.nonzero(matched >= 0, as_tuple=True)
        per_box = box_loss_per_box(
            self._loss_type,
            self.box_coder,
            torch.stack(anchors)[img, anchor],
            all_boxes[gt_index[img, anchor]],
            bbox_regression[img, anchor],
        )
        num_foreground = (matched >= 0).sum(dim=1).clamp(min=1).to(bbox_regression.dtype)
        per_box = per_box / num_foreground[img] / max(1, len(targets))
        return sum_by_level(per_box, levels[anchor], num_levels)


class LevelRetinaNetHead(RecordsLevelSizes, RetinaNetHead):
    """RetinaNet head whose ``compute_loss`` returns ``[num_levels]`` tensors.

    ``forward`` records how many anchors each level contributes (it is the only place that sees the
    feature maps); torchvision's ``RetinaNet.forward`` calls ``compute_loss`` right after it in the same
    pass, with the anchors concatenated in the same level order.

    Args:
        in_channels: FPN channels.
        num_anchors: anchors per location.
        num_classes: logits per anchor (torchvision convention; label 0 is never a target here).
        norm_layer: e.g. ``partial(nn.GroupNorm, 16)`` for a v2-style head; None for v1.
        num_convs: conv blocks per branch (torchvision: 4).
        loss_type: box loss, "l1" (v1) or "giou" (v2), or smooth_l1 / diou / ciou.
    """

    def __init__(
        self,
        in_channels: int,
        num_anchors: int,
        num_classes: int,
        norm_layer: Optional[Callable[..., nn.Module]] = None,
        num_convs: int = 4,
        loss_type: str = "l1",
    ) -> None:
        nn.Module.__init__(self)  # the branches are built here, as level-aware subclasses
        self.classification_head = LevelRetinaNetClassificationHead(
            in_channels, num_anchors, num_classes, norm_layer=norm_layer, num_convs=num_convs
        )
        self.regression_head = LevelRetinaNetRegressionHead(
            in_channels, num_anchors, norm_layer=norm_layer, num_convs=num_convs
        )
        self.regression_head._loss_type = loss_type

    def forward(self, x: list[Tensor]) -> dict[str, Tensor]:
        """torchvision's head outputs; also records the number of anchors per level."""
        self._record_level_sizes(x)
        return super().forward(x)

    def compute_loss(
        self,
        targets: list[dict[str, Tensor]],
        head_outputs: dict[str, Tensor],
        anchors: list[Tensor],
        matched_idxs: list[Tensor],
    ) -> dict[str, Tensor]:
        """Per-level ``{"classification": [L], "bbox_regression": [L]}`` for the last ``forward``."""
        levels, num_levels = self._level_ids(head_outputs)
        return {
            "classification": self.classification_head.compute_level_loss(
                targets, head_outputs, matched_idxs, levels, num_levels
            ),
            "bbox_regression": self.regression_head.compute_level_loss(
                targets, head_outputs, anchors, matched_idxs, levels, num_levels
            ),
        }


class LevelRetinaNet(DenseCandidatesMixin, DenseLevelLossMixin, RetinaNet):
    """torchvision RetinaNet with ``level_names``, ``num_levels`` and ``level_losses``.

    Also ``candidates`` (pre-NMS boxes with their logit rows), ``postprocess`` (the model's NMS on them) and
    ``embed`` / ``embed_dim`` (pooled FPN features), see :class:`~detgym.models._candidates.CandidatesMixin`.

    Args:
        backbone: feature extractor with ``out_channels`` returning one map per level.
        num_classes: logits per anchor in torchvision's convention; ground-truth labels must lie in
            ``1..num_classes-1`` (``build_detector`` passes its object-class count + 1).
        level_names: one name per feature map, e.g. ("P3", ..., "P7").
        head: a :class:`LevelRetinaNetHead` (built with torchvision's defaults when None).
        **kwargs: any other ``torchvision.models.detection.RetinaNet`` argument.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        level_names: Sequence[str],
        head: Optional[LevelRetinaNetHead] = None,
        **kwargs: Any,
    ) -> None:
        anchor_generator = kwargs.get("anchor_generator")
        if head is None:
            num_anchors = anchor_generator.num_anchors_per_location()[0] if anchor_generator is not None else 9
            head = LevelRetinaNetHead(backbone.out_channels, num_anchors, num_classes)
        if not isinstance(head, LevelRetinaNetHead):
            raise ValueError(f"head must be a LevelRetinaNetHead, got {type(head).__name__}")
        super().__init__(backbone, num_classes, head=head, **kwargs)
        self._init_dense_levels(level_names, num_classes)

    @classmethod
    def from_torchvision(cls, model: RetinaNet, level_names: Sequence[str]) -> "LevelRetinaNet":
        """Level-aware copy sharing ``model``'s backbone, anchors, matcher and transform (head re-wrapped).

        The head is rebuilt as a :class:`LevelRetinaNetHead` of the same layout (norm layer, conv count,
        box loss) and loaded with ``model.head``'s weights.
        """
        cls_head = model.head.classification_head
        in_channels, num_convs, norm_layer = branch_layout(cls_head)
        head = LevelRetinaNetHead(
            in_channels,
            cls_head.num_anchors,
            cls_head.num_classes,
            norm_layer=norm_layer,
            num_convs=num_convs,
            loss_type=model.head.regression_head._loss_type,
        )
        return cls._adopt_dense(model, level_names, head, proposal_matcher=model.proposal_matcher)

    def match_targets(
        self, targets: list[dict[str, Tensor]], anchors: list[Tensor], num_anchors_per_level: list[int]
    ) -> list[Tensor]:
        """torchvision's IoU matching (``RetinaNet.compute_loss``), all images at once (:func:`match_batch`)."""
        return match_batch(self.proposal_matcher, targets, anchors)

    def compute_loss(
        self, targets: list[dict[str, Tensor]], head_outputs: dict[str, Tensor], anchors: list[Tensor]
    ) -> dict[str, Tensor]:
        """torchvision's ``compute_loss`` with the batched matching (per-level values, see the head)."""
        return self.head.compute_loss(targets, head_outputs, anchors, self.match_targets(targets, anchors, []))

    def _level_scores(self, head_outputs: dict[str, list[Tensor]], image: int, level: int) -> Tensor:
        """Per-anchor, per-class scores of one level: ``sigmoid(cls_logits)``, ``[A_l, K]``."""
        return torch.sigmoid(head_outputs["cls_logits"][level][image])

    def _decode_boxes(self, deltas: Tensor, anchors: Tensor) -> Tensor:
        """Boxes from the regression deltas of the given anchors (torchvision's ``BoxCoder.decode_single``)."""
        return self.box_coder.decode_single(deltas, anchors)
