"""Shared helpers of the level-aware detectors: level bookkeeping, per-box losses, target checks.

Every family splits its loss the same way: each loss term is a sum over "samples" (anchors, FCOS
locations, RPN anchors, RoIs) divided by a normaliser that does not depend on the level. Computing the
per-sample terms once, dividing by torchvision's normaliser and summing them into bins by the level
each sample belongs to gives a ``[num_levels]`` tensor whose sum is torchvision's scalar (up to
floating-point summation order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from ._fixed_size import CachedAnchorGenerator, FixedSizeTransform

__all__ = [
    "DenseLevelLossMixin",
    "DenseTrainingBatch",
    "LevelLossMixin",
    "RecordsLevelSizes",
    "level_ids",
    "sum_by_level",
    "box_loss_per_box",
    "stack_matches",
    "check_targets",
    "group_norm_layer",
    "branch_layout",
]


def level_ids(sizes: Sequence[int], device: torch.device) -> Tensor:
    """Level index of every entry of a level-major concatenation with ``sizes[i]`` entries on level i.

    Args:
        sizes: number of entries (anchors / locations) per level, in concatenation order.
        device: device of the returned tensor.

    Returns:
        int64 tensor ``[sum(sizes)]`` holding 0 for the first ``sizes[0]`` entries, 1 for the next, ...
    """
    counts = torch.as_tensor(list(sizes), dtype=torch.int64, device=device)
    return torch.repeat_interleave(torch.arange(len(sizes), device=device), counts)


def sum_by_level(values: Tensor, levels: Tensor, num_levels: int) -> Tensor:
    """Differentiable bin sum: ``out[l] = sum(values[levels == l])``.

    Args:
        values: float tensor ``[M]`` of per-sample loss terms (already normalised).
        levels: int64 tensor ``[M]`` with entries in ``0..num_levels-1``.
        num_levels: length of the output.

    Returns:
        float tensor ``[num_levels]``; levels without samples hold an exact 0 (still in the graph).
    """
    out = values.new_zeros(num_levels)
    return out.index_add(0, levels, values)


def box_loss_per_box(
    loss_type: str,
    box_coder: Any,
    anchors: Tensor,
    matched_gt_boxes: Tensor,
    bbox_regression: Tensor,
    cnf: Optional[dict[str, float]] = None,
) -> Tensor:
    """torchvision's ``_box_loss`` (models/detection/_utils.py) without the final sum: one value per box.

    Args:
        loss_type: "l1", "smooth_l1", "giou", "diou" or "ciou" (the head's ``_loss_type``).
        box_coder: the head's ``BoxCoder``.
        anchors: ``[M, 4]`` anchors of the foreground samples.
        matched_gt_boxes: ``[M, 4]`` ground-truth boxes they are matched to.
        bbox_regression: ``[M, 4]`` predicted deltas.
        cnf: optional ``beta`` (smooth L1) / ``eps`` (IoU losses), as in torchvision.

    Returns:
        float tensor ``[M]``; its sum is torchvision's ``_box_loss`` for the same inputs.
    """
    if loss_type in ("l1", "smooth_l1"):
        target = box_coder.encode_single(matched_gt_boxes, anchors)
        if loss_type == "l1":
            return F.l1_loss(bbox_regression, target, reduction="none").sum(dim=-1)
        beta = cnf["beta"] if cnf is not None and "beta" in cnf else 1.0
        return F.smooth_l1_loss(bbox_regression, target, reduction="none", beta=beta).sum(dim=-1)
    if loss_type not in ("giou", "diou", "ciou"):
        raise ValueError(f"loss_type must be one of l1, smooth_l1, giou, diou, ciou; got {loss_type!r}")
    pred_boxes = box_coder.decode_single(bbox_regression, anchors)
    eps = cnf["eps"] if cnf is not None and "eps" in cnf else 1e-7
    fn = {"giou": generalized_box_iou_loss, "diou": distance_box_iou_loss, "ciou": complete_box_iou_loss}[loss_type]
    return fn(pred_boxes, matched_gt_boxes, reduction="none", eps=eps)


def stack_matches(
    targets: Sequence[dict[str, Tensor]], matched_idxs: Sequence[Tensor]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Batch the per-image matcher outputs of a dense detector.

    Args:
        targets: per-image dicts with "boxes" ``[G_i, 4]`` and "labels" ``[G_i]``.
        matched_idxs: per-image int64 ``[A]`` (same A for every image of a padded batch): index of the
            matched ground truth, or a negative Matcher code (-1 background, -2 ignored).

    Returns:
        ``(matched [N, A], gt_index [N, A], all_boxes [G, 4], all_labels [G])`` where ``gt_index`` is the
        index into the concatenated ground truth of the batch (garbage where ``matched < 0``).
    """
    matched = torch.stack(list(matched_idxs))
    counts = [int(t["labels"].numel()) for t in targets]
    offsets = torch.as_tensor([0] + counts[:-1], dtype=torch.int64, device=matched.device).cumsum(0)
    gt_index = (matched.clamp(min=0) + offsets[:, None]).clamp(max=max(sum(counts) - 1, 0))
    all_boxes = torch.cat([t["boxes"] for t in targets])
    all_labels = torch.cat([t["labels"] for t in targets])
    return matched, gt_index, all_boxes, all_labels


def check_targets(images: Any, targets: Any, num_object_classes: int) -> None:
    """Raise a ValueError naming the problem when a training batch is malformed.

    Checks what torchvision would either assert on with a less helpful message or silently get wrong:
    one target per image, float boxes ``[N, 4]`` in xyxy with x2 > x1 and y2 > y1, finite coordinates,
    int64 labels ``[N]`` in ``1..num_object_classes`` (0 is background and never a ground-truth label).
    """
    _check_batch_layout(images, targets)
    # One vectorised test for the whole batch keeps the hot path cheap; the search below only runs on failure.
    boxes = torch.cat([t["boxes"] for t in targets])
    labels = torch.cat([t["labels"] for t in targets])
    if boxes.numel() == 0:
        return
    if bool((_bad_labels(labels, num_object_classes) | _bad_boxes(boxes)).any()):
        _raise_first_bad_value(targets, num_object_classes)


def _bad_labels(labels: Tensor, num_object_classes: int) -> Tensor:
    return (labels < 1) | (labels > num_object_classes)


def _bad_boxes(boxes: Tensor) -> Tensor:
    return ~torch.isfinite(boxes).all(dim=1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])


