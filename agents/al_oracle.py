"""A label-aware oracle for the DetSampleSelect envs: the ceiling a selector that could see hidden labels reaches.

The oracle reads the true boxes and labels of the candidates (which the env hides from every other agent) and picks,
greedily, the images that most raise the coverage of the labeled set over *cells* (class, size): an object's
size bin is the tercile of its box height among all objects of the train split. With ``c_j`` objects of cell ``j``
labeled so far (initial set, earlier cycles, and the images picked before in this cycle), image ``i`` holding
``n_ij`` objects of cell ``j`` gains

    ``sum_j log(1 + c_j + n_ij) - log(1 + c_j)``,

the marginal gain of the concave utility ``sum_j log(1 + c_j)``. So it prefers images of rare classes and sizes
and images with many objects, skips images without objects (gain 0) and, once it has an image, values its
near-duplicates less (their cells are no longer rare). Balancing classes alone is not enough: images with many
digits hold small digits, and a labeled set skewed towards them loses AP on the large ones (measured with
``benchmarks.al_headroom``). It is a heuristic, not the best selection: the benchmark also measures best-of-K random
selections trained for real.

* ``DetSampleSelect``: the ``b`` greedy picks get the highest action values in pick order, the other candidates
  follow by their gain after the picks;
* ``DetSampleSelectSeq``: the allowed row with the largest gain (one greedy step per env step).

It acts in the env it was built with, one observation at a time (ValueError for a batch).
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium as gym
import numpy as np

from detgym.agents.active_learning import ScoreAgent, rank_scores
from detgym.envs.sample_select.observation import column

__all__ = ["BalanceOracle", "SIZE_BINS", "balance_gain", "balance_order"]

#: Size bins of the oracle's cells: terciles of the box heights of the train split.
SIZE_BINS = 3


def _heights(target: dict[str, Any]) -> np.ndarray:
    boxes = target["boxes"].numpy()
    return boxes[:, 3] - boxes[:, 1]


def balance_gain(counts: np.ndarray, image_counts: np.ndarray) -> np.ndarray:
    """Gain of each image ``[m, J]`` (objects per cell) over the labeled cell counts ``[J]``: the increase of
    ``sum_j log(1 + c_j)``."""
    c = np.asarray(counts, dtype=np.float64)[None, :]
    return (np.log1p(c + image_counts) - np.log1p(c)).sum(axis=1)


def balance_order(counts: np.ndarray, image_counts: np.ndarray, allowed: np.ndarray,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy picks: ``k`` rows of ``image_counts`` ``[m, J]`` (objects per cell) among ``allowed``, each time the
    largest :func:`balance_gain` given the rows picked before (ties: the lower row).

    Returns:
        ``(order, gain)``: the picked rows in pick order, and every row's gain after the picks.
    """
    c = np.asarray(counts, dtype=np.float64).copy()
    free = np.asarray(allowed, dtype=bool).copy()
    order: list[int] = []
    for _ in range(int(min(k, free.sum()))):
        gain = np.where(free, balance_gain(c, image_counts), -np.inf)
        j = int(np.argmax(gain))
        order.append(j)
        free[j] = False
        c += image_counts[j]
    return np.array(order, dtype=np.int64), balance_gain(c, image_counts)


class BalanceOracle(ScoreAgent):
    """Label-aware greedy selection over (class, size) cells (see the module docstring); reads hidden labels from
    ``env``."""

    name = "oracle_balance"

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env.observation_space, env.action_space)
        self.env = env.unwrapped
        self._edges: np.ndarray | None = None

    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        if len(batch) != 1:
            raise ValueError(f"the oracle acts in one env (it reads that env's hidden labels), "
                             f"got a batch of {len(batch)}")
        return super()._act(batch, deterministic, action_masks)

    def _cell_counts(self, indices: Sequence[int]) -> np.ndarray:
        """Objects per cell (class, size tercile) ``[len(indices), 3 C]`` of train-split images (true labels)."""
        targets, n_classes = self.env.train_set.targets, int(self.env.train_set.num_classes)
        if self._edges is None:  # size terciles over every object of the train split
            heights = np.concatenate([_heights(t) for t in targets])
            self._edges = np.quantile(heights, [1 / 3, 2 / 3]) if heights.size else np.zeros(2)
        out = np.zeros((len(indices), SIZE_BINS * n_classes), dtype=np.float64)
        for row, i in enumerate(indices):
            t = targets[int(i)]
            cells = (t["labels"].numpy() - 1) * SIZE_BINS + np.searchsorted(self._edges, _heights(t), side="right")
            out[row] = np.bincount(cells, minlength=out.shape[1])[: out.shape[1]]
        return out

    def _counts(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labeled cell counts (with this cycle's picks) and the candidate rows' cell counts ``[M, 3 C]``."""
        rows = np.asarray(self.env.candidate_indices)
        per_row = np.zeros((obs.shape[0], SIZE_BINS * int(self.env.train_set.num_classes)))
        per_row[: rows.size] = self._cell_counts(rows)
        labeled = self._cell_counts(self.env.labeled_indices).sum(axis=0)
        picked = column(obs, "picked") > 0
        return labeled + per_row[picked].sum(axis=0), per_row

    def score(self, obs: np.ndarray) -> np.ndarray:
        counts, per_row = self._counts(obs)
        return balance_gain(counts, per_row)

    def ranks(self, obs: np.ndarray, valid: np.ndarray) -> np.ndarray:
        m = obs.shape[0]
        b = int(round(float(column(obs, "picks_left")[0]) * m))
        counts, per_row = self._counts(obs)
        order, gain = balance_order(counts, per_row, valid, b)
        scores = np.where(valid, gain, -np.inf)
        scores[order] = gain[valid].max(initial=0.0) + 1.0 + np.arange(order.size, 0, -1)
        return rank_scores(scores, valid)

    def __repr__(self) -> str:
        return "BalanceOracle()"
