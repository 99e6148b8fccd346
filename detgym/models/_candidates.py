"""Pre-NMS candidates, the model's own NMS, and pooled FPN embeddings for the level-aware detectors.

Every family splits torchvision's ``postprocess_detections`` into two steps:

1. ``candidate_detections``: what torchvision's post-processing would run NMS on (score threshold, per-level
   top-k, decoding, clipping for RetinaNet / FCOS; softmax, background removal, score threshold and the
   small-box filter for Faster R-CNN), sorted by score (descending, stable), with the row of the classification
   logits each candidate comes from;
2. :func:`nms_candidates`: torchvision's ``batched_nms`` with the model's ``nms_thresh``, then
   ``detections_per_img``.

``postprocess_detections`` (called by torchvision's own ``forward``) runs both, so ``model(images)`` and
``model.postprocess(model.candidates(images))`` agree exactly by construction.

Each candidate also carries "nms_order", its position in the sequence torchvision hands to ``batched_nms``
(level by level, top-k order within a level; proposal by proposal for Faster R-CNN). :func:`nms_candidates`
runs NMS in that order, so the result is torchvision's to the bit, including the order of exactly tied scores:
``batched_nms``'s CPU path for more than 1000 boxes re-sorts the kept boxes with an unstable sort, whose tie
order depends on the input order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

import torch
from torch import Tensor, nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import boxes as box_ops

__all__ = [
    "CandidatesMixin",
    "DenseCandidatesMixin",
    "CANDIDATE_KEYS",
    "eval_mode",
    "nms_candidates",
    "sort_candidates",
]

# Per-candidate entries of a candidates dict (each indexed along dim 0); "class_logits" is per image.
CANDIDATE_KEYS = ("boxes", "scores", "labels", "logit_index", "nms_boxes", "nms_order")


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put ``module`` (all of it) in eval mode for the block, then give every submodule its own mode back.

    Restoring module by module (rather than ``module.train(previous)``) keeps mixed settings intact, e.g.
    BatchNorm layers a fine-tuning loop holds in eval mode inside a model in training mode.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def sort_candidates(candidates: dict[str, Tensor], max_candidates: Optional[int] = None) -> dict[str, Tensor]:
    """Order one image's candidates by score, descending and stable, and keep the first ``max_candidates``.

    Args:
        candidates: dict with "scores" ``[K]`` and any of :data:`CANDIDATE_KEYS` (indexed along dim 0);
            other entries (e.g. "class_logits") are passed through untouched.
        max_candidates: keep at most this many (all when None).

    Returns:
        a new dict with the same keys.
    """
    order = torch.sort(candidates["scores"], descending=True, stable=True).indices
    if max_candidates is not None:
        order = order[:max_candidates]
    return {k: (v[order] if k in CANDIDATE_KEYS else v) for k, v in candidates.items()}


def nms_candidates(candidates: dict[str, Tensor], nms_thresh: float, detections_per_img: int) -> dict[str, Tensor]:
    """torchvision's last post-processing step on one image's candidates.

    Class-wise NMS (``torchvision.ops.batched_nms``) with IoU threshold ``nms_thresh``, then the first
    ``detections_per_img`` kept boxes. NMS runs on "nms_boxes" when present (the boxes in the coordinates of
    the model's input, where torchvision runs it), else on "boxes", and visits the candidates in "nms_order"
    when present (torchvision's order, see the module docstring), else in the given order.

    Args:
        candidates: dict with "boxes" ``[K, 4]``, "scores" ``[K]``, "labels" ``[K]``, optionally "nms_boxes"
            ``[K, 4]`` and "nms_order" int64 ``[K]`` (distinct values).
        nms_thresh: IoU above which a lower-scored box of the same label is suppressed.
        detections_per_img: maximum number of detections.

    Returns:
        ``{"boxes", "scores", "labels"}`` of the kept candidates, score descending (as torchvision orders them).
    """
    boxes = candidates["boxes"]
    scores = candidates["scores"]
    labels = candidates["labels"]
    nms_boxes = candidates.get("nms_boxes", boxes)
    order = candidates.get("nms_order")
    if order is None:
        keep = box_ops.batched_nms(nms_boxes, scores, labels, nms_thresh)
    else:
        perm = torch.argsort(order)
        keep = perm[box_ops.batched_nms(nms_boxes[perm], scores[perm], labels[perm], nms_thresh)]
    keep = keep[:detections_per_img]
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def _check_images(images: object) -> None:
    if not isinstance(images, (list, tuple)) or not all(isinstance(im, Tensor) and im.dim() == 3 for im in images):
        raise ValueError("images must be a list of float tensors [3, H, W] with values in 0..1")


class CandidatesMixin:
    """``candidates``, ``postprocess``, ``embed`` and ``embed_dim`` for a torchvision detector.

    Put it first in the bases. The family supplies ``_candidates_from_features(images, features)`` (score-sorted
    candidates in the coordinates of the transformed images, with "class_logits") and ``_nms_settings()``
    (``(nms_thresh, detections_per_img)``); everything else is shared.
    """

    transform: nn.Module
    backbone: nn.Module
    num_levels: int

    # -- family hooks -------------------------------------------------------------------------------------

    def _candidates_from_features(
        self, images: ImageList, features: OrderedDict[str, Tensor]
    ) -> list[dict[str, Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _nms_settings(self) -> tuple[float, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------------------

    def _features(self, images: Sequence[Tensor]) -> tuple[ImageList, OrderedDict[str, Tensor]]:
        """The model's transform and backbone, as in torchvision's ``forward``."""
        image_list, _ = self.transform(list(images))
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        return image_list, features

    def candidates(self, images: list[Tensor], max_candidates: Optional[int] = None) -> list[dict[str, Tensor]]:
        """The scored, class-labelled boxes that the model's post-processing runs NMS on, per image.

        Runs the model as in eval mode (a model in training mode is switched for the call and every module gets
        its mode back afterwards). Gradients flow into "class_logits" when grad is enabled.

        Args:
            images: list of float tensors ``[3, H, W]`` in 0..1 (any sizes; the model's transform resizes them).
            max_candidates: keep the highest-scored ``max_candidates`` per image (all when None).

        Returns:
            one dict per image, candidates sorted by score (descending, stable):

            * "boxes": float ``[K, 4]`` xyxy in the original image's pixels (as ``model(images)`` reports them);
            * "scores": ``[K]``; "labels": int64 ``[K]`` in ``1..num_classes`` (never background);
            * "logit_index": int64 ``[K]``, the row of "class_logits" that produced the score (RetinaNet / FCOS:
              the anchor / location index over the concatenated levels; Faster R-CNN: the proposal index);
            * "class_logits": the image's classification logits ``[A, C]`` (RetinaNet / FCOS: per anchor /
              location, sigmoid outputs; Faster R-CNN: per proposal, softmax over C including background 0),
              so ``class_logits[logit_index, labels]`` are the candidates' logits;
            * "nms_boxes": ``[K, 4]`` the same boxes in the coordinates of the model's input (the transformed
              image), where the model runs NMS, and "nms_order": int64 ``[K]``, the position of each candidate in
              the sequence torchvision's post-processing passes to NMS; :meth:`postprocess` uses both.

            Without ``max_candidates``, ``postprocess(candidates(images))`` equals ``model(images)`` exactly. With it,
            ``postprocess`` gives the model's detections that lie among the kept candidates (NMS visits boxes in
            score order, so dropping the lowest-scored ones changes no earlier decision), up to borderline IoU
            rounding where ``batched_nms`` switches implementation at 1000 boxes on the CPU.

        Raises:
            ValueError: images are not a list of ``[3, H, W]`` tensors, or ``max_candidates`` is not a positive int.
        """
        _check_images(images)
        if max_candidates is not None and (
            isinstance(max_candidates, bool) or not isinstance(max_candidates, int) or max_candidates < 1
        ):
            raise ValueError(f"max_candidates must be a positive int or None, got {max_candidates!r}")
        original_sizes = [(int(im.shape[-2]), int(im.shape[-1])) for im in images]
        with eval_mode(self):  # type: ignore[arg-type]
            image_list, features = self._features(images)
            result = self._candidates_from_features(image_list, features)
            result = [sort_candidates(c, max_candidates) if max_candidates is not None else c for c in result]
            for c in result:
                c["nms_boxes"] = c["boxes"]
            # torchvision's own rescaling to the original sizes (it only replaces "boxes").
            result = self.transform.postprocess(result, image_list.image_sizes, original_sizes)
        return result

    def postprocess(self, candidates: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """The model's NMS and ``detections_per_img`` cut applied to :meth:`candidates` output.

        Args:
            candidates: per-image dicts with "boxes", "scores", "labels", and optionally "nms_boxes" and
                "nms_order" (see :meth:`candidates` and :func:`nms_candidates`); any subset of a candidates dict's
                rows in any order is accepted.

        Returns:
            per-image ``{"boxes", "scores", "labels"}``: for the full output of :meth:`candidates` exactly what
            ``model(images)`` returns in eval mode.
        """
        nms_thresh, detections_per_img = self._nms_settings()
        return [nms_candidates(c, nms_thresh, detections_per_img) for c in candidates]

    @property
    def embed_dim(self) -> int:
        """Length of :meth:`embed` vectors: ``backbone.out_channels * num_levels`` (FPN width x pyramid levels)."""
        return int(self.backbone.out_channels) * int(self.num_levels)

    def embed(self, images: list[Tensor]) -> Tensor:
        """One fixed-length vector per image: the global average of every FPN map the heads see.

        Each image goes through the model's transform (normalisation, resize, padding to the size divisor) and
        backbone (FPN, and the ResFPN blocks when present) in eval mode without gradients; every level's map is
        averaged over its height and width (padding included, as the heads see it) and the levels are
        concatenated in pyramid order: ``D = embed_dim = fpn_out_channels * num_levels``, e.g. 64 * 5 = 320 for
        the tiny backbones, 256 * 5 = 1280 for ResNet-50 and the one-stage mobilenet_v3 detectors, 256 * 3 = 768
        for Faster R-CNN mobilenet_v3. Images are batched only with images of the same size, so an image's
        vector does not depend on the other images of the call (beyond floating-point batching effects).
        The model's train / eval mode is restored afterwards.

        Args:
            images: list of float tensors ``[3, H, W]`` in 0..1.

        Returns:
            float tensor ``[len(images), embed_dim]`` (no grad).
        """
        _check_images(images)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, im in enumerate(images):
            groups.setdefault(tuple(im.shape), []).append(i)
        out: Optional[Tensor] = None
        with torch.no_grad(), eval_mode(self):  # type: ignore[arg-type]
            for idx in groups.values():
                _, features = self._features([images[i] for i in idx])
                if len(features) != self.num_levels:
                    raise RuntimeError(
                        f"backbone returned {len(features)} maps but the model has {self.num_levels} levels"
                    )
                vec = torch.cat([f.mean(dim=(-2, -1)) for f in features.values()], dim=1)
                if out is None:
                    out = vec.new_empty((len(images), vec.shape[1]))
                out[torch.as_tensor(idx, device=vec.device)] = vec
        if out is None:
            return torch.empty((0, self.embed_dim))
        return out


class DenseCandidatesMixin(CandidatesMixin):
    """Candidates of the one-stage detectors (RetinaNet, FCOS): torchvision's per-level post-processing.

    The family supplies ``_level_scores(head_outputs, image, level) -> [A_l, K]`` (the per-class scores that the
    threshold and top-k see) and ``_decode_boxes(deltas, anchors) -> [M, 4]``. The background logit 0 (the
    spare output of :class:`~detgym.models._utils.DenseLevelLossMixin`) is never a candidate.
    """

    score_thresh: float
    nms_thresh: float
    detections_per_img: int
    topk_candidates: int
    head: nn.Module
    anchor_generator: nn.Module

    def _level_scores(
        self, head_outputs: dict[str, list[Tensor]], image: int, level: int
    ) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode_boxes(self, deltas: Tensor, anchors: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _nms_settings(self) -> tuple[float, int]:
        return float(self.nms_thresh), int(self.detections_per_img)

    def candidate_detections(
        self, head_outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """torchvision's ``postprocess_detections`` up to NMS, per image, sorted by score.

        Per level: scores above ``score_thresh`` (background logit 0 excluded), the ``topk_candidates`` best,
        decoded and clipped to the (transformed) image; levels concatenated, then sorted (descending, stable).

        Args:
            head_outputs: head outputs split by level (lists of ``[N, A_l, ...]``), as torchvision passes them.
            anchors: per image, per level ``[A_l, 4]``.
            image_shapes: transformed image sizes ``(h, w)``.

        Returns:
            per image ``{"boxes", "scores", "labels", "logit_index", "nms_order"}`` in transformed-image
            coordinates, where "logit_index" indexes the image's logits concatenated over levels and "nms_order"
            is the position in torchvision's level-by-level concatenation.
        """
        box_regression = head_outputs["bbox_regression"]
        out: list[dict[str, Tensor]] = []
        for index, image_shape in enumerate(image_shapes):
            anchors_per_image = anchors[index]
            image_boxes, image_scores, image_labels, image_rows = [], [], [], []
            offset = 0
            for level, anchors_per_level in enumerate(anchors_per_image):
                scores = self._level_scores(head_outputs, index, level)
                num_classes = scores.shape[-1]
                keep = scores > self.score_thresh
                keep[:, 0] = False  # background logit: never a detection
                scores_per_level = scores.flatten()[keep.flatten()]
                topk_idxs = torch.where(keep.flatten())[0]
                num_topk = det_utils._topk_min(topk_idxs, self.topk_candidates, 0)
                scores_per_level, idxs = scores_per_level.topk(num_topk)
                topk_idxs = topk_idxs[idxs]
                anchor_idxs = torch.div(topk_idxs, num_classes, rounding_mode="floor")
                labels_per_level = topk_idxs % num_classes
                boxes_per_level = self._decode_boxes(
                    box_regression[level][index][anchor_idxs], anchors_per_level[anchor_idxs]
                )
                image_boxes.append(box_ops.clip_boxes_to_image(boxes_per_level, image_shape))
                image_scores.append(scores_per_level)
                image_labels.append(labels_per_level)
                image_rows.append(anchor_idxs + offset)
                offset += int(anchors_per_level.shape[0])
            rows = torch.cat(image_rows, dim=0)
            candidates = {
                "boxes": torch.cat(image_boxes, dim=0),
                "scores": torch.cat(image_scores, dim=0),
                "labels": torch.cat(image_labels, dim=0),
                "logit_index": rows,
                "nms_order": torch.arange(rows.numel(), device=rows.device),
            }
            out.append(sort_candidates(candidates))
        return out

    def postprocess_detections(
        self, head_outputs: dict[str, list[Tensor]], anchors: list[list[Tensor]], image_shapes: list[tuple[int, int]]
    ) -> list[dict[str, Tensor]]:
        """torchvision's post-processing as :meth:`candidate_detections` + :func:`nms_candidates` (labels >= 1)."""
        nms_thresh, detections_per_img = self._nms_settings()
        return [
            nms_candidates(c, nms_thresh, detections_per_img)
            for c in self.candidate_detections(head_outputs, anchors, image_shapes)
        ]

    def _candidates_from_features(
        self, images: ImageList, features: OrderedDict[str, Tensor]
    ) -> list[dict[str, Tensor]]:
        # The eval branch of torchvision's RetinaNet / FCOS forward (head, anchors, split by level).
        maps = list(features.values())
        head_outputs = self.head(maps)
        anchors = self.anchor_generator(images, maps)
        hw = [int(x.size(2) * x.size(3)) for x in maps]
        per_location = head_outputs["cls_logits"].size(1) // sum(hw)
        sizes = [n * per_location for n in hw]
        split = {k: list(v.split(sizes, dim=1)) for k, v in head_outputs.items()}
        split_anchors = [list(a.split(sizes)) for a in anchors]
        result = self.candidate_detections(split, split_anchors, images.image_sizes)
        for i, c in enumerate(result):
            c["class_logits"] = head_outputs["cls_logits"][i]
        return result
