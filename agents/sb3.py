"""Stable-Baselines3 / sb3-contrib algorithms on the detgym envs, as agents ready to ``learn``.

:func:`wrap_env` adds what SB3 needs and nothing else: the wrappers the env class declares in ``sb3_wrappers``
(e.g. the DetLossWeight envs' :class:`~detgym.envs.loss_weight.wrappers.LogScaleObservation`), and a ``[-1, 1]``
rescaling of a Box action whose bounds are not already that. :func:`make_sb3` builds an algorithm with
defaults sized for short episodes on the CPU; :class:`SB3Agent` holds one with the detgym agent interface
(``learn`` + ``predict`` + ``wrap_env``), which is what :func:`detgym.agents.make_agent` returns for ``"ppo"``,
``"a2c"``, ``"dqn"``, ``"maskable_ppo"`` and ``"recurrent_ppo"``, and for any algorithm class given by import path
(``make_agent("sb3_contrib.TQC", env)``: SB3's own defaults, ``policy="MlpPolicy"``).

Example::

    from detgym.agents.sb3 import make_sb3, make_vec
    venv = make_vec("DetLossWeight-Test-v0", n_envs=1, seed=0)
    model = make_sb3("ppo", venv, seed=0).learn(200)
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from detgym.agents.base import Agent, import_object

__all__ = [
    "ALGOS", "SB3_DEFAULTS", "SB3Agent", "algo_fits", "default_policy", "env_options", "make_env", "make_sb3",
    "make_vec", "wrap_env",
]

#: Accepted algorithm names.
ALGOS: tuple[str, ...] = ("ppo", "a2c", "dqn", "maskable_ppo", "recurrent_ppo")

#: Per-algorithm keyword defaults (over SB3's): sized for episodes of tens of steps and short runs.
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "learning_rate": 3e-4},
    "a2c": {"n_steps": 8, "learning_rate": 7e-4},
    # a 1e6-transition replay buffer would allocate hundreds of MB for nothing
    "dqn": {"buffer_size": 10_000, "learning_starts": 32, "batch_size": 32, "train_freq": 1,
            "target_update_interval": 64, "exploration_fraction": 0.3},
    "maskable_ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "learning_rate": 3e-4},
    "recurrent_ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "learning_rate": 3e-4},
}

_POLICY = {"recurrent_ppo": "MlpLstmPolicy"}
_ON_POLICY_ACTIONS = (spaces.Discrete, spaces.Box, spaces.MultiBinary, spaces.MultiDiscrete)
_MASKABLE_ACTIONS = (spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)


def algo_fits(algo: str | type, env: gym.Env) -> bool:
    """Whether SB3's ``algo`` can train on ``env``: DQN needs a Discrete action, MaskablePPO an env with
    ``action_masks()``, the others any Discrete / Box / MultiBinary / MultiDiscrete action. An algorithm class is
    asked itself: it is built on the wrapped env without its networks (which checks the action space, and
    nothing else is allocated)."""
    if isinstance(algo, type):
        return _class_fits(algo, env)
    action = env.action_space
    if algo == "dqn":
        return isinstance(action, spaces.Discrete)
    if algo == "maskable_ppo":
        return isinstance(action, _MASKABLE_ACTIONS) and _has_action_masks(env)
    return isinstance(action, _ON_POLICY_ACTIONS)


def _class_fits(algo: type, env: gym.Env) -> bool:
    from stable_baselines3.common.vec_env import DummyVecEnv

    wrapped = wrap_env(env)
    try:
        algo(default_policy(algo, wrapped.observation_space), DummyVecEnv([lambda: wrapped]), device="cpu",
             _init_setup_model=False)
    except (AssertionError, ValueError):  # SB3's "only supports (Box,) as action spaces" is an assertion
        return False
    return True


def default_policy(algo: type, observation_space: spaces.Space) -> str:
    """``"MlpPolicy"`` (``"MultiInputPolicy"`` for Dict observations), or the algorithm's own alias of it
    (``"MlpLstmPolicy"`` for RecurrentPPO)."""
    aliases = list(getattr(algo, "policy_aliases", {}))
    kind = "MultiInput" if isinstance(observation_space, spaces.Dict) else "Mlp"
    if f"{kind}Policy" in aliases:
        return f"{kind}Policy"
    return next((a for a in aliases if a.startswith(kind)), f"{kind}Policy")


def _has_action_masks(env: gym.Env) -> bool:
    try:
        return callable(env.get_wrapper_attr("action_masks"))
    except AttributeError:
        return False


def wrap_env(env: gym.Env, *, env_wrappers: bool = True, rescale_action: bool = True) -> gym.Env:
    """``env`` with the wrappers SB3 needs (see the module docstring): the env class's ``sb3_wrappers``
    (``env_wrappers``), then the action rescaling (``rescale_action``)."""
    if env_wrappers:
        for wrapper in getattr(env.unwrapped, "sb3_wrappers", ()):
            env = wrapper(env)
    box = env.action_space
    if rescale_action and isinstance(box, spaces.Box) and not (np.all(box.low == -1) and np.all(box.high == 1)):
        # float32 bounds: float64 ones make gymnasium warn about precision on every env built
        env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    return env


def make_env(env_id: str = "DetLossWeight-v0", *, env_wrappers: bool = True, rescale_action: bool = True,
             **env_kwargs: Any) -> gym.Env:
    """``gymnasium.make(env_id, **env_kwargs)`` with :func:`wrap_env`'s wrappers (``"detgym:"`` prefix optional)."""
    import detgym  # noqa: F401  registers the ids

    return wrap_env(gym.make(env_id, **env_kwargs), env_wrappers=env_wrappers, rescale_action=rescale_action)


