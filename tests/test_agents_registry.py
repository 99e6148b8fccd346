"""make_agent knows every agent of every env family, refuses misfits, and run_episode drives any of them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import detgym  # noqa: F401
from detgym.agents import AGENTS, agent_names, make_agent, run_episode
from detgym.agents.sb3 import wrap_env
from detgym.envs import env_ids
from detgym.envs.loss_weight.wrappers import LogScaleObservation


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("registry-cache"))


@pytest.fixture(scope="module")
def discrete(cache):
    env = gym.make("DetLossWeight-Test-v0", dataset_kwargs={"cache_dir": cache})
    yield env
    env.close()


@pytest.fixture(scope="module")
def continuous(cache):
    env = gym.make("DetLossWeightContinuous-Test-v0", dataset_kwargs={"cache_dir": cache})
    yield env
    env.close()


def test_every_test_env_has_fitting_agents_and_a_learner(cache):
    for env_id in env_ids(test=True):
        env = gym.make(env_id)
        names = agent_names(env)
        assert "random" in names and any(AGENTS[n].learns for n in names), (env_id, names)
        env.close()


def test_misfit_is_refused_with_the_agents_that_fit(continuous):
    with pytest.raises(ValueError, match=r"agent 'dqn' does not fit DetLossWeightContinuous-Test-v0 .*"
                                         r"agents that fit: random, ppo, a2c, recurrent_ppo"):
        make_agent("dqn", env=continuous)
    with pytest.raises(ValueError, match="agent 'avw' does not fit"):
        make_agent("avw", env=continuous)
    with pytest.raises(ValueError, match="unknown agent 'sac'; accepted: uniform"):
        make_agent("sac", env=continuous)


def test_run_episode_records_actions_rewards_and_final_metrics(discrete):
    ep = run_episode(discrete, make_agent("avw", env=discrete), seed=3)
    assert ep.actions == [0] * 7 and ep.length == 7 and ep.truncated and not ep.terminated
    assert ep.episode_return == pytest.approx(sum(ep.rewards))
    assert set(ep.final_metrics) >= {"AP", "AP50"} and ep.last_info["final_metrics"] == ep.final_metrics
    again = run_episode(discrete, make_agent("avw", env=discrete), seed=3)
    assert again.rewards == ep.rewards and again.final_metrics == ep.final_metrics
    # RLO's policy is a distribution: evaluated stochastically by default, and seeded
    rlo = [run_episode(discrete, make_agent("rlo", env=discrete, seed=1), seed=3).actions for _ in range(2)]
    assert rlo[0] == rlo[1] and len(set(rlo[0])) > 1


def test_random_agent_on_box_action(continuous):
    ep = run_episode(continuous, make_agent("random", env=continuous, seed=0), seed=0)
    weights = np.asarray(ep.actions)
    assert weights.shape == (7, continuous.unwrapped.n_levels)
    assert np.all((weights >= 0) & (weights <= 3)) and len(np.unique(weights)) > 7


def test_sb3_agent_learns_then_evaluates_on_other_seeds(continuous):
    agent = make_agent("ppo", env=continuous, seed=0, n_steps=14, batch_size=14)
    agent.learn(28)
    assert agent.model.num_timesteps >= 28
    ep = run_episode(continuous, agent, seed=1000)
    # the policy acts in [-1, 1]; run_episode's wrap_env rescales to the env's [0, 3] weights and records those
    assert ep.length == 7 and np.allclose(ep.actions[-1], ep.last_info["weights"], rtol=1e-6)
    assert np.all((np.asarray(ep.actions) >= 0) & (np.asarray(ep.actions) <= 3))


def test_sb3_wrappers_only_where_they_belong(discrete):
    assert isinstance(wrap_env(discrete), LogScaleObservation)
    cartpole = gym.make("CartPole-v1")
    assert wrap_env(cartpole) is cartpole  # no loss-weight scaling, Discrete action: nothing to add
    pendulum = gym.make("Pendulum-v1")  # Box(-2, 2): rescaled to [-1, 1] for SB3
    assert isinstance(wrap_env(pendulum), gym.wrappers.RescaleAction)
