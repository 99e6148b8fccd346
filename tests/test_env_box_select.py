"""DetBoxSelect-v0 / DetBoxSelectSeq-v0 / DetBoxRescore-v0 and their native vector env, on the "test" preset.

Rewards are rechecked with pycocotools on ``env.unwrapped.coco_gt()`` and ``info["candidates"]``; the cache is
built once per module in a temporary directory.
"""

from __future__ import annotations

import json
import shutil

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.error import ResetNeeded

import detgym  # noqa: F401  registers the ids
from detgym.envs.box_select import PRESETS
from detgym.envs.box_select.candidates import (
    CacheError,
    SplitCandidates,
    cache_paths,
    load_candidates,
    load_detector,
    split_features,
)
from detgym.envs.box_select.env import DetBoxRescoreEnv, DetBoxSelectEnv, DetBoxSelectSeqEnv
from detgym.envs.box_select.features import feature_layout
from detgym.envs.box_select.table import ImageTable, greedy_nms_keep
from detgym.envs.substrate import LoadedSubstrate
from detgym.metrics import STAT_NAMES
from detgym.metrics.reference import pycocotools_stats

IDS = ("DetBoxSelect-Test-v0", "DetBoxSelectSeq-Test-v0", "DetBoxRescore-Test-v0")


@pytest.fixture(scope="module")
def kw(box_select_kw):
    return box_select_kw


@pytest.fixture(scope="module")
def env(kw):
    e = DetBoxSelectEnv("test", **kw)
    yield e
    e.close()


def pycoco_ap(coco, image_id, dets):
    """pycocotools' AP of one image (the detections are copied: loadRes adds keys)."""
    return float(pycocotools_stats(coco, [dict(d) for d in dets], img_ids=[image_id])[0])


def test_spaces_and_features(env):
    n_max, c = env.n_max, env.num_classes
    assert env.action_space == gym.spaces.MultiBinary(n_max)
    assert env.observation_space.shape == (n_max, 9 + c) and env.observation_space.dtype == np.float32
    lay = feature_layout(c)
    for i in range(env.n_images):
        obs, info = env.reset(options={"image_index": i})
        assert obs in env.observation_space and info["image_index"] == i
        cands, n = env.candidate_arrays(), info["n_candidates"]
        assert n == len(info["candidates"]) == len(cands["scores"]) <= n_max
        np.testing.assert_array_equal(obs[:, 0], np.arange(n_max) < n)
        assert not obs[n:].any()
        h, w = env.table.image_hw[i]
        np.testing.assert_allclose(obs[:n, lay["box"]], cands["boxes"] / [w, h, w, h], rtol=1e-6)
        np.testing.assert_allclose(obs[:n, 5], cands["scores"], rtol=1e-6)
        assert (np.diff(cands["scores"]) <= 0).all()
        np.testing.assert_array_equal(obs[:n, lay["class"]].argmax(1) + 1, cands["labels"])
        # relational features by brute force
        b = cands["boxes"]
        for k in range(n):
            same = [j for j in range(n) if j != k and cands["labels"][j] == cands["labels"][k]]
            ious = {j: _iou(b[k], b[j]) for j in same}
            higher = [j for j in same if j < k]
            assert obs[k, 6 + c] == pytest.approx(max([ious[j] for j in higher], default=0.0), abs=1e-6)
            assert obs[k, 7 + c] == pytest.approx(len(higher) / n_max)
            assert obs[k, 8 + c] == pytest.approx(sum(ious[j] >= 0.5 for j in same) / n_max)


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("env_id", IDS)
def test_sync_vector_env_stacks_infos(env_id, kw):
    # gymnasium's own vector env stacks the infos of its envs (variable-length entries must be lists)
    venv = gym.make_vec(env_id, num_envs=2, vectorization_mode="sync", **kw)
    venv.reset(seed=0)
    for _ in range(3):
        _, rewards, _, _, info = venv.step(venv.action_space.sample())
        assert rewards.shape == (2,) and len(info["candidates"]) == 2
    venv.close()


def test_seeded_episodes_are_reproducible(kw):
    a, b = gym.make(IDS[0], **kw), gym.make(IDS[0], **kw)
    images = []
    for seed in range(6):
        oa, ia = a.reset(seed=seed)
        ob, ib = b.reset(seed=seed)
        np.testing.assert_array_equal(oa, ob)
        action = a.action_space.sample()
        assert a.step(action)[1] == b.step(action)[1]
        images.append(ia["image_index"])
    assert len(set(images)) > 1  # the seed picks the image


