"""DetSampleSelect-v0 / DetSampleSelectSeq-v0 (papers 002/003): spaces, checkers, seeding, rewards, labels, bad
input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import detgym  # noqa: F401  registers the ids
from detgym.envs.sample_select import COLUMNS, N_EXTRA, PRESETS, column, draw_initial_sets
from detgym.envs.sample_select.env import DetSampleSelectEnv, DetSampleSelectSeqEnv


@pytest.fixture(scope="module")
def kw(digits_cache):
    """-Test preset data (and its initial detectors) in the session's private cache."""
    return {"dataset_kwargs": {"cache_dir": str(digits_cache)}}


@pytest.fixture(scope="module")
def env(kw):
    e = DetSampleSelectEnv("test", **kw)
    yield e
    e.close()


@pytest.fixture(scope="module")
def seq_env(kw):
    e = DetSampleSelectSeqEnv("test", **kw)
    yield e
    e.close()


def _scores_for(rows: list[int], n: int) -> np.ndarray:
    """Scores that make the env label exactly ``rows``."""
    scores = np.full(n, -1.0, dtype=np.float32)
    scores[rows] = 1.0
    return scores


def _run(env, seed, actions=None, options=None):
    obs, info = env.reset(seed=seed, options=options)
    observations, rewards, infos = [obs], [], [info]
    rng = np.random.default_rng(seed)
    done, t = False, 0
    while not done:
        a = actions[t] if actions is not None else rng.uniform(-1, 1, env.n_rows).astype(np.float32)
        obs, r, term, trunc, info = env.step(a)
        observations.append(obs), rewards.append(r), infos.append(info)
        done, t = term or trunc, t + 1
    return observations, rewards, infos


# ------------------------------------------------------------------ spaces and checkers
def test_spaces_and_layout(env, seq_env):
    cfg = PRESETS.get_preset("test")
    d = env.embed_dim
    assert env.observation_space.shape == (cfg.candidates, d + N_EXTRA) and env.observation_space.dtype == np.float32
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (cfg.candidates,), np.float32)
    assert seq_env.action_space == gym.spaces.Discrete(cfg.candidates)
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space
    assert np.all(column(obs, "valid") == 1) and np.all(column(obs, "picked") == 0)
    assert np.allclose(column(obs, "picks_left"), cfg.batch / cfg.candidates)
    assert np.allclose(column(obs, "labeled_fraction"), cfg.initial_size / env.n_train)
    assert np.allclose(column(obs, "current_map"), info["map"]) and np.all(column(obs, "cycle_progress") == 0)
    assert np.all(column(obs, "nearest_distance") > 0) and np.all(column(obs, "max_score") <= 1)
    assert len(COLUMNS) == N_EXTRA == 12


def test_registered_ids_make(kw):
    for env_id in ("DetSampleSelect-Test-v0", "DetSampleSelectSeq-Test-v0"):
        e = gym.make(env_id, **kw)
        assert e.unwrapped.family == "sample_select"
        e.close()
    assert "DetSampleSelect-v0" in gym.registry and "DetSampleSelect-VOC-v0" in gym.registry


# ------------------------------------------------------------------ episodes
def test_seeded_episodes_reproduce_and_rewards_telescope(env):
    obs_a, rew_a, info_a = _run(env, seed=3)
    actions = [_scores_for(sorted(np.argsort(-o[:, 0])[:2].tolist()), env.n_rows) for o in obs_a[:-1]]
    obs_a, rew_a, info_a = _run(env, seed=3, actions=actions)
    obs_b, rew_b, info_b = _run(env, seed=3, actions=actions)
    assert rew_a == rew_b and all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b))
    assert [i["selected"] for i in info_a[1:]] == [i["selected"] for i in info_b[1:]]
    # the return is exactly final - initial mAP (eq. of III-D summed over the cycles)
    assert sum(rew_a) == pytest.approx(info_a[-1]["map"] - info_a[0]["map"], abs=1e-12)
    assert info_a[-1]["final_metrics"]["AP50"] == info_a[-1]["map"]
    assert len(rew_a) == env.cycles and info_a[-1]["labeled"] == env.config.initial_size + env.cycles * env.batch
    # the labeled set grows by exactly the top-b rows of each action
    assert all(len(i["selected"]) == env.batch for i in info_a[1:])
    other, _, _ = _run(env, seed=4, actions=actions)
    assert not np.array_equal(other[0], obs_a[0])


