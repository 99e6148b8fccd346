"""Observation scaling for learning agents (SB3 & co.) on DetLossWeight-v0.

Raw interval losses grow with ``alpha`` and variances span orders of magnitude over training, which neural
policies handle badly. :class:`LogScaleObservation` maps them to a few units with fixed, finite bounds and no
running statistics (so it is deterministic and needs no saving, unlike ``VecNormalize``, which works too).
Paper agents (RLO) read the raw observation: do not wrap their env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .observation import n_levels_from_size

__all__ = ["LogScaleObservation"]

# log1p of the largest float32: the scaled features can never exceed it
_LOG_MAX = float(np.log1p(np.finfo(np.float32).max))


class LogScaleObservation(gym.ObservationWrapper):
    """``L -> log1p(L / alpha)`` (log of 1 + the mean loss per iteration), ``Var -> log1p(Var)``; progress and
    weights unchanged.

    The map is monotone per feature, so the order of levels is kept, but the eq. 7 reward cannot be recomputed
    from the scaled observation (it needs the raw sums): the env still returns it.

    Args:
        env: a DetLossWeight env (or a wrapper around one).
        alpha: iterations per interval (default: ``env.unwrapped.alpha``).
    """

    def __init__(self, env: gym.Env, alpha: int | None = None) -> None:
        super().__init__(env)
        box = env.observation_space
        if not isinstance(box, spaces.Box) or len(box.shape) != 1:
            raise ValueError(f"env must have a 1-D Box observation space (DetLossWeight), got {box!r}")
        self.n_levels = n_levels_from_size(box.shape[0])
        alpha = alpha if alpha is not None else getattr(env.unwrapped, "alpha", None)
        if alpha is None or int(alpha) < 1:
            raise ValueError(f"alpha must be an integer >= 1 (iterations per step), got {alpha!r}")
        self.alpha = int(alpha)
        n = self.n_levels
        low = box.low.astype(np.float32).copy()
        high = box.high.astype(np.float32).copy()
        low[: 4 * n] = 0.0
        high[: 4 * n] = _LOG_MAX
        self.observation_space = spaces.Box(low=low, high=high, dtype=np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        n = self.n_levels
        out = np.asarray(observation, dtype=np.float64).copy()
        out[: 2 * n] = np.log1p(np.maximum(out[: 2 * n], 0.0) / self.alpha)
        out[2 * n : 4 * n] = np.log1p(np.maximum(out[2 * n : 4 * n], 0.0))
        return np.minimum(out, self.observation_space.high).astype(np.float32)