def test_select_reward_is_pycocotools_ap(env, kw):
    rng = np.random.default_rng(0)
    nms_env = DetBoxSelectEnv("test", baseline="nms", **kw)
    coco = env.coco_gt()
    checked = 0
    for i in range(env.n_images):
        _, info = env.reset(options={"image_index": i})
        for keep in (rng.integers(0, 2, env.n_max), np.ones(env.n_max, dtype=np.int8)):
            _, reward, terminated, truncated, step = env.step(keep)
            assert terminated and not truncated
            n = info["n_candidates"]
            np.testing.assert_array_equal(step["kept"], np.flatnonzero(keep[:n]))
            assert step["ignored_slots"] == int(keep[n:].sum())
            kept = [info["candidates"][k] for k in step["kept"]]
            if env.ground_truth()["labels"].size:
                assert reward == step["ap"] == pytest.approx(pycoco_ap(coco, info["image_id"], kept), abs=1e-12)
                checked += 1
            env.reset(options={"image_index": i})
            nms_env.reset(options={"image_index": i})
            assert nms_env.step(keep)[1] == pytest.approx(reward - step["nms_ap"], abs=1e-12)
        # info["nms_ap"] is the AP of class-wise greedy NMS at 0.5 on the same candidates
        c = env.candidate_arrays()
        nms_keep = greedy_nms_keep(c["boxes"], c["scores"], c["labels"], 0.5)
        nms = [info["candidates"][k] for k in np.flatnonzero(nms_keep)]
        if env.ground_truth()["labels"].size:
            assert env.table.nms_ap[i] == pytest.approx(pycoco_ap(coco, info["image_id"], nms), abs=1e-12)
    assert checked >= 10


def test_rescore_reward_ranks_by_new_scores(kw):
    env = DetBoxRescoreEnv("test", **kw)
    coco = env.coco_gt()
    rng = np.random.default_rng(1)
    for i in range(0, env.n_images, 3):
        _, info = env.reset(options={"image_index": i})
        scores = rng.uniform(-0.2, 1.2, env.n_max).astype(np.float32)  # outside [0, 1]: clipped
        _, reward, terminated, _, step = env.step(scores)
        new = np.clip(scores, 0, 1)[: info["n_candidates"]]
        np.testing.assert_array_equal(step["scores"], new.astype(np.float64).tolist())
        dets = [{**info["candidates"][k], "score": float(new[k])} for k in step["kept"]]
        assert terminated and (new[step["kept"]] > 0).all()
        if env.ground_truth()["labels"].size:
            assert reward == pytest.approx(pycoco_ap(coco, info["image_id"], dets), abs=1e-12)
    env.reset(options={"image_index": 0})
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.full(env.n_max, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="action must be scores of shape"):
        env.step(np.zeros(env.n_max + 1, dtype=np.float32))


def test_evaluate_episodes_is_pycocotools_over_the_episodes_images(env, kw):
    rng = np.random.default_rng(2)
    coco = env.coco_gt()
    infos, kept = [], []
    for seed in range(12):  # seeded draws repeat images: each counts once, with its first episode's boxes
        _, info = env.reset(seed=seed)
        info = env.step(rng.integers(0, 2, env.n_max))[4]
        if info["image_id"] not in {i["image_id"] for i in infos}:
            kept += [info["candidates"][k] for k in info["kept"]]
        infos.append(info)
    ids = sorted({i["image_id"] for i in infos})
    expected = pycocotools_stats(coco, kept, img_ids=ids)
    stats = env.evaluate_episodes(infos)
    np.testing.assert_allclose([stats[k] for k in STAT_NAMES], expected, atol=1e-12)
    rescore = DetBoxRescoreEnv("test", **kw)  # new scores rank the boxes
    _, info = rescore.reset(seed=0)
    info = rescore.step(rng.uniform(0, 1, rescore.n_max).astype(np.float32))[4]
    dets = [{**info["candidates"][k], "score": info["scores"][k]} for k in info["kept"]]
    np.testing.assert_allclose([rescore.evaluate_episodes([info])[k] for k in STAT_NAMES],
                               pycocotools_stats(coco, dets, img_ids=[info["image_id"]]), atol=1e-12)
    with pytest.raises(ValueError, match="at least one"):
        env.evaluate_episodes([])


