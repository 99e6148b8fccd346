"""Stable-Baselines3 PPO / A2C / DQN on the detgym envs, ready to ``learn``.

``make_env`` applies the observation scaling (:class:`detgym.envs.wrappers.LogScaleObservation`) and, for the
continuous variant, rescales the Box action to ``[-1, 1]``; ``make_sb3`` builds an algorithm with defaults
sized for short episodes (small rollout buffers, a small replay buffer) on the CPU. SB3 models already have the
agent interface (``predict``), so they plug into the same evaluation loops as the paper agents.

Example::

    from agents.sb3 import make_sb3, make_vec
    venv = make_vec("DetLossWeight-Test-v0", n_envs=1, seed=0)
    model = make_sb3("ppo", venv, seed=0).learn(200)
"""

from __future__ import annotations

from typing import Any, Callable

import gymnasium as gym
import numpy as np

__all__ = ["ALGOS", "SB3_DEFAULTS", "make_env", "make_sb3", "make_vec"]

#: Accepted algorithm names.
ALGOS: tuple[str, ...] = ("ppo", "a2c", "dqn")

#: Per-algorithm keyword defaults (over SB3's): sized for episodes of tens of steps and short runs.
SB3_DEFAULTS: dict[str, dict[str, Any]] = {
    "ppo": {"n_steps": 64, "batch_size": 32, "n_epochs": 4, "learning_rate": 3e-4},
    "a2c": {"n_steps": 8, "learning_rate": 7e-4},
    # a 1e6-transition replay buffer would allocate hundreds of MB for nothing
    "dqn": {"buffer_size": 10_000, "learning_starts": 32, "batch_size": 32, "train_freq": 1,
            "target_update_interval": 64, "exploration_fraction": 0.3},
}


def make_env(
    env_id: str = "DetLossWeight-v0",
    *,
    scale_obs: bool = True,
    rescale_action: bool = True,
    **env_kwargs: Any,
) -> gym.Env:
    """``gymnasium.make(env_id, **env_kwargs)`` with the wrappers SB3 needs.

    Args:
        env_id: a registered id (``"detgym:"`` prefix optional).
        scale_obs: wrap in :class:`~detgym.envs.wrappers.LogScaleObservation`.
        rescale_action: for a Box action space, wrap in ``RescaleAction(env, -1, 1)``.
    """
    import detgym  # noqa: F401  registers the ids
    from detgym.envs.wrappers import LogScaleObservation

    env = gym.make(env_id, **env_kwargs)
    if scale_obs:
        env = LogScaleObservation(env)
    if rescale_action and isinstance(env.action_space, gym.spaces.Box):
        # float32 bounds: float64 ones make gymnasium warn about precision on every env built
        env = gym.wrappers.RescaleAction(env, np.float32(-1.0), np.float32(1.0))
    return env


def make_vec(env_id: str = "DetLossWeight-v0", n_envs: int = 1, seed: int = 0, *, vec_normalize: bool = False,
             **kwargs: Any):
    """A ``DummyVecEnv`` of ``n_envs`` :func:`make_env` envs with SB3's Monitor (``VecNormalize`` on request)."""
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    factory: Callable[[], gym.Env] = lambda: make_env(env_id, **kwargs)  # noqa: E731
    venv = make_vec_env(factory, n_envs=n_envs, seed=seed)
    return VecNormalize(venv, norm_obs=True, norm_reward=False) if vec_normalize else venv


def make_sb3(algo: str, env: Any, seed: int | None = 0, policy: str = "MlpPolicy", **kwargs: Any):
    """Build SB3's ``algo`` ("ppo", "a2c", "dqn") on ``env`` with :data:`SB3_DEFAULTS` (``kwargs`` win).

    Raises:
        ValueError: unknown ``algo``, or DQN on a continuous (Box) action space.
    """
    from stable_baselines3 import A2C, DQN, PPO

    key = str(algo).lower()
    classes = {"ppo": PPO, "a2c": A2C, "dqn": DQN}
    if key not in classes:
        raise ValueError(f"unknown algo {algo!r}; accepted: {', '.join(ALGOS)}")
    if key == "dqn" and not isinstance(env.action_space, gym.spaces.Discrete):
        raise ValueError("algo='dqn' needs a Discrete action space: use DetLossWeight-v0, not the Continuous variant")
    options = {**SB3_DEFAULTS[key], "seed": seed, "device": "cpu", "verbose": 0, **kwargs}
    return classes[key](policy, env, **options)
