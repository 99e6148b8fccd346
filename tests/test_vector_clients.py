"""Every registered env works unchanged in the standard vector clients, whatever the parent process did before.

The scripts run in a fresh interpreter whose parent first runs torch on two threads (so GNU OpenMP's thread
pool exists when the workers are forked: without detgym's at-fork handler the forked workers hang in their first
convolution) and makes a sync env in-process, as a user evaluating an agent would.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from detgym.envs import FAMILIES, env_ids

REPO = Path(__file__).resolve().parents[1]

PARENT_USED_TORCH = """
import sys, torch, gymnasium as gym, numpy as np
import detgym
torch.set_num_threads(2)
torch.nn.Conv2d(3, 16, 3)(torch.randn(8, 3, 96, 96)).sum()
context, env_ids = sys.argv[1], sys.argv[2:]
"""

GYMNASIUM_ASYNC = PARENT_USED_TORCH + """
for env_id in env_ids:
    probe = gym.make(env_id)
    probe.reset(seed=0)
    probe.step(probe.action_space.sample())
    probe.close()
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="async", vector_kwargs={"context": context})
    obs, info = venv.reset(seed=0)
    for _ in range(2):
        obs, rewards, terminated, truncated, info = venv.step(venv.action_space.sample())
    assert rewards.shape == (2,)
    venv.close()
    print("OK", context, env_id)
"""

SB3_SUBPROC = PARENT_USED_TORCH + """
from stable_baselines3.common.vec_env import SubprocVecEnv
for env_id in env_ids:
    venv = SubprocVecEnv([lambda: gym.make(env_id) for _ in range(2)], start_method=context)
    venv.seed(0)
    obs = venv.reset()
    obs, rewards, dones, infos = venv.step(np.stack([venv.action_space.sample() for _ in range(2)]))
    assert rewards.shape == (2,)
    venv.close()
    print("OK sb3", env_id)
"""


def _run(script: str, context: str, ids: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # $DETGYM_CACHE: the session's (conftest)
    env.pop("OMP_NUM_THREADS", None)
    try:
        out = subprocess.run([sys.executable, "-c", script, context, *ids], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail(f"vector envs ({context}) hung: {ids}")
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("OK") == len(ids)


# one family representative for the slower clients, every registered -Test id for the plain fork case
FIRST_OF_EACH_FAMILY = [env_ids(family, test=True)[0] for family in FAMILIES]


def test_gymnasium_async_fork_after_torch_use():
    _run(GYMNASIUM_ASYNC, "fork", env_ids(test=True))


def test_gymnasium_async_spawn():
    _run(GYMNASIUM_ASYNC, "spawn", FIRST_OF_EACH_FAMILY[:1])


def test_sb3_subproc_fork_after_torch_use():
    _run(SB3_SUBPROC, "fork", FIRST_OF_EACH_FAMILY)
