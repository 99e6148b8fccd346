"""RLO (Reinforcement Learning Optimization, sec. 3.3 and Algorithm 1 of paper 000)."""

from __future__ import annotations

import os
from typing import Sequence

import gymnasium as gym
import numpy as np

from detgym.agents.base import Agent
from detgym.agents.constant import fits_loss_weight_schemes
from detgym.envs.loss_weight.observation import split_observation
from detgym.envs.loss_weight.weighting import N_ACTIONS, interval_reward, rlo_update
from detgym.tensorboard import TensorBoardLogger

__all__ = ["RLOAgent"]


class RLOAgent(Agent):
    """The paper's online probabilistic policy over the four weighting schemes.

    At every decision (Algorithm 1, lines 7-10): compute the reward of the previous action from the observation
    (eq. 7, ``sign(sum L_{t-1} - sum L_t)``: the state ``S_t`` of eq. 6 holds both interval losses, so one
    observation is enough, and it equals the reward the env returns with ``reward="loss"``), update the action
    probabilities by eq. 9, then draw the next action from them (eq. 8). No update happens before the first
    action of an episode; ``episode_start`` (or :meth:`reset`) restores the initial probabilities, since one
    episode is one training run in the paper.

    With a vectorized env each env index keeps its own probabilities.

    Args:
        gamma: reward / punishment step ``gamma`` of eq. 9 (paper: 0.01).
        beta: ``(beta_min, beta_max)`` bounds of eq. 9 (paper: 0.1, 0.9).
        initial_probs: starting probabilities (paper: 0.25 each).
        seed: seed of the agent's ``numpy.random.Generator``.
        log_dir: TensorBoard directory for the probabilities (tags ``rlo/prob/a0`` .. ``rlo/prob/a3``, with
            ``rlo/reward``, ``rlo/action``, ``rlo/episode`` and ``rlo/decision``, the 1-based decision index in
            the episode; global step = decisions so far). ``benchmarks/plot_rlo_probs.py`` redraws the paper's
            figure from it. Only env index 0 is logged.

    Attributes:
        probs: current probabilities, ``[4]`` (``[n_envs, 4]`` with a vectorized env); a copy.
        last_reward: the reward of the last update per env (``nan`` before the first).
    """

    n_actions: int = N_ACTIONS
    eval_deterministic = False

    def __init__(
        self,
        gamma: float = 0.01,
        beta: tuple[float, float] = (0.1, 0.9),
        initial_probs: Sequence[float] | None = None,
        seed: int | None = None,
        log_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        init = np.full(self.n_actions, 1.0 / self.n_actions) if initial_probs is None else np.asarray(
            initial_probs, dtype=np.float64
        )
        if init.shape != (self.n_actions,) or np.any(init < 0) or abs(init.sum() - 1.0) > 1e-6:
            raise ValueError(
                f"initial_probs must be {self.n_actions} non-negative probabilities summing to 1, got {initial_probs!r}"
            )
        # one dry update validates gamma and beta here rather than at the first decision
        rlo_update(init, 0, 1.0, gamma, beta)
        self.gamma = float(gamma)
        self.beta = (float(beta[0]), float(beta[1]))
        self.initial_probs = init
        self.rng = np.random.default_rng(seed)
        self.log_dir = log_dir
        self.logger = TensorBoardLogger(log_dir)
        self._probs = np.empty((0, self.n_actions))
        self._last_action = np.empty(0, dtype=np.int64)
        self._last_reward = np.empty(0)
        self._decision = np.empty(0, dtype=np.int64)
        self._episode = -1
        self._global_decisions = 0

    # ------------------------------------------------------------------ public
    @property
    def probs(self) -> np.ndarray:
        if self._probs.shape[0] == 0:
            return self.initial_probs.copy()
        return self._probs[0].copy() if self._probs.shape[0] == 1 else self._probs.copy()

    @property
    def last_reward(self) -> np.ndarray | float:
        if self._last_reward.shape[0] == 0:
            return float("nan")
        return float(self._last_reward[0]) if self._last_reward.shape[0] == 1 else self._last_reward.copy()

    def seed(self, seed: int | None) -> None:
        """Reseed the action sampler."""
        self.rng = np.random.default_rng(seed)

    def close(self) -> None:
        """Flush and close the TensorBoard writer, if any."""
        self.logger.close()

    @classmethod
    def fits(cls, env: gym.Env) -> bool:
        return fits_loss_weight_schemes(env)

    # --------------------------------------------------------------- Agent hooks
    def _resize(self, n_envs: int) -> None:
        super()._resize(n_envs)
        self._probs = np.tile(self.initial_probs, (n_envs, 1))
        self._last_action = np.full(n_envs, -1, dtype=np.int64)
        self._last_reward = np.full(n_envs, np.nan)
        self._decision = np.zeros(n_envs, dtype=np.int64)

    def _on_episode_start(self, env_index: int) -> None:
        self._probs[env_index] = self.initial_probs
        self._last_action[env_index] = -1
        self._last_reward[env_index] = np.nan
        self._decision[env_index] = 0
        if env_index == 0:
            self._episode += 1

    def _observe(self, batch: np.ndarray, starts: np.ndarray) -> None:
        fields = split_observation(batch)
        for i in range(batch.shape[0]):
            if starts[i] or self._last_action[i] < 0:
                continue  # Algorithm 1: no update before the first action
            reward = interval_reward(fields["sums_prev"][i], fields["sums"][i])
            self._probs[i] = rlo_update(self._probs[i], int(self._last_action[i]), reward, self.gamma, self.beta)
            self._last_reward[i] = reward

    def _act(self, batch: np.ndarray, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        n = batch.shape[0]
        actions = np.empty(n, dtype=np.int64)
        for i in range(n):
            p = self._probs[i]
            # argmax breaks ties towards the lower action index, deterministically
            actions[i] = int(np.argmax(p)) if deterministic else int(self.rng.choice(self.n_actions, p=p / p.sum()))
        self._last_action[:] = actions
        self._decision += 1
        self._log(actions)
        return actions

    def _log(self, actions: np.ndarray) -> None:
        if not self.logger.enabled:
            return
        self._global_decisions += 1
        step, log = self._global_decisions, self.logger
        for k in range(self.n_actions):
            log.scalar(f"rlo/prob/a{k}", float(self._probs[0, k]), step)
        if np.isfinite(self._last_reward[0]):
            log.scalar("rlo/reward", float(self._last_reward[0]), step)
        log.scalar("rlo/action", int(actions[0]), step)
        log.scalar("rlo/episode", self._episode, step)
        log.scalar("rlo/decision", int(self._decision[0]), step)

    def __repr__(self) -> str:
        return f"RLOAgent(gamma={self.gamma}, beta={self.beta})"
