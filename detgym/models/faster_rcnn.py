"""Faster R-CNN whose training loss is split by pyramid level (subclasses of torchvision's classes).

One level axis of length ``len(features)`` (P2..P6 for an FPN with LastLevelMaxPool, where P6 is the
'pool' map) serves both stages:

* RPN terms (``loss_objectness``, ``loss_rpn_box_reg``) go to the level of the sampled anchor.
  torchvision normalises both by the number of sampled anchors of the batch (rpn.py: BCE mean over the
  sampled anchors; smooth-L1 sum over the positives divided by that count), so each anchor's term has
  a level-independent weight.
* RoI-head terms (``loss_classifier``, ``loss_box_reg``) go to the level that MultiScaleRoIAlign's
  LevelMapper (eq. 1 of the FPN paper) assigns the sampled proposal, i.e. the map its features are
  pooled from; both are normalised by the number of sampled RoIs (roi_heads.py ``fastrcnn_loss``).
  The RoI pooler only reads the maps named in ``featmap_names`` ('0'..'3'), so the RoI terms are
  always 0 on the 'pool' level (and on any other map the pooler does not use).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.faster_rcnn import FasterRCNN
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import boxes as box_ops

from ._candidates import CandidatesMixin, nms_candidates, sort_candidates
from ._fixed_size import CachedAnchorGenerator, FixedSizeTransform
from ._matching import match_batch, pad_targets, shared_anchors
from ._utils import LevelLossMixin, level_ids, sum_by_level

__all__ = ["LevelFasterRCNN", "LevelRegionProposalNetwork", "LevelRoIHeads"]


class LevelRegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN whose ``compute_loss`` returns ``[num_levels]`` tensors.

    ``filter_proposals`` is the one RPN method that receives the anchors per level; it records them for
    the ``compute_loss`` call that follows in the same ``RegionProposalNetwork.forward``.
    """

    _anchors_per_level: list[int]

    @classmethod
    def from_rpn(cls, rpn: RegionProposalNetwork) -> "LevelRegionProposalNetwork":
        """A level-aware RPN sharing ``rpn``'s anchor generator, head and settings."""
        new = cls(
            rpn.anchor_generator,
            rpn.head,
            rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold,
            rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction,
            dict(rpn._pre_nms_top_n),
            dict(rpn._post_nms_top_n),
            rpn.nms_thresh,
            score_thresh=rpn.score_thresh,
        )
        new.proposal_matcher.allow_low_quality_matches = rpn.proposal_matcher.allow_low_quality_matches
        new.min_size = rpn.min_size
        new.anchor_generator = CachedAnchorGenerator.from_generator(rpn.anchor_generator)
        return new

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's anchor labels (1 object, 0 background, -1 ignored) and matched boxes, all images at once
        (:func:`~detgym.models._matching.match_batch`: the same matches as its per-image loop)."""
        if self.box_similarity is not box_ops.box_iou or shared_anchors(anchors) is None:
            return super().assign_targets_to_anchors(anchors, targets)
        matched = torch.stack(match_batch(self.proposal_matcher, targets, anchors))  # [B, A]
        gt_boxes, _ = pad_targets(targets, matched.device)  # an image without objects: zero boxes, as torchvision
        matched_gt_boxes = torch.gather(gt_boxes, 1, matched.clamp(min=0)[:, :, None].expand(-1, -1, 4))
        labels = (matched >= 0).to(dtype=torch.float32)
        labels[matched == self.proposal_matcher.BELOW_LOW_THRESHOLD] = 0.0
        labels[matched == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1.0
        return list(labels.unbind(0)), list(matched_gt_boxes.unbind(0))

    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        """torchvision's proposal filtering; also records ``num_anchors_per_level``."""
        self._anchors_per_level = [int(n) for n in num_anchors_per_level]
        return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)

    def compute_loss(
        self, objectness: Tensor, pred_bbox_deltas: Tensor, labels: list[Tensor], regression_targets: list[Tensor]
    ) -> tuple[Tensor, Tensor]:
        """Objectness BCE and box smooth-L1 (beta 1/9) of the sampled anchors, split by anchor level.

        Draws the same random sample as torchvision (one ``fg_bg_sampler`` call on the same labels).
        """
        sampled_pos_inds, sampled_neg_inds = self.fg_bg_sampler(labels)
        sampled_pos_inds = torch.where(torch.cat(sampled_pos_inds, dim=0))[0]
        sampled_neg_inds = torch.where(torch.cat(sampled_neg_inds, dim=0))[0]
        sampled_inds = torch.cat([sampled_pos_inds, sampled_neg_inds], dim=0)

        sizes = self._anchors_per_level
        total = sum(sizes)
        if total != labels[0].numel():
            raise RuntimeError("LevelRegionProposalNetwork.compute_loss must follow filter_proposals")
        anchor_level = level_ids(sizes, objectness.device)
        num_levels = len(sizes)
        num_sampled = sampled_inds.numel()

        objectness = objectness.flatten()
        labels_cat = torch.cat(labels, dim=0)
        regression_targets_cat = torch.cat(regression_targets, dim=0)

        box_loss = F.smooth_l1_loss(
            pred_bbox_deltas[sampled_pos_inds],
            regression_targets_cat[sampled_pos_inds],
            beta=1 / 9,
            reduction="none",
        ).sum(dim=1) / max(1, num_sampled)
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness[sampled_inds], labels_cat[sampled_inds], reduction="none"
        ) / max(1, num_sampled)
        # The flat index runs image-major over the concatenated levels: level = that of index % total.
        return (
            sum_by_level(objectness_loss, anchor_level[sampled_inds % total], num_levels),
            sum_by_level(box_loss, anchor_level[sampled_pos_inds % total], num_levels),
        )


