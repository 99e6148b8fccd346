"""AVW / Uniform / Constant / Random agents and the shared SB3-style predict interface."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium import spaces

from detgym.agents import AVWAgent, ConstantAgent, RandomAgent, UniformAgent, make_agent
from detgym.envs.loss_weight.observation import build_observation

OBS = build_observation([3.0, 2.0, 1.0], [3.5, 2.0, 1.0], [0.1, 0.2, 0.3], [1.0, 1.0, 1.0], 0.25, [1.0, 1.0, 1.0])


def test_constant_agents_single_and_batched():
    for agent, a in ((AVWAgent(), 0), (UniformAgent(), 3), (ConstantAgent(2), 2)):
        action, state = agent.predict(OBS)
        assert action.shape == () and int(action) == a and state is None
        actions, _ = agent.predict(np.stack([OBS, OBS, OBS]), episode_start=np.array([True, False, True]))
        assert actions.shape == (3,) and actions.dtype == np.int64 and np.all(actions == a)


def test_state_is_passed_through():
    sentinel = object()
    _, state = AVWAgent().predict(OBS, state=sentinel)
    assert state is sentinel


def test_random_agent_seeded_and_covers_all_actions():
    agent1, agent2 = RandomAgent(seed=7), RandomAgent(seed=7)
    seq1 = [int(agent1.predict(OBS)[0]) for _ in range(200)]
    seq2 = [int(agent2.predict(OBS, deterministic=True)[0]) for _ in range(200)]
    assert seq1 == seq2  # deterministic=True does not change a uniform policy
    assert set(seq1) == {0, 1, 2, 3}
    assert [int(RandomAgent(seed=8).predict(OBS)[0]) for _ in range(50)] != seq1[:50]


def test_random_agent_any_space_and_masks():
    box = spaces.Box(0.0, 1.0, (3, 2), np.float32)
    agent = RandomAgent(seed=0, action_space=spaces.MultiBinary(5), observation_space=box)
    action, _ = agent.predict(np.zeros((3, 2), np.float32))
    assert action.shape == (5,) and action.dtype == np.int8
    actions, _ = agent.predict(np.zeros((4, 3, 2), np.float32))
    assert actions.shape == (4, 5)
    with pytest.raises(ValueError, match=r"shape \(3, 2\)"):
        agent.predict(np.zeros((2, 2), np.float32))
    masked = RandomAgent(seed=0, action_space=spaces.Discrete(6), observation_space=box)
    mask = np.array([False, True, False, False, True, False])
    picks = {int(masked.predict(np.zeros((3, 2), np.float32), action_masks=mask)[0]) for _ in range(100)}
    assert picks == {1, 4}
    cont = RandomAgent(seed=0, action_space=spaces.Box(-1.0, 1.0, (2,), np.float32), observation_space=box)
    action, _ = cont.predict(np.zeros((3, 2), np.float32))
    assert action.shape == (2,) and action.dtype == np.float32 and np.all(np.abs(action) <= 1)


def test_make_agent_names():
    assert isinstance(make_agent("avw"), AVWAgent)
    assert isinstance(make_agent("uniform"), UniformAgent)
    assert make_agent("a2").action == 2
    with pytest.raises(ValueError, match="unknown agent 'sac'; accepted: uniform, avw, rlo"):
        make_agent("sac")
    with pytest.raises(ValueError, match="learns on an env"):
        make_agent("ppo")


def test_bad_input():
    with pytest.raises(ValueError, match="action must be an integer in 0..3"):
        ConstantAgent(4)
    with pytest.raises(ValueError, match="observation"):
        AVWAgent().predict(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="episode_start"):
        AVWAgent().predict(np.stack([OBS, OBS]), episode_start=[True, False, True])
