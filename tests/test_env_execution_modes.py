"""An env's results do not depend on how it is run: every -Test id (the newest version of each: an older one differs
in its reward or pool, not in how it trains) gives the same rewards, to the bit, in-process,
in gymnasium's sync and async vector envs (fork, forkserver, spawn), in SB3's SubprocVecEnv and in a worker of
:mod:`detgym.parallel` (what ``detgym compare`` and ``detgym build-tree`` run their jobs in), for the same seeds and
actions, whatever thread count the calling process uses (each env runs its training at its own ``num_threads``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detgym.envs import env_ids

REPO = Path(__file__).resolve().parents[1]

SCRIPT = r'''
import hashlib, json, sys
import numpy as np, torch, gymnasium as gym
import detgym


def entry(reward, obs, last):
    # SB3's VecEnv returns the next episode's first observation on a terminal step: compare the others only
    return [float(reward), None if last else hashlib.sha1(np.ascontiguousarray(obs).tobytes()).hexdigest()]

STEPS, SEEDS = 2, [11, 12]


def actions_for(space, n):
    space.seed(0)
    return [space.sample() for _ in range(n)]


def rollout(env_id, seed, actions):
    """One env, in this process: the rewards of the first episode's first steps."""
    env = gym.make(env_id)
    env.reset(seed=seed)
    rewards = []
    for a in actions:
        obs, r, te, tr, _ = env.step(a)
        rewards.append(entry(r, obs, te or tr))
        if te or tr:
            break
    env.close()
    return rewards


def vector(venv, actions, sb3=False):
    out = [[] for _ in SEEDS]
    done = [False] * len(SEEDS)
    if sb3:
        venv.seed(SEEDS[0])
        venv.reset()
    else:
        venv.reset(seed=SEEDS)
    for a in actions:
        batch = np.stack([a] * len(SEEDS))
        if sb3:
            obs, r, term, _ = venv.step(batch)
        else:
            obs, r, te, tr, _ = venv.step(batch)
            term = te | tr
        for i in range(len(SEEDS)):
            if not done[i]:
                out[i].append(entry(r[i], obs[i], bool(term[i])))
                done[i] = bool(term[i])
        if all(done):
            break
    venv.close()
    return out


if __name__ == "__main__":
    from detgym.parallel import job_pool
    from stable_baselines3.common.vec_env import SubprocVecEnv

    torch.set_num_threads(2)  # the caller's count must not matter
    results = {}
    for env_id in sys.argv[1:]:
        actions = actions_for(gym.make(env_id).action_space, STEPS)
        modes = {"inline": [rollout(env_id, s, actions) for s in SEEDS]}
        modes["sync"] = vector(gym.make_vec(env_id, len(SEEDS), vectorization_mode="sync"), actions)
        for ctx in ("fork", "forkserver", "spawn"):
            modes[ctx] = vector(gym.make_vec(env_id, len(SEEDS), vectorization_mode="async",
                                             vector_kwargs={"context": ctx}), actions)
        modes["sb3_subproc"] = vector(SubprocVecEnv([lambda: gym.make(env_id)] * len(SEEDS), start_method="fork"),
                                      actions, sb3=True)
        with job_pool(2, threads=2) as pool:
            for i, s in enumerate(SEEDS):
                pool.submit(i, rollout, env_id, s, actions)
            got = {}
            while pool.pending:
                for key, result in pool.finished():
                    got[key] = result()
        modes["worker"] = [got[i] for i in range(len(SEEDS))]
        results[env_id] = modes
    print("RESULT " + json.dumps(results))
'''


def _run(ids: list[str], tmp_path: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("OMP_NUM_THREADS", None)
    script = tmp_path / "modes.py"  # a file: forkserver and spawn workers import its functions by name
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), *ids], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _newest_versions(ids: list[str]) -> list[str]:
    newest: dict[str, int] = {}
    for env_id in ids:
        stem, _, version = env_id.rpartition("-v")
        newest[stem] = max(newest.get(stem, -1), int(version))
    return [f"{stem}-v{version}" for stem, version in newest.items()]


def test_every_test_id_gives_the_same_rewards_in_every_execution_mode(tmp_path):
    results = _run(_newest_versions(env_ids(test=True)), tmp_path)
    for env_id, modes in results.items():
        reference = modes["inline"]
        assert all(len(r) >= 1 for r in reference), env_id
        for mode, rewards in modes.items():
            assert rewards == reference, f"{env_id}: {mode} gave {rewards}, in-process {reference}"


@pytest.mark.parametrize("env_id", ["DetLossWeight-Test-v0"])
def test_info_reports_the_thread_count_and_the_caller_count_does_not_matter(env_id):
    import gymnasium as gym
    import torch

    rewards = {}
    for caller_threads in (1, 2):
        torch.set_num_threads(caller_threads)
        env = gym.make(env_id)
        _, info = env.reset(seed=5)
        assert info["num_threads"] == 1
        rewards[caller_threads] = [env.step(a)[1] for a in (0, 2, 1)]
        assert torch.get_num_threads() == caller_threads
        env.close()
    torch.set_num_threads(1)
    assert rewards[1] == rewards[2]
