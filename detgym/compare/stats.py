"""Aggregate statistics of a comparison, as rliable defines them (Agarwal et al., "Deep RL at the edge of the
statistical precipice", NeurIPS 2021), computed with SciPy.

* interquartile mean (IQM): ``scipy.stats.trim_mean(scores, 0.25)`` over every run of every task (rliable's
  ``aggregate_iqm``); mean: the mean over tasks of the per-task mean (rliable's ``aggregate_mean``);
* confidence intervals: stratified bootstrap, i.e. runs resampled within each task (rliable's
  ``StratifiedBootstrap``), percentile method (rliable's default), via ``scipy.stats.bootstrap``, which resamples
  each of several samples independently: one sample per task is exactly the stratified scheme;
* probability of improvement ``P(X > Y)``: ``P(x > y) + 0.5 P(x = y)`` over every pair of a run of X and a run of
  Y, averaged over tasks (rliable's ``probability_of_improvement``, the Mann-Whitney U statistic over ``n_x n_y``);
  its interval resamples the runs of X and Y with the same indices by default, because a comparison's runs are
  paired by seed (same detector initialisation and data order); ``paired=False`` resamples them independently,
  as rliable's ``StratifiedIndependentBootstrap`` does (checked against rliable's numbers in the test suite);
* paired difference: the mean over seeds of ``x_s - y_s`` (same seed: same detector initialisation and data
  order), with a bootstrap interval over seeds.

Every interval is ``(nan, nan)`` when a sample has fewer than two runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.stats

__all__ = [
    "CONFIDENCE",
    "Estimate",
    "N_RESAMPLES",
    "interval_estimate",
    "iqm",
    "mean_of_task_means",
    "paired_difference",
    "probability_of_improvement",
    "probability_of_improvement_estimate",
]

#: Coverage of every interval.
CONFIDENCE = 0.95
#: Bootstrap resamples (SciPy's default is 9999; rliable's examples use 2000 to 50000).
N_RESAMPLES = 10_000

#: ``statistic(*tasks, axis=-1)``: one array of runs per task (SciPy's vectorized statistic signature).
Statistic = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap confidence interval over ``n`` runs (or pairs)."""

    value: float
    low: float
    high: float
    n: int


def iqm(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
    """Interquartile mean of all runs of all tasks: the 25% trimmed mean (rliable's ``aggregate_iqm``)."""
    return scipy.stats.trim_mean(np.concatenate(tasks, axis=axis), 0.25, axis=axis)


def mean_of_task_means(*tasks: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean over tasks of each task's mean over runs (rliable's ``aggregate_mean``)."""
    return np.mean([np.mean(t, axis=axis) for t in tasks], axis=0)


def probability_of_improvement(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """``P(X > Y) + 0.5 P(X = Y)`` over every pair (x_i, y_j) of one task's runs; leading axes are batches."""
    x, y = np.moveaxis(np.asarray(x, float), axis, -1), np.moveaxis(np.asarray(y, float), axis, -1)
    wins = x[..., :, None] > y[..., None, :]
    ties = x[..., :, None] == y[..., None, :]
    return np.mean(wins + 0.5 * ties, axis=(-2, -1))


def _interval(data: tuple[np.ndarray, ...], statistic: Statistic, *, paired: bool, n_resamples: int,
              confidence: float, seed: int) -> tuple[float, float]:
    if min(d.size for d in data) < 2:
        return float("nan"), float("nan")
    res = scipy.stats.bootstrap(
        data, statistic, n_resamples=n_resamples, confidence_level=confidence, method="percentile",
        vectorized=True, paired=paired, random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def interval_estimate(tasks: Sequence[Sequence[float]], statistic: Statistic = iqm, *,
                      n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """``statistic`` over the runs of every task, with a stratified bootstrap interval (runs resampled within each
    task).

    Args:
        tasks: one sequence of run scores per task (env); a single task is an ordinary bootstrap over runs.
        statistic: :func:`iqm`, :func:`mean_of_task_means`, or any ``f(*tasks, axis)`` of that form.
        n_resamples, confidence, seed: of the bootstrap (seeded: the same scores give the same interval).
    """
    data = tuple(np.asarray(t, dtype=np.float64) for t in tasks)
    if not data or any(d.ndim != 1 or d.size == 0 for d in data):
        raise ValueError("tasks must be one non-empty 1-D sequence of scores per task")
    value = float(statistic(*data, axis=-1))
    low, high = _interval(data, statistic, paired=False, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return Estimate(value, low, high, int(sum(d.size for d in data)))


def _paired(x: Sequence[float], y: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size == 0:
        raise ValueError(f"x and y must be non-empty 1-D scores paired by seed (same length), got {x.shape}, {y.shape}")
    return x, y


def paired_difference(x: Sequence[float], y: Sequence[float], *, n_resamples: int = N_RESAMPLES,
                      confidence: float = CONFIDENCE, seed: int = 0) -> Estimate:
    """Mean of ``x_s - y_s`` over seeds ``s`` (``x[s]`` and ``y[s]`` ran with the same seed), bootstrap interval."""
    x, y = _paired(x, y)
    diff = x - y
    low, high = _interval((diff,), np.mean, paired=False, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return Estimate(float(diff.mean()), low, high, int(diff.size))


def probability_of_improvement_estimate(x: Sequence[float], y: Sequence[float], *, paired: bool = True,
                                        n_resamples: int = N_RESAMPLES, confidence: float = CONFIDENCE,
                                        seed: int = 0) -> Estimate:
    """:func:`probability_of_improvement` of X over Y on one task, with an interval that resamples the runs of X
    and Y with the same indices (``paired``: pairs by seed stay together), or independently (rliable's
    interval)."""
    x, y = _paired(x, y)
    low, high = _interval((x, y), probability_of_improvement, paired=paired, n_resamples=n_resamples,
                          confidence=confidence, seed=seed)
    return Estimate(float(probability_of_improvement(x, y)), low, high, int(x.size))