def _check_batch_layout(images: Any, targets: Any) -> None:
    """One target per image, each a dict of a float ``[N, 4]`` boxes tensor and an int64 ``[N]`` labels tensor."""
    if targets is None:
        raise ValueError("targets must be given in training mode (a list of dicts with 'boxes' and 'labels')")
    if not isinstance(images, (list, tuple)) or not all(isinstance(im, Tensor) and im.dim() == 3 for im in images):
        raise ValueError("images must be a list of float tensors [3, H, W] with values in 0..1")
    if not isinstance(targets, (list, tuple)) or len(targets) != len(images):
        n = len(targets) if isinstance(targets, (list, tuple)) else type(targets).__name__
        raise ValueError(f"targets must be a list with one dict per image ({len(images)} images), got {n}")
    for i, t in enumerate(targets):
        _check_target_layout(t, i)


def _check_target_layout(t: Any, i: int) -> None:
    if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
        raise ValueError(f"targets[{i}] must be a dict with 'boxes' and 'labels'")
    boxes, labels = t["boxes"], t["labels"]
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4 or not boxes.is_floating_point():
        shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"targets[{i}]['boxes'] must be a float tensor [N, 4] (xyxy pixels), got {shape}")
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or labels.shape != boxes.shape[:1]:
        what = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(
            f"targets[{i}]['labels'] must be an int64 tensor [{boxes.shape[0]}] matching the boxes, got {what}"
        )


