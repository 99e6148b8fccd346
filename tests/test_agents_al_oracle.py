"""The label-aware active-learning oracle: its greedy gain by hand, and its choices in both DetSampleSelect variants."""

from __future__ import annotations

import numpy as np
import pytest

import detgym  # noqa: F401
from detgym.agents import make_agent, run_episode
from detgym.agents.al_oracle import BalanceOracle, balance_gain, balance_order
from detgym.agents.registry import agent_names
from detgym.envs.sample_select.env import DetSampleSelectEnv, DetSampleSelectSeqEnv


def test_balance_gain_and_greedy_order_by_hand():
    counts = np.array([5.0, 0.0, 0.0])
    images = np.array([[2, 0, 0], [0, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 2]], dtype=float)
    gain = balance_gain(counts, images)
    assert gain == pytest.approx([np.log(8 / 6), np.log(2), 0.0, np.log(2), np.log(3)])
    order, after = balance_order(counts, images, np.ones(5, bool), 3)
    # two objects of an absent class first (log 3), then the first rare image (log 2); its copy then gains only
    # log(3/2) = 0.405 against the common class's log(8/6) = 0.288
    assert order.tolist() == [4, 1, 3]
    assert after[2] == 0.0 and after[0] == pytest.approx(np.log(8 / 6))
    order, _ = balance_order(counts, images, np.array([1, 0, 1, 0, 0], bool), 5)
    assert order.tolist() == [0, 2]  # only the allowed rows, k capped at their number


@pytest.fixture(scope="module")
def kw(digits_cache):
    return {"dataset_kwargs": {"cache_dir": str(digits_cache)}}


def _cell_counts(env, indices):
    """Objects per (class, height tercile over the train split) of each image, computed here independently."""
    targets, c = env.train_set.targets, env.train_set.num_classes
    heights = np.concatenate([(t["boxes"][:, 3] - t["boxes"][:, 1]).numpy() for t in targets])
    low, high = np.quantile(heights, [1 / 3, 2 / 3])
    out = np.zeros((len(indices), 3 * c))
    for row, i in enumerate(indices):
        for box, label in zip(targets[int(i)]["boxes"].numpy(), targets[int(i)]["labels"].numpy()):
            h = box[3] - box[1]
            out[row, (label - 1) * 3 + (h >= low) + (h >= high)] += 1
    return out


def test_batch_choice_is_the_greedy_order_over_hidden_labels(kw):
    env = DetSampleSelectEnv("test", **kw)
    obs, _ = env.reset(seed=3)
    assert "oracle_balance" in agent_names(env)
    agent = make_agent("oracle_balance", env=env)
    action = agent.predict(obs)[0]
    labeled = _cell_counts(env, env.labeled_indices).sum(axis=0)
    order, _ = balance_order(labeled, _cell_counts(env, env.candidate_indices),
                                   np.ones(len(env.candidate_indices), bool), env.batch)
    assert np.argsort(-action, kind="stable")[: env.batch].tolist() == order.tolist()
    ep = run_episode(env, agent, seed=3)
    assert ep.length == env.cycles and ep.final_metrics is not None
    with pytest.raises(ValueError, match="one env"):
        agent.predict(np.stack([obs, obs]))
    env.close()


def test_sequential_picks_follow_the_batch_order(kw):
    batch, seq = DetSampleSelectEnv("test", **kw), DetSampleSelectSeqEnv("test", **kw)
    obs_b, _ = batch.reset(seed=5)
    obs_s, _ = seq.reset(seed=5)
    ranks = BalanceOracle(batch).predict(obs_b)[0]
    agent = BalanceOracle(seq)
    picks = []
    for _ in range(seq.batch):
        row = int(agent.predict(obs_s, action_masks=seq.action_masks())[0])
        picks.append(row)
        obs_s, *_ = seq.step(row)
    assert picks == np.argsort(-ranks, kind="stable")[: batch.batch].tolist()
    batch.close(), seq.close()
