"""DetLossWeight's seeded rewards, observations and final AP equal the values recorded before the env moved onto
the shared substrate (tests/data/loss_weight_before_move.json, made by the pre-move code on the "test" preset)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detgym.envs.loss_weight import DetLossWeightContinuousEnv, DetLossWeightEnv

RECORDED = json.loads((Path(__file__).parent / "data" / "loss_weight_before_move.json").read_text())
CLASSES = {"discrete": DetLossWeightEnv, "continuous": DetLossWeightContinuousEnv}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("lw-regression-cache"))


@pytest.mark.parametrize("key", sorted(RECORDED))
def test_seeded_episode_unchanged(key, cache):
    rec = RECORDED[key]
    env = CLASSES[rec["variant"]]("test", dataset_kwargs={"cache_dir": cache}, **rec["kwargs"])
    obs, _ = env.reset(seed=rec["seed"])
    observations, rewards = [obs], []
    for action in rec["actions"]:
        action = np.asarray(action, dtype=np.float32) if rec["variant"] == "continuous" else action
        obs, reward, _, _, info = env.step(action)
        observations.append(obs)
        rewards.append(reward)
    env.close()
    assert rewards == rec["rewards"]
    np.testing.assert_array_equal(np.asarray(observations, dtype=np.float32),
                                  np.asarray(rec["observations"], dtype=np.float32))
    assert info["final_metrics"] == rec["final_metrics"]
