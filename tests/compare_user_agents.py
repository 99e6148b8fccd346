"""Agents of a user's own, given to ``detgym compare`` by import path (``tests.compare_user_agents:Alternate``)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from detgym.rollout import run_episode


class Alternate:
    """DetLossWeight: enhance the largest-loss levels (a2) and the fastest-falling ones (a0) in turn."""

    def __init__(self, env: gym.Env | None = None, seed: int | None = None, first: int = 2) -> None:
        self.first, self.t = first, 0

    @staticmethod
    def fits(env: gym.Env) -> bool:
        return isinstance(env.action_space, gym.spaces.Discrete) and env.action_space.n == 4

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        self.t = 0 if episode_start is not None and np.all(episode_start) else self.t + 1
        return np.int64(self.first if self.t % 2 == 0 else 2 - self.first), state


class Bandit:
    """A learner: ``learn`` plays random schemes and keeps the one with the best mean reward (any Discrete env)."""

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.env, self.rng, self.best = env, np.random.default_rng(seed), 0

    def learn(self, total_timesteps: int) -> "Bandit":
        n = self.env.action_space.n
        totals, counts = np.zeros(n), np.zeros(n)
        while counts.sum() < total_timesteps:
            episode = run_episode(self.env, _Random(self.rng, n), seed=int(self.rng.integers(2**31)))
            np.add.at(totals, episode.actions, episode.rewards)
            np.add.at(counts, episode.actions, 1)
        self.best = int(np.argmax(totals / np.maximum(counts, 1)))
        return self

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        return np.int64(self.best), state


class _Random:
    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.rng, self.n = rng, n

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None,
                deterministic: bool = False) -> tuple[np.ndarray, Any]:
        return np.int64(self.rng.integers(self.n)), state


def build_constant(env: gym.Env | None = None, seed: int | None = None, action: int = 1) -> Any:
    """A factory function (what :func:`detgym.agents.register` takes): always ``action``."""
    from detgym.agents import ConstantAgent

    return ConstantAgent(action)
