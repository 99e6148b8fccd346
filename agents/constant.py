"""An agent that always takes the same action (each single weighting scheme of table 3 of paper 000)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from detgym.agents.base import Agent, env_family
from detgym.envs.loss_weight.weighting import N_ACTIONS

__all__ = ["ConstantAgent", "fits_loss_weight_schemes"]


def fits_loss_weight_schemes(env: gym.Env) -> bool:
    """A DetLossWeight env with the four discrete schemes a0..a3 as its action."""
    return env_family(env) == "loss_weight" and isinstance(env.action_space, spaces.Discrete)


class ConstantAgent(Agent):
    """Always returns ``action`` (0..3 for DetLossWeight-v0: a0 AVW, a1 min loss, a2 max loss, a3 uniform)."""

    n_actions: int = N_ACTIONS

    def __init__(self, action: int) -> None:
        super().__init__()
        if isinstance(action, bool) or int(action) != action or not 0 <= int(action) < self.n_actions:
            raise ValueError(f"action must be an integer in 0..{self.n_actions - 1}, got {action!r}")
        self.action = int(action)

    @classmethod
    def fits(cls, env: gym.Env) -> bool:
        return fits_loss_weight_schemes(env)

    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        return np.full(batch.shape[0], self.action, dtype=np.int64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(action={self.action})"
