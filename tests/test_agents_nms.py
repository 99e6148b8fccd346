"""The NMS family (detgym.agents.nms) and its agents in the DetBoxSelect envs.

Soft-NMS is checked against a literal transcription of Algorithm 1 of Bodla et al. (ICCV 2017); greedy NMS as an
agent against the detector's own post-processing.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import detgym  # noqa: F401  registers the ids
from detgym.agents import make_agent
from detgym.agents.box_heuristics import BoxRuleAgent
from detgym.agents.nms import (
    RULES,
    coco_detections,
    evaluate_rule,
    greedy_nms,
    oracle_keep,
    postprocess,
    soft_nms,
    topk,
)
from detgym.agents.registry import agent_names
from detgym.envs.box_select import PRESETS
from detgym.envs.box_select.candidates import load_detector
from detgym.envs.substrate import LoadedSubstrate
from detgym.metrics.reference import pycocotools_stats
from detgym.rollout import run_episode

IDS = ("DetBoxSelect-Test-v0", "DetBoxSelectSeq-Test-v0", "DetBoxRescore-Test-v0")


@pytest.fixture(scope="module")
def kw(box_select_kw):
    return box_select_kw


@pytest.fixture(scope="module")
def envs(kw):
    return {env_id: gym.make(env_id, **kw) for env_id in IDS}


# ------------------------------------------------------------------------------------- the rules themselves
def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def bodla_algorithm_1(boxes, scores, nt, method, sigma):
    """Soft-NMS, Algorithm 1 of Bodla et al. (2017), line by line, for one class.

    Input: B = {b_1..b_N}, S = {s_1..s_N}, N_t. D <- {}. While B != empty: m <- argmax S; M <- b_m;
    D <- D u M; B <- B - M; for b_i in B: s_i <- s_i f(iou(M, b_i)). Return D, S.
    """
    B = list(range(len(boxes)))
    S = {i: float(scores[i]) for i in B}
    D = []
    while B:
        m = max(B, key=lambda i: (S[i], -i))  # argmax S (the first on ties)
        M = m
        D.append(M)
        B.remove(M)
        for i in B:
            ov = _iou(boxes[M], boxes[i])
            if method == "linear":
                S[i] = S[i] * (1 - ov) if ov >= nt else S[i]
            else:
                S[i] = S[i] * math.exp(-(ov * ov) / sigma)
    return D, S


def _random_candidates(rng, n, n_classes=3):
    xy = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(4, 30, (n, 2))
    # clusters of near-duplicates, as a detector produces
    xy[n // 2:] = xy[: n - n // 2] + rng.normal(0, 2, (n - n // 2, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1)
    scores = np.sort(rng.uniform(0, 1, n))[::-1].copy()
    labels = rng.integers(1, n_classes + 1, n)
    return boxes, scores, labels


@pytest.mark.parametrize("method,params", [("linear", {"iou": 0.3}), ("linear", {"iou": 0.5}),
                                           ("gaussian", {"sigma": 0.5}), ("gaussian", {"sigma": 0.1})])
def test_soft_nms_is_bodla_algorithm_1(method, params):
    rng = np.random.default_rng(0)
    for trial in range(20):
        boxes, scores, labels = _random_candidates(rng, int(rng.integers(1, 30)))
        got = soft_nms(boxes, scores, labels, method=method, score_thresh=0.0, **params)
        expected = np.zeros_like(scores)
        for c in np.unique(labels):  # class-wise, as detectors run it
            idx = np.flatnonzero(labels == c)
            _, S = bodla_algorithm_1(boxes[idx], scores[idx], params.get("iou", 0.3), method, params.get("sigma", 0.5))
            expected[idx] = [S[k] for k in range(len(idx))]
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
        pruned = soft_nms(boxes, scores, labels, method=method, score_thresh=0.2, **params)
        np.testing.assert_array_equal(pruned, np.where(got >= 0.2, got, 0.0))  # pruning is a final threshold


def test_greedy_nms_is_the_greedy_rule():
    rng = np.random.default_rng(1)
    for _ in range(20):
        boxes, scores, labels = _random_candidates(rng, 25)
        keep, kept = np.zeros(25, dtype=bool), []
        for i in range(25):  # visit by score; suppressed by a kept same-class box with IoU > 0.5
            if all(labels[j] != labels[i] or _iou(boxes[i], boxes[j]) <= 0.5 for j in kept):
                kept.append(i)
                keep[i] = True
        np.testing.assert_array_equal(greedy_nms(boxes, scores, labels, 0.5), keep)


def test_nms_post_processing_knobs_are_torchvisions_order():
    """A score threshold before greedy NMS (torchvision's postprocess_detections) or after it keeps the same boxes;
    ``detections_per_img`` then keeps the highest-scored survivors."""
    rng = np.random.default_rng(3)
    for _ in range(20):
        boxes, scores, labels = _random_candidates(rng, 30)
        c = {"boxes": boxes, "scores": scores, "labels": labels}
        for thresh, k in ((0.0, None), (0.4, None), (0.0, 3), (0.3, 5), (0.5, 0)):
            above = np.flatnonzero(scores >= thresh)
            keep = np.zeros(30, dtype=bool)
            keep[above[greedy_nms(boxes[above], scores[above], labels[above], 0.5)]] = True
            if k is not None:
                kept = np.flatnonzero(keep)
                keep[kept[np.argsort(-scores[kept], kind="stable")[k:]]] = False
            got = RULES["nms"](c, score_thresh=thresh, detections_per_img=k)
            np.testing.assert_array_equal(got, np.where(keep, scores, 0.0))
    with pytest.raises(ValueError, match="detections_per_img must be an integer >= 0"):
        RULES["nms"](c, detections_per_img=-1)


def test_oracle_topk_and_bad_parameters():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 9, 10], [20, 20, 30, 30], [50, 50, 60, 60]], dtype=float)
    labels = np.array([1, 1, 2, 1])
    gt = np.array([[0, 0, 9, 10], [20, 20, 31, 31], [70, 70, 80, 80]], dtype=float)
    np.testing.assert_array_equal(oracle_keep(boxes, labels, gt, np.array([1, 2, 1])), [False, True, True, False])
    np.testing.assert_array_equal(oracle_keep(boxes, labels, gt, np.array([1, 2, 1]), [True, False, False]),
                                  [False, False, True, False])
    # COCO's matching gives each object its highest-scored candidate; "iou" the closest one whatever its score
    for scores, expected in (([0.9, 0.8, 0.7, 0.6], [True, False, True, False]),
                             ([0.7, 0.8, 0.7, 0.6], [False, True, True, False])):
        np.testing.assert_array_equal(oracle_keep(boxes, labels, gt, np.array([1, 2, 1]), match="score",
                                                  scores=np.array(scores)), expected)
    with pytest.raises(ValueError, match="match must be one of 'iou', 'score'"):
        oracle_keep(boxes, labels, gt, np.array([1, 2, 1]), match="best")
    with pytest.raises(ValueError, match="pass scores"):
        oracle_keep(boxes, labels, gt, np.array([1, 2, 1]), match="score")
    np.testing.assert_array_equal(topk(np.ones(4), 2), [True, True, False, False])
    with pytest.raises(ValueError, match="method must be one of"):
        soft_nms(boxes, np.ones(4), labels, method="cubic")
    with pytest.raises(ValueError, match="k must be"):
        topk(np.ones(4), -1)
    with pytest.raises(ValueError, match="rule must be one of"):
        postprocess([], "soft")


def test_postprocess_feeds_coco_evaluate():
    from detgym.metrics import coco_evaluate

    rng = np.random.default_rng(2)
    gt = {"images": [{"id": i, "width": 100, "height": 100} for i in (1, 2)],
          "categories": [{"id": 11, "name": "a"}, {"id": 12, "name": "b"}, {"id": 13, "name": "c"}], "annotations": []}
    cands = []
    for image_id in (1, 2):
        boxes, scores, labels = _random_candidates(rng, 20)
        for k, (b, lab) in enumerate(zip(boxes[:4], labels[:4])):
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": 10 + lab,
                                      "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": 1.0, "iscrowd": 0})
        cands.append({"boxes": boxes + rng.normal(0, 1, boxes.shape), "scores": scores, "labels": labels})
    l2c = {1: 11, 2: 12, 3: 13}
    for rule in ("nms", "soft_nms_linear", "soft_nms_gaussian", "keep_all"):
        dets = coco_detections(postprocess(cands, rule), [1, 2], l2c)
        assert coco_evaluate(gt, dets)["AP"] == pytest.approx(float(pycocotools_stats(gt, dets)[0]), abs=1e-12)


# ------------------------------------------------------------------------------------------- as agents
def test_registry_rows_fit_the_right_variants(envs):
    select, seq, rescore = (agent_names(envs[i]) for i in IDS)
    for name in ("nms", "topk", "threshold", "keep_all", "oracle"):
        assert name in select and name in seq and name in rescore
    for name in ("soft_nms_linear", "soft_nms_gaussian"):
        assert name in rescore and name not in select and name not in seq
    assert "maskable_ppo" in seq and "maskable_ppo" not in select
    assert "nms" not in agent_names(gym.make("CartPole-v1"))
    with pytest.raises(ValueError, match="does not fit"):
        make_agent("soft_nms_linear", env=envs[IDS[0]])
    with pytest.raises(ValueError, match="bad parameters"):
        make_agent("nms", env=envs[IDS[0]], sigma=0.5)


def test_nms_agent_is_the_detectors_post_processing(kw, envs):
    """On the cached candidates, the NMS agent keeps what the detector's own NMS (IoU 0.5) keeps."""
    config = PRESETS.get_preset("test").merged(dataset_kwargs=kw["dataset_kwargs"])
    substrate = LoadedSubstrate(config)
    model = load_detector(config, substrate, cache_dir=kw["cache_dir"])
    assert model.roi_heads.nms_thresh == 0.5
    env = envs[IDS[0]]
    agent = make_agent("nms", env=env)
    dataset = substrate.split("train")
    cands, own = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), 16):  # the cache's batches (eval_batch_size)
            images, _ = dataset.batch(range(start, min(start + 16, len(dataset))))
            batch = model.candidates(images, max_candidates=env.unwrapped.n_max)
            cands += batch
            own += model.postprocess(batch)
    compared = 0
    for i, (c, det) in enumerate(zip(cands, own)):
        episode = run_episode(env, agent, options={"image_index": i})
        kept = episode.last_info["kept"]
        np.testing.assert_allclose(env.unwrapped.candidate_arrays(i)["boxes"][kept], det["boxes"].numpy(), rtol=1e-6)
        assert episode.episode_return == pytest.approx(episode.last_info["nms_ap"], abs=1e-12)
        compared += len(kept)
    assert compared > 0


