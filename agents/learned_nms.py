"""A supervised learned NMS (GossipNet's way): the reference a reinforcement-learned box selector should reach.

GossipNet (Hosang, Benenson and Schiele, "Learning non-maximum suppression", CVPR 2017) trains a network on the
detector's candidates to re-score them, with labels from matching the candidates to the ground truth in score order:
per object the highest-scored candidate that matches it is positive, the other candidates (duplicates, background)
negative. Here the labels are that match averaged over COCO's IoU thresholds .50:.05:.95 (pycocotools' greedy
matching per threshold: the best unmatched same-class GT with IoU >= t), so a candidate is worth more the better it
localises its object; the model is :mod:`detgym.agents.set_policy`'s set encoder (each candidate from its features
and a pooled summary of the image's others) with one logit per candidate, trained with a binary cross-entropy on
the train split's candidates (the env's own images and observation features), and it acts in the three
DetBoxSelect envs:

* ``DetBoxRescore``: the predicted label is the new score;
* ``DetBoxSelect``: keep the candidates whose predicted label is at least ``threshold``;
* ``DetBoxSelectSeq``: keep those one per step, highest prediction first, then stop.

``learn(total_timesteps)`` trains on ``total_timesteps`` images (drawn as epochs over the split, shuffled with the
agent's seed); it reads the ground truth of the env it was built with, so build it on the train split and evaluate it
on another.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from detgym.agents.base import Agent
from detgym.agents.box_heuristics import box_variant
from detgym.agents.set_policy import SetEncoder, SlotHead
from detgym.metrics._boxes import coco_iou_matrix
from detgym.metrics._cocoparams import MATCH_THRESHOLDS

__all__ = ["LearnedNMSAgent", "match_labels"]


def match_labels(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, gt_boxes: np.ndarray,
                 gt_labels: np.ndarray, gt_crowd: np.ndarray | None = None) -> np.ndarray:
    """Per candidate (one image, xyxy boxes), the fraction of COCO's IoU thresholds at which it is a true positive
    when every candidate is matched to the ground truth in score order (pycocotools' greedy rule; crowd GTs match
    nothing): float32 ``[N]``."""
    n, g = scores.shape[0], gt_labels.shape[0]
    out = np.zeros(n, dtype=np.float32)
    real = np.ones(g, dtype=bool) if gt_crowd is None else ~np.asarray(gt_crowd, dtype=bool)
    if n == 0 or not real.any():
        return out
    to_xywh = lambda b: np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)  # noqa: E731
    iou = coco_iou_matrix(to_xywh(boxes), to_xywh(gt_boxes), np.zeros(g, dtype=bool))
    iou[(labels[:, None] != gt_labels[None, :]) | ~real[None, :]] = -1.0
    matched = np.zeros((MATCH_THRESHOLDS.shape[0], g), dtype=bool)
    rows = np.arange(MATCH_THRESHOLDS.shape[0])
    for d in np.argsort(-scores, kind="stable"):
        cand = np.where(matched, -1.0, iou[d][None, :])
        # the last GT on IoU ties, as pycocotools
        best = g - 1 - np.argmax(cand[:, ::-1], axis=1)
        hit = cand[rows, best] >= MATCH_THRESHOLDS
        matched[rows[hit], best[hit]] = True
        out[d] = hit.mean()
    return out


class LearnedNMSAgent(Agent):
    """GossipNet-style supervised re-scorer of a DetBoxSelect env's candidates (module docstring).

    Args:
        env: the DetBoxSelect / Seq / Rescore env it learns from (its split's candidates and ground truth) and acts
            in (its variant and observation layout).
        seed: seed of the initialisation and the image order.
        hidden: width of the set encoder.
        attention_heads: self-attention heads between candidates (0: Deep Sets only).
        lr: Adam's learning rate.
        batch_size: images per gradient step.
        threshold: the keep threshold of the keep-mask and sequential variants.
    """

    def __init__(self, env: gym.Env, seed: int | None = 0, *, hidden: int = 64, attention_heads: int = 0,
                 lr: float = 1e-3, batch_size: int = 32, threshold: float = 0.5) -> None:
        variant = box_variant(env)
        if variant is None:
            raise ValueError(f"learned_nms acts in the DetBoxSelect envs, got {type(env.unwrapped).__name__}")
        if not 0.0 <= float(threshold) <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
        super().__init__(env.observation_space, env.action_space)
        base = env.unwrapped
        self.variant, self.table, self.n_max = variant, base.table, int(base.n_max)
        self.lr, self.batch_size, self.threshold = float(lr), int(batch_size), float(threshold)
        self.seed = 0 if seed is None else int(seed)
        layout = base.feature_layout
        self.n_features = int(layout["overlaps"].stop)  # the shared columns (Seq appends a "kept" column)
        with torch.random.fork_rng():
            torch.manual_seed(self.seed)
            self.encoder = SetEncoder(self.n_max, self.n_features, hidden, attention_heads,
                                      layout["valid"].start, layout["score"].start)
            self.head = SlotHead(self.n_max, hidden, "bernoulli")
        self.trained_images = 0
        self._labels: np.ndarray | None = None

    @classmethod
    def fits(cls, env: gym.Env) -> bool:
        return box_variant(env) is not None

    # ----------------------------------------------------------------------------------------- learning
    def labels(self) -> np.ndarray:
        """The training targets of the env's split: float32 ``[n_images, n_max]`` (:func:`match_labels`)."""
        if self._labels is None:
            t = self.table
            out = np.zeros((len(t), self.n_max), dtype=np.float32)
            for i in range(len(t)):
                c, g = t.candidates(i), t.ground_truth(i)
                out[i, :c["scores"].shape[0]] = match_labels(c["boxes"], c["scores"], c["labels"], g["boxes"],
                                                             g["labels"], g["crowd"])
            self._labels = out
        return self._labels

    def learn(self, total_timesteps: int, **kwargs: Any) -> "LearnedNMSAgent":
        """Train on ``total_timesteps`` images of the env's split (epochs of a seeded shuffle)."""
        if int(total_timesteps) < 1:
            raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps!r}")
        features = torch.as_tensor(self.table.features[..., :self.n_features])
        targets = torch.as_tensor(self.labels())
        valid = features[..., 0] > 0.5
        params = [*self.encoder.parameters(), *self.head.parameters()]
        optimizer = torch.optim.Adam(params, lr=self.lr)
        rng = np.random.default_rng(self.seed)
        order = np.zeros(0, dtype=np.int64)
        seen = 0
        loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
        while seen < int(total_timesteps):
            if order.size == 0:
                order = rng.permutation(len(self.table))
            batch, order = order[:self.batch_size], order[self.batch_size:]
            batch = batch[:int(total_timesteps) - seen]
            logits = self.head(self.encoder.forward_actor(features[batch].flatten(1)))
            mask = valid[batch]
            loss = loss_fn(logits[mask], targets[batch][mask]) / max(1, int(mask.sum()))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += len(batch)
        self.trained_images += seen
        return self

    # ------------------------------------------------------------------------------------------- acting
    def scores(self, batch: np.ndarray) -> np.ndarray:
        """Predicted labels (new scores) of a batch of observations ``[B, n_max, F]``: float32 ``[B, n_max]``, 0 on
        padded slots."""
        x = torch.as_tensor(np.asarray(batch, dtype=np.float32)[..., :self.n_features])
        with torch.no_grad():
            p = torch.sigmoid(self.head(self.encoder.forward_actor(x.flatten(1)))).numpy()
        return np.where(x[..., 0].numpy() > 0.5, p, 0.0).astype(np.float32)

    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        obs = np.asarray(batch)
        p = self.scores(obs)
        if self.variant == "rescore":
            return p
        keep = p >= self.threshold
        if self.variant == "select":
            return keep.astype(np.int8)
        todo = keep & ~(obs[..., -1] > 0.5)  # the sequential variant's last column: kept so far
        best = np.where(todo, p, -1.0).argmax(axis=1)
        return np.where(todo.any(axis=1), best, self.n_max).astype(np.int64)

    def __repr__(self) -> str:
        return f"LearnedNMSAgent(threshold={self.threshold})"
