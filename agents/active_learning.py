"""Score-based active-learning baselines for the DetSampleSelect envs (the sampling rules MGRAL compares against).

Each agent computes one informativeness score per candidate from the observation alone (the current detector's
detection statistics, see :mod:`detgym.envs.sample_select.observation`) and

* in ``DetSampleSelect-v0`` (one score per candidate, the env labels the top ``b``) returns the candidates'
  ranks by that score, mapped to ``[-1, 1]`` (the action space; the best candidate gets 1, padding rows -1);
* in ``DetSampleSelectSeq-v0`` (one image per step) picks the best-scored candidate among the allowed ones.

Ties go to the lower row, as the env breaks them. Strategies (Fig. 4 of paper 002 shows the first two):

* ``entropy_mean``: the mean class entropy of the image's detections (favours images whose detections are
  ambiguous);
* ``entropy_sum``: the sum of those entropies (favours images with many uncertain objects);
* ``score_uncertainty``: least confidence of the detection scores, ``1 - max score`` (an image with no
  detection scores 1: the detector found nothing it trusts there).
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from detgym.agents.base import Agent, env_family
from detgym.envs.sample_select.observation import column

__all__ = ["EntropyAgent", "STRATEGIES", "ScoreAgent", "ScoreUncertaintyAgent", "fits_sample_select", "rank_scores"]


def fits_sample_select(env: gym.Env) -> bool:
    """Whether ``env`` is a DetSampleSelect env (either variant)."""
    return env_family(env) == "sample_select" and isinstance(env.action_space, (spaces.Box, spaces.Discrete))


def rank_scores(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Candidate ranks mapped to ``[-1, 1]``: position p of the valid rows sorted by score gets ``1 - 2p / (M-1)``
    (the best 1), padding rows -1 (below every valid row, since there are then fewer than M valid rows).

    Ties rank the lower row higher (a stable sort of the negated scores), so the env's top-b of these values is
    the top-b of ``scores`` with the env's own tie rule.
    """
    n = scores.shape[0]
    out = np.full(n, -1.0, dtype=np.float32)
    rows = np.flatnonzero(valid)
    if rows.size == 0:
        return out
    order = rows[np.argsort(-scores[rows], kind="stable")]
    out[order] = 1.0 - 2.0 * np.arange(rows.size) / max(n - 1, 1)
    return out


class ScoreAgent(Agent):
    """Base class: rank (batch variant) or pick (sequential variant) candidates by :meth:`score`."""

    #: Registry name of the strategy.
    name: ClassVar[str] = ""

    def __init__(self, observation_space: spaces.Space | None = None, action_space: spaces.Space | None = None) -> None:
        super().__init__(observation_space, action_space)

    @classmethod
    def fits(cls, env: gym.Env) -> bool:
        return fits_sample_select(env)

    def score(self, obs: np.ndarray) -> np.ndarray:
        """Informativeness of every candidate row of one observation ``[M, D + N_EXTRA]`` (higher: label first)."""
        raise NotImplementedError

    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        out = []
        for i, obs in enumerate(np.asarray(batch)):
            valid = column(obs, "valid") > 0
            if isinstance(self.action_space, spaces.Discrete):
                allowed = action_masks[i] if action_masks is not None else valid & (column(obs, "picked") == 0)
                out.append(self._pick(obs, allowed))
            else:
                out.append(self.ranks(obs, valid))
        return np.stack(out)

    def ranks(self, obs: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """The batch-variant action: candidates ranked by :meth:`score`."""
        return rank_scores(self.score(obs), valid)

    def _pick(self, obs: np.ndarray, allowed: np.ndarray) -> int:
        rows = np.flatnonzero(allowed)
        if rows.size == 0:
            return 0
        scores = self.score(obs)
        return int(rows[np.argmax(scores[rows])])  # argmax returns the first (lowest) row among ties

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EntropyAgent(ScoreAgent):
    """Entropy sampling: the mean (``mode="mean"``) or sum (``mode="sum"``) class entropy of an image's detections."""

    def __init__(self, mode: str = "mean", observation_space: spaces.Space | None = None,
                 action_space: spaces.Space | None = None) -> None:
        if mode not in ("mean", "sum"):
            raise ValueError(f"mode must be one of 'mean', 'sum'; got {mode!r}")
        super().__init__(observation_space, action_space)
        self.mode = mode
        self.name = f"entropy_{mode}"

    def score(self, obs: np.ndarray) -> np.ndarray:
        return column(obs, f"{self.mode}_entropy").astype(np.float64)

    def __repr__(self) -> str:
        return f"EntropyAgent(mode={self.mode!r})"


class ScoreUncertaintyAgent(ScoreAgent):
    """Least-confidence sampling on the detection scores: ``1 - max score`` of the image's detections."""

    name = "score_uncertainty"

    def score(self, obs: np.ndarray) -> np.ndarray:
        return 1.0 - column(obs, "max_score").astype(np.float64)


#: Strategy name -> constructor (``observation_space``, ``action_space`` keywords), for the registry.
STRATEGIES: dict[str, Callable[..., ScoreAgent]] = {
    "entropy_mean": lambda **kw: EntropyAgent("mean", **kw),
    "entropy_sum": lambda **kw: EntropyAgent("sum", **kw),
    "score_uncertainty": ScoreUncertaintyAgent,
}
