"""The episode loops of detgym: run an agent in an env (or in every sub-env of a vector env), record what happened.

Used by the benchmarks, the tests, ``detgym compare``, ``detgym build-table`` and the README instead of hand-written
loops (``detgym.agents`` exports them too). The loops need nothing of an agent but SB3's ``predict``, so they sit
below the envs (which use them) and the agents.
``run_episode`` applies the agent's :meth:`~detgym.agents.base.Agent.wrap_env`, passes ``episode_start`` and the
env's ``action_masks()`` (where it has them and the agent's ``predict`` takes them) to ``predict``, and returns an
:class:`Episode` with the actions (JSON-able, as the unwrapped env received them: a recorded episode replays on the
bare env), rewards, the end condition and the last step's ``final_metrics``. ``run_vector_episode`` runs one
episode in every sub-env of a Gymnasium vector env at once, with one batched ``predict`` per step.

Both take ``callback``, called after every step with a :class:`Step` (what ``callback(locals(), globals())`` gives
SB3's ``evaluate_policy`` callbacks, as one record): per-step timings, an env's extra state, a progress bar.
"""

from __future__ import annotations

import inspect
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import gymnasium as gym
import numpy as np

from detgym._hashing import jsonable

__all__ = ["Episode", "Step", "evaluate", "run_episode", "run_vector_episode"]


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


@dataclass(frozen=True)
class Step:
    """One step, as :func:`run_episode` and :func:`run_vector_episode` pass it to ``callback``.

    For a vector env every field but ``index`` and ``wall_s`` holds all sub-envs (``info`` as the vector env
    returns it) and ``done`` marks the sub-envs whose first episode has ended, this step included.
    """

    #: Steps before this one in the episode.
    index: int
    observation: Any
    #: The action as the agent chose it (before the agent's action wrappers).
    action: Any
    reward: Any
    terminated: Any
    truncated: Any
    info: dict[str, Any]
    #: Seconds spent in ``env.step`` alone.
    wall_s: float
    done: Any = None


Callback = Callable[[Step], Any]


def _action_masks(env: gym.Env) -> np.ndarray | None:
    try:
        masks = env.get_wrapper_attr("action_masks")
    except AttributeError:
        return None
    return np.asarray(masks(), dtype=bool) if callable(masks) else None


def _takes_masks(agent: Any) -> bool:
    """Whether ``agent.predict`` accepts ``action_masks`` (detgym agents, MaskablePPO; not plain SB3 models)."""
    try:
        parameters = inspect.signature(agent.predict).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "action_masks" or p.kind is p.VAR_KEYWORD for p in parameters)


def _wraps_env(agent: Any) -> bool:
    """Whether ``agent`` has a ``wrap_env`` other than detgym's identity (``Agent.wrap_env``)."""
    wrap = getattr(type(agent), "wrap_env", None)
    base = sys.modules.get("detgym.agents.base")  # loaded whenever agent is a detgym agent; never imported here
    return wrap is not None and (base is None or wrap is not base.Agent.wrap_env)


