"""Uniformly random choice among the weighting schemes."""

from __future__ import annotations

import numpy as np

from agents.base import Agent

__all__ = ["RandomAgent"]


class RandomAgent(Agent):
    """Picks a0..a3 uniformly at random from its own seeded generator.

    ``deterministic=True`` is ignored: a uniform policy has no mode, and returning a fixed action would turn this
    baseline into a constant agent.

    Args:
        seed: seed of the agent's ``numpy.random.Generator`` (``None``: fresh entropy).
        n_actions: number of discrete actions.
    """

    def __init__(self, seed: int | None = None, n_actions: int = 4) -> None:
        super().__init__()
        if int(n_actions) < 1:
            raise ValueError(f"n_actions must be >= 1, got {n_actions!r}")
        self.n_actions = int(n_actions)
        self.rng = np.random.default_rng(seed)

    def seed(self, seed: int | None) -> None:
        """Reseed the generator."""
        self.rng = np.random.default_rng(seed)

    def _act(self, batch: np.ndarray, deterministic: bool) -> np.ndarray:
        return self.rng.integers(self.n_actions, size=batch.shape[0])
