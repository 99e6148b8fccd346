"""The supervised learned NMS (detgym.agents.learned_nms): its labels, its training and its actions."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import detgym  # noqa: F401
from detgym.agents import make_agent
from detgym.agents.learned_nms import match_labels


def test_match_labels_follow_score_order_matching():
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 0.0, 30.0, 10.0]])
    boxes = np.array([
        [0.0, 0.0, 10.0, 10.0],  # exact: a true positive at every threshold
        [0.0, 0.0, 10.0, 8.8],  # a duplicate of the same object (IoU 0.88), ranked lower: never matched
        [20.0, 0.0, 30.0, 7.2],  # IoU 0.72 with the second object: true positive at .50 .55 .60 .65 .70
        [20.0, 0.0, 30.0, 10.0],  # exact, but of another class
    ])
    labels = match_labels(boxes, np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 1, 1, 2]), gt, np.array([1, 1]))
    np.testing.assert_allclose(labels, [1.0, 0.0, 0.5, 0.0])
    # the duplicate scored higher takes the object at the thresholds it reaches (IoU 0.88: up to .85)
    labels = match_labels(boxes[:2], np.array([0.5, 0.8]), np.array([1, 1]), gt, np.array([1, 1]))
    np.testing.assert_allclose(labels, [0.2, 0.8])
    crowd = match_labels(boxes[:1], np.array([0.5]), np.array([1]), gt[:1], np.array([1]), np.array([True]))
    assert crowd.tolist() == [0.0]


@pytest.fixture(scope="module")
def trained():
    env = gym.make("DetBoxRescore-Test-v1")
    agent = make_agent("learned_nms", env=env, seed=0, hidden=16)
    features = torch.as_tensor(agent.table.features)
    valid = features[..., 0] > 0.5
    targets = torch.as_tensor(agent.labels())

    def loss() -> float:
        p = torch.as_tensor(agent.scores(agent.table.features)).clamp(1e-6, 1 - 1e-6)
        return float(torch.nn.functional.binary_cross_entropy(p[valid], targets[valid]))

    before = loss()
    agent.learn(3200)
    return agent, before, loss()


def test_training_fits_the_labels(trained):
    agent, before, after = trained
    labels = agent.labels()
    assert labels.shape == (agent.table.features.shape[0], agent.n_max)
    assert labels.min() >= 0 and labels.max() <= 1 and labels.max() > 0
    assert agent.trained_images == 3200
    assert after < 0.8 * before


@pytest.mark.parametrize("variant", ["DetBoxSelect", "DetBoxRescore", "DetBoxSelectSeq"])
def test_acts_in_every_variant(trained, variant):
    env = gym.make(f"{variant}-Test-v1", split="val")
    agent = make_agent("learned_nms", env=env, seed=0, hidden=16)
    agent.encoder.load_state_dict(trained[0].encoder.state_dict())
    agent.head.load_state_dict(trained[0].head.state_dict())
    obs, _ = env.reset(seed=0)
    n = int(env.unwrapped.table.counts[env.unwrapped.image_index])
    action, _ = agent.predict(obs)
    assert env.action_space.contains(action)
    if variant == "DetBoxRescore":
        assert (action[n:] == 0).all()
        np.testing.assert_allclose(action, agent.scores(obs[None])[0])
    _, _, _, _, info = env.step(action)
    assert info.get("ignored_slots", 0) == 0 and info.get("ignored_actions", 0) == 0


def test_bad_input():
    env = gym.make("DetBoxSelect-Test-v1")
    with pytest.raises(ValueError, match="threshold"):
        make_agent("learned_nms", env=env, threshold=1.5)
    with pytest.raises(ValueError, match="total_timesteps"):
        make_agent("learned_nms", env=env).learn(0)
    with pytest.raises(ValueError, match="learned_nms"):
        make_agent("learned_nms", env=gym.make("CartPole-v1"))