@pytest.mark.parametrize("name", ["nms", "topk", "threshold", "keep_all", "oracle"])
def test_selectors_agree_across_variants(name, envs):
    """The keep-mask, sequential and rescore variants of a selector score the same AP on every image."""
    agents = {env_id: make_agent(name, env=envs[env_id]) for env_id in IDS}
    n = envs[IDS[0]].unwrapped.n_images
    returns = {env_id: [run_episode(envs[env_id], agents[env_id], options={"image_index": i}).episode_return
                        for i in range(n)] for env_id in IDS}
    np.testing.assert_allclose(returns[IDS[1]], returns[IDS[0]], atol=1e-12)
    np.testing.assert_allclose(returns[IDS[2]], returns[IDS[0]], atol=1e-12)


def test_agents_match_the_post_processor_and_the_oracle_bounds_nms(envs):
    env = envs[IDS[2]]
    table = env.unwrapped.table
    coco = env.unwrapped.coco_gt()
    aps = {}
    for name in ("nms", "soft_nms_linear", "soft_nms_gaussian", "keep_all", "oracle"):
        agent = make_agent(name, env=env)
        per_image = []
        for i in range(len(table)):
            episode = run_episode(env, agent, options={"image_index": i})
            per_image.append(episode.episode_return)
            if name.startswith("soft") and table.ground_truth(i)["labels"].size:
                # the agent's scores on normalised boxes are the post-processor's on pixels
                c = table.candidates(i)
                expected = RULES[name](c)
                np.testing.assert_allclose(episode.last_info["scores"], expected, rtol=1e-5, atol=1e-7)
        aps[name] = np.mean(per_image)
    assert aps["oracle"] >= aps["nms"] and aps["oracle"] >= aps["keep_all"]
    stats = evaluate_rule(env, "oracle")
    assert stats["AP"] >= evaluate_rule(env, "nms")["AP"]
    assert evaluate_rule(env, "oracle", match="score")["AP"] >= evaluate_rule(env, "nms")["AP"]
    assert set(stats) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert coco["images"]


def test_oracle_acts_in_one_env_only(envs):
    agent = make_agent("oracle", env=envs[IDS[0]])
    obs, _ = envs[IDS[0]].reset(seed=0)
    with pytest.raises(ValueError, match="acts in one env"):
        agent.predict(np.stack([obs, obs]))


def test_bad_agent_arguments(envs):
    with pytest.raises(ValueError, match="rule must be one of"):
        BoxRuleAgent(envs[IDS[0]], "greedy")
    with pytest.raises(ValueError, match="pass env"):
        make_agent("nms")
