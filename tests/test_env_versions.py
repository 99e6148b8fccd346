"""Versions mean something (Gymnasium's rule): a registered id's defaults, dynamics and reward never change.

``tests/data/env_versions.json`` records, for every registered id, its resolved configuration (env class, preset
fields, version arguments), and for every ``-Test`` id a seeded rollout (rewards, observation checksums, final
metrics). A change of behaviour fails here; a deliberate one registers a new version and records it:

    python -m tests.test_env_versions --record          # after adding ids; never to paper over a changed id
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import detgym  # noqa: F401  registers the ids
from detgym.envs import ENV_IDS, env_ids
from detgym.envs.substrate import Substrate

RECORD = Path(__file__).with_name("data") / "env_versions.json"
ROLLOUT_STEPS = 8


def resolved(env_id: str) -> dict[str, Any]:
    """The env class and resolved configuration of ``env_id``, without building the env."""
    spec = gym.spec(env_id)
    creator = gym.envs.registration.load_env_creator(spec.entry_point)
    kwargs = dict(spec.kwargs)
    config = creator.presets.get_preset(kwargs.pop("preset"))
    if isinstance(config, Substrate):
        fields = {f.name for f in dataclasses.fields(config)}
        config = config.merged(**{k: v for k, v in kwargs.items() if k in fields}).to_dict()
        kwargs = {k: v for k, v in kwargs.items() if k not in fields}
    else:
        config = json.loads(json.dumps(dataclasses.asdict(config), default=str))
    return {"class": f"{creator.__module__}.{creator.__qualname__}", "config": config, "kwargs": kwargs}


def _digest(array: Any) -> str:
    return hashlib.sha1(np.ascontiguousarray(array).tobytes()).hexdigest()


def rollout(env_id: str) -> dict[str, Any]:
    """Reset with seed 0, then seeded random actions for up to ``ROLLOUT_STEPS`` steps or the episode's end."""
    env = gym.make(env_id)
    try:
        obs, _ = env.reset(seed=0)
        env.action_space.seed(0)
        out: dict[str, Any] = {"obs": [_digest(obs)], "rewards": [], "final_metrics": None}
        for _ in range(ROLLOUT_STEPS):
            obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
            out["obs"].append(_digest(obs))
            out["rewards"].append(float(reward))
            if terminated or truncated:
                out["final_metrics"] = info.get("final_metrics")
                break
        return out
    finally:
        env.close()


def record() -> dict[str, Any]:
    return {"configs": {env_id: resolved(env_id) for env_id in ENV_IDS},
            "rollouts": {env_id: rollout(env_id) for env_id in env_ids(test=True)}}


@pytest.fixture(scope="module")
def recorded() -> dict[str, Any]:
    return json.loads(RECORD.read_text())


def test_every_registered_id_is_recorded(recorded):
    missing = sorted(set(ENV_IDS) - set(recorded["configs"]))
    assert not missing, f"ids without a record: {missing}; record them with python -m tests.test_env_versions --record"


@pytest.mark.parametrize("env_id", sorted(ENV_IDS))
def test_configuration_unchanged(env_id, recorded):
    assert resolved(env_id) == recorded["configs"][env_id], (
        f"{env_id}'s defaults changed: register a new version instead (detgym.envs.VERSIONS / PRESET_IDS)")


@pytest.mark.parametrize("env_id", env_ids(test=True))
def test_seeded_rollout_unchanged(env_id, recorded):
    assert rollout(env_id) == recorded["rollouts"][env_id], (
        f"{env_id}'s dynamics or reward changed: register a new version instead")


if __name__ == "__main__" and "--record" in sys.argv:
    import torch

    torch.set_num_threads(1)
    RECORD.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"recorded {RECORD}")
