"""The one agent interface of detgym: Stable-Baselines3's ``predict``.

Every agent answers ``predict(observation, state=None, episode_start=None, deterministic=False) ->
(action, state)`` exactly like an SB3 model, so evaluation loops (``stable_baselines3.common.evaluation.
evaluate_policy``, the benchmarks) drive paper agents, heuristics and SB3 models alike.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["Agent"]


class Agent:
    """Base class: batching and episode-start bookkeeping around :meth:`_act`.

    ``observation`` is one observation (1-D) or a batch from a vectorized env (2-D ``[n_envs, obs_dim]``).
    The returned action has SB3's shape: a 0-d integer array for one observation, ``[n_envs]`` for a batch.
    ``state`` is passed through unchanged (these agents are not recurrent; their memory lives on the agent).
    ``episode_start`` (bool, or ``[n_envs]`` bools, as SB3's ``evaluate_policy`` passes it) marks observations
    that begin a new episode; an env index the agent has never seen also counts as a start.

    Subclasses implement :meth:`_act` and may override :meth:`_on_episode_start` and :meth:`_observe`.
    """

    #: Number of discrete actions (a0..a3 of DetLossWeight-v0).
    n_actions: int = 4

    def __init__(self) -> None:
        self._n_envs = 0

    # ---------------------------------------------------------------- public API
    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, Any]:
        """Choose actions for one observation or a batch (SB3's signature and return shapes)."""
        obs = np.asarray(observation)
        if obs.ndim not in (1, 2):
            raise ValueError(
                f"observation must be one observation vector (1-D) or a batch [n_envs, obs_dim], got shape {obs.shape}"
            )
        single = obs.ndim == 1
        batch = obs[None] if single else obs
        n_envs = batch.shape[0]
        starts = self._starts(episode_start, n_envs)
        if n_envs != self._n_envs:
            self._resize(n_envs)
            starts[:] = True
        for i in np.flatnonzero(starts):
            self._on_episode_start(int(i))
        self._observe(batch, starts)
        actions = np.asarray(self._act(batch, deterministic), dtype=np.int64).reshape(n_envs)
        return (actions.reshape(()) if single else actions), state

    def reset(self) -> None:
        """Forget everything episode-specific: the next :meth:`predict` starts a new episode in every env."""
        self._n_envs = 0

    # --------------------------------------------------------------- for subclasses
    def _act(self, batch: np.ndarray, deterministic: bool) -> np.ndarray:
        raise NotImplementedError

    def _resize(self, n_envs: int) -> None:
        """Allocate per-env memory for ``n_envs`` envs (all then start an episode)."""
        self._n_envs = n_envs

    def _on_episode_start(self, env_index: int) -> None:
        """Env ``env_index`` begins a new episode with the current observation."""

    def _observe(self, batch: np.ndarray, starts: np.ndarray) -> None:
        """See the observations before acting (online learners update here)."""

    # ------------------------------------------------------------------ internals
    @staticmethod
    def _starts(episode_start: Any, n_envs: int) -> np.ndarray:
        if episode_start is None:
            return np.zeros(n_envs, dtype=bool)
        starts = np.asarray(episode_start, dtype=bool).reshape(-1)
        if starts.size == 1:
            return np.full(n_envs, bool(starts[0]))
        if starts.size != n_envs:
            raise ValueError(f"episode_start must be one bool or {n_envs} bools (one per env), got {starts.size}")
        return starts.copy()

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
