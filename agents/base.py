"""The one agent interface of detgym: Stable-Baselines3's ``predict`` (plus ``learn`` where an agent learns).

Every agent answers ``predict(observation, state=None, episode_start=None, deterministic=False,
action_masks=None) -> (action, state)`` exactly like an SB3 model (sb3-contrib's MaskablePPO takes
``action_masks`` the same way), so the rollout helper (:mod:`detgym.rollout`), SB3's ``evaluate_policy`` and the
benchmarks drive paper agents, heuristics and SB3 models alike, on any action space: Discrete, MultiBinary,
Box, or a masked Discrete action of a sequential env.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["Agent", "env_family", "import_object"]


def env_family(env: gym.Env) -> str | None:
    """The detgym env family of ``env`` (``"loss_weight"``, ...) through any wrappers; ``None`` for other envs."""
    return getattr(env.unwrapped, "family", None)


class Agent:
    """Base class: batching, action shapes and episode-start bookkeeping around :meth:`_act`.

    ``observation`` is one observation or a batch from a vectorized env (a leading ``n_envs`` axis). With an
    ``observation_space`` the two are told apart by shape; without one a 1-D array is one observation and a 2-D
    array a batch (the DetLossWeight layout). The returned action has SB3's shape: ``action_space.shape`` for one
    observation (``()`` for Discrete), ``[n_envs, *action_space.shape]`` for a batch, in the action space's dtype.
    ``state`` is passed through unchanged (memory lives on the agent). ``episode_start`` (bool, or ``[n_envs]``
    bools, as SB3's ``evaluate_policy`` passes it) marks observations that begin a new episode; an env index the
    agent has never seen also counts as a start. ``action_masks`` (``[n_actions]`` or ``[n_envs, n_actions]``
    bools, what ``env.action_masks()`` returns) restrict a Discrete choice to the allowed actions.

    Subclasses implement :meth:`_act` and may override :meth:`fits`, :meth:`_on_episode_start`, :meth:`_observe`
    and :meth:`wrap_env`.

    Args:
        observation_space: the env's observation space (tells one observation from a batch).
        action_space: the env's action space (shape and dtype of the returned actions).
    """

    #: Whether evaluation (:func:`detgym.rollout.run_episode`) asks for deterministic actions by default; agents
    #: whose policy *is* a distribution (RLO, random) set it to False.
    eval_deterministic: ClassVar[bool] = True

    def __init__(self, observation_space: spaces.Space | None = None, action_space: spaces.Space | None = None) -> None:
        self.observation_space = observation_space
        self.action_space = action_space
        self._n_envs = 0

    # ---------------------------------------------------------------- public API
    @classmethod
    def fits(cls, env: gym.Env) -> bool:
        """Whether this agent can act in ``env`` (its family and action space); :func:`detgym.agents.make_agent`
        asks."""
        return True

    def wrap_env(self, env: gym.Env) -> gym.Env:
        """The env as this agent expects to see it (SB3 learners add their observation / action wrappers)."""
        return env

    def predict(
        self,
        observation: Any,
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = False,
        action_masks: Any = None,
    ) -> tuple[np.ndarray, Any]:
        """Choose actions for one observation or a batch (SB3's signature and return shapes)."""
        batch, single = self._as_batch(observation)
        n_envs = _batch_size(batch)
        starts = self._starts(episode_start, n_envs)
        if n_envs != self._n_envs:
            self._resize(n_envs)
            starts[:] = True
        for i in np.flatnonzero(starts):
            self._on_episode_start(int(i))
        masks = None if action_masks is None else np.asarray(action_masks, dtype=bool).reshape(n_envs, -1)
        self._observe(batch, starts)
        actions = self._shape_actions(self._act(batch, deterministic, masks), n_envs)
        return (actions[0] if single else actions), state

    def reset(self) -> None:
        """Forget everything episode-specific: the next :meth:`predict` starts a new episode in every env."""
        self._n_envs = 0

    # --------------------------------------------------------------- for subclasses
    def _act(self, batch: Any, deterministic: bool, action_masks: np.ndarray | None) -> np.ndarray:
        """Actions ``[n_envs, *action_shape]`` for a batch of observations (masks ``[n_envs, n]`` or None)."""
        raise NotImplementedError

    def _resize(self, n_envs: int) -> None:
        """Allocate per-env memory for ``n_envs`` envs (all then start an episode)."""
        self._n_envs = n_envs

    def _on_episode_start(self, env_index: int) -> None:
        """Env ``env_index`` begins a new episode with the current observation."""

    def _observe(self, batch: Any, starts: np.ndarray) -> None:
        """See the observations before acting (online learners update here)."""

    # ------------------------------------------------------------------ internals
    def _as_batch(self, observation: Any) -> tuple[Any, bool]:
        space = self.observation_space
        if isinstance(observation, dict):
            key = next(iter(observation))
            arr = np.asarray(observation[key])
            ref = space[key].shape if isinstance(space, spaces.Dict) else None
            single = arr.shape == ref if ref is not None else arr.ndim <= 1
            batch = {k: np.asarray(v)[None] if single else np.asarray(v) for k, v in observation.items()}
            return batch, single
        obs = np.asarray(observation)
        if isinstance(space, spaces.Box):
            if obs.shape == space.shape:
                return obs[None], True
            if obs.shape[1:] == space.shape:
                return obs, False
            raise ValueError(
                f"observation must have shape {space.shape} (one) or [n_envs, *{space.shape}] (a batch), "
                f"got {obs.shape}"
            )
        if obs.ndim not in (1, 2):
            raise ValueError(
                f"observation must be one observation vector (1-D) or a batch [n_envs, obs_dim], got shape {obs.shape}"
            )
        return (obs[None], True) if obs.ndim == 1 else (obs, False)

    def _shape_actions(self, actions: Any, n_envs: int) -> np.ndarray:
        space = self.action_space
        shape = space.shape if space is not None and space.shape is not None else ()
        dtype = space.dtype if space is not None and space.dtype is not None else np.int64
        return np.asarray(actions, dtype=dtype).reshape((n_envs, *shape))

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


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        return int(np.asarray(next(iter(batch.values()))).shape[0])
    return int(batch.shape[0])


def import_object(path: str, what: str) -> Any:
    """The object at ``path`` (``module:attr.attr`` or ``module.attr``); one-line ValueError naming ``what``."""
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"{what} {path!r} is not an import path ('package.module:Factory' or "
                         "'package.module.Factory')")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{what} {path!r}: cannot import module {module_name!r} ({err})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what} {path!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not callable(obj):
        raise ValueError(f"{what} {path!r} is a {type(obj).__name__}, not a class or factory")
    return obj
