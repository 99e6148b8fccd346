"""DetLossWeight-v0 with Stable-Baselines3: the wrapped env SB3 sees, and PPO / A2C / DQN smoke learning."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import detgym  # noqa: F401
from detgym.agents.sb3 import make_env, make_sb3, make_vec


@pytest.fixture(scope="module")
def data_kw(tmp_path_factory):
    return {"dataset_kwargs": {"cache_dir": str(tmp_path_factory.mktemp("lw-sb3-cache"))}}


@pytest.mark.parametrize("env_id", ["DetLossWeight-Test-v0", "DetLossWeightContinuous-Test-v0"])
def test_sb3_wrappers_leave_sb3_nothing_to_advise(env_id, data_kw):
    """The raw envs pass both checkers (tests/test_env_contract.py); SB3's only advice on them is about scaling,
    which the env class's ``sb3_wrappers`` (and RescaleAction for the continuous one) provide."""
    from stable_baselines3.common.env_checker import check_env

    wrapped = make_env(env_id, **data_kw)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(wrapped, warn=True)
    wrapped.close()


# longer episodes (31 steps) spend less of the budget in resets and final evaluations
LONG = {"iterations": 64}


def _policy_vector(model) -> np.ndarray:
    return np.concatenate([p.detach().cpu().numpy().ravel() for p in model.policy.parameters()])


@pytest.mark.parametrize("algo", ["ppo", "a2c", "dqn"])
def test_sb3_smoke_a_few_hundred_steps(algo, data_kw):
    """A smoke test: the eq. 7 reward of the 32-px test preset is mostly noise, so 200 steps cannot show that a
    policy got better; they do show that SB3 trains on real env steps and updates its networks."""
    venv = make_vec("DetLossWeight-Test-v0", n_envs=1, seed=0, **data_kw, **LONG)
    # PPO rollouts of 50 steps: 200 steps are exactly 4 rollouts (64 would round the run up to 256)
    model = make_sb3(algo, venv, seed=0, **({"n_steps": 50, "batch_size": 25} if algo == "ppo" else {}))
    before = _policy_vector(model)
    model.learn(total_timesteps=200)
    assert model.num_timesteps >= 200
    assert not np.allclose(_policy_vector(model), before), "learn() changed no network parameter"
    episodes = list(model.ep_info_buffer)
    assert len(episodes) >= 6 and all(e["l"] == 31 for e in episodes)  # full 31-step episodes were played
    obs = venv.reset()
    action, _ = model.predict(obs, deterministic=True)
    assert action.shape == (1,) and 0 <= int(action[0]) < 4
    venv.close()


def test_sb3_continuous_smoke(data_kw):
    venv = make_vec("DetLossWeightContinuous-Test-v0", n_envs=1, seed=0, **data_kw, **LONG)
    assert venv.action_space == gym.spaces.Box(-1.0, 1.0, venv.action_space.shape, np.float32)
    model = make_sb3("ppo", venv, seed=0, n_steps=16, batch_size=16)
    model.learn(total_timesteps=32)
    assert model.num_timesteps >= 32
    venv.close()


def test_vec_normalize_option_and_dqn_guard(data_kw):
    venv = make_vec("DetLossWeightContinuous-Test-v0", n_envs=1, seed=0, vec_normalize=True, **data_kw)
    from stable_baselines3.common.vec_env import VecNormalize

    assert isinstance(venv, VecNormalize)
    with pytest.raises(ValueError, match="needs a Discrete action space"):
        make_sb3("dqn", venv)
    with pytest.raises(ValueError, match="accepted: ppo, a2c, dqn"):
        make_sb3("sac", venv)
    venv.close()
