"""The contract every registered env keeps, checked on every -Test id: Gymnasium's and SB3's env checkers,
reproducible seeded episodes, "episode over: call reset", and one-line errors for the shell's arguments."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

import detgym  # noqa: F401  registers the ids
from detgym.envs import env_ids

TEST_IDS = env_ids(test=True)


def _episode(env: gym.Env, seed: int, max_steps: int = 12) -> tuple[list, list]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    observations, rewards = [obs], []
    for _ in range(max_steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        observations.append(obs)
        rewards.append(reward)
        if terminated or truncated:
            break
    return observations, rewards


@pytest.mark.parametrize("env_id", TEST_IDS)
def test_gymnasium_and_sb3_env_checkers_pass(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id)
    try:
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(env.unwrapped, warn=False)
    finally:
        env.close()


@pytest.mark.parametrize("env_id", TEST_IDS)
def test_seeded_episodes_repeat_and_a_finished_episode_needs_reset(env_id):
    env = gym.make(env_id)
    try:
        first_obs, first_rewards = _episode(env, seed=4, max_steps=200)
        again_obs, again_rewards = _episode(env, seed=4, max_steps=200)
        assert first_rewards == again_rewards
        assert all(np.array_equal(a, b) for a, b in zip(first_obs, again_obs))
        if len(first_rewards) < 200:  # the episode ended
            with pytest.raises(ResetNeeded):
                env.step(env.action_space.sample())
    finally:
        env.close()


@pytest.mark.parametrize("env_id", TEST_IDS)
def test_reset_reports_the_thread_count_and_refuses_unknown_options(env_id):
    env = gym.make(env_id)
    try:
        _, info = env.reset(seed=0)
        assert info["num_threads"] == 1
        with pytest.raises(ValueError, match="options"):
            env.reset(options={"no_such_option": 1})
    finally:
        env.close()


@pytest.mark.parametrize("env_id", TEST_IDS)
@pytest.mark.parametrize("kwargs, match", [
    ({"num_threads": 0}, "num_threads"),
    ({"render_mode": "human"}, "render_mode"),
    ({"cache_dir": __file__}, "cache_dir"),  # a file, not a directory
])
def test_shell_arguments_are_checked(env_id, kwargs, match):
    with pytest.raises(ValueError, match=match):
        gym.make(env_id, **kwargs)
