"""DetLossWeight's native vector env: every sub-env is a single env with the same model seed and minibatch order
(bit for bit on the CPU, one torch thread), gymnasium's vector API (make_vec, batched spaces, NEXT_STEP autoreset,
seeding) and its bad input."""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import detgym  # noqa: F401  (registers the ids)
from detgym.envs.loss_weight import (
    DetLossWeightContinuousEnv,
    DetLossWeightContinuousVectorEnv,
    DetLossWeightEnv,
    DetLossWeightVectorEnv,
)

SEEDS = [11, 11, 12]  # sub-envs 0 and 1 share their initialisation (equal seeds), sub-env 2 has its own


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lw-vector-cache"))


def run_vector(venv, seed, actions):
    obs, info = venv.reset(seed=seed)
    observations, rewards, infos = [obs], [], [info]
    for a in actions:
        obs, reward, term, trunc, info = venv.step(a)
        observations.append(obs)
        rewards.append(reward)
        infos.append(info)
    return np.asarray(observations), np.asarray(rewards), infos, term, trunc


@pytest.fixture(scope="module")
def discrete_run(cache):
    venv = gymnasium.make_vec("DetLossWeight-Test-v0", num_envs=3, vectorization_mode="vector_entry_point",
                              dataset_kwargs={"cache_dir": cache})
    steps = venv.unwrapped.envs[0].episode_steps
    actions = np.random.default_rng(0).integers(0, 4, size=(steps, 3))
    yield venv, actions, run_vector(venv, SEEDS, actions)
    venv.close()


def test_make_vec_builds_the_native_vector_env(discrete_run):
    venv, _, _ = discrete_run
    assert isinstance(venv.unwrapped, DetLossWeightVectorEnv)
    single = venv.unwrapped.envs[0]
    assert venv.single_action_space == single.action_space == gymnasium.spaces.Discrete(4)
    assert venv.action_space == gymnasium.spaces.MultiDiscrete([4, 4, 4])
    assert venv.observation_space.shape == (3, *single.observation_space.shape)
    assert venv.metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.NEXT_STEP


def test_every_sub_env_is_a_single_env(discrete_run, cache):
    venv, actions, (observations, rewards, infos, term, trunc) = discrete_run
    assert trunc.all() and not term.any()
    assert all(venv.observation_space.contains(o) for o in observations)
    train_seed = int(infos[0]["train_seed"][0])
    assert (infos[0]["train_seed"] == train_seed).all() and (infos[0]["joined_at"] == 0).all()
    assert infos[0]["model_seed"][0] == infos[0]["model_seed"][1] != infos[0]["model_seed"][2]
    for i, seed in enumerate(SEEDS):
        env = DetLossWeightEnv("test", dataset_kwargs={"cache_dir": cache})
        # sub-env 0 draws the shared minibatch order itself: a plain reset(seed) reproduces it
        options = None if i == 0 else {"train_seed": train_seed}
        obs, info = env.reset(seed=seed, options=options)
        assert info["model_seed"] == infos[0]["model_seed"][i] and info["train_seed"] == train_seed
        single_obs, single_rewards = [obs], []
        for a in actions[:, i]:
            obs, reward, _, _, info = env.step(a)
            single_obs.append(obs)
            single_rewards.append(reward)
        np.testing.assert_array_equal(observations[:, i], np.asarray(single_obs))
        np.testing.assert_array_equal(rewards[:, i], np.asarray(single_rewards))
        assert {k: v[i] for k, v in infos[-1]["final_metrics"].items() if not k.startswith("_")} \
            == info["final_metrics"]
        np.testing.assert_array_equal(infos[-1]["iteration_losses"][i], info["iteration_losses"])
        env.close()
    # different actions make the twin sub-envs (same initialisation, same batches) differ
    assert not np.array_equal(observations[-1, 0], observations[-1, 1])


def test_autoreset_next_step_then_a_new_episode(discrete_run):
    venv, actions, (observations, *_rest) = discrete_run
    obs, reward, term, trunc, info = venv.step(np.array([0, 7, 0]))  # actions of a resetting step are ignored
    assert (reward == 0).all() and not term.any() and not trunc.any()
    assert "action" not in info and (info["joined_at"] == 0).all() and (info["interval"] == 1).all()
    assert not np.array_equal(obs, observations[0])  # new detectors (seeds drawn from the continuing streams)
    obs, reward, term, trunc, info = venv.step(np.array([1, 2, 3]))
    assert (info["interval"] == 2).all() and list(info["action"]) == [1, 2, 3] and info["_action"].all()


