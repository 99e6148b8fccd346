"""make_agent knows every agent of every env family (and users' agents, registered or by import path), refuses
misfits, and run_episode / run_vector_episode drive any of them."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import detgym  # noqa: F401
from detgym.agents import AGENTS, agent_names, find_agent, make_agent, register, run_episode, run_vector_episode
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


def test_run_episode_calls_back_after_every_step(discrete):
    steps = []
    ep = run_episode(discrete, make_agent("a2", env=discrete), seed=3, callback=steps.append)
    assert [s.index for s in steps] == list(range(ep.length)) and all(s.wall_s > 0 for s in steps)
    assert [s.reward for s in steps] == ep.rewards and steps[-1].info is ep.last_info and steps[-1].truncated
    assert [int(s.action) for s in steps] == ep.actions == [2] * ep.length


@pytest.mark.parametrize("mode", ["sync", "vector_entry_point"])
def test_run_vector_episode_gives_each_sub_env_its_single_env_episode(discrete, cache, mode):
    venv = gym.make_vec("DetLossWeight-Test-v0", num_envs=2, vectorization_mode=mode,
                        dataset_kwargs={"cache_dir": cache})
    steps = []
    try:
        episodes = run_vector_episode(venv, make_agent("a1"), seed=[5, 5], callback=steps.append)
    finally:
        venv.close()
    single = run_episode(discrete, make_agent("a1", env=discrete), seed=5)
    assert len(episodes) == 2 and len(steps) == single.length and steps[-1].done.all()
    for ep in episodes:  # both sub-envs start from seed 5: each is the single env's episode
        assert ep.seed == 5 and ep.actions == single.actions and ep.rewards == single.rewards
        assert ep.truncated and ep.final_metrics["AP"] == pytest.approx(single.final_metrics["AP"])
    with pytest.raises(ValueError, match="wrap the sub-envs"):
        run_vector_episode(venv, make_agent("ppo", env=discrete, n_steps=8, batch_size=8), seed=0)


def test_register_and_import_paths(discrete):
    from tests.compare_user_agents import Alternate, Bandit, build_constant

    spec = register("const2", build_constant, summary="always a2")
    try:
        assert spec.source == "tests.compare_user_agents:build_constant" and not spec.learns
        assert make_agent("CONST2", env=discrete, action=2).action == 2 and "const2" in agent_names(discrete)
        assert run_episode(discrete, make_agent("const2", env=discrete, action=2), seed=0).actions == [2] * 7
    finally:
        AGENTS.pop("const2")
    assert isinstance(make_agent("tests.compare_user_agents:Alternate", env=discrete), Alternate)
    bandit = find_agent("tests.compare_user_agents.Bandit")
    assert bandit.learns and bandit.kind == "user" and bandit.source == bandit.name
    assert isinstance(bandit.make(discrete, seed=0).learn(7), Bandit)
    tqc = find_agent("sb3_contrib:TQC")
    assert tqc.kind == "sb3" and tqc.learns and not tqc.fits(discrete)
    for bad, message in (("nms", "one of detgym's own agents"), ("Bad Name", "must be lower case"),
                         ("x.y", "must be lower case")):
        with pytest.raises(ValueError, match=message):
            register(bad, build_constant)
    with pytest.raises(ValueError, match=r"agent 'tests.compare_user_agents:Nope': module "
                                         r"'tests.compare_user_agents' has no attribute 'Nope'"):
        find_agent("tests.compare_user_agents:Nope")
    with pytest.raises(ValueError, match="agent 'stable_baselines3:SAC' does not fit DetLossWeight-Test-v0"):
        make_agent("stable_baselines3:SAC", env=discrete)