def test_seq_return_telescopes_to_final_ap(kw):
    env = DetBoxSelectSeqEnv("test", **kw)
    nms_env = DetBoxSelectSeqEnv("test", baseline="nms", **kw)
    rng = np.random.default_rng(2)
    for i in range(env.n_images):
        for e in (env, nms_env):
            obs, info = e.reset(options={"image_index": i})
            total, done, steps = 0.0, False, 0
            while not done:
                mask = e.action_masks()
                assert mask[-1] and mask[: info["n_candidates"]].sum() == info["n_candidates"] - steps
                assert not mask[info["n_candidates"]:-1].any()
                choices = np.flatnonzero(mask)
                action = int(rng.choice(choices)) if rng.uniform() < 0.85 else e.n_max
                obs, reward, terminated, truncated, step = e.step(action)
                total += reward
                steps += 1
                done = terminated or truncated
                np.testing.assert_array_equal(obs[:, -1], np.isin(np.arange(e.n_max), step["kept"]))
            assert terminated and not truncated
            expected = step["ap"] - (step["nms_ap"] if e.baseline == "nms" else 0.0)
            assert total == pytest.approx(expected, abs=1e-12)
            # the final AP is the one-step env's AP of the same kept set
            one = DetBoxSelectEnv("test", **kw)
            one.reset(options={"image_index": i})
            keep = np.isin(np.arange(e.n_max), step["kept"]).astype(np.int8)
            assert one.step(keep)[4]["ap"] == pytest.approx(step["ap"], abs=1e-12)


def test_seq_masked_actions_are_ignored_or_refused(kw):
    env = DetBoxSelectSeqEnv("test", **kw)
    counts = env.table.counts
    i = int(np.argmax((counts >= 2) & (counts < env.n_max))) if ((counts >= 2) & (counts < env.n_max)).any() \
        else int(np.argmax(counts >= 2))
    env.reset(options={"image_index": i})
    n = int(counts[i])
    _, r0, term, _, info = env.step(0)
    _, r1, term, _, info = env.step(0)  # kept already: ignored
    assert r1 == 0.0 and info["ignored_actions"] == 1 and not term
    if n < env.n_max:
        _, _, _, _, info = env.step(env.n_max - 1)  # padding
        assert info["ignored_actions"] == 2
    strict = DetBoxSelectSeqEnv("test", strict=True, **kw)
    strict.reset(options={"image_index": i})
    strict.step(0)
    with pytest.raises(ValueError, match="strict=True"):
        strict.step(0)
    for bad in (env.n_max + 1, -1, 1.5, [0, 1]):
        with pytest.raises(ValueError, match="action must be an integer"):
            env.step(bad)


def test_bad_keep_masks_and_padding(env, kw):
    i = int(np.argmax(env.table.counts < env.n_max))
    n = int(env.table.counts[i])
    env.reset(options={"image_index": i})
    for bad in (np.ones(env.n_max + 1), np.full(env.n_max, 0.5), np.full(env.n_max, 2), np.ones((1, env.n_max)),
                np.array(["1"] * env.n_max)):
        with pytest.raises(ValueError, match="action must"):
            env.step(bad)
    keep = np.ones(env.n_max, dtype=np.float32)  # SB3 samples MultiBinary as floats
    _, _, _, _, info = env.step(keep)
    assert info["ignored_slots"] == env.n_max - n
    with pytest.raises(ResetNeeded):
        env.step(keep)
    strict = DetBoxSelectEnv("test", strict=True, **kw)
    strict.reset(options={"image_index": i})
    if n < env.n_max:
        with pytest.raises(ValueError, match="padded slot"):
            strict.step(keep)
    for options, match in (({"image_index": env.n_images}, "image_index must be an integer in 0.."),
                           ({"image_index": -1}, "image_index"), ({"image_index": 1.0}, "image_index"),
                           ({"index": 0}, "options must be")):
        with pytest.raises(ValueError, match=match):
            env.reset(options=options)


