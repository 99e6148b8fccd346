"""DetLossWeight-v0 / DetLossWeightContinuous-v0 on the shortened "test" preset (32 px, alpha=2, 7 steps)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

import detgym  # noqa: F401  registers the ids
from detgym.envs.loss_weight import PRESETS, DetLossWeightContinuousEnv, DetLossWeightEnv, LogScaleObservation
from detgym.envs.loss_weight.observation import split_observation
from detgym.envs.loss_weight.weighting import decrease_rate, interval_reward, scheme_weights
from detgym.metrics import STAT_NAMES as COCO_STATS
from detgym.train import NonFiniteLossError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kw(tmp_path_factory):
    return {"preset": "test", "dataset_kwargs": {"cache_dir": str(tmp_path_factory.mktemp("lw-cache"))}}


@pytest.fixture(scope="module")
def env(kw):
    e = DetLossWeightEnv(**kw)
    yield e
    e.close()


def run_episode(env, actions, seed):
    obs, info = env.reset(seed=seed)
    out = {"obs": [obs], "rewards": [], "infos": [info], "terminated": [], "truncated": []}
    for a in actions:
        obs, r, term, trunc, info = env.step(a)
        out["obs"].append(obs)
        out["rewards"].append(r)
        out["infos"].append(info)
        out["terminated"].append(term)
        out["truncated"].append(trunc)
        if term or trunc:
            break
    return out


def test_spaces_and_preset(env):
    n = env.n_levels
    assert env.action_space == gym.spaces.Discrete(4)
    assert env.observation_space.shape == (5 * n + 1,)
    assert env.episode_steps == 7 and env.alpha == 2 and env.total_iterations == 16
    assert len(env.level_names) == n


def test_episode_follows_the_paper_formulas(env):
    actions = [0, 1, 2, 3, 0, 2, 1]
    ep = run_episode(env, actions, seed=3)
    n = env.n_levels
    assert ep["truncated"] == [False] * 6 + [True] and not any(ep["terminated"])
    first = split_observation(ep["obs"][0])
    np.testing.assert_allclose(first["var_prev"], 1.0)  # Var_{i,0} = 1
    np.testing.assert_allclose(first["sums_prev"], first["sums"])  # L_{i,0} := L_{i,1}
    np.testing.assert_allclose(first["weights"], 1.0)
    assert ep["infos"][0]["iteration"] == 2 and ep["infos"][0]["action"] is None
    for k, a in enumerate(actions):
        prev_info, info, obs = ep["infos"][k], ep["infos"][k + 1], ep["obs"][k + 1]
        assert ep["obs"][k] in env.observation_space and obs in env.observation_space
        # the weights of the step are eq. 5 on the statistics of the interval before
        expected_w = scheme_weights(a, prev_info["interval_losses"], prev_info["rates"])
        np.testing.assert_allclose(info["weights"], expected_w)
        assert info["action"] == a and info["iteration"] == 2 * (k + 2) and info["interval"] == k + 2
        assert info["iteration_losses"].shape == (2, n)
        np.testing.assert_allclose(info["interval_losses"], info["iteration_losses"].sum(0))
        np.testing.assert_allclose(info["variances"], info["iteration_losses"].var(0, ddof=1))
        np.testing.assert_allclose(info["rates"], decrease_rate(prev_info["variances"], info["variances"]))
        # eq. 7, and computable from the observation alone
        f = split_observation(obs)
        assert ep["rewards"][k] == interval_reward(prev_info["interval_losses"], info["interval_losses"])
        assert ep["rewards"][k] == interval_reward(f["sums_prev"], f["sums"])
        np.testing.assert_allclose(f["weights"], info["weights"], rtol=1e-6)
        assert f["progress"] == pytest.approx((k + 2) / 8)
    final = ep["infos"][-1]["final_metrics"]
    assert set(COCO_STATS) <= set(final) and 0.0 <= final["AP"] <= 1.0
    assert all("final_metrics" not in i for i in ep["infos"][:-1])
    with pytest.raises(ResetNeeded):
        env.step(0)


def test_reproducible_with_seed(env, kw):
    actions = [0, 2, 1, 3, 0, 0, 2]
    a = run_episode(env, actions, seed=11)
    other = DetLossWeightEnv(**kw)
    b = run_episode(other, actions, seed=11)
    other.close()
    assert a["rewards"] == b["rewards"]
    np.testing.assert_array_equal(np.stack(a["obs"]), np.stack(b["obs"]))
    assert a["infos"][-1]["final_metrics"] == b["infos"][-1]["final_metrics"]
    c = run_episode(env, actions, seed=12)
    assert not np.array_equal(a["obs"][0], c["obs"][0])


@pytest.mark.parametrize("action", [4, -1, 1.5, "a0", None, np.array([0, 1])])
def test_bad_discrete_action(env, action):
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be an integer in 0\.\.3"):
        env.step(action)


def test_bad_constructor_arguments(kw):
    cache = kw["dataset_kwargs"]
    with pytest.raises(ValueError, match="unknown preset 'nope'; accepted: default"):
        DetLossWeightEnv("nope")
    with pytest.raises(ValueError, match="reward='ap' is not supported; accepted: loss, map"):
        DetLossWeightEnv("test", reward="ap", dataset_kwargs=cache)
    with pytest.raises(ValueError, match="map_metric"):
        DetLossWeightEnv("test", map_metric="mAP", dataset_kwargs=cache)
    with pytest.raises(ValueError, match="alpha must be an integer >= 1"):
        DetLossWeightEnv("test", alpha=0, dataset_kwargs=cache)
    with pytest.raises(ValueError, match=r"iterations \(8\) must be at least 2 \* alpha \(10\)"):
        DetLossWeightEnv("test", alpha=5, iterations=8, dataset_kwargs=cache)
    with pytest.raises(ValueError, match="n_enhance"):
        DetLossWeightEnv("test", n_enhance=9, dataset_kwargs=cache)
    with pytest.raises(ValueError, match="unknown recipe"):
        DetLossWeightEnv("test", recipe="yolo", dataset_kwargs=cache)
    with pytest.raises(ValueError, match="weight_bounds"):
        DetLossWeightContinuousEnv("test", weight_bounds=(2.0, 1.0), dataset_kwargs=cache)


def test_continuous_variant(kw):
    env = DetLossWeightContinuousEnv(**kw)
    n = env.n_levels
    assert env.action_space == gym.spaces.Box(0.0, 3.0, (n,), np.float32)
    env.reset(seed=0)
    w = np.linspace(0.5, 2.0, n).astype(np.float32)
    obs, r, term, trunc, info = env.step(w)
    np.testing.assert_allclose(info["weights"], w, rtol=1e-6)
    np.testing.assert_allclose(split_observation(obs)["weights"], w, rtol=1e-6)
    for bad, match in (
        (np.ones(n + 1), rf"shape \({n},\)"),
        (np.full(n, np.nan), "finite"),
        (np.full(n, 3.5), r"\[0.0, 3.0\]"),
        ("heavy", "level weights"),
    ):
        with pytest.raises(ValueError, match=match):
            env.step(bad)
    env.close()


def test_nan_loss_terminates_with_penalty(env, monkeypatch):
    env.reset(seed=0)
    env.step(3)
    calls = {"n": 0}
    real_step = env.trainer.step

    def flaky_step(weights=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise NonFiniteLossError(env.trainer.iteration + 1, {"loss": np.array([np.nan])})
        return real_step(weights)

    monkeypatch.setattr(env.trainer, "step", flaky_step)
    obs_before = env._obs.copy()
    obs, reward, term, trunc, info = env.step(0)
    assert term and not trunc
    assert reward == -6.0  # 8 intervals, 2 done: the 6 steps left count -1 each
    assert info["diverged"] and "non-finite" in info["error"]
    assert info["final_metrics"] == {k: 0.0 for k in COCO_STATS}
    np.testing.assert_array_equal(obs, obs_before)
    with pytest.raises(ResetNeeded):
        env.step(0)


def test_nan_penalty_override(kw, monkeypatch):
    env = DetLossWeightEnv(**kw, nan_penalty=-2.5)
    env.reset(seed=0)

    def boom(weights=None):
        raise NonFiniteLossError(99, {"loss": np.array([np.inf])})

    monkeypatch.setattr(env.trainer, "step", boom)
    assert env.step(1)[1:3] == (-2.5, True)
    env.close()


def test_map_reward_telescopes_to_final_ap(kw):
    env = DetLossWeightEnv(**kw, reward="map", map_every=3)
    ep = run_episode(env, [3] * 7, seed=0)
    env.close()
    rewards = ep["rewards"]
    evaluated = [k for k, i in enumerate(ep["infos"][1:]) if "map" in i]
    assert evaluated == [2, 5, 6]  # steps 3, 6 and the last
    assert all(r == 0.0 for k, r in enumerate(rewards) if k not in evaluated)
    assert sum(rewards) == pytest.approx(ep["infos"][-1]["final_metrics"]["AP"], abs=1e-9)
    assert all(isinstance(i["reward_loss"], float) for i in ep["infos"][1:])


def test_overrides_and_presets(kw):
    assert PRESETS.default in PRESETS and PRESETS.get_preset("default") == PRESETS[PRESETS.default]
    assert {p.alpha for k, p in PRESETS.items() if k.endswith("-r50")} == {100}
    env = DetLossWeightEnv(**kw, alpha=4, iterations=18, n_enhance=1, lambdas=(2.0,), train_size=10)
    assert env.alpha == 4 and env.n_intervals == 4 and env.total_iterations == 16
    assert len(env.train_set) == 10
    assert env.observation_space.high[-1] == pytest.approx(3.0)  # weights <= 1 + lambda
    _, info = env.reset(seed=0)
    assert env.trainer.config.iterations == 16
    assert info["iteration_losses"].shape == (4, env.n_levels)
    _, _, _, _, info = env.step(2)
    assert np.sum(info["weights"] > 1.0) == 1  # n_enhance=1: exactly the largest-loss level is enhanced
    env.close()


def test_log_scale_wrapper(env):
    wrapped = LogScaleObservation(env)
    obs, _ = wrapped.reset(seed=0)
    raw = env._obs
    n = env.n_levels
    assert obs in wrapped.observation_space and np.all(np.isfinite(wrapped.observation_space.high))
    np.testing.assert_allclose(obs[:n], np.log1p(raw[:n] / 2), rtol=1e-5)
    np.testing.assert_allclose(obs[2 * n : 3 * n], np.log1p(raw[2 * n : 3 * n]), rtol=1e-5)
    np.testing.assert_array_equal(obs[4 * n :], raw[4 * n :])


def test_tensorboard_logging(kw, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = DetLossWeightEnv(**kw, log_dir=tmp_path)
    run_episode(env, [0] * 7, seed=0)
    env.close()
    acc = EventAccumulator(str(tmp_path))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    name = env.level_names[0]
    assert {f"loss_weight/weight/{name}", f"loss_weight/interval_loss/{name}", "loss_weight/action",
            "loss_weight/reward", "loss_weight/final/AP"} <= tags
    assert [e.step for e in acc.Scalars("loss_weight/action")] == list(range(4, 17, 2))


def test_ansi_render(kw):
    env = DetLossWeightEnv(**kw, render_mode="ansi")
    env.reset(seed=0)
    text = env.render()
    assert text.startswith("t=1/8 it=2") and env.level_names[0] in text
    env.close()


def test_make_with_module_prefix_without_importing_detgym(kw):
    code = (
        "import sys, gymnasium as gym\n"
        "assert 'detgym' not in sys.modules\n"
        "env = gym.make('detgym:DetLossWeight-Test-v0')\n"
        "print(type(env.unwrapped).__name__, env.action_space)\n"
    )
    env_vars = {**os.environ, "DETGYM_CACHE": kw["dataset_kwargs"]["cache_dir"], "PYTHONPATH": str(REPO),
                "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env_vars, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DetLossWeightEnv Discrete(4)" in out.stdout