def _unwrapped_action(env: gym.Env, action: Any) -> Any:
    """The action as the unwrapped env receives it (through the agent's action wrappers, e.g. RescaleAction), so a
    recorded episode replays on the bare env."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.ActionWrapper):
            action = env.action(action)
        env = env.env
    return action


def run_episode(
    env: gym.Env,
    agent: Any,
    *,
    seed: int | None = None,
    options: dict[str, Any] | None = None,
    deterministic: bool | None = None,
    max_steps: int | None = None,
    callback: Callback | None = None,
) -> Episode:
    """Run one episode of ``agent`` (anything with SB3's ``predict``) in ``env``.

    Args:
        env: a gymnasium env (the agent's ``wrap_env`` is applied when it has one).
        agent: a detgym agent, an SB3 model, or any object with SB3's ``predict``.
        seed: ``reset(seed=...)``.
        options: ``reset(options=...)``.
        deterministic: passed to ``predict``; ``None``: the agent's ``eval_deterministic`` (True when it has none).
        max_steps: stop after this many steps (the episode then counts as truncated).
        callback: called after every step with its :class:`Step`.
    """
    wrap = getattr(agent, "wrap_env", None)
    env = wrap(env) if callable(wrap) else env
    if deterministic is None:
        deterministic = bool(getattr(agent, "eval_deterministic", True))
    takes_masks = _takes_masks(agent)
    start = time.perf_counter()
    obs, info = env.reset(seed=seed, options=options)
    episode = Episode(seed=seed, last_info=info)
    state, first = None, True
    while not (episode.terminated or episode.truncated):
        masks = _action_masks(env) if takes_masks else None
        kwargs = {"action_masks": masks} if masks is not None else {}
        action, state = agent.predict(obs, state=state, episode_start=np.array([first]),
                                      deterministic=deterministic, **kwargs)
        step_start = time.perf_counter()
        obs, reward, terminated, truncated, info = env.step(action)
        step_s = time.perf_counter() - step_start
        episode.actions.append(jsonable(np.asarray(_unwrapped_action(env, action))))
        episode.rewards.append(float(reward))
        episode.terminated, episode.truncated, episode.last_info, first = bool(terminated), bool(truncated), info, False
        if max_steps is not None and episode.length >= max_steps and not episode.terminated:
            episode.truncated = True
        if callback is not None:
            callback(Step(episode.length - 1, obs, action, reward, terminated, truncated, info, step_s))
    episode.final_metrics = episode.last_info.get("final_metrics")
    episode.wall_s = time.perf_counter() - start
    return episode


def _sub_info(info: dict[str, Any], i: int) -> dict[str, Any]:
    """Sub-env ``i``'s entries of a vector env's info (Gymnasium's layout: arrays over the sub-envs, with a
    ``_key`` mask saying which sub-envs have the key; dicts nest)."""
    out = {}
    for key, value in info.items():
        if key.startswith("_"):
            continue
        mask = info.get(f"_{key}")
        if mask is not None and not mask[i]:
            continue
        if isinstance(value, dict):
            out[key] = _sub_info(value, i)
        else:
            out[key] = value[i] if isinstance(value, (np.ndarray, list, tuple)) else value
    return out


def run_vector_episode(
    env: gym.vector.VectorEnv,
    agent: Any,
    *,
    seed: int | Sequence[int] | None = None,
    options: dict[str, Any] | None = None,
    deterministic: bool | None = None,
    callback: Callback | None = None,
) -> list[Episode]:
    """Run one episode in every sub-env of ``env`` at once (one batched ``predict`` per step) until each has ended;
    the steps of a sub-env after its episode ended (autoreset) are not recorded.

    Args:
        env: a Gymnasium vector env (sync, async, or a native one such as DetLossWeight's).
        agent: anything with SB3's batched ``predict``; it sees the vector env's observations as they are (an agent
            with its own env wrappers, such as an SB3 learner's, is refused: wrap the sub-envs instead).
        seed: ``reset(seed=...)``: one int (sub-env ``i`` gets ``seed + i``), one per sub-env, or None.
        options: ``reset(options=...)``.
        deterministic: passed to ``predict``; ``None``: the agent's ``eval_deterministic`` (True when it has none).
        callback: called after every step with its :class:`Step` (fields over all sub-envs).

    Returns:
        One :class:`Episode` per sub-env (``seed``: the sub-env's seed; ``last_info``: its entries of the info of
        its last step).
    """
    if _wraps_env(agent):
        raise ValueError(f"run_vector_episode: {agent!r} wraps the env it acts in (wrap_env); wrap the sub-envs with "
                         "agent.wrap_env when making the vector env, and pass an agent without it")
    if deterministic is None:
        deterministic = bool(getattr(agent, "eval_deterministic", True))
    n = env.num_envs
    seeds = [seed + i for i in range(n)] if isinstance(seed, int) else list(seed) if seed is not None else [None] * n
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed, options=options)
    episodes = [Episode(seed=s) for s in seeds]
    done = np.zeros(n, dtype=bool)
    state, first, index = None, np.ones(n, dtype=bool), 0
    while not done.all():
        actions, state = agent.predict(obs, state=state, episode_start=first, deterministic=deterministic)
        step_start = time.perf_counter()
        obs, rewards, terminated, truncated, info = env.step(actions)
        step_s = time.perf_counter() - step_start
        for i in np.flatnonzero(~done):
            ep = episodes[i]
            ep.actions.append(jsonable(np.asarray(actions[i])))
            ep.rewards.append(float(rewards[i]))
            ep.terminated, ep.truncated = bool(terminated[i]), bool(truncated[i])
            if ep.terminated or ep.truncated:
                ep.last_info = _sub_info(info, i)
                ep.final_metrics = ep.last_info.get("final_metrics")
                ep.wall_s = time.perf_counter() - start
        done |= np.asarray(terminated, dtype=bool) | np.asarray(truncated, dtype=bool)
        first = np.zeros(n, dtype=bool)
        if callback is not None:
            callback(Step(index, obs, actions, rewards, terminated, truncated, info, step_s, done.copy()))
        index += 1
    return episodes


def evaluate(env: gym.Env, agent: Any, seeds: Sequence[int], **kwargs: Any) -> list[Episode]:
    """:func:`run_episode` once per seed."""
    return [run_episode(env, agent, seed=int(s), **kwargs) for s in seeds]