def test_bad_constructor_arguments(kw):
    for args, match in (({"baseline": "soft"}, "baseline must be one of"), ({"split": "dev"}, "split must be one of"),
                        ({"n_max": 0}, "n_max must be"), ({"nms_iou": 1.5}, "nms_iou"),
                        ({"strict": "yes"}, "strict must be"), ({"preset": "tiny"}, "unknown preset"),
                        ({"detector_seed": -1}, "detector_seed")):
        with pytest.raises(ValueError, match=match):
            DetBoxSelectEnv(**{"preset": "test", **kw, **args})


def _synthetic_table(num_classes: int, n_max: int) -> ImageTable:
    """Image 0: no candidates, one GT; image 1: two candidates, no GT; image 2: one perfect candidate."""
    arrays = {
        "image_ids": np.array([7, 8, 9]), "image_hw": np.full((3, 2), 48),
        "cand_offsets": np.array([0, 0, 2, 3]),
        "boxes": np.array([[1, 1, 10, 10], [2, 2, 11, 11], [5, 5, 20, 20]], dtype=np.float32),
        "scores": np.array([0.9, 0.8, 0.7], dtype=np.float32), "labels": np.array([1, 1, 2]),
        "gt_offsets": np.array([0, 1, 1, 2]),
        "gt_boxes": np.array([[3, 3, 12, 12], [5, 5, 20, 20]], dtype=np.float32), "gt_labels": np.array([1, 2]),
        "gt_crowd": np.zeros(2, dtype=bool),
    }
    arrays["features"] = split_features(arrays, n_max, num_classes)
    split = SplitCandidates.from_arrays(arrays)
    return ImageTable.build(split, n_max, num_classes, 0.5, {k: k for k in range(1, num_classes + 1)})


@pytest.mark.parametrize("cls", [DetBoxSelectEnv, DetBoxSelectSeqEnv, DetBoxRescoreEnv])
def test_images_without_candidates_or_ground_truth(cls, kw):
    env = cls("test", **kw)
    env.table = _synthetic_table(env.num_classes, env.n_max)
    everything = {DetBoxSelectEnv: np.ones(env.n_max, dtype=np.int8), DetBoxSelectSeqEnv: 0,
                  DetBoxRescoreEnv: np.ones(env.n_max, dtype=np.float32)}[cls]
    nothing = {DetBoxSelectEnv: np.zeros(env.n_max, dtype=np.int8), DetBoxSelectSeqEnv: env.n_max,
               DetBoxRescoreEnv: np.zeros(env.n_max, dtype=np.float32)}[cls]
    # no candidates: the episode runs, whatever the action keeps nothing, AP of the empty set with a GT = 0
    obs, info = env.reset(options={"image_index": 0})
    assert info["n_candidates"] == 0 and info["candidates"] == [] and not obs.any()
    if cls is DetBoxSelectSeqEnv:
        np.testing.assert_array_equal(np.flatnonzero(env.action_masks()), [env.n_max])
    _, reward, terminated, _, info = env.step(everything)
    assert terminated and reward == 0.0 and info["kept"] == []
    # no ground truth: image_ap's no-GT value (1 for keeping nothing, 0 once a box is kept)
    for action, expected in ((nothing, 1.0), (everything, 0.0)):
        env.reset(options={"image_index": 1})
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, info = env.step(action)
            total, done = total + reward, terminated or truncated
            if cls is DetBoxSelectSeqEnv and action != env.n_max:
                action = env.n_max  # keep one box, then stop
        assert total == expected == info["ap"]


def test_vector_env_matches_single_env(kw, env):
    venv = gym.make_vec("DetBoxSelect-Test-v0", num_envs=8, vectorization_mode="vector_entry_point", **kw)
    obs, info = venv.reset(seed=3)
    assert obs.shape == (8, env.n_max, env.observation_space.shape[1]) and obs in venv.observation_space
    for _ in range(3):
        actions = venv.action_space.sample()
        images = info["image_index"]
        nxt, rewards, terminated, truncated, info = venv.step(actions)
        assert terminated.all() and not truncated.any()
        np.testing.assert_array_equal(info["final_obs"], obs)
        np.testing.assert_array_equal(info["final_info"]["image_index"], images)
        for b, i in enumerate(images):
            env.reset(options={"image_index": int(i)})
            assert env.step(actions[b])[1] == pytest.approx(rewards[b], abs=1e-12)
        np.testing.assert_array_equal(nxt, env.table.features[info["image_index"]])
        obs = nxt
    fixed = np.arange(8) % env.n_images
    obs, info = venv.reset(options={"image_index": fixed})
    np.testing.assert_array_equal(info["image_index"], fixed)
    with pytest.raises(ValueError, match="actions must be a keep-mask of shape"):
        venv.step(np.ones((7, env.n_max)))
    with pytest.raises(ValueError, match="image_index must be 8 integers"):
        venv.reset(options={"image_index": [0]})
    venv.close()


