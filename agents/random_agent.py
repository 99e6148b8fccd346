"""Uniformly random actions, for any action space (masked actions respected)."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from detgym.agents.base import Agent

__all__ = ["RandomAgent"]


class RandomAgent(Agent):
    """Draws every action uniformly at random from its own seeded generator.

    Discrete actions are drawn among the allowed ones when ``action_masks`` are given; other spaces are sampled
    with the space's own ``sample`` (seeded from the agent's generator). Without an ``action_space`` the agent
    picks one of ``n_actions`` integers (the four schemes of DetLossWeight-v0 by default).

    ``deterministic=True`` is ignored: a uniform policy has no mode, and returning a fixed action would turn this
    baseline into a constant agent.

    Args:
        seed: seed of the agent's ``numpy.random.Generator`` (``None``: fresh entropy).
        n_actions: number of discrete actions when no ``action_space`` is given.
        action_space: the env's action space (any gymnasium space).
    """

    eval_deterministic = False

    def __init__(self, seed: int | None = None, n_actions: int = 4, action_space: spaces.Space | None = None,
                 observation_space: spaces.Space | None = None) -> None:
        super().__init__(observation_space, action_space)
        if action_space is None and int(n_actions) < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions!r}")
        self.n_actions = int(action_space.n) if isinstance(action_space, spaces.Discrete) else int(n_actions)
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        """Reseed the generator."""
        self.rng = np.random.default_rng(seed)
        if self.action_space is not None:
            self.action_space.seed(int(self.rng.integers(2**31 - 1)))

    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        n = len(next(iter(batch.values()))) if isinstance(batch, dict) else batch.shape[0]
        space = self.action_space
        if space is None or isinstance(space, spaces.Discrete):
            if action_masks is None:
                return self.rng.integers(self.n_actions, size=n)
            return np.array([self.rng.choice(np.flatnonzero(m)) for m in action_masks])
        return np.stack([space.sample() for _ in range(n)])