def test_reset_is_reproducible_and_takes_seed_options(discrete_run, cache):
    venv, _, (observations, *_rest) = discrete_run
    obs, _ = venv.reset(seed=SEEDS)
    np.testing.assert_array_equal(obs, observations[0])
    other = DetLossWeightVectorEnv(2, "test", dataset_kwargs={"cache_dir": cache})
    obs, info = other.reset(options={"model_seed": [5, 6], "train_seed": 7})
    assert list(info["model_seed"]) == [5, 6] and (info["train_seed"] == 7).all()
    single = DetLossWeightEnv("test", dataset_kwargs={"cache_dir": cache})
    np.testing.assert_array_equal(obs[1], single.reset(options={"model_seed": 6, "train_seed": 7})[0])
    for bad, match in [({"model_seed": [1]}, "model_seed"), ({"train_seed": -1}, "train_seed"), ({"lr": 1}, "options")]:
        with pytest.raises(ValueError, match=match):
            other.reset(options=bad)
    with pytest.raises(ValueError, match="seed"):
        other.reset(seed=[1, 2, 3])
    other.close()
    single.close()


def test_a_diverged_sub_env_ends_alone_and_rejoins(cache):
    venv = DetLossWeightVectorEnv(3, "test", dataset_kwargs={"cache_dir": cache})
    venv.reset(seed=3)
    reference = DetLossWeightVectorEnv(3, "test", dataset_kwargs={"cache_dir": cache})
    reference.reset(seed=3)
    with torch.no_grad():
        next(venv.trainer.members[1].model.parameters()).fill_(float("nan"))
    obs, reward, term, trunc, info = venv.step(np.zeros(3, dtype=int))
    ref_obs, ref_reward, *_ = reference.step(np.zeros(3, dtype=int))
    assert list(term) == [False, True, False] and info["diverged"][1] and info["_diverged"][1]
    assert reward[1] == -venv.envs[1].episode_steps  # the loss reward's penalty: every step left, -1 each
    np.testing.assert_array_equal(reward[[0, 2]], ref_reward[[0, 2]])  # the others train on, undisturbed
    np.testing.assert_array_equal(obs[[0, 2]], ref_obs[[0, 2]])
    obs, reward, term, trunc, info = venv.step(np.zeros(3, dtype=int))  # sub-env 1 restarts mid-sequence
    ref_obs, ref_reward, *_ = reference.step(np.zeros(3, dtype=int))
    assert info["_joined_at"][1] and info["joined_at"][1] == 2 * venv.alpha and reward[1] == 0
    assert info["interval"][1] == 1 and list(info["interval"][[0, 2]]) == [3, 3]
    np.testing.assert_array_equal(obs[[0, 2]], ref_obs[[0, 2]])
    assert np.isfinite(obs[1]).all()
    venv.close()
    reference.close()


def test_continuous_sub_env_is_a_single_env(cache):
    venv = gymnasium.make_vec("DetLossWeightContinuous-Test-v0", num_envs=2, vectorization_mode="vector_entry_point",
                              dataset_kwargs={"cache_dir": cache})
    assert isinstance(venv.unwrapped, DetLossWeightContinuousVectorEnv) and venv.action_space.shape == (2, 5)
    weights = np.random.default_rng(1).uniform(0.5, 2.5, size=(3, 2, 5)).astype(np.float32)
    observations, rewards, infos, _, _ = run_vector(venv, 4, weights)
    env = DetLossWeightContinuousEnv("test", dataset_kwargs={"cache_dir": cache})
    obs, _ = env.reset(seed=5, options={"train_seed": int(infos[0]["train_seed"][0])})
    np.testing.assert_array_equal(obs, observations[0, 1])
    for k, w in enumerate(weights[:, 1]):
        obs, reward, *_ = env.step(w)
        np.testing.assert_array_equal(obs, observations[k + 1, 1])
        assert reward == rewards[k, 1]
    env.close()
    venv.close()


def test_bad_input_names_the_parameter(cache):
    kw = {"dataset_kwargs": {"cache_dir": cache}}
    with pytest.raises(ValueError, match="num_envs must be an integer >= 1"):
        DetLossWeightVectorEnv(0, "test", **kw)
    with pytest.raises(ValueError, match=r"num_envs=\d+ needs about .* GiB .* per sub-env .* use at most \d+"):
        DetLossWeightVectorEnv(10**9, "test", **kw)
    with pytest.raises(ValueError, match="preset must be one preset name"):
        DetLossWeightVectorEnv(2, ["test", "default"], **kw)
    venv = DetLossWeightVectorEnv(2, "test", **kw)
    with pytest.raises(ValueError, match="call reset"):
        venv.step(np.zeros(2, dtype=int))
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=r"actions must have shape \(2,\)"):
        venv.step(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"actions\[1\]: action must be an integer in 0\.\.3"):
        venv.step(np.array([0, 4]))
    venv.close()
