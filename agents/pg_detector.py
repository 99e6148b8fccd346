"""The policy-gradient detector of paper 001 (Rao et al., CVPR 2018): fine-tuning with eq. 10-11, Algorithm 1.

Paper 001 treats the choice of final boxes as an action and the image's COCO AP as its reward, and turns REINFORCE
into a re-weighted cross-entropy on every detection candidate ``b`` (eq. 10-11)::

    dL/dx = ((r(b) - r') + gamma) (p_b - 1)

where ``x`` is the softmax input of ``b``'s class, ``p_b`` its score (eq. 7: the detector's class of ``b`` is taken
as its ground-truth class), ``r(b)`` the reward of the sampled box sets that contain ``b`` (eq. 8), ``r'`` the AP of
the NMS result (eq. 9's baseline) and ``gamma`` the weight of the ordinary cross-entropy (eq. 10). Box regression
keeps its smooth-L1 loss (Algorithm 1, step 7).

:class:`PolicyGradientDetector` wraps a trained detgym detector so that its ``level_losses`` (what
:class:`detgym.train.Trainer` minimises) are those of Algorithm 1, computed from the *same* forward pass as the
standard losses (forward hooks read the transformed targets, the training RoIs / anchors and their logits), which
is why an iteration costs about what a standard one costs (the paper: "brings no computational overhead"):

1. the standard forward: RPN and RoI (or dense head) losses, torchvision's sampling (steps 3-5);
2. candidates (step 6): the training RoIs' (anchors') detections, decoded exactly as at inference
   (``candidate_detections`` of the detector: softmax / sigmoid, score threshold, background removed), and greedy
   NMS on them at the detector's own IoU (paper: 0.5);
3. per image, ``k`` keep-sets sampled with keep probability ``p_b`` (one ``torch.rand`` under the trainer's seed),
   their rewards and the baseline ``r'`` (the NMS keep-set) against the image's ground truth in the same
   (transformed) coordinates: the image's COCO AP from ONE ``detgym.metrics.image_ap`` call with a ``[k + 1, N]``
   mask (``reward="image_ap"``, the paper's), or DetBoxSelect-v1's pool reward with the batch as the pool
   (``reward="pool_ap"``: COCO AP over the batch's images, the others with their NMS results, so a duplicate that
   outranks another image's true positive and a box of a class absent from the image cost precision; r' = 0);
4. advantages ``A_b = r(b) - r'``, 0 for the boxes NMS keeps ("rewards of boxes already selected set to zero") and
   for boxes no sample contained; ``r(b)`` is the mean AP of the sampled sets that contain ``b``
   (``estimator="conditional"``, E[r | b in a]: the reading under which "boxes with higher IoU than the
   selected ones get positive rewards", as the paper says) or the literal Monte-Carlo form of eq. 8,
   ``(1/k) sum_j r(a_j) 1{b in a_j}`` (``estimator="eq8"``);
5. loss: the standard losses with the classification term scaled by ``gamma``, plus
   ``loss_policy = sum_b A_b CE_b / normaliser``; a candidate whose class is its RoI's ground-truth label thus gets
   the per-box weight ``A_b + gamma`` of eq. 10 on one cross-entropy, which is eq. 11's gradient.

Faster R-CNN (softmax head, the paper's detector): ``CE_b`` is the softmax cross-entropy of the candidate's RoI on
its class, normalised by the sampled RoIs like torchvision's ``loss_classifier``. RetinaNet / FCOS (sigmoid heads):
``CE_b = -log sigmoid(x_b)`` of the candidate's anchor / location and class (the analogous per-box term; FCOS's
centerness is left to its own loss), normalised per image by its number of ground-truth boxes and averaged over the
batch; ``gamma`` scales their ``classification`` loss.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import batched_nms

from detgym._validation import check_choice
from detgym.metrics import image_ap
from detgym.metrics.pool_ap import PoolAP
from detgym.models._utils import level_ids, sum_by_level

__all__ = ["ESTIMATORS", "PG_REWARDS", "PGConfig", "PolicyGradientDetector", "policy_advantages", "sample_keep_sets"]

#: Estimators of r(b) (eq. 8).
ESTIMATORS: tuple[str, ...] = ("conditional", "eq8")
#: Rewards r(a) of a sampled keep-set (``PGConfig.reward``).
PG_REWARDS: tuple[str, ...] = ("image_ap", "pool_ap")


@dataclass(frozen=True)
class PGConfig:
    """Settings of the policy-gradient fine-tuning (paper 001's values as defaults)."""

    #: Weight of the ordinary cross-entropy (eq. 10; the paper's gamma = 1, and gamma = 0 in its ablation).
    gamma: float = 1.0
    #: Keep-sets sampled per image (sec. 3.3: k = 10).
    k: int = 10
    #: ``"conditional"``: r(b) = mean AP of the sampled sets containing b; ``"eq8"``: (1/k) sum_j r(a_j) 1{b in a_j}.
    estimator: str = "conditional"
    #: IoU of the NMS behind the baseline r' (``None``: the detector's own ``nms_thresh``, 0.5 as in the paper).
    nms_iou: float | None = None
    #: ``"image_ap"``: r(a) = the image's COCO AP (eq. 5, the paper's; DetBoxSelect-v0's reward); ``"pool_ap"``:
    #: DetBoxSelect-v1's reward with the batch as the pool: ``B * (AP(batch, image's boxes a) - AP(batch, its NMS
    #: boxes))``, COCO AP over the batch's B images with the others' NMS results (so r' = 0).
    reward: str = "image_ap"

    def __post_init__(self) -> None:
        if isinstance(self.k, bool) or not isinstance(self.k, int) or self.k < 1:
            raise ValueError(f"k must be an integer >= 1 (paper 001: 10), got {self.k!r}")
        if not isinstance(self.gamma, (int, float)) or not np.isfinite(self.gamma) or self.gamma < 0:
            raise ValueError(f"gamma must be a finite number >= 0 (paper 001: 1), got {self.gamma!r}")
        check_choice("estimator", self.estimator, ESTIMATORS)
        check_choice("reward", self.reward, PG_REWARDS)
        if self.nms_iou is not None and not 0.0 <= float(self.nms_iou) <= 1.0:
            raise ValueError(f"nms_iou must be in [0, 1] or None, got {self.nms_iou!r}")


def sample_keep_sets(scores: Tensor, k: int) -> np.ndarray:
    """``k`` keep-sets, each candidate kept independently with probability ``p_b`` = its score: bool ``[k, N]``.

    Draws from torch's global generator (inside :class:`detgym.train.Trainer` that is the trainer's own seeded one).
    """
    return (torch.rand((k, scores.shape[0])) < scores.detach().float().cpu()[None, :]).numpy()


def policy_advantages(rewards: np.ndarray, keep: np.ndarray, baseline: float, nms_keep: np.ndarray,
                      estimator: str = "conditional") -> np.ndarray:
    """``A_b = r(b) - r'`` of every candidate (eq. 8-9), 0 where NMS keeps ``b`` or no sample contains it.

    Args:
        rewards: float ``[k]``, the AP of each sampled keep-set.
        keep: bool ``[k, N]``, the sampled keep-sets.
        baseline: ``r'``, the AP of the NMS result.
        nms_keep: bool ``[N]``, the boxes NMS keeps.
        estimator: ``"conditional"`` (mean reward of the sets containing b) or ``"eq8"`` (sum over the sets
            containing b, divided by k).

    Returns:
        float64 ``[N]``.
    """
    keep = np.asarray(keep, dtype=bool)
    counts = keep.sum(axis=0)
    total = np.asarray(rewards, dtype=np.float64) @ keep
    if estimator == "conditional":
        r_b = np.divide(total, counts, out=np.full(keep.shape[1], float(baseline)), where=counts > 0)
    elif estimator == "eq8":
        r_b = total / keep.shape[0]
    else:
        raise ValueError(f"estimator must be one of {', '.join(map(repr, ESTIMATORS))}; got {estimator!r}")
    advantage = r_b - float(baseline)
    advantage[np.asarray(nms_keep, dtype=bool) | (counts == 0)] = 0.0
    return advantage


_Image = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _as_numpy(cand: dict[str, Tensor], target: dict[str, Tensor]) -> _Image:
    """An image's candidates (boxes, scores, labels) and ground truth (boxes, labels) as float64 / int64 arrays."""
    return (cand["boxes"].detach().double().cpu().numpy(), cand["scores"].detach().double().cpu().numpy(),
            cand["labels"].cpu().numpy().astype(np.int64), target["boxes"].detach().double().cpu().numpy(),
            target["labels"].cpu().numpy().astype(np.int64))


def _image_rewards(data: list[_Image], sampled: list[np.ndarray | None],
                   nms_keeps: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
    """Per image, the sampled keep-sets' rewards and the NMS baseline r': the image's COCO AP (eq. 5), one
    ``image_ap`` call with the ``[k + 1, N]`` masks."""
    out = []
    for (boxes, scores, labels, gt_boxes, gt_labels), keep, nms_keep in zip(data, sampled, nms_keeps):
        if keep is None:
            out.append((np.zeros(0), 0.0))
            continue
        ap = image_ap(boxes, scores, labels, gt_boxes, gt_labels, np.concatenate([keep, nms_keep[None]]))
        out.append((ap[:-1], float(ap[-1])))
    return out


def _pool_rewards(data: list[_Image], sampled: list[np.ndarray | None],
                  nms_keeps: list[np.ndarray]) -> list[tuple[np.ndarray, float]]:
    """Per image, the sampled keep-sets' rewards with the batch as the pool (DetBoxSelect-v1's reward): ``B *
    (AP_P(a) - AP_P(NMS_i))``, COCO AP over the batch's ``B`` images with the other images' NMS results
    (:class:`detgym.metrics.PoolAP`); the baseline r' is 0."""
    n = len(data)
    counts = np.array([d[1].shape[0] for d in data], dtype=np.int64)
    n_max = max(1, int(counts.max(initial=0)))
    boxes, scores = np.zeros((n, n_max, 4)), np.zeros((n, n_max))
    labels, reference = np.ones((n, n_max), dtype=np.int64), np.zeros((n, n_max), dtype=bool)
    for i, ((b, sc, lab, _, _), nms_keep) in enumerate(zip(data, nms_keeps)):
        boxes[i, :b.shape[0]], scores[i, :b.shape[0]], labels[i, :b.shape[0]] = b, sc, lab
        reference[i, :b.shape[0]] = nms_keep
    gt_boxes = np.concatenate([d[3].reshape(-1, 4) for d in data])
    gt_labels = np.concatenate([d[4] for d in data])
    offsets = np.concatenate([[0], np.cumsum([d[4].shape[0] for d in data])]).astype(np.int64)
    num_classes = int(max(labels.max(initial=1), gt_labels.max(initial=1)))
    pool = PoolAP(boxes, scores, labels, counts, gt_boxes, gt_labels, np.zeros(gt_labels.shape[0], dtype=bool),
                  offsets, np.arange(n), num_classes, np.arange(n), reference)
    out = []
    for i, keep in enumerate(sampled):
        if keep is None:
            out.append((np.zeros(0), 0.0))
            continue
        padded = np.zeros((keep.shape[0], n_max), dtype=bool)
        padded[:, :keep.shape[1]] = keep
        _, delta = pool(np.full(keep.shape[0], i, dtype=np.int64), padded)
        out.append((n * delta, 0.0))
    return out


@contextlib.contextmanager
def _capture(points: dict[str, tuple[nn.Module, str]]) -> Iterator[dict[str, Any]]:
    """Record the inputs (``"args"``) or outputs (``"output"``) of some modules during one forward pass."""
    seen: dict[str, Any] = {}

    def hook(name: str, what: str):
        def fn(module: nn.Module, args: Any, output: Any) -> None:
            seen[name] = args if what == "args" else output

        return fn

    handles = [module.register_forward_hook(hook(name, what)) for name, (module, what) in points.items()]
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


class PolicyGradientDetector(nn.Module):
    """A detgym detector whose training losses are paper 001's Algorithm 1 (see the module docstring).

    Hand it to :class:`detgym.train.Trainer` (or ``LoadedSubstrate.build_trainer(..., model=...)``) in place of the
    detector: the trainer's optimiser, schedule, batches and seeds stay the same as for standard fine-tuning, only
    the loss changes. In eval mode it is the detector (``forward``, ``candidates``, ``postprocess``); after training,
    :attr:`detector` is the fine-tuned detector itself.

    Args:
        detector: a detgym Faster R-CNN, RetinaNet or FCOS (from ``build_detector``), usually trained already.
        config: :class:`PGConfig`.

    ``last_stats`` holds the last iteration's mean sampled reward, NMS baseline and absolute advantage (for logs).
    """

    def __init__(self, detector: nn.Module, config: PGConfig | None = None) -> None:
        super().__init__()
        has_candidates = hasattr(detector, "candidate_detections") or hasattr(
            getattr(detector, "roi_heads", None), "candidate_detections")
        if not (hasattr(detector, "level_losses") and has_candidates):
            raise ValueError("detector must be a detgym Faster R-CNN, RetinaNet or FCOS (detgym.models.build_detector)")
        self.detector = detector
        self.config = config or PGConfig()
        self.two_stage = hasattr(getattr(detector, "roi_heads", None), "candidate_detections")
        self.last_stats: dict[str, float] = {}

    # ------------------------------------------------------------ the detector's interface
    @property
    def backbone(self) -> nn.Module:  # the Trainer's backbone learning-rate group
        return self.detector.backbone

    @property
    def num_levels(self) -> int:
        return int(self.detector.num_levels)

    @property
    def level_names(self) -> tuple[str, ...]:
        return tuple(self.detector.level_names)

    def forward(self, images: list[Tensor], targets: Any = None) -> Any:
        return self.detector(images, targets)

    def candidates(self, images: list[Tensor], max_candidates: int | None = None) -> list[dict[str, Tensor]]:
        return self.detector.candidates(images, max_candidates)

    def postprocess(self, candidates: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        return self.detector.postprocess(candidates)

    # ---------------------------------------------------------------------- the losses
    def level_losses(self, images: list[Tensor], targets: list[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The detector's per-level losses with the classification term scaled by ``gamma``, plus ``loss_policy``
        (eq. 10-11), all ``[num_levels]`` tensors from one forward pass."""
        det = self.detector
        if self.two_stage:
            points = {"transform": (det.transform, "output"), "pool": (det.roi_heads.box_roi_pool, "args"),
                      "predictor": (det.roi_heads.box_predictor, "output")}
        else:
            points = {"transform": (det.transform, "output"), "head": (det.head, "args"),
                      "head_out": (det.head, "output"), "anchors": (det.anchor_generator, "output")}
        with _capture(points) as seen:
            losses = dict(det.level_losses(images, targets))
        cls_key = "loss_classifier" if self.two_stage else "classification"
        losses[cls_key] = losses[cls_key] * float(self.config.gamma)
        policy = self._two_stage_policy(seen) if self.two_stage else self._dense_policy(seen)
        losses["loss_policy"] = policy
        return losses

    def _advantages(self, cands: list[dict[str, Tensor]], targets: list[dict[str, Tensor]]) -> list[np.ndarray]:
        """Every candidate's advantage A_b, per image of the batch: k keep-sets sampled per image (in image order),
        their rewards and the NMS baseline (``reward``), then eq. 8-9. Records ``last_stats``."""
        cfg = self.config
        nms_iou, max_dets = self._nms_settings()
        data = [_as_numpy(cand, target) for cand, target in zip(cands, targets)]
        nms_keeps, sampled = [], []
        for cand in cands:
            boxes, scores, n = cand["boxes"].detach(), cand["scores"].detach(), int(cand["scores"].numel())
            nms_keep = np.zeros(n, dtype=bool)
            kept = batched_nms(boxes.float(), scores.float(), cand["labels"], nms_iou)[:max_dets]
            nms_keep[kept.cpu().numpy()] = True
            nms_keeps.append(nms_keep)
            sampled.append(sample_keep_sets(scores, cfg.k) if n else None)
        rewards = (_image_rewards if cfg.reward == "image_ap" else _pool_rewards)(data, sampled, nms_keeps)
        advantages, stats = [], []
        for keep, nms_keep, (r, baseline) in zip(sampled, nms_keeps, rewards):
            if keep is None:
                advantages.append(np.zeros(0))
                continue
            advantage = policy_advantages(r, keep, baseline, nms_keep, cfg.estimator)
            advantages.append(advantage)
            stats.append((float(r.mean()), float(baseline), float(np.abs(advantage).mean())))
        if stats:
            r, base, adv = np.mean(np.asarray(stats), axis=0)
            self.last_stats = {"sampled_reward": float(r), "nms_reward": float(base), "mean_abs_advantage": float(adv)}
        return advantages

    def _nms_settings(self) -> tuple[float, int]:
        own_iou, max_dets = self.detector._nms_settings()
        return (own_iou if self.config.nms_iou is None else float(self.config.nms_iou)), int(max_dets)

    def _two_stage_policy(self, seen: dict[str, Any]) -> Tensor:
        """Faster R-CNN: softmax cross-entropy of each candidate's RoI on its class, weighted by A_b / #RoIs."""
        det = self.detector
        heads = det.roi_heads
        _, targets = seen["transform"]
        features, proposals, image_shapes = seen["pool"]
        class_logits, box_regression = seen["predictor"]
        cands = heads.candidate_detections(class_logits.detach(), box_regression.detach(), proposals, image_shapes)
        levels = heads.roi_levels(features, proposals)
        offsets = np.cumsum([0] + [int(p.shape[0]) for p in proposals])
        advantages = self._advantages(cands, targets)
        rows, labels, weights = [], [], []
        for i, cand in enumerate(cands):
            if cand["scores"].numel() == 0:
                continue
            rows.append(cand["logit_index"] + int(offsets[i]))
            labels.append(cand["labels"])
            weights.append(advantages[i])
        if not rows:
            return class_logits.sum() * 0.0 + class_logits.new_zeros(self.num_levels)
        rows_t, labels_t = torch.cat(rows), torch.cat(labels)
        weight = torch.as_tensor(np.concatenate(weights), dtype=class_logits.dtype, device=class_logits.device)
        ce = F.cross_entropy(class_logits[rows_t], labels_t, reduction="none")
        return sum_by_level(weight * ce / max(1, class_logits.shape[0]), levels[rows_t], self.num_levels)

    def _dense_policy(self, seen: dict[str, Any]) -> Tensor:
        """RetinaNet / FCOS: -log sigmoid of each candidate's class logit, weighted by A_b / #GT, batch mean."""
        det = self.detector
        image_list, targets = seen["transform"]
        (maps,) = seen["head"]
        head_outputs, anchors = seen["head_out"], seen["anchors"]
        hw = [int(m.size(2) * m.size(3)) for m in maps]
        cls_logits = head_outputs["cls_logits"]
        per_location = cls_logits.size(1) // sum(hw)
        sizes = [n * per_location for n in hw]
        split = {k: list(v.detach().split(sizes, dim=1)) for k, v in head_outputs.items()}
        cands = det.candidate_detections(split, [list(a.split(sizes)) for a in anchors], image_list.image_sizes)
        level_of_row = level_ids(sizes, cls_logits.device)
        advantages = self._advantages(cands, targets)
        total = cls_logits.new_zeros(self.num_levels) + cls_logits.sum() * 0.0
        for i, cand in enumerate(cands):
            if cand["scores"].numel() == 0:
                continue
            weight = torch.as_tensor(advantages[i], dtype=cls_logits.dtype, device=cls_logits.device)
            x = cls_logits[i, cand["logit_index"], cand["labels"]]
            term = F.binary_cross_entropy_with_logits(x, torch.ones_like(x), reduction="none")
            n_gt = max(1, int(targets[i]["labels"].numel()))
            total = total + sum_by_level(weight * term / n_gt, level_of_row[cand["logit_index"]], self.num_levels)
        return total / max(1, len(cands))
