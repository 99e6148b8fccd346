"""An agent that always takes the same action (each single weighting scheme of table 3 of paper 000)."""

from __future__ import annotations

import numpy as np

from agents.base import Agent

__all__ = ["ConstantAgent"]


class ConstantAgent(Agent):
    """Always returns ``action`` (0..3 for DetLossWeight-v0: a0 AVW, a1 min loss, a2 max loss, a3 uniform)."""

    def __init__(self, action: int) -> None:
        super().__init__()
        if isinstance(action, bool) or int(action) != action or not 0 <= int(action) < self.n_actions:
            raise ValueError(f"action must be an integer in 0..{self.n_actions - 1}, got {action!r}")
        self.action = int(action)

    def _act(self, batch: np.ndarray, deterministic: bool) -> np.ndarray:
        return np.full(batch.shape[0], self.action, dtype=np.int64)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(action={self.action})"