def test_cache_is_reused_and_rebuilt_when_corrupt(kw, env, tmp_path, monkeypatch):
    from detgym.train import Trainer

    config = PRESETS.get_preset("test").merged(dataset_kwargs=kw["dataset_kwargs"])
    shutil.copytree(kw["cache_dir"], tmp_path / "cache")
    det_dir, cand_dir = cache_paths(config, tmp_path / "cache")
    reference, _ = load_candidates(config, LoadedSubstrate(config), cache_dir=tmp_path / "cache")

    def no_training(*args, **kwargs):
        raise AssertionError("the cached detector should have been reused")

    monkeypatch.setattr(Trainer, "fit", no_training)
    corruptions = {
        "truncated split": lambda: (cand_dir / "train.npz").write_bytes((cand_dir / "train.npz").read_bytes()[:100]),
        "flipped byte": lambda: _flip_byte(cand_dir / "val.npz"),
        "garbage manifest": lambda: (cand_dir / "manifest.json").write_text("{not json"),
        "stale manifest": lambda: _edit_manifest(cand_dir, key="0" * 16),
        "missing file": lambda: (cand_dir / "test.npz").unlink(),
    }
    for name, corrupt in corruptions.items():
        corrupt()
        splits, _ = load_candidates(config, LoadedSubstrate(config), cache_dir=tmp_path / "cache")
        for split, arrays in reference.items():
            for key, value in arrays.arrays().items():
                np.testing.assert_array_equal(splits[split].arrays()[key], value, err_msg=f"{name}: {split}.{key}")
    # a corrupt detector is detected and trained again (fit stubbed: the training itself is tested elsewhere)
    fits = []
    monkeypatch.setattr(Trainer, "fit", lambda self, *a, **k: fits.append(self.config.iterations) or [])
    _flip_byte(det_dir / "detector.npz")
    load_detector(config, LoadedSubstrate(config), cache_dir=tmp_path / "cache")
    assert fits == [config.detector_iterations]
    load_detector(config, LoadedSubstrate(config), cache_dir=tmp_path / "cache")  # the new entry is sound
    assert len(fits) == 1
    assert not any(p.name.startswith(".tmp-detgym") for p in det_dir.parent.iterdir())


def _flip_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _edit_manifest(directory, **changes):
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.update(changes)
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_split_arrays_are_checked():
    good = _synthetic_table(2, 4)
    assert len(good) == 3
    with pytest.raises(CacheError, match="missing arrays"):
        SplitCandidates.from_arrays({"image_ids": np.zeros(1, dtype=np.int64)})


def test_learners_run_on_every_variant(kw):
    from detgym.agents import make_agent
    from detgym.rollout import run_episode

    for env_id, algo in (("DetBoxSelect-Test-v0", "ppo"), ("DetBoxRescore-Test-v0", "ppo"),
                         ("DetBoxSelectSeq-Test-v0", "maskable_ppo")):
        env = gym.make(env_id, **kw)
        agent = make_agent(algo, env=env, seed=0, n_steps=32, batch_size=16, n_epochs=1)
        before = [p.detach().clone() for p in agent.model.policy.parameters()]
        agent.learn(64)
        assert any((p != q).any() for p, q in zip(agent.model.policy.parameters(), before))
        episode = run_episode(gym.make(env_id, **kw), agent, seed=123)
        assert episode.terminated and 0.0 <= episode.last_info["ap"] <= 1.0
        assert episode.episode_return == pytest.approx(episode.last_info["ap"], abs=1e-12)


