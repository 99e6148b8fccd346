"""RLOAgent: eq. 7-9 of paper 000 applied online from observations."""

from __future__ import annotations

import numpy as np
import pytest

from detgym.agents import RLOAgent
from detgym.envs.loss_weight.observation import build_observation
from detgym.envs.loss_weight.weighting import rlo_update


def obs(total_now: float, total_prev: float, n: int = 3) -> np.ndarray:
    """An observation whose eq. 7 reward is sign(total_prev - total_now)."""
    now = np.full(n, total_now / n)
    prev = np.full(n, total_prev / n)
    return build_observation(now, prev, np.ones(n), np.ones(n), 0.5, np.ones(n))


def test_no_update_before_first_action_then_eq9():
    agent = RLOAgent(seed=0)
    a0, _ = agent.predict(obs(1.0, 5.0), episode_start=True)  # reward +1 in the obs, but no action taken yet
    np.testing.assert_allclose(agent.probs, [0.25] * 4)
    a1, _ = agent.predict(obs(0.5, 1.0))  # loss dropped -> +gamma for a0's action
    np.testing.assert_allclose(agent.probs, rlo_update([0.25] * 4, int(a0), 1.0))
    assert agent.last_reward == 1.0
    agent.predict(obs(0.7, 0.5))  # loss rose -> -gamma for a1's action
    expected = rlo_update(rlo_update([0.25] * 4, int(a0), 1.0), int(a1), -1.0)
    np.testing.assert_allclose(agent.probs, expected)
    assert agent.last_reward == -1.0


def test_probabilities_follow_rewarded_action():
    # reward +1 always: the probability of whichever action is drawn rises; the sum stays 1
    agent = RLOAgent(seed=1, gamma=0.05)
    agent.predict(obs(1.0, 1.0), episode_start=True)
    for _ in range(300):
        agent.predict(obs(1.0, 2.0))
    p = agent.probs
    assert p.sum() == pytest.approx(1.0)
    assert p.max() == pytest.approx(0.9)  # clipped at beta_max


def test_episode_start_resets_probabilities_and_seed_reproduces():
    def run(seed: int) -> tuple[list[int], np.ndarray]:
        agent = RLOAgent(seed=seed)
        acts = [int(agent.predict(obs(1.0, 1.0), episode_start=True)[0])]
        for k in range(50):
            acts.append(int(agent.predict(obs(1.0, 1.0 + (-1) ** k))[0]))
        return acts, agent.probs

    acts1, p1 = run(5)
    acts2, p2 = run(5)
    assert acts1 == acts2
    np.testing.assert_array_equal(p1, p2)
    assert not np.allclose(p1, 0.25)

    agent = RLOAgent(seed=5)
    agent.predict(obs(1.0, 1.0), episode_start=True)
    agent.predict(obs(1.0, 2.0))
    assert not np.allclose(agent.probs, 0.25)
    agent.predict(obs(1.0, 2.0), episode_start=True)
    np.testing.assert_allclose(agent.probs, [0.25] * 4)
    agent.predict(obs(1.0, 2.0))
    agent.reset()
    agent.predict(obs(1.0, 2.0))  # after reset(): a new episode, no update
    np.testing.assert_allclose(agent.probs, [0.25] * 4)


def test_deterministic_is_argmax():
    agent = RLOAgent(initial_probs=[0.1, 0.2, 0.6, 0.1])
    action, _ = agent.predict(obs(1.0, 1.0), deterministic=True)
    assert int(action) == 2


def test_vectorized_envs_keep_separate_probabilities():
    agent = RLOAgent(seed=0)
    batch = np.stack([obs(1.0, 1.0), obs(1.0, 1.0)])
    acts, _ = agent.predict(batch, episode_start=[True, True])
    assert acts.shape == (2,)
    agent.predict(np.stack([obs(1.0, 2.0), obs(2.0, 1.0)]), episode_start=[False, False])
    p = agent.probs
    assert p.shape == (2, 4)
    assert p[0, acts[0]] == pytest.approx(0.26) and p[1, acts[1]] == pytest.approx(0.24)


def test_tensorboard_log(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    agent = RLOAgent(seed=0, log_dir=tmp_path)
    agent.predict(obs(1.0, 1.0), episode_start=True)
    for _ in range(4):
        agent.predict(obs(1.0, 2.0))
    agent.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    assert {f"rlo/prob/a{k}" for k in range(4)} <= set(acc.Tags()["scalars"])
    assert [e.step for e in acc.Scalars("rlo/prob/a0")] == [1, 2, 3, 4, 5]


def test_bad_parameters():
    with pytest.raises(ValueError, match="initial_probs"):
        RLOAgent(initial_probs=[0.5, 0.5])
    with pytest.raises(ValueError, match="beta"):
        RLOAgent(beta=(0.5, 0.2))
    with pytest.raises(ValueError, match="gamma"):
        RLOAgent(gamma=-1)
    with pytest.raises(ValueError, match="5 \\* n_levels \\+ 1"):
        agent = RLOAgent()
        agent.predict(np.zeros(4))