def _raise_first_bad_value(targets: Sequence[dict[str, Tensor]], num_object_classes: int) -> None:
    """Raise a ValueError naming the first out-of-range label or invalid box, image by image."""
    for i, t in enumerate(targets):
        lab = t["labels"]
        bl = _bad_labels(lab, num_object_classes)
        if bool(bl.any()):
            j = int(torch.nonzero(bl)[0])
            raise ValueError(
                f"targets[{i}]['labels'][{j}] = {int(lab[j])} is out of range: labels must be in "
                f"1..{num_object_classes} (num_classes={num_object_classes}; 0 is background)"
            )
        b = t["boxes"]
        bb = _bad_boxes(b)
        if bool(bb.any()):
            j = int(torch.nonzero(bb)[0])
            raise ValueError(
                f"targets[{i}]['boxes'][{j}] = {b[j].tolist()} is invalid: boxes must be finite xyxy "
                "with x2 > x1 and y2 > y1"
            )


def _check_resized_boxes(targets: Sequence[dict[str, Tensor]]) -> None:
    """torchvision's degenerate-box check after its transform resized the batch (one vectorised test)."""
    boxes = torch.cat([t["boxes"] for t in targets])
    if boxes.numel() and bool((boxes[:, 2:] <= boxes[:, :2]).any()):
        raise ValueError("a box became degenerate (x2 <= x1 or y2 <= y1) when the transform resized its image")


class LevelLossMixin:
    """Adds ``level_names``, ``num_levels`` and ``level_losses`` to a torchvision detector.

    Put it first in the bases (``class LevelRetinaNet(LevelLossMixin, RetinaNet)``). The detector's heads
    must be level-aware, i.e. their ``compute_loss`` returns ``[num_levels]`` tensors: then torchvision's
    own ``forward`` (transform, degenerate-box checks, matching, sampling) yields per-level losses, and
    ``forward`` in training mode sums them back into torchvision's scalar loss dict.
    """

    level_names: tuple[str, ...]
    num_object_classes: int

    def _init_levels(self, level_names: Sequence[str], num_object_classes: int) -> None:
        self.level_names = tuple(str(n) for n in level_names)
        self.num_object_classes = int(num_object_classes)

    @property
    def num_levels(self) -> int:
        """Number of pyramid levels the losses are split over (``len(level_names)``)."""
        return len(self.level_names)

    def level_losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Training losses split by pyramid level, from one forward pass.

        Args:
            images: list of float tensors ``[3, H, W]`` in 0..1.
            targets: one dict per image with "boxes" float ``[N, 4]`` (xyxy, pixels) and "labels" int64
                ``[N]`` in ``1..num_object_classes``.

        Returns:
            torchvision's loss dict (same keys) with every value a tensor ``[num_levels]`` (with grad)
            whose sum equals torchvision's scalar for that key.

        Raises:
            ValueError: the model is in eval mode, or the targets are malformed (named in the message).
        """
        if not self.training:  # type: ignore[attr-defined]
            raise ValueError("level_losses needs the model in training mode (call model.train() first)")
        check_targets(images, targets, self.num_object_classes)
        losses = super().forward(images, targets)  # type: ignore[misc]
        return dict(losses)

    def forward(self, images: list[Tensor], targets: Optional[list[dict[str, Tensor]]] = None) -> Any:
        """torchvision's forward: scalar loss dict in training mode, detections in eval mode."""
        if self.training:  # type: ignore[attr-defined]
            return {k: v.sum() for k, v in self.level_losses(images, targets).items()}  # type: ignore[arg-type]
        return super().forward(images, targets)  # type: ignore[misc]


