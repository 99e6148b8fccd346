"""MGRAL's agent (papers 002/003): eq. 1-2 network, Plackett-Luce policy, eq. 3-4 baseline and update, learning."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from gymnasium import spaces

from detgym.agents import make_agent, run_episode
from detgym.agents.mgral import MGRALAgent, MGRALPolicy, ema_baseline, plackett_luce_log_prob, standardise_candidates
from detgym.envs.sample_select import build_table
from detgym.envs.sample_select.env import DetSampleSelectEnv
from detgym.envs.sample_select.observation import N_EXTRA, column, row_features


def _obs(m=5, d=3, picks_left=2, valid=None, seed=0):
    rng = np.random.default_rng(seed)
    valid = np.ones(m) if valid is None else np.asarray(valid, float)
    return row_features(rng.normal(size=(m, d)), rng.uniform(size=(m, 5)), rng.uniform(1, 2, m), np.zeros(m), valid,
                        (0.2, 0.3, 0.4, picks_left / m))


def _agent(m=5, d=3, **kw):
    return MGRALAgent(observation_space=spaces.Box(-np.inf, np.inf, (m, d + N_EXTRA), np.float32),
                      action_space=spaces.Box(-1, 1, (m,), np.float32), seed=0, **kw)


def test_moving_average_baseline_formula():
    """ref <- λ ref + (1 - λ) mAP_i (the paper's eq. 3 read as an EMA), λ = 0.5, first value initialises."""
    assert ema_baseline(None, 0.3) == 0.3
    assert ema_baseline(0.3, 0.5) == pytest.approx(0.4)
    assert ema_baseline(0.4, 0.1, decay=0.9) == pytest.approx(0.9 * 0.4 + 0.1 * 0.1)


def test_update_uses_the_reference_before_it_absorbs_the_new_map():
    agent = _agent()
    obs = _obs()
    before = [p.detach().clone() for p in agent.policy.parameters()]
    _, order, logits = agent._draw(obs, deterministic=False)
    valid = torch.ones(5, dtype=torch.bool)
    agent._update(logits, order, valid, {"cycle": 1, "map": 0.30})  # first visit: reference only
    assert agent.history[-1]["advantage"] == 0.0 and agent.baselines == {1: 0.30}
    assert all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
    _, order, logits = agent._draw(obs, deterministic=False)
    expected_loss = -(0.36 - 0.30) * float(plackett_luce_log_prob(logits, order, valid).detach())
    agent._update(logits, order, valid, {"cycle": 1, "map": 0.36})  # eq. 4 against ref 0.30, then ref -> 0.33
    assert agent.history[-1]["advantage"] == pytest.approx(0.06) and agent.baselines[1] == pytest.approx(0.33)
    assert agent.history[-1]["loss"] == pytest.approx(expected_loss)
    assert not all(torch.equal(a, b) for a, b in zip(before, agent.policy.parameters()))
    agent._update(logits.detach().requires_grad_(), order, valid, {"cycle": 2, "map": 0.5})  # own reference per cycle
    assert agent.baselines == {1: pytest.approx(0.33), 2: 0.5}


def test_plackett_luce_probabilities_sum_to_one():
    logits = torch.tensor([0.3, -1.0, 2.0, 0.5])
    allowed = torch.tensor([True, True, True, False])
    total = sum(float(plackett_luce_log_prob(logits, torch.tensor(o), allowed).exp())
                for o in itertools.permutations([0, 1, 2], 2))
    assert total == pytest.approx(1.0)
    p = torch.softmax(logits[:3], 0)
    assert float(plackett_luce_log_prob(logits, torch.tensor([2, 0]), allowed).exp()) == pytest.approx(
        float(p[2] * p[0] / (1 - p[2])))


def test_network_is_eq_1_2():
    policy = MGRALPolicy(7)
    assert policy.cell.input_size == policy.cell.hidden_size == 8  # [Φ(I_i), A_{i-1}], hidden = input size
    rows = torch.randn(4, 7)
    logits = policy(rows)
    # the previous decision feeds the next unit: changing row 0 changes the logit of row 3
    other = rows.clone()
    other[0] += 1.0
    assert logits.shape == (4,) and not torch.allclose(policy(other)[3], logits[3])


def test_actions_sample_b_distinct_valid_images_and_standardise():
    agent = _agent(m=6)
    obs = _obs(m=6, picks_left=2, valid=[1, 1, 1, 1, 1, 0])
    x = standardise_candidates(obs)
    assert np.allclose(column(x, "embed")[:5].mean(0), 0, atol=1e-6) and np.all(x[5] == 0)
    for _ in range(20):
        action = agent.predict(obs)[0]
        assert action.shape == (6,) and action[5] == -1.0 and len(set(action.tolist())) == 6
    det = [agent.predict(obs, deterministic=True)[0] for _ in range(2)]
    assert np.array_equal(det[0], det[1])


def test_tiny_learn_run_against_the_lookup_table(digits_cache, tmp_path_factory):
    kw = {"dataset_kwargs": {"cache_dir": str(digits_cache)}}
    path = tmp_path_factory.mktemp("mgral-table") / "t.npz"
    build_table("test", episodes=2, path=path, progress=False, **kw)
    env = DetSampleSelectEnv("test", reward_mode="lookup", table_path=str(path), **kw)
    agent = make_agent("mgral", env=env, seed=0)
    assert isinstance(agent, MGRALAgent) and agent.optimizer.param_groups[0]["lr"] == 3.5e-4
    agent.learn(6)
    assert len(agent.history) == 6 and [h["cycle"] for h in agent.history] == [1, 2, 1, 2, 1, 2]
    assert set(agent.baselines) == {1, 2}
    ep = run_episode(env, agent, seed=5)
    assert ep.length == env.cycles
    env.close()
    with pytest.raises(ValueError, match="needs the env"):
        _agent().learn(1)
