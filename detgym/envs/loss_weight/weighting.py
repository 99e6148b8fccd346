"""Per-level loss weighting formulas of paper 000 (AVW / RLO), as pure NumPy functions.

Used by :mod:`detgym.envs.loss_weight.env` (state, weights, reward) and by :mod:`detgym.agents.rlo` (the probability
update), so the env and the agents cannot disagree on a formula. Every function copies its inputs and returns
float64 NumPy arrays (or a float); none keeps state.

Notation (paper 000, sec. 3.2-3.3): an *interval* ``t`` covers ``alpha`` training iterations; ``L_{i,m}`` is the
raw (unweighted) loss of pyramid level ``i`` at iteration ``m``.

Actions (paper 000's weighting schemes, sec. 3.2-3.3):

====  ==========================================================  ===========================
a0    enhance the ``n_enhance`` levels with the largest ``r_{i,t}``   AVW (sec. 3.2)
a1    enhance the ``n_enhance`` levels with the smallest ``L_{i,t}``
a2    enhance the ``n_enhance`` levels with the largest ``L_{i,t}``
a3    all weights 1                                                 the unweighted baseline
====  ==========================================================  ===========================
"""

from __future__ import annotations

import operator
from typing import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "ACTION_NAMES",
    "N_ACTIONS",
    "decrease_rate",
    "interval_reward",
    "interval_stats",
    "rlo_update",
    "scheme_weights",
]

#: Short names of the four weighting schemes a0..a3 (index = action).
ACTION_NAMES: tuple[str, ...] = ("max_rate", "min_loss", "max_loss", "uniform")
N_ACTIONS: int = len(ACTION_NAMES)


def _finite_array(value: ArrayLike, name: str, ndim: int | None = None) -> np.ndarray:
    arr = np.array(value, dtype=np.float64, copy=True)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be a {ndim}-D array, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite (no NaN/inf), got {arr!r}")
    return arr


def _as_index(value: object, name: str, n: int) -> int:
    """``value`` as an int in ``0..n-1``; accepts Python/NumPy integers and 0-d or 1-element integer arrays."""
    if isinstance(value, np.ndarray) and value.size == 1 and np.issubdtype(value.dtype, np.integer):
        value = value.reshape(()).item()
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be an integer in 0..{n - 1}, got {value!r}")
    try:
        as_int = operator.index(value)  # rejects floats, strings, None
    except TypeError:
        raise ValueError(f"{name} must be an integer in 0..{n - 1}, got {value!r}") from None
    if not 0 <= as_int < n:
        raise ValueError(f"{name} must be an integer in 0..{n - 1}, got {value!r}")
    return as_int


def _check_action(action: object) -> int:
    try:
        return _as_index(action, "action", N_ACTIONS)
    except ValueError:
        raise ValueError(
            f"action must be an integer in 0..{N_ACTIONS - 1} (a0..a3 = {', '.join(ACTION_NAMES)}), got {action!r}"
        ) from None


