"""The NMS family (:mod:`detgym.agents.nms`) as agents of the three DetBoxSelect envs (paper 001's baselines).

A rule turns one image's candidates into new scores (0 = dropped); the agent reads the candidates from the
observation (valid flag, normalised box, score, one-hot class: IoU does not change when both axes are scaled, so
NMS on normalised boxes is NMS on pixels) and answers in the env's action space:

* ``DetBoxSelect-v0`` (keep-mask): the boxes the rule keeps;
* ``DetBoxSelectSeq-v0`` (one box per step): the first slot the rule keeps that is not kept yet, then "stop";
* ``DetBoxRescore-v0`` (new scores): the rule's scores.

Selectors (greedy NMS, top-k, threshold, keep-all, oracle) fit all three; soft-NMS changes scores, which only the
rescore variant can express (on a keep-mask its surviving set is nearly every box), so it fits that one only.
The oracle reads the current image's ground truth from the env, so it acts in one (unvectorized) env.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from detgym.agents.base import Agent, env_family
from detgym.agents.nms import RULES

__all__ = ["BoxRuleAgent", "OracleAgent", "RESCORING_RULES", "box_variant", "rule_fits"]

#: Rules that change scores rather than select: meaningful in the rescore variant only.
RESCORING_RULES: tuple[str, ...] = ("soft_nms_linear", "soft_nms_gaussian")


def box_variant(env: gym.Env) -> str | None:
    """``"select"``, ``"seq"`` or ``"rescore"`` for the DetBoxSelect envs (through wrappers), else None."""
    if env_family(env) != "box_select":
        return None
    space = env.unwrapped.action_space
    if isinstance(space, spaces.MultiBinary):
        return "select"
    if isinstance(space, spaces.Discrete):
        return "seq"
    return "rescore"


def rule_fits(rule: str, env: gym.Env) -> bool:
    """Whether rule ``rule`` can act in ``env`` (see the module docstring)."""
    variant = box_variant(env)
    if variant is None:
        return False
    return variant == "rescore" or rule not in RESCORING_RULES


class BoxRuleAgent(Agent):
    """A rule of :data:`detgym.agents.nms.RULES` acting in a DetBoxSelect env from its observations.

    Args:
        env: the env it will act in (its variant, feature layout and ``n_max``).
        rule: a rule name (``"nms"``, ``"soft_nms_linear"``, ``"soft_nms_gaussian"``, ``"topk"``, ``"threshold"``,
            ``"keep_all"``).
        **params: the rule's parameters (``iou`` for NMS / soft-NMS, ``score_thresh`` and ``detections_per_img``
            for NMS, ``sigma`` and ``score_thresh`` for soft-NMS, ``k``, ``threshold``), validated by a dry run.
    """

    def __init__(self, env: gym.Env, rule: str, **params: Any) -> None:
        if rule not in RULES:
            raise ValueError(f"rule must be one of {', '.join(map(repr, RULES))}; got {rule!r}")
        if not rule_fits(rule, env):
            raise ValueError(f"rule {rule!r} does not fit {type(env.unwrapped).__name__} (action {env.action_space})")
        super().__init__(env.observation_space, env.action_space)
        base = env.unwrapped
        self.rule, self.params = rule, dict(params)
        self.variant = box_variant(env)
        self.n_max = int(base.n_max)
        self.layout = base.feature_layout
        empty = {"boxes": np.zeros((0, 4)), "scores": np.zeros(0), "labels": np.zeros(0, dtype=np.int64),
                 "gt_boxes": np.zeros((0, 4)), "gt_labels": np.zeros(0, dtype=np.int64)}
        try:  # unknown or bad parameters fail here, not in the first episode
            RULES[rule](empty, **self.params)
        except TypeError as exc:
            raise ValueError(f"bad parameters {self.params} for rule {rule!r}: {exc}") from None

    @classmethod
    def fits(cls, env: gym.Env) -> bool:
        return box_variant(env) is not None

    def _candidates(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        """One observation's real candidates (normalised boxes, scores, labels 1..C)."""
        lay = self.layout
        n = int((obs[:, lay["valid"]][:, 0] > 0.5).sum())
        return {"boxes": obs[:n, lay["box"]].astype(np.float64),
                "scores": obs[:n, lay["score"]][:, 0].astype(np.float64),
                "labels": obs[:n, lay["class"]].argmax(axis=1) + 1}

    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        return np.stack([self._action(obs) for obs in np.asarray(batch)])

    def _action(self, obs: np.ndarray) -> np.ndarray:
        cands = self._candidates(obs)
        scores = RULES[self.rule](cands, **self.params)
        n = scores.shape[0]
        if self.variant == "rescore":
            out = np.zeros(self.n_max, dtype=np.float32)
            out[:n] = scores
            return out
        if self.variant == "select":
            out = np.zeros(self.n_max, dtype=np.int8)
            out[:n] = scores > 0
            return out
        kept_so_far = obs[:n, -1] > 0.5  # the sequential variant's last column
        todo = np.flatnonzero((scores > 0) & ~kept_so_far)
        return np.asarray(todo[0] if todo.size else self.n_max, dtype=np.int64)

    def __repr__(self) -> str:
        params = "".join(f", {k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.rule!r}{params})"


class OracleAgent(BoxRuleAgent):
    """Keeps, per ground-truth box, one same-class candidate (IoU >= ``min_iou``): the highest-IoU one
    (``match="iou"``) or the highest-scored one (``match="score"``, COCO's matching; the headroom under
    DetBoxSelect-v1's pool reward, see :func:`detgym.agents.nms.oracle_keep`).

    It reads the current image's candidates and ground truth from the env it was built with
    (``env.unwrapped.candidate_arrays()`` / ``ground_truth()``), so it acts in that env only, one observation at a
    time (ValueError for a batch).
    """

    def __init__(self, env: gym.Env, min_iou: float = 0.5, match: str = "iou") -> None:
        super().__init__(env, "oracle", min_iou=min_iou, match=match)
        self.env = env.unwrapped

    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        if len(batch) != 1:
            raise ValueError(f"the oracle acts in one env (it reads that env's ground truth), "
                             f"got a batch of {len(batch)}")
        return super()._act(batch, deterministic, action_masks)

    def _candidates(self, obs: np.ndarray) -> dict[str, np.ndarray]:
        gt = self.env.ground_truth()
        return {**self.env.candidate_arrays(), "gt_boxes": gt["boxes"], "gt_labels": gt["labels"],
                "gt_crowd": gt["crowd"]}
