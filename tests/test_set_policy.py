"""The permutation-equivariant set policy (detgym.agents.set_policy) in SB3 PPO / A2C / MaskablePPO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces

import detgym  # noqa: F401
from detgym.agents import make_agent
from detgym.agents.set_policy import MaskableSetPolicy, SetPolicy, set_policy_fits

VARIANTS = ("DetBoxSelect-Test-v1", "DetBoxRescore-Test-v1", "DetBoxSelectSeq-Test-v1")


@pytest.fixture(scope="module")
def agents():
    """PPO (keep-mask, rescore) and MaskablePPO (sequential), as make_agent builds them, after a few updates."""
    out = {}
    for env_id in VARIANTS:
        env = gym.make(env_id)
        algo = "maskable_ppo" if "Seq" in env_id else "ppo"
        out[env_id] = make_agent(algo, env=env, seed=0, n_steps=32, batch_size=16, n_epochs=2).learn(64)
    return out


def _outputs(agent, obs: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        dist = agent.model.policy.get_distribution(torch.as_tensor(obs[None])).distribution
    return getattr(dist, "logits", None) if hasattr(dist, "logits") else dist.mean


@pytest.mark.parametrize("env_id", VARIANTS)
def test_default_policy_is_the_set_policy_and_equivariant(agents, env_id):
    agent = agents[env_id]
    assert isinstance(agent.model.policy, MaskableSetPolicy if "Seq" in env_id else SetPolicy)
    env = agent.wrap_env(gym.make(env_id))
    n = env.unwrapped.n_max
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        perm = np.random.default_rng(seed).permutation(n)
        out, out_perm = _outputs(agent, obs)[0], _outputs(agent, obs[perm])[0]
        torch.testing.assert_close(out[:n][perm], out_perm[:n], atol=1e-5, rtol=1e-5)
        if out.shape[0] == n + 1:  # the stop logit does not depend on the order
            torch.testing.assert_close(out[n], out_perm[n], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("env_id", VARIANTS)
def test_padded_slots_never_act(agents, env_id):
    agent = agents[env_id]
    env = agent.wrap_env(gym.make(env_id))
    base = env.unwrapped
    i = int(np.argmin(base.table.counts))
    obs, _ = env.reset(options={"image_index": i})
    n = int(base.table.counts[i])
    out = _outputs(agent, obs)[0]
    if "Rescore" in env_id:
        assert (out[n:] == -1.0).all()  # mean -1 in SB3's scale: score 0, dropped
    else:
        assert (out[n:base.n_max] == -20.0).all()
    for _ in range(5):
        action, _ = agent.predict(obs, deterministic=False,
                                  action_masks=base.action_masks() if "Seq" in env_id else None)
        _, _, _, _, info = env.step(action)
        assert info.get("ignored_slots", 0) == 0 and info.get("ignored_actions", 0) == 0
        obs, _ = env.reset(options={"image_index": i})


def test_rescore_policy_starts_at_the_detector_scores():
    env = gym.make("DetBoxRescore-Test-v1")
    agent = make_agent("ppo", env=env, seed=0)
    obs, _ = agent.wrap_env(env).reset(seed=0)
    mean = _outputs(agent, obs)[0].numpy()
    valid = obs[:, 0] > 0.5
    np.testing.assert_allclose(mean[valid], 2 * obs[valid, 5] - 1, atol=0.05)


def test_a2c_trains_and_the_model_reloads(tmp_path):
    from stable_baselines3 import A2C

    env = gym.make("DetBoxSelect-Test-v1")
    agent = make_agent("a2c", env=env, seed=0, policy_kwargs={"hidden": 16}).learn(64)
    agent.model.save(tmp_path / "a2c")
    loaded = A2C.load(tmp_path / "a2c", device="cpu")
    assert isinstance(loaded.policy, SetPolicy) and loaded.policy.set_kwargs["hidden"] == 16
    obs, _ = env.reset(seed=1)
    np.testing.assert_array_equal(loaded.predict(obs, deterministic=True)[0],
                                  agent.predict(obs, deterministic=True)[0])


def test_fits_and_bad_input():
    obs = spaces.Box(0, 1, (8, 19), dtype=np.float32)
    assert set_policy_fits(obs, spaces.MultiBinary(8))
    assert set_policy_fits(obs, spaces.Box(0, 1, (8,), dtype=np.float32))
    assert set_policy_fits(obs, spaces.Discrete(9))
    assert not set_policy_fits(obs, spaces.Discrete(8))
    assert not set_policy_fits(spaces.Box(0, 1, (8,), dtype=np.float32), spaces.MultiBinary(8))
    with pytest.raises(ValueError, match="set policy"):
        SetPolicy(obs, spaces.MultiBinary(7), lambda _: 1e-3)
    with pytest.raises(ValueError, match="score_column"):
        SetPolicy(obs, spaces.MultiBinary(8), lambda _: 1e-3, score_column=19)