def test_selected_images_leave_the_pool(env):
    obs, info = env.reset(seed=1, options={"initial_set": 1})
    assert info["initial_set"] == 1 and set(env.labeled_indices) == set(env.initial_sets[1])
    shown = env._candidates.copy()
    _, _, _, _, info = env.step(_scores_for([0, 5], env.n_rows))
    assert info["selected"] == [int(shown[0]), int(shown[5])]
    assert set(info["selected"]) <= set(env.labeled_indices)
    assert not set(env._candidates) & set(env.labeled_indices)


def test_labels_stay_hidden_until_selected(kw, env):
    """Changing the labels of images never selected changes no observation, reward or mAP."""
    actions = [_scores_for([0, 1], env.n_rows)] * env.cycles
    obs_a, rew_a, info_a = _run(env, seed=5, actions=actions)
    seen = set(env.labeled_indices.tolist())
    train = env.train_set
    targets = [t if i in seen else {"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([3])}
               for i, t in enumerate(train.targets)]
    altered = DetSampleSelectEnv("test", train_set=train.with_targets(targets), val_set=env.val_set, **kw)
    obs_b, rew_b, info_b = _run(altered, seed=5, actions=actions)
    assert rew_a == rew_b and all(np.array_equal(a, b) for a, b in zip(obs_a, obs_b))
    altered.close()


def test_pseudo_labels_come_from_the_current_detector(kw):
    e = DetSampleSelectEnv("test", label_mode="pseudo", pseudo_threshold=0.1, **kw)
    e.reset(seed=2)
    rows = [1, 4]
    chosen = e._candidates[rows]
    with torch.no_grad():
        e.model.eval()
        dets = e.model(e.train_set.batch(chosen.tolist())[0])
    expected = [d["scores"] >= 0.1 for d in dets]
    _, _, _, _, info = e.step(_scores_for(rows, e.n_rows))
    assert info["pseudo_boxes"] == sum(int(k.sum()) for k in expected)
    for idx, det, keep in zip(chosen, dets, expected):
        assert torch.equal(e._targets[int(idx)]["labels"], det["labels"][keep])
        assert torch.allclose(e._targets[int(idx)]["boxes"], det["boxes"][keep])
    e.close()


def test_whole_pool_pads_rows(kw):
    e = DetSampleSelectEnv("test", candidates="all", cycles=2, **kw)
    pool = e.n_train - e.config.initial_size
    assert e.n_rows == pool
    obs, _ = e.reset(seed=0)
    assert column(obs, "valid").sum() == pool
    obs, *_ = e.step(np.linspace(1, -1, e.n_rows, dtype=np.float32))
    valid = column(obs, "valid")
    assert valid.sum() == pool - e.batch and np.all(valid[pool - e.batch:] == 0)
    assert np.all(column(obs, "embed")[valid == 0] == 0)
    e.close()


def test_retrain_mode_trains_a_new_detector(kw):
    e = DetSampleSelectEnv("test", training="retrain", initial_iterations=8, **kw)
    _, rewards, infos = _run(e, seed=0)
    assert sum(rewards) == pytest.approx(infos[-1]["map"] - infos[0]["map"], abs=1e-12)
    e.close()


# ------------------------------------------------------------------ sequential variant
def test_seq_masks_ignored_actions_and_telescoping(seq_env):
    obs, info = seq_env.reset(seed=0)
    total, steps = 0.0, 0
    mask = seq_env.action_masks()
    assert mask.all()
    obs, r, term, trunc, step_info = seq_env.step(2)
    assert r == 0.0 and column(obs, "picked")[2] == 1 and not seq_env.action_masks()[2]
    assert column(obs, "picks_left")[0] == pytest.approx((seq_env.batch - 1) / seq_env.n_rows)
    _, r, _, _, ignored = seq_env.step(2)  # masked: ignored
    assert r == 0.0 and ignored["ignored_action"] and ignored["ignored_actions"] == 1
    done = False
    while not done:
        obs, r, term, trunc, step_info = seq_env.step(int(np.flatnonzero(seq_env.action_masks())[0]))
        total, steps, done = total + r, steps + 1, term or trunc
    assert term and not trunc and steps == seq_env.batch * seq_env.cycles - 1
    assert total == pytest.approx(step_info["map"] - info["map"], abs=1e-12)


def test_seq_agent_ignoring_masks_is_truncated(seq_env):
    seq_env.reset(seed=1)
    seq_env.step(0)
    trunc = False
    for _ in range(seq_env.n_rows * seq_env.cycles):
        _, _, term, trunc, _ = seq_env.step(0)
    assert trunc and not term


# ------------------------------------------------------------------ bad input
def test_bad_actions(env, seq_env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="one score per candidate row"):
        env.step(np.zeros(env.n_rows + 1, dtype=np.float32))
    bad = np.zeros(env.n_rows, dtype=np.float32)
    bad[2] = np.nan
    with pytest.raises(ValueError, match="must be finite"):
        env.step(bad)
    seq_env.reset(seed=0)
    for action in (seq_env.n_rows, -1, 1.5):
        with pytest.raises(ValueError, match="candidate row"):
            seq_env.step(action)
    with pytest.raises(ValueError, match=r"options\['initial_set'\]"):
        env.reset(seed=0, options={"initial_set": 7})


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"batch": 21, "candidates": "all"}, "batch=21 is larger than the unlabeled pool"),
        ({"cycles": 11}, "cycles=11 needs"),
        ({"candidates": 19}, "candidates=19 is larger than the unlabeled pool of the last cycle"),
        ({"batch": 7}, "batch=7 is larger than candidates=6"),
        ({"initial_size": 5, "initial_sets": ((0, 1, 2, 3),)}, r"initial_sets\[0\] has 4 images but initial_size=5"),
        ({"initial_sets": ((0, 1, 2, 99),)}, r"initial_sets\[0\] holds index 99"),
        ({"label_mode": "teacher"}, "label_mode must be one of"),
        ({"training": "scratch"}, "training must be one of"),
        ({"reward_mode": "table"}, "reward_mode must be one of"),
        ({"lookup_estimator": "knn"}, "lookup_estimator must be one of 'neighbours', 'ridge'"),
        ({"table_summary": "pixels"}, "table_summary must be one of"),
        ({"pseudo_threshold": 1.5}, "pseudo_threshold"),
        ({"cycles": 0}, "cycles must be an integer >= 1"),
        ({"candidates": "most"}, "candidates must be an integer >= 1 or 'all'"),
        ({"bogus": 1}, "unknown SampleSelectPreset field"),
    ],
)
def test_bad_configuration(kw, overrides, match):
    with pytest.raises(ValueError, match=match):
        DetSampleSelectEnv("test", **kw, **overrides)


