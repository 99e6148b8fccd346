"""The one episode loop of detgym: run an agent in an env, record what happened.

Used by the benchmarks, the tests, ``detgym compare`` and the README instead of hand-written loops.
``run_episode`` applies the agent's :meth:`~detgym.agents.base.Agent.wrap_env`, passes ``episode_start`` and the
env's ``action_masks()`` (where it has them) to ``predict``, and returns an :class:`Episode` with the actions
(JSON-able, as the unwrapped env received them: a recorded episode replays on the bare env), rewards, the end
condition and the last step's ``final_metrics``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import gymnasium as gym
import numpy as np

__all__ = ["Episode", "evaluate", "run_episode"]


@dataclass
class Episode:
    """One finished episode."""

    seed: int | None
    #: The actions as the unwrapped env received them (after the agent's action wrappers).
    actions: list[Any] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: bool = False
    truncated: bool = False
    #: ``info["final_metrics"]`` of the last step (the trained detector's COCO stats), when the env gives them.
    final_metrics: dict[str, float] | None = None
    #: The last step's info.
    last_info: dict[str, Any] = field(default_factory=dict, repr=False)
    wall_s: float = 0.0

    @property
    def episode_return(self) -> float:
        """Undiscounted sum of the rewards."""
        return float(np.sum(self.rewards)) if self.rewards else 0.0

    @property
    def length(self) -> int:
        return len(self.rewards)


def _action_masks(env: gym.Env) -> np.ndarray | None:
    try:
        masks = env.get_wrapper_attr("action_masks")
    except AttributeError:
        return None
    return np.asarray(masks(), dtype=bool) if callable(masks) else None


def _unwrapped_action(env: gym.Env, action: Any) -> Any:
    """The action as the unwrapped env receives it (through the agent's action wrappers, e.g. RescaleAction), so a
    recorded episode replays on the bare env."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.ActionWrapper):
            action = env.action(action)
        env = env.env
    return action


def _jsonable(action: Any) -> Any:
    arr = np.asarray(action)
    return arr.item() if arr.ndim == 0 else arr.tolist()


def run_episode(
    env: gym.Env,
    agent: Any,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    deterministic: bool | None = None,
    max_steps: int | None = None,
) -> Episode:
    """Run one episode of ``agent`` (anything with SB3's ``predict``) in ``env``.

    Args:
        env: a gymnasium env (the agent's ``wrap_env`` is applied when it has one).
        agent: a detgym agent or an SB3 model.
        seed: ``reset(seed=...)``.
        options: ``reset(options=...)``.
        deterministic: passed to ``predict``; ``None``: the agent's ``eval_deterministic`` (True when it has none).
        max_steps: stop after this many steps (the episode then counts as truncated).
    """
    wrap = getattr(agent, "wrap_env", None)
    env = wrap(env) if callable(wrap) else env
    if deterministic is None:
        deterministic = bool(getattr(agent, "eval_deterministic", True))
    start = time.perf_counter()
    obs, info = env.reset(seed=seed, options=options)
    episode = Episode(seed=seed, last_info=info)
    state, first = None, True
    while not (episode.terminated or episode.truncated):
        masks = _action_masks(env)
        kwargs = {"action_masks": masks} if masks is not None else {}
        action, state = agent.predict(obs, state=state, episode_start=np.array([first]),
                                      deterministic=deterministic, **kwargs)
        obs, reward, terminated, truncated, info = env.step(action)
        episode.actions.append(_jsonable(_unwrapped_action(env, action)))
        episode.rewards.append(float(reward))
        episode.terminated, episode.truncated, episode.last_info, first = bool(terminated), bool(truncated), info, False
        if max_steps is not None and episode.length >= max_steps and not episode.terminated:
            episode.truncated = True
    episode.final_metrics = episode.last_info.get("final_metrics")
    episode.wall_s = time.perf_counter() - start
    return episode


def evaluate(env: gym.Env, agent: Any, seeds: Sequence[int], **kwargs: Any) -> list[Episode]:
    """:func:`run_episode` once per seed."""
    return [run_episode(env, agent, seed=int(s), **kwargs) for s in seeds]