def interval_stats(losses: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Interval loss and variance of every level (eq. 2-3 of paper 000).

    Args:
        losses: ``[alpha, n_levels]`` raw per-level losses of the ``alpha`` iterations of one interval.

    Returns:
        ``(sums, variances)``, each float64 ``[n_levels]``: ``sums[i] = L_{i,t} = sum_m L_{i,m}`` (eq. 2) and
        ``variances[i] = Var_{i,t}``, the unbiased sample variance ``1/(alpha-1) sum_m (L_{i,m} - L_{i,t}/alpha)^2``
        (eq. 3, whose mean is the interval loss over the ``alpha`` iterations).

    With ``alpha == 1`` one sample shows no spread and the unbiased estimate is undefined (0/0); the variance is
    then defined as 0 rather than NaN so that the state stays finite (an env with ``alpha=1`` still works, but
    its variance features carry no information, as table 4 of the paper warns for small ``alpha``).

    Raises:
        ValueError: ``losses`` is not 2-D, has no rows or no columns, or holds NaN/inf.
    """
    arr = _finite_array(losses, "losses", ndim=2)
    alpha, n_levels = arr.shape
    if alpha < 1 or n_levels < 1:
        raise ValueError(f"losses must have shape [alpha >= 1, n_levels >= 1], got {arr.shape}")
    sums = arr.sum(axis=0)
    if alpha == 1:
        return sums, np.zeros(n_levels, dtype=np.float64)
    mean = sums / alpha
    variances = ((arr - mean) ** 2).sum(axis=0) / (alpha - 1)
    return sums, variances


def decrease_rate(var_prev: ArrayLike, var_cur: ArrayLike, eps: float = 1e-5) -> np.ndarray:
    """Rate of decrease of the interval variance, ``r_{i,t} = (Var_{i,t-1} - Var_{i,t}) / (Var_{i,t-1} + eps)``
    (eq. 4 of paper 000, ``eps = 1e-5``).

    Before the first interval the paper sets ``Var_{i,0} = 1`` and ``r_{i,0} = 0``; callers pass ``var_prev = 1``
    for the first interval. Inputs broadcast against each other.
    """
    prev = _finite_array(var_prev, "var_prev")
    cur = _finite_array(var_cur, "var_cur")
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    return (prev - cur) / (prev + eps)


def scheme_weights(
    action: int,
    sums: ArrayLike,
    rates: ArrayLike,
    n_enhance: int = 2,
    lambdas: Sequence[float] = (1.5, 1.0),
) -> np.ndarray:
    """Per-level loss weights of weighting scheme ``action`` (eq. 5 of paper 000 with actions a0..a3).

    The ``n_enhance`` selected levels, ranked (a0: largest ``rates`` first; a1: smallest ``sums`` first; a2:
    largest ``sums`` first), get ``w_j = 1 + lambdas[k] * sums[j] / sum(sums)`` where ``k`` is the level's rank;
    every other level gets 1; a3 gives all ones. The paper uses ``lambdas = (1.5, 1.0)`` for ``N = 2``. When
    ``n_enhance`` exceeds ``len(lambdas)`` the remaining ranks reuse the last lambda (the paper's table 5 varies
    ``N`` up to 5 without giving the lambdas it used).

    Ties are broken deterministically by level index: among equal keys the lower index (the finer pyramid level,
    e.g. P3 before P4) ranks first, for ascending and descending orders alike. When ``sum(sums) == 0`` the
    fraction in eq. 5 is taken as 0, so every weight is 1.

    Args:
        action: 0..3 (a0..a3).
        sums: ``[n_levels]`` interval losses ``L_{i,t}`` (eq. 2).
        rates: ``[n_levels]`` variance decrease rates ``r_{i,t}`` (eq. 4); only a0 reads them.
        n_enhance: number of levels enhanced, ``N`` (0..n_levels).
        lambdas: amplification factors by rank, ``>= 0``.

    Returns:
        float64 ``[n_levels]`` weights, each ``>= 1``.
    """
    act = _check_action(action)
    sums_arr = _finite_array(sums, "sums", ndim=1)
    rates_arr = _finite_array(rates, "rates", ndim=1)
    n_levels = sums_arr.shape[0]
    if rates_arr.shape != sums_arr.shape:
        raise ValueError(f"rates must have the shape of sums {sums_arr.shape}, got {rates_arr.shape}")
    n_enhance = _as_index(n_enhance, "n_enhance (0..number of levels)", n_levels + 1)
    lam = _finite_array(lambdas, "lambdas", ndim=1)
    if n_enhance > 0 and (lam.size == 0 or np.any(lam < 0)):
        raise ValueError(f"lambdas must be a non-empty sequence of numbers >= 0, got {lambdas!r}")

    weights = np.ones(n_levels, dtype=np.float64)
    if act == 3 or n_enhance == 0:
        return weights
    # Stable argsort keeps index order among equal keys, so negating the key gives "largest first, lower
    # index first on ties" without a second pass.
    if act == 0:
        order = np.argsort(-rates_arr, kind="stable")
    elif act == 1:
        order = np.argsort(sums_arr, kind="stable")
    else:
        order = np.argsort(-sums_arr, kind="stable")
    total = sums_arr.sum()
    for rank, level in enumerate(order[:n_enhance]):
        lam_k = lam[min(rank, lam.size - 1)]
        share = sums_arr[level] / total if total != 0 else 0.0
        weights[level] = 1.0 + lam_k * share
    return weights


def interval_reward(sums_prev: ArrayLike, sums_cur: ArrayLike) -> float:
    """Reward of the previous action, ``sign(sum_i L_{i,t-1} - sum_i L_{i,t})`` (eq. 7 of paper 000).

    +1 when the total raw interval loss dropped, -1 when it rose, 0 when it is exactly equal.
    """
    prev = _finite_array(sums_prev, "sums_prev", ndim=1)
    cur = _finite_array(sums_cur, "sums_cur", ndim=1)
    if prev.shape != cur.shape:
        raise ValueError(f"sums_prev and sums_cur must have the same shape, got {prev.shape} and {cur.shape}")
    return float(np.sign(prev.sum() - cur.sum()))


def rlo_update(
    probs: ArrayLike,
    action: int,
    reward: float,
    gamma: float = 0.01,
    beta: tuple[float, float] = (0.1, 0.9),
) -> np.ndarray:
    """RLO's action-probability update after action ``action`` earned ``reward`` (eq. 9 of paper 000).

    ``p_k <- brelu(p_k + gamma)`` if ``reward > 0`` else ``brelu(p_k - gamma)`` (a reward of 0 counts as a
    punishment, as in the paper: "otherwise -"), with ``brelu(x) = min(max(x, beta_min), beta_max)``; every
    other probability is multiplied by ``(1 - p_k,new) / (1 - p_k,old)``, which keeps the sum at 1. As in eq. 9,
    ``beta`` bounds only the updated action's probability: the others can drop below ``beta_min`` through the
    rescale.

    If ``p_k,old == 1`` the other probabilities are all 0 and cannot be rescaled; the freed mass
    ``1 - p_k,new`` is then shared equally among them (the only choice that favours no action).

    Args:
        probs: current probabilities ``[n_actions]`` (non-negative, summing to 1 within 1e-6).
        action: index of the action the reward belongs to.
        reward: reward of that action (eq. 7).
        gamma: step size, ``>= 0``.
        beta: ``(beta_min, beta_max)`` with ``0 <= beta_min <= beta_max <= 1``.

    Returns:
        The new probabilities, float64 ``[n_actions]`` (a new array; ``probs`` is not modified).
    """
    p = _finite_array(probs, "probs", ndim=1)
    n = p.shape[0]
    if n < 2 or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-6:
        raise ValueError(f"probs must be >= 2 non-negative probabilities summing to 1, got {p!r}")
    k = _as_index(action, "action", n)
    if not np.isfinite(reward):
        raise ValueError(f"reward must be finite, got {reward!r}")
    if not gamma >= 0:
        raise ValueError(f"gamma must be >= 0, got {gamma!r}")
    b_min, b_max = (float(b) for b in beta)
    if not 0.0 <= b_min <= b_max <= 1.0:
        raise ValueError(f"beta must be (beta_min, beta_max) with 0 <= beta_min <= beta_max <= 1, got {beta!r}")

    old = p[k]
    new = min(max(old + (gamma if reward > 0 else -gamma), b_min), b_max)
    out = p.copy()
    others = np.arange(n) != k
    if 1.0 - old > 0.0:
        out[others] = p[others] * (1.0 - new) / (1.0 - old)
    else:
        out[others] = (1.0 - new) / (n - 1)
    out[k] = new
    return out
