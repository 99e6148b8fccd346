"""The pool reward of the DetBoxSelect -v1 ids (``reward="pool_ap"``), rechecked with pycocotools on the pool's
NMS detections (``pool_detections()``) plus the episode's kept boxes, on the "test" preset."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import detgym  # noqa: F401  registers the ids
from detgym.agents import make_agent
from detgym.envs import ENV_IDS
from detgym.envs.box_select.candidates import cache_paths
from detgym.envs.box_select.env import DetBoxRescoreEnv, DetBoxSelectEnv, DetBoxSelectSeqEnv
from detgym.metrics.reference import pycocotools_stats
from detgym.rollout import run_episode


@pytest.fixture(scope="module")
def kw(box_select_kw):
    return box_select_kw


@pytest.fixture(scope="module")
def env(kw):
    e = DetBoxSelectEnv("test", reward="pool_ap", **kw)
    yield e
    e.close()


def pool_reference(env, image_index: int, dets: list[dict]) -> tuple[float, float]:
    """pycocotools' AP over the pool's images and the episode's, with the episode's detections ``dets`` and with its
    NMS detections; and the reward ``pool_size * (AP - AP_NMS)`` they give."""
    base = env.unwrapped
    image_id = int(base.table.image_ids[image_index])
    pool = [d for d in base.pool_detections() if d["image_id"] != image_id]
    images = sorted(set(base.pool_image_ids()) | {image_id})
    nms = [c for c, k in zip(base.table.coco_results(image_index), base.table.nms_keep[image_index]) if k]
    coco = base.coco_gt()
    ap = float(pycocotools_stats(coco, [dict(d) for d in pool + dets], img_ids=images)[0])
    ap_nms = float(pycocotools_stats(coco, [dict(d) for d in pool + nms], img_ids=images)[0])
    return ap, len(base.pool_image_ids()) * (ap - ap_nms)


def test_versions(kw):
    assert ENV_IDS["DetBoxSelect-v1"][1] == {"preset": "default", "reward": "pool_ap"}
    assert ENV_IDS["DetBoxSelect-v0"][1] == {"preset": "default"}
    for prefix in ("DetBoxSelect", "DetBoxSelectSeq", "DetBoxRescore"):
        for suffix in ("", "-RetinaNet", "-FCOS", "-FasterRCNN-R50", "-Test"):
            assert ENV_IDS[f"{prefix}{suffix}-v1"][1]["reward"] == "pool_ap"
    v1 = gym.make("DetBoxSelect-Test-v1", **kw).unwrapped
    v0 = gym.make("DetBoxSelect-Test-v0", **kw).unwrapped
    assert v1.config.reward == "pool_ap" and v0.config.reward == "image_ap"
    # the reward does not key the candidate cache: both versions read the same trained detector's candidates
    assert cache_paths(v1.config, kw["cache_dir"]) == cache_paths(v0.config, kw["cache_dir"])


def test_keep_mask_reward_equals_pycocotools(env):
    rng = np.random.default_rng(0)
    # pool_size None: every image of a split smaller than 200
    assert env.config.pool_size is None and len(env.pool_image_ids()) == env.n_images == 32
    for i in range(env.n_images):
        _, info = env.reset(options={"image_index": i})
        action = (rng.random(env.n_max) < 0.6).astype(np.int8)
        _, reward, terminated, _, info = env.step(action)
        kept = [info["candidates"][k] for k in info["kept"]]
        ap, want = pool_reference(env, i, kept)
        assert terminated and info["pool_ap"] == pytest.approx(ap, abs=1e-9)
        assert reward == pytest.approx(want, abs=1e-9)


def test_greedy_nms_scores_exactly_zero(env):
    nms = make_agent("nms", env=env)
    for i in range(env.n_images):
        episode = run_episode(env, nms, options={"image_index": i})
        assert episode.episode_return == 0.0
        assert episode.last_info["pool_ap"] == env.nms_reward_ap[i]


def test_rescore_ranks_with_the_new_scores(kw):
    env = DetBoxRescoreEnv("test", reward="pool_ap", split="val", **kw)
    rng = np.random.default_rng(1)
    for i in range(env.n_images):
        env.reset(options={"image_index": i})
        scores = np.where(rng.random(env.n_max) < 0.3, 0.0, rng.integers(0, 5, env.n_max) / 4).astype(np.float32)
        _, reward, _, _, info = env.step(scores)
        dets = [{**info["candidates"][k], "score": info["scores"][k]} for k in info["kept"]]
        ap, want = pool_reference(env, i, dets)
        assert info["pool_ap"] == pytest.approx(ap, abs=1e-9) and reward == pytest.approx(want, abs=1e-9)


def test_sequential_return_telescopes(kw, env):
    seq = DetBoxSelectSeqEnv("test", reward="pool_ap", **kw)
    rng = np.random.default_rng(2)
    for i in range(seq.n_images):
        seq.reset(options={"image_index": i})
        total, done, kept = 0.0, False, []
        while not done:
            allowed = np.flatnonzero(seq.action_masks())
            a = int(rng.choice(allowed)) if rng.random() < 0.8 else seq.n_max
            _, r, terminated, truncated, info = seq.step(np.int64(a))
            total, done, kept = total + r, terminated or truncated, info["kept"]
        env.reset(options={"image_index": i})
        mask = np.zeros(env.n_max, dtype=np.int8)
        mask[kept] = 1
        assert total == pytest.approx(env.step(mask)[1], abs=1e-9)


def test_vector_env_equals_single_env(kw, env):
    venv = gym.make_vec("DetBoxSelect-Test-v1", num_envs=4, vectorization_mode="vector_entry_point", **kw)
    rng = np.random.default_rng(3)
    venv.reset(seed=0)
    for _ in range(3):
        images = venv.unwrapped._images.copy()
        actions = (rng.random((4, env.n_max)) < 0.5).astype(np.int8)
        _, rewards, _, _, info = venv.step(actions)
        for b, i in enumerate(images):
            env.reset(options={"image_index": int(i)})
            _, r, _, _, single = env.step(actions[b])
            assert rewards[b] == r and info["final_info"]["pool_ap"][b] == single["pool_ap"]
    venv.close()


def test_bad_input(kw):
    n_train = DetBoxSelectEnv("test", **kw).n_images
    for kwargs, name in (({"pool_size": 0}, "pool_size"), ({"pool_size": n_train + 1}, "pool_size"),
                         ({"pool_size": 2.5}, "pool_size"), ({"pool_seed": -1}, "pool_seed"),
                         ({"reward": "dataset_ap"}, "reward"), ({"baseline": "nms"}, "baseline"),
                         ({"absent_classes": "penalize"}, "absent_classes")):
        with pytest.raises(ValueError, match=name):
            DetBoxSelectEnv("test", **{"reward": "pool_ap", **kwargs}, **kw)
    with pytest.raises(ValueError, match="pool_size"):
        DetBoxSelectEnv("test", reward="pool_ap", split="val", pool_size=n_train, **kw)