class RecordsLevelSizes:
    """Level bookkeeping of a dense head (torchvision's RetinaNetHead / FCOSHead layout).

    Put it first in the bases (``class LevelFCOSHead(RecordsLevelSizes, FCOSHead)``). The head's
    ``forward`` is the only place that sees the feature maps, so it calls ``_record_level_sizes``;
    torchvision's detector ``forward`` calls ``compute_loss`` right after it in the same pass, with the
    anchors / locations concatenated in the same level order, and ``compute_loss`` calls ``_level_ids``.
    """

    # Class-level default: compute_loss before any forward fails the size check instead of an AttributeError.
    _level_sizes: tuple[int, ...] = ()

    def _record_level_sizes(self, x: Sequence[Tensor]) -> None:
        """Record the entries per level of feature maps ``x`` (H * W locations times anchors per location)."""
        a = self.classification_head.num_anchors  # type: ignore[attr-defined]
        self._level_sizes = tuple(int(f.shape[-2] * f.shape[-1] * a) for f in x)

    def _level_ids(self, head_outputs: dict[str, Tensor]) -> tuple[Tensor, int]:
        """``(levels, num_levels)`` for the last recorded forward: the level of every anchor / location.

        Raises:
            RuntimeError: ``head_outputs`` do not come from the features of the last ``forward``.
        """
        sizes = self._level_sizes
        cls_logits = head_outputs["cls_logits"]
        if sum(sizes) != cls_logits.shape[1]:
            raise RuntimeError(f"{type(self).__name__}.compute_loss must follow forward on the same features")
        return level_ids(sizes, cls_logits.device), len(sizes)


@dataclass
class DenseTrainingBatch:
    """A transformed training batch of a dense detector, with its anchors and matches once they are computed.

    Everything here depends on the images, the targets, the transform and the anchor / matching settings, never on
    the detector's weights: detectors of one recipe trained on the same batch share one (see
    :class:`detgym.train.VectorTrainer`).
    """

    images: ImageList
    targets: list[dict[str, Tensor]]
    anchors: Optional[list[Tensor]] = None
    matched_idxs: Optional[list[Tensor]] = None