def test_initial_sets_are_published_data():
    """The CPU default publishes its initial sets; they are what draw_initial_sets gives (provenance)."""
    cfg = PRESETS.get_preset("default")
    assert len(cfg.initial_sets) == cfg.n_initial_sets
    n_train = cfg.dataset_kwargs["train_size"]
    assert cfg.initial_sets == draw_initial_sets(n_train, cfg.initial_size, cfg.n_initial_sets, cfg.initial_seed)
    unset = PRESETS.get_preset("test").replace(initial_sets=())
    assert unset.resolved_initial_sets(24) == draw_initial_sets(24, 4, 2, 0)


def test_state_dict_continues_an_episode_exactly(kw, env, tmp_path):
    from detgym.train import atomic_torch_save, load_plain

    actions = [np.linspace(1, -1, env.n_rows, dtype=np.float32)] * env.cycles
    _, rewards, infos = _run(env, seed=8, actions=actions)
    env.reset(seed=8)
    env.step(actions[0])
    atomic_torch_save(env.state_dict(), tmp_path / "mid.pt")  # plain data: weights_only loading reads it
    other = DetSampleSelectEnv("test", **kw)
    obs = other.load_state_dict(load_plain(tmp_path / "mid.pt"))
    assert obs in other.observation_space
    _, r, term, _, info = other.step(actions[1])
    assert term and r == rewards[1] and info["selected"] == infos[2]["selected"]
    with pytest.raises(ValueError, match="another configuration"):
        DetSampleSelectEnv("test", cycle_iterations=3, **kw).load_state_dict(env.state_dict())
    other.close()


def test_gpu_preset_is_the_papers_voc_protocol():
    voc = PRESETS.get_preset("voc")
    voc.validate()
    assert (voc.initial_size, voc.batch, voc.cycles) == (1000, 1000, 10)
    voc.check_budget(16551)  # VOC07+12 trainval
    with pytest.raises(ValueError, match="cycles=10 needs initial_size"):
        voc.check_budget(2000)  # the digits stand-in: give dataset=<VOC path>