def test_prepared_ap_is_image_ap():
    """The env's prepared reward equals image_ap on crowd GTs, images without GT or candidates, tied scores and
    more than 100 same-class detections (COCO's maxDets)."""
    from detgym.metrics import image_ap
    from detgym.metrics.prepared_ap import PreparedAP

    rng = np.random.default_rng(0)
    images = []
    for t in range(40):
        n, g = int(rng.integers(0, 130)), int(rng.integers(0, 6))
        gxy = rng.uniform(0, 80, (g, 2))
        gt = np.concatenate([gxy, gxy + rng.uniform(1, 30, (g, 2))], axis=1)
        xy = rng.uniform(0, 80, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(0, 30, (n, 2))], axis=1)
        m = min(n, g)
        boxes[:m] = gt[:m] + rng.uniform(-1, 1, (m, 4))  # some true positives
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        scores = rng.choice([0.1, 0.5, 0.9], n) if t % 3 == 0 else rng.uniform(0, 1, n)  # ties on every third
        scores = np.sort(scores)[::-1].copy()
        images.append((boxes, scores, rng.integers(1, 4, n), gt, rng.integers(1, 4, g), rng.uniform(size=g) < 0.2))
    counts = np.array([len(x[1]) for x in images])
    n_max = int(counts.max())
    boxes, scores, labels = np.zeros((40, n_max, 4)), np.zeros((40, n_max)), np.zeros((40, n_max), dtype=np.int64)
    for i, x in enumerate(images):
        boxes[i, :counts[i]], scores[i, :counts[i]], labels[i, :counts[i]] = x[:3]
    offsets = np.concatenate([[0], np.cumsum([len(x[4]) for x in images])])
    prepared = PreparedAP(boxes, scores, labels, counts, np.concatenate([x[3] for x in images]).reshape(-1, 4),
                          np.concatenate([x[4] for x in images]).astype(np.int64),
                          np.concatenate([x[5] for x in images]).astype(bool), offsets)
    for p_keep in (0.3, 0.8, 1.0):
        keep = rng.uniform(size=(40, n_max)) < p_keep
        order = rng.permutation(40)  # any batch order
        got = prepared(order, np.ascontiguousarray(keep[order]))
        expected = [image_ap(*images[i][:5], keep[i:i + 1, :counts[i]], images[i][5])[0] for i in order]
        np.testing.assert_array_equal(got, expected)


def test_absent_classes_penalty(kw):
    """``absent_classes="penalize"``: kept classes without GT join the per-class mean with AP 0."""
    plain = DetBoxSelectEnv("test", **kw)
    penal = DetBoxSelectEnv("test", absent_classes="penalize", **kw)
    nms_penal = DetBoxSelectEnv("test", absent_classes="penalize", baseline="nms", **kw)
    checked = 0
    for i in range(plain.n_images):
        keep = np.ones(plain.n_max, dtype=np.int8)
        _, ap, _, _, info = (plain.reset(options={"image_index": i}), plain.step(keep))[1]
        _, reward, _, _, pinfo = (penal.reset(options={"image_index": i}), penal.step(keep))[1]
        gt = set(plain.ground_truth()["labels"].tolist())
        kept_classes = set(plain.candidate_arrays()["labels"].tolist())
        if gt:
            assert reward == pytest.approx(ap * len(gt) / len(gt | kept_classes), abs=1e-12)
            checked += len(kept_classes - gt) > 0
        assert pinfo["ap"] == ap and pinfo["reward_ap"] == reward
        nms_penal.reset(options={"image_index": i})
        assert nms_penal.step(keep)[1] == pytest.approx(reward - nms_penal.nms_reward_ap[i], abs=1e-12)
    assert checked > 0
    # the vector env and the sequential env count it the same way
    venv = gym.make_vec("DetBoxSelect-Test-v0", num_envs=4, vectorization_mode="vector_entry_point",
                        absent_classes="penalize", **kw)
    _, info = venv.reset(options={"image_index": np.arange(4)})
    _, rewards, _, _, _ = venv.step(np.ones((4, plain.n_max), dtype=np.int8))
    seq = DetBoxSelectSeqEnv("test", absent_classes="penalize", **kw)
    for i in range(4):
        penal.reset(options={"image_index": i})
        assert rewards[i] == pytest.approx(penal.step(np.ones(plain.n_max, dtype=np.int8))[1], abs=1e-12)
        seq.reset(options={"image_index": i})
        total, done = 0.0, False
        while not done:
            _, r, terminated, truncated, _ = seq.step(int(np.flatnonzero(seq.action_masks())[0]))
            total, done = total + r, terminated or truncated
        assert total == pytest.approx(rewards[i], abs=1e-12)  # every candidate kept, then the end
    with pytest.raises(ValueError, match="absent_classes must be one of"):
        DetBoxSelectEnv("test", absent_classes="drop", **kw)
