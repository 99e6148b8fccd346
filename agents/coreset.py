"""Core-set sampling (Sener & Savarese, ICLR 2018; a baseline of paper 002): k-center greedy on ``embed()``.

The core-set approach labels the images that best cover the unlabeled data in the detector's feature space: it
chooses ``b`` centres greedily, each time the candidate farthest (L2) from every labeled image and every centre
chosen so far (the 2-approximation of the k-center problem). The observation already holds each candidate's
distance to its nearest labeled image (``nearest_distance``; in the sequential variant also to the images
picked this cycle), so the agent needs nothing but the observation:

* ``DetSampleSelect-v0``: :func:`k_center_greedy` picks ``b`` rows (``b`` read from ``picks_left``), which get the
  highest values of the action in pick order, the others follow by their remaining distance;
* ``DetSampleSelectSeq-v0``: the allowed row with the largest ``nearest_distance`` (one greedy step per env step).
"""

from __future__ import annotations

import numpy as np

from detgym.agents.active_learning import ScoreAgent, rank_scores
from detgym.envs.sample_select.observation import column

__all__ = ["CoreSetAgent", "k_center_greedy"]


def k_center_greedy(features: np.ndarray, min_distance: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Choose ``k`` rows of ``features`` ``[m, D]`` greedily as new centres.

    Args:
        features: the candidates' feature vectors.
        min_distance: each candidate's distance to its nearest existing centre (the labeled set); ``-inf`` marks
            rows that must never be chosen.
        k: centres to choose (at most the number of choosable rows).

    Returns:
        ``(order, remaining)``: the chosen rows in the order chosen, and every row's distance to its nearest centre
        afterwards (chosen rows 0).
    """
    x = np.asarray(features, dtype=np.float64)
    d = np.asarray(min_distance, dtype=np.float64).copy()
    chosen = np.zeros(d.shape[0], dtype=bool)
    order: list[int] = []
    for _ in range(int(k)):
        candidates = np.where(chosen, -np.inf, d)
        j = int(np.argmax(candidates))  # the first row among ties
        if candidates[j] == -np.inf:
            break
        order.append(j)
        chosen[j] = True
        d = np.minimum(d, np.sqrt(((x - x[j]) ** 2).sum(axis=1)))
    return np.array(order, dtype=np.int64), d


class CoreSetAgent(ScoreAgent):
    """k-center greedy on the observation's embeddings (see the module docstring)."""

    name = "coreset"

    def score(self, obs: np.ndarray) -> np.ndarray:
        """One greedy step's criterion: the distance to the nearest labeled (or picked) image."""
        return column(obs, "nearest_distance").astype(np.float64)

    def ranks(self, obs: np.ndarray, valid: np.ndarray) -> np.ndarray:
        m = obs.shape[0]
        b = int(round(float(column(obs, "picks_left")[0]) * m))
        start = np.where(valid, column(obs, "nearest_distance").astype(np.float64), -np.inf)
        order, remaining = k_center_greedy(column(obs, "embed"), start, b)
        # chosen rows first in pick order, then the rest by their distance to the enlarged set of centres
        scores = np.where(valid, remaining, -np.inf)
        top = remaining.max(initial=0.0) + 1.0
        scores[order] = top + np.arange(order.size, 0, -1)
        return rank_scores(scores, valid)
