"""Active-learning baselines (entropy, score uncertainty, core-set) and SB3 learners on the DetSampleSelect envs."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

import detgym  # noqa: F401
from detgym.agents import make_agent, run_episode
from detgym.agents.active_learning import EntropyAgent, ScoreUncertaintyAgent, rank_scores
from detgym.agents.coreset import CoreSetAgent, k_center_greedy
from detgym.agents.registry import agent_names
from detgym.envs.sample_select.env import DetSampleSelectEnv, DetSampleSelectSeqEnv
from detgym.envs.sample_select.observation import N_EXTRA, column, row_features


def _obs(embed, nearest, stats=None, picked=None, valid=None, picks_left=2):
    m = len(nearest)
    stats = np.zeros((m, 5)) if stats is None else np.asarray(stats)
    picked = np.zeros(m) if picked is None else np.asarray(picked, dtype=float)
    valid = np.ones(m) if valid is None else np.asarray(valid, dtype=float)
    return row_features(np.asarray(embed, np.float32), stats, np.asarray(nearest, float), picked, valid,
                        (0.0, 0.1, 0.2, picks_left / m))


def _space(m, d):
    return spaces.Box(-np.inf, np.inf, (m, d + N_EXTRA), np.float32)


# ------------------------------------------------------------------ hand-made cases
def test_k_center_greedy_on_a_line():
    # labeled image at 0; candidates at 1, 2, 10, 11 -> first 11 (farthest), then 2 (10 is 1 from 11)
    x = np.array([[1.0], [2.0], [10.0], [11.0]])
    order, remaining = k_center_greedy(x, np.abs(x[:, 0]), 3)
    assert order.tolist() == [3, 1, 0]  # after 11 and 2: row 0 is 1 from 2, row 2 is 1 from 11 -> the first row
    assert remaining.tolist() == [0.0, 0.0, 1.0, 0.0]
    # a row marked -inf is never chosen, and k larger than the choosable rows stops
    order, _ = k_center_greedy(x, np.array([1.0, 2.0, -np.inf, -np.inf]), 5)
    assert order.tolist() == [1, 0]


def test_coreset_agent_batch_and_sequential():
    embed = np.array([[1.0, 0.0], [2.0, 0.0], [10.0, 0.0], [11.0, 0.0], [50.0, 0.0]])
    nearest = np.abs(embed[:, 0])
    obs = _obs(embed, nearest, valid=[1, 1, 1, 1, 0])  # row 4 is padding: never chosen despite its distance
    agent = CoreSetAgent(_space(5, 2), spaces.Box(-1, 1, (5,), np.float32))
    action = agent.predict(obs, deterministic=True)[0]
    assert np.argsort(-action)[:2].tolist() == [3, 1] and action[4] == -1.0
    seq = CoreSetAgent(_space(5, 2), spaces.Discrete(5))
    assert seq.predict(obs, action_masks=np.array([1, 1, 1, 0, 0], bool))[0] == 2  # 11 is masked: 10 next


def test_score_agents_rank_by_their_column():
    stats = np.array([[1, 0.9, 0.9, 0.1, 0.1], [3, 0.4, 0.5, 0.6, 1.8], [2, 0.3, 0.3, 0.8, 1.6]])
    obs = _obs(np.zeros((3, 2)), np.ones(3), stats=stats, picks_left=1)
    box = spaces.Box(-1, 1, (3,), np.float32)
    for agent, best in ((EntropyAgent("mean", _space(3, 2), box), 2), (EntropyAgent("sum", _space(3, 2), box), 1),
                        (ScoreUncertaintyAgent(_space(3, 2), box), 2)):
        action = agent.predict(obs)[0]
        assert int(np.argmax(action)) == best and action.dtype == np.float32 and action.shape == (3,)
    with pytest.raises(ValueError, match="mode must be one of"):
        EntropyAgent("max")


def test_rank_scores_ties_and_padding():
    out = rank_scores(np.array([0.5, 0.5, 0.9, 7.0]), np.array([True, True, True, False]))
    assert out.tolist() == pytest.approx([1 / 3, -1 / 3, 1.0, -1.0])  # tie: the lower row ranks higher


# ------------------------------------------------------------------ in the envs
@pytest.fixture(scope="module")
def kw(digits_cache):
    """-Test preset data (and its initial detectors) in the session's private cache."""
    return {"dataset_kwargs": {"cache_dir": str(digits_cache)}}


@pytest.fixture(scope="module")
def envs(kw):
    pair = DetSampleSelectEnv("test", **kw), DetSampleSelectSeqEnv("test", **kw)
    yield pair
    for e in pair:
        e.close()


def test_registry_lists_the_strategies_for_both_variants(envs):
    batch, seq = envs
    for name in ("entropy_mean", "entropy_sum", "score_uncertainty", "coreset", "random", "ppo", "recurrent_ppo"):
        assert name in agent_names(batch) and name in agent_names(seq)
    assert "mgral" in agent_names(batch) and "mgral" not in agent_names(seq)
    assert "maskable_ppo" in agent_names(seq)


@pytest.mark.parametrize("name", ["random", "entropy_mean", "entropy_sum", "score_uncertainty", "coreset"])
def test_baselines_run_whole_episodes(envs, name):
    batch, seq = envs
    ep = run_episode(batch, make_agent(name, env=batch, seed=0), seed=0)
    assert ep.length == batch.cycles and ep.final_metrics["AP50"] == ep.last_info["map"]
    ep = run_episode(seq, make_agent(name, env=seq, seed=0), seed=0)
    assert ep.length == seq.batch * seq.cycles and not any(a is None for a in ep.actions)
    assert "ignored_action" not in ep.last_info  # masks were respected


def test_coreset_batch_choice_is_k_center_greedy_on_the_observation(envs):
    batch, _ = envs
    obs, _ = batch.reset(seed=2)
    action = make_agent("coreset", env=batch).predict(obs)[0]
    order, _ = k_center_greedy(column(obs, "embed"), column(obs, "nearest_distance"), batch.batch)
    assert set(np.argsort(-action)[: batch.batch].tolist()) == set(order.tolist())


@pytest.mark.parametrize("algo", ["ppo", "recurrent_ppo"])
def test_sb3_learners_train_out_of_the_box(kw, algo):
    env = DetSampleSelectEnv("test", **kw)
    agent = make_agent(algo, env=env, seed=0, n_steps=4, batch_size=4, n_epochs=1)
    agent.learn(4)
    ep = run_episode(env, agent, seed=9)
    assert ep.length == env.cycles
    env.close()


def test_maskable_ppo_on_the_sequential_variant(kw):
    env = DetSampleSelectSeqEnv("test", **kw)
    agent = make_agent("maskable_ppo", env=env, seed=0, n_steps=8, batch_size=8, n_epochs=1)
    agent.learn(8)
    ep = run_episode(env, agent, seed=9)
    assert ep.length == env.batch * env.cycles
    env.close()