def make_vec(env_id: str = "DetLossWeight-v0", n_envs: int = 1, seed: int = 0, *, vec_normalize: bool = False,
             **kwargs: Any):
    """A ``DummyVecEnv`` of ``n_envs`` :func:`make_env` envs with SB3's Monitor (``VecNormalize`` on request)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    factory: Callable[[], gym.Env] = lambda: make_env(env_id, **kwargs)  # noqa: E731
    venv = make_vec_env(factory, n_envs=n_envs, seed=seed)
    return VecNormalize(venv, norm_obs=True, norm_reward=False) if vec_normalize else venv


def _algo_class(key: str) -> type:
    if key in ("maskable_ppo", "recurrent_ppo"):
        from sb3_contrib import MaskablePPO, RecurrentPPO

        return {"maskable_ppo": MaskablePPO, "recurrent_ppo": RecurrentPPO}[key]
    from stable_baselines3 import A2C, DQN, PPO

    return {"ppo": PPO, "a2c": A2C, "dqn": DQN}[key]


def make_sb3(algo: str | type, env: Any, seed: int | None = 0, policy: str | None = None, **kwargs: Any):
    """Build ``algo`` (one of :data:`ALGOS` with :data:`SB3_DEFAULTS`, or any SB3 / sb3-contrib algorithm class
    with SB3's own defaults) on ``env``; ``kwargs`` win.

    Raises:
        ValueError: unknown ``algo``, or an algorithm that cannot act in ``env`` (DQN on a Box action, ...).
    """
    if isinstance(algo, type):
        options = {"seed": seed, "device": "cpu", "verbose": 0, **kwargs}
        return algo(policy or default_policy(algo, env.observation_space), env, **options)
    key = str(algo).lower()
    if key not in ALGOS:
        raise ValueError(f"unknown algo {algo!r}; accepted: {', '.join(ALGOS)}, or an SB3 algorithm class")
    if key == "dqn" and not isinstance(env.action_space, spaces.Discrete):
        raise ValueError(
            f"algo='dqn' needs a Discrete action space, got {env.action_space}: use PPO / A2C, or a discrete variant"
        )
    options = {**SB3_DEFAULTS[key], "seed": seed, "device": "cpu", "verbose": 0, **kwargs}
    return _algo_class(key)(policy or _POLICY.get(key, "MlpPolicy"), env, **options)


class _DropInfo(gym.Wrapper):
    """The env with some info entries left out (its class's ``sb3_unread_info``)."""

    def __init__(self, env: gym.Env, keys: tuple[str, ...]) -> None:
        super().__init__(env)
        self._keys = keys

    def _slim(self, info: dict) -> dict:
        return {k: v for k, v in info.items() if k not in self._keys}

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        obs, info = self.env.reset(**kwargs)
        return obs, self._slim(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._slim(info)


#: Options an env class may name by import path (``"package.module:Name"``): env modules do not import agents.
_IMPORTED_OPTIONS = ("policy", "learning_rate")


def env_options(algo: str | type, env: gym.Env) -> dict[str, Any]:
    """The env class's options for ``algo`` (its ``sb3_options``; ``n_envs`` among them is SB3Agent's), with a
    policy class or learning-rate schedule given as an import path imported."""
    name = algo if isinstance(algo, str) else algo.__name__.lower()
    options = dict(getattr(env.unwrapped, "sb3_options", {}).get(name, {}))
    for key in _IMPORTED_OPTIONS:
        if isinstance(options.get(key), str) and ":" in options[key]:
            options[key] = import_object(options[key], f"sb3_options[{name!r}][{key!r}]")
    return options


def _copy(env: gym.Env) -> gym.Env:
    """Another instance of ``env``'s registered configuration (a training copy)."""
    if env.spec is None:
        raise ValueError("n_envs > 1 needs an env made with gymnasium.make (its spec builds the copies)")
    return gym.make(env.spec.id, **env.spec.kwargs)


class SB3Agent(Agent):
    """An SB3 / sb3-contrib algorithm as a detgym agent: :meth:`learn` on an env, then :meth:`predict`.

    The model trains on ``wrap_env(env)`` (the env itself, wrapped; one env, SB3's Monitor), so its training
    episodes use whatever seeds SB3 resets the env with (``seed``); evaluate it on other seeds through
    :func:`detgym.rollout.run_episode`, which applies :meth:`wrap_env` to the evaluation env.

    Args:
        algo: one of :data:`ALGOS`, or an SB3 / sb3-contrib algorithm class (``sb3_contrib.TQC``).
        env: the env to train on (a detgym env, possibly wrapped).
        seed: the algorithm's seed (network initialisation, exploration, training-episode seeds).
        **kwargs: SB3 constructor arguments over :data:`SB3_DEFAULTS` and the env class's ``sb3_options``
            (``policy=`` picks the policy class; ``n_envs``: training copies of the env, made from its spec).
    """

    def __init__(self, algo: str | type, env: gym.Env, seed: int | None = 0, **kwargs: Any) -> None:
        from stable_baselines3.common.env_util import make_vec_env

        self.algo = algo if isinstance(algo, type) else str(algo).lower()
        kwargs = {**env_options(self.algo, env), **kwargs}
        n_envs = kwargs.pop("n_envs", 1)
        if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
            raise ValueError(f"n_envs must be an integer >= 1, got {n_envs!r}")
        wrapped = wrap_env(env)
        super().__init__(wrapped.observation_space, wrapped.action_space)
        unread = getattr(env.unwrapped, "sb3_unread_info", ())
        copies = [env] + [_copy(env) for _ in range(n_envs - 1)]
        train_envs = [_DropInfo(wrap_env(e), unread) if unread else wrap_env(e) for e in copies]
        self.venv = make_vec_env(lambda: train_envs.pop(0), n_envs=n_envs, seed=seed)
        self.model = make_sb3(self.algo, self.venv, seed=seed, **kwargs)
        self._takes_masks = "action_masks" in inspect.signature(self.model.predict).parameters

    def learn(self, total_timesteps: int, **kwargs: Any) -> "SB3Agent":
        """Train for ``total_timesteps`` env steps (SB3's ``learn``; ``progress_bar=True`` shows one)."""
        if int(total_timesteps) < 1:
            raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps!r}")
        self.model.learn(total_timesteps=int(total_timesteps), **kwargs)
        return self

    def wrap_env(self, env: gym.Env) -> gym.Env:
        return wrap_env(env)

    def predict(self, observation: Any, state: Any = None, episode_start: Any = None, deterministic: bool = False,
                action_masks: Any = None) -> tuple[np.ndarray, Any]:
        if self._takes_masks:
            return self.model.predict(observation, state, episode_start, deterministic, action_masks=action_masks)
        return self.model.predict(observation, state, episode_start, deterministic)

    def __repr__(self) -> str:
        name = self.algo.__name__ if isinstance(self.algo, type) else self.algo
        return f"SB3Agent({name!r})"