class LevelRoIHeads(RoIHeads):
    """torchvision's box RoI heads whose training losses are ``[num_levels]`` tensors.

    The loss is a module-level function in torchvision (``fastrcnn_loss``), so the training branch of
    ``forward`` is re-expressed with torchvision's own methods (sampling, pooling, head, predictor);
    inference is torchvision's ``forward``, whose ``postprocess_detections`` is split into
    :meth:`candidate_detections` and the NMS step (same result). Mask / keypoint heads are not supported.
    """

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads) -> "LevelRoIHeads":
        """Level-aware RoI heads sharing ``heads``' pooler, box head, predictor and settings."""
        if heads.has_mask() or heads.has_keypoint():
            raise ValueError("LevelRoIHeads supports box heads only (no mask / keypoint heads)")
        return cls(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            heads.proposal_matcher.high_threshold,
            heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image,
            heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
        )

    def roi_levels(self, features: dict[str, Tensor], proposals: list[Tensor]) -> Tensor:
        """Index into ``features`` (the level axis) of the map each proposal is pooled from.

        Must be called after ``box_roi_pool`` has run once (it sets up its LevelMapper lazily).
        """
        pool = self.box_roi_pool
        if pool.map_levels is None:
            raise RuntimeError("box_roi_pool has not run yet; its LevelMapper is not set up")
        names = set(pool.featmap_names)
        # MultiScaleRoIAlign keeps the maps it pools from in the order of the feature dict.
        used = [i for i, k in enumerate(features.keys()) if k in names]
        mapped = pool.map_levels(proposals)
        return torch.as_tensor(used, dtype=torch.int64, device=mapped.device)[mapped]

    def candidate_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """torchvision's ``postprocess_detections`` up to NMS, per image, sorted by score.

        Softmax scores per class, boxes decoded per class and clipped, background column removed, scores above
        ``score_thresh`` kept, boxes smaller than 1e-2 px removed; then sorted (descending, stable).

        Args:
            class_logits: ``[sum P_i, C]`` box-predictor logits of all proposals of the batch.
            box_regression: ``[sum P_i, 4 C]`` box-predictor deltas.
            proposals: per image ``[P_i, 4]``.
            image_shapes: transformed image sizes ``(h, w)``.

        Returns:
            per image ``{"boxes", "scores", "labels", "logit_index", "nms_order"}`` in transformed-image
            coordinates, where "logit_index" is the proposal (row of the image's ``[P_i, C]`` logits) of each
            candidate and "nms_order" its position in torchvision's proposal-major order.
        """
        device = class_logits.device
        num_classes = class_logits.shape[-1]
        boxes_per_image = [boxes_in_image.shape[0] for boxes_in_image in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)
        pred_scores = F.softmax(class_logits, -1)
        out: list[dict[str, Tensor]] = []
        for boxes, scores, image_shape in zip(
            pred_boxes.split(boxes_per_image, 0), pred_scores.split(boxes_per_image, 0), image_shapes
        ):
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
            labels = torch.arange(num_classes, device=device).view(1, -1).expand_as(scores)
            rows = torch.arange(scores.shape[0], device=device).view(-1, 1).expand_as(scores)
            # remove the background column, one instance per (proposal, class)
            boxes = boxes[:, 1:].reshape(-1, 4)
            scores = scores[:, 1:].reshape(-1)
            labels = labels[:, 1:].reshape(-1)
            rows = rows[:, 1:].reshape(-1)
            inds = torch.where(scores > self.score_thresh)[0]
            boxes, scores, labels, rows = boxes[inds], scores[inds], labels[inds], rows[inds]
            keep = box_ops.remove_small_boxes(boxes, min_size=1e-2)
            candidates = {
                "boxes": boxes[keep],
                "scores": scores[keep],
                "labels": labels[keep],
                "logit_index": rows[keep],
                "nms_order": torch.arange(keep.numel(), device=device),
            }
            out.append(sort_candidates(candidates))
        return out

    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """torchvision's post-processing as :meth:`candidate_detections` + :func:`nms_candidates`."""
        dets = [
            nms_candidates(c, self.nms_thresh, self.detections_per_img)
            for c in self.candidate_detections(class_logits, box_regression, proposals, image_shapes)
        ]
        return [d["boxes"] for d in dets], [d["scores"] for d in dets], [d["labels"] for d in dets]

    def candidates_from_features(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """The eval branch of torchvision's box ``forward``, stopped before NMS.

        Returns:
            :meth:`candidate_detections` per image, each with its proposals' logits "class_logits" ``[P_i, C]``.
        """
        box_features = self.box_roi_pool(features, proposals, image_shapes)
        box_features = self.box_head(box_features)
        class_logits, box_regression = self.box_predictor(box_features)
        result = self.candidate_detections(class_logits, box_regression, proposals, image_shapes)
        per_image = class_logits.split([p.shape[0] for p in proposals], 0)
        for c, logits in zip(result, per_image):
            c["class_logits"] = logits
        return result

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: Optional[list[dict[str, Tensor]]] = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Eval: torchvision's detections. Train: ``([], {"loss_classifier": [L], "loss_box_reg": [L]})``."""
        if not self.training:
            return super().forward(features, proposals, image_shapes, targets)
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        box_features = self.box_roi_pool(features, proposals, image_shapes)
        box_features = self.box_head(box_features)
        class_logits, box_regression = self.box_predictor(box_features)
        levels = self.roi_levels(features, proposals)
        num_levels = len(features)

        labels_cat = torch.cat(labels, dim=0)
        regression_targets_cat = torch.cat(regression_targets, dim=0)
        num_rois = max(1, labels_cat.numel())
        classification = F.cross_entropy(class_logits, labels_cat, reduction="none") / num_rois
        pos = torch.where(labels_cat > 0)[0]
        n, _ = class_logits.shape
        box_regression = box_regression.reshape(n, box_regression.size(-1) // 4, 4)
        box_loss = (
            F.smooth_l1_loss(
                box_regression[pos, labels_cat[pos]],
                regression_targets_cat[pos],
                beta=1 / 9,
                reduction="none",
            ).sum(dim=1)
            / num_rois
        )
        losses = {
            "loss_classifier": sum_by_level(classification, levels, num_levels),
            "loss_box_reg": sum_by_level(box_loss, levels[pos], num_levels),
        }
        return [], losses


class LevelFasterRCNN(CandidatesMixin, LevelLossMixin, FasterRCNN):
    """torchvision Faster R-CNN with ``level_names``, ``num_levels`` and ``level_losses``.

    Also ``candidates`` (pre-NMS boxes with their proposal's logit row), ``postprocess`` (the RoI heads' NMS on
    them) and ``embed`` / ``embed_dim`` (pooled FPN features), see :class:`~detgym.models._candidates.CandidatesMixin`.

    Takes torchvision's FasterRCNN arguments; the RPN and RoI heads it builds are then rebuilt as
    :class:`LevelRegionProposalNetwork` / :class:`LevelRoIHeads` around the same modules.

    Args:
        backbone: feature extractor with ``out_channels``.
        num_classes: torchvision's count *including* background; labels must lie in ``1..num_classes-1``.
        level_names: one name per feature map, e.g. ("P2", "P3", "P4", "P5", "P6").
        **kwargs: any other ``torchvision.models.detection.FasterRCNN`` argument.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, *, level_names: Sequence[str], **kwargs: Any) -> None:
        super().__init__(backbone, num_classes, **kwargs)
        self.rpn = LevelRegionProposalNetwork.from_rpn(self.rpn)
        self.roi_heads = LevelRoIHeads.from_roi_heads(self.roi_heads)
        self.transform = FixedSizeTransform.from_transform(self.transform)
        self._check_levels(level_names)

    @classmethod
    def from_torchvision(cls, model: FasterRCNN, level_names: Sequence[str]) -> "LevelFasterRCNN":
        """Level-aware detector sharing every module and setting of a torchvision ``FasterRCNN``."""
        new = cls.__new__(cls)
        GeneralizedRCNN.__init__(
            new,
            model.backbone,
            LevelRegionProposalNetwork.from_rpn(model.rpn),
            LevelRoIHeads.from_roi_heads(model.roi_heads),
            FixedSizeTransform.from_transform(model.transform),
        )
        new._check_levels(level_names)
        return new

    def _check_levels(self, level_names: Sequence[str]) -> None:
        if len(level_names) != len(self.rpn.anchor_generator.sizes):
            raise ValueError(
                f"level_names has {len(level_names)} entries but the RPN anchor generator has "
                f"{len(self.rpn.anchor_generator.sizes)} levels"
            )
        self._init_levels(level_names, self.roi_heads.box_predictor.cls_score.out_features - 1)

    def _candidates_from_features(
        self, images: ImageList, features: OrderedDict[str, Tensor]
    ) -> list[dict[str, Tensor]]:
        # The eval branch of torchvision's GeneralizedRCNN forward, RoI heads stopped before NMS.
        proposals, _ = self.rpn(images, features)
        return self.roi_heads.candidates_from_features(features, proposals, images.image_sizes)

    def _nms_settings(self) -> tuple[float, int]:
        return float(self.roi_heads.nms_thresh), int(self.roi_heads.detections_per_img)