class DenseLevelLossMixin(LevelLossMixin):
    """:class:`LevelLossMixin` for the one-stage detectors (RetinaNet, FCOS): one level per anchor-generator size.

    Their ``num_classes`` counts the spare background logit 0 (``build_detector`` passes object classes + 1), which
    post-processing never reports (``DenseCandidatesMixin.candidate_detections`` in ``_candidates.py`` leaves it
    out of the candidates).

    The training pass is torchvision's (transform, backbone, head, anchors, matching, loss) in two halves, so
    that several detectors can share the first one: :meth:`prepare_batch` (transform) and
    :meth:`batch_level_losses` (backbone, head, then the batch's anchors and matches, computed by the first
    detector that needs them, and the head's per-level losses). The family supplies ``match_targets``.
    """

    def _init_dense_levels(self, level_names: Sequence[str], num_classes: int) -> None:
        sizes = self.anchor_generator.sizes  # type: ignore[attr-defined]
        if len(level_names) != len(sizes):
            raise ValueError(
                f"level_names has {len(level_names)} entries but the anchor generator has {len(sizes)} levels"
            )
        self._init_levels(level_names, num_classes - 1)
        # fixed-size fast paths: anchors computed once per input size, no identity resize (bit-identical results)
        self.anchor_generator = CachedAnchorGenerator.from_generator(self.anchor_generator)  # type: ignore[assignment]
        self.transform = FixedSizeTransform.from_transform(self.transform)  # type: ignore[assignment]

    def match_targets(
        self, targets: list[dict[str, Tensor]], anchors: list[Tensor], num_anchors_per_level: list[int]
    ) -> list[Tensor]:  # pragma: no cover - abstract
        """Per image the matched ground-truth index of every anchor / location (negative: unmatched)."""
        raise NotImplementedError

    def level_losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        if not self.training:  # type: ignore[attr-defined]
            raise ValueError("level_losses needs the model in training mode (call model.train() first)")
        check_targets(images, targets, self.num_object_classes)
        return self.batch_level_losses(self.prepare_batch(images, targets))

    level_losses.__doc__ = LevelLossMixin.level_losses.__doc__

    def prepare_batch(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> DenseTrainingBatch:
        """The transformed batch (validate with :func:`check_targets` first, as :meth:`level_losses` does)."""
        image_list, transformed = self.transform(images, targets)  # type: ignore[attr-defined]
        if image_list.tensors.shape[-2:] != images[0].shape[-2:]:
            _check_resized_boxes(transformed)  # resizing can shrink a valid box to nothing (torchvision's check)
        return DenseTrainingBatch(image_list, transformed)

    def batch_level_losses(self, batch: DenseTrainingBatch) -> dict[str, Tensor]:
        """Per-level training losses on a batch from :meth:`prepare_batch` (of this or a same-recipe detector)."""
        features = self.backbone(batch.images.tensors)  # type: ignore[attr-defined]
        features = list(features.values()) if isinstance(features, dict) else [features]
        head_outputs = self.head(features)  # type: ignore[attr-defined]
        if batch.matched_idxs is None:
            batch.anchors = self.anchor_generator(batch.images, features)  # type: ignore[attr-defined]
            sizes = [f.size(2) * f.size(3) for f in features]
            batch.matched_idxs = self.match_targets(batch.targets, batch.anchors, sizes)
        head = self.head  # type: ignore[attr-defined]
        return dict(head.compute_loss(batch.targets, head_outputs, batch.anchors, batch.matched_idxs))

    @classmethod
    def _adopt_dense(cls, model: Any, level_names: Sequence[str], head: nn.Module, **settings: Any) -> Any:
        """The common part of ``from_torchvision`` for RetinaNet / FCOS.

        Loads ``model.head``'s weights into ``head`` (a level-aware head of the same layout) and builds ``cls``
        around ``model``'s backbone, anchor generator and transform with its score / NMS / top-k settings.

        Args:
            model: a torchvision RetinaNet or FCOS.
            level_names: one name per feature map.
            head: the re-wrapped head.
            **settings: the family's other constructor settings (e.g. ``proposal_matcher``).
        """
        head.load_state_dict(model.head.state_dict())
        new = cls(  # type: ignore[call-arg]
            model.backbone,
            head.classification_head.num_classes,
            level_names=level_names,
            anchor_generator=model.anchor_generator,
            head=head,
            score_thresh=model.score_thresh,
            nms_thresh=model.nms_thresh,
            detections_per_img=model.detections_per_img,
            topk_candidates=model.topk_candidates,
            **settings,
        )
        new.transform = FixedSizeTransform.from_transform(model.transform)
        return new


def group_norm_layer(groups: int) -> Callable[[int], nn.Module]:
    """``norm_layer`` factory for torchvision heads: ``GroupNorm(groups, channels)``."""
    return partial(nn.GroupNorm, groups)


def branch_layout(branch: nn.Module) -> tuple[int, int, Optional[Callable[[int], nn.Module]]]:
    """``(in_channels, num_convs, norm_layer)`` of the conv tower of a RetinaNet / FCOS head branch.

    Args:
        branch: a classification or regression branch with a ``conv`` tower (torchvision's
            ``Conv2dNormActivation`` blocks for RetinaNet, a flat conv-GroupNorm-ReLU sequence for FCOS).

    Returns:
        the tower's input width, its number of convolutions, and ``group_norm_layer(groups)`` or None (no norm).

    Raises:
        ValueError: the tower uses a norm other than one GroupNorm per convolution.
    """
    convs = [m for m in branch.conv.modules() if isinstance(m, nn.Conv2d)]
    # leaf modules only: Conv2dNormActivation is a container that holds the conv and the norm
    norms = [m for m in branch.conv.modules() if "Norm" in type(m).__name__ and not any(True for _ in m.children())]
    if not norms:
        return convs[0].in_channels, len(convs), None
    groups = {m.num_groups for m in norms if isinstance(m, nn.GroupNorm)}
    if len(norms) != len(convs) or len(groups) != 1 or not all(isinstance(m, nn.GroupNorm) for m in norms):
        names = sorted({type(m).__name__ for m in norms})
        raise ValueError(f"unsupported head layout: expected one GroupNorm per conv, found {names}")
    return convs[0].in_channels, len(convs), group_norm_layer(groups.pop())


# Matcher codes, named once so every family reads the same constants.
BELOW_LOW_THRESHOLD = det_utils.Matcher.BELOW_LOW_THRESHOLD
BETWEEN_THRESHOLDS = det_utils.Matcher.BETWEEN_THRESHOLDS
