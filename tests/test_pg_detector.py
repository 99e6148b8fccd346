"""The policy-gradient detector of paper 001 (detgym.agents.pg_detector): eq. 8-11 on hand-made numbers and on a real
Faster R-CNN batch, the sigmoid (RetinaNet / FCOS) variant, and fine-tuning through detgym's Trainer."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import batched_nms

import detgym.agents.pg_detector as pg
from detgym.agents.pg_detector import PGConfig, PolicyGradientDetector, policy_advantages
from detgym.envs.box_select import PRESETS
from detgym.envs.box_select.candidates import load_detector
from detgym.envs.substrate import LoadedSubstrate
from detgym.metrics import image_ap


@pytest.fixture(scope="module")
def substrate(tmp_path_factory):
    root = tmp_path_factory.getbasetemp() / "box-select"  # the cache the other box-select test modules share
    config = PRESETS.get_preset("test").merged(dataset_kwargs={"cache_dir": str(root / "digits")})
    sub = LoadedSubstrate(config)
    sub.cache_dir = str(root / "cache")
    return sub


@pytest.fixture(scope="module")
def detector(substrate):
    return load_detector(substrate.config, substrate, cache_dir=substrate.cache_dir)


def test_advantages_by_hand():
    rewards = np.array([0.2, 0.8, 0.5])
    keep = np.array([[1, 1, 0, 0],
                     [1, 0, 1, 0],
                     [0, 1, 1, 0]], dtype=bool)
    nms_keep = np.array([True, False, False, False])
    # conditional: r(b) = mean reward of the sets containing b; box 0 kept by NMS and box 3 never sampled: 0
    np.testing.assert_allclose(policy_advantages(rewards, keep, 0.4, nms_keep, "conditional"),
                               [0.0, (0.2 + 0.5) / 2 - 0.4, (0.8 + 0.5) / 2 - 0.4, 0.0])
    # eq. 8 literally: sum over the sets containing b of r(a) / k
    np.testing.assert_allclose(policy_advantages(rewards, keep, 0.4, nms_keep, "eq8"),
                               [0.0, (0.2 + 0.5) / 3 - 0.4, (0.8 + 0.5) / 3 - 0.4, 0.0])
    with pytest.raises(ValueError, match="estimator must be one of"):
        policy_advantages(rewards, keep, 0.4, nms_keep, "mean")


def test_bad_config():
    for kwargs, match in (({"k": 0}, "k must be"), ({"gamma": -1.0}, "gamma must be"),
                          ({"estimator": "x"}, "estimator must be one of"), ({"nms_iou": 2.0}, "nms_iou")):
        with pytest.raises(ValueError, match=match):
            PGConfig(**kwargs)
    with pytest.raises(ValueError, match="detgym Faster R-CNN, RetinaNet or FCOS"):
        PolicyGradientDetector(torch.nn.Linear(2, 2))


def _batch(substrate, n=4):
    images, targets = substrate.train_set.batch(range(n))
    return images, targets


def test_gradient_is_eq_11_on_a_faster_rcnn_batch(substrate, detector, monkeypatch):
    """d loss / d logits = sum_b (A_b / #RoIs) (softmax(x) - onehot(label_b)) + gamma * the CE's own gradient."""
    model = PolicyGradientDetector(copy.deepcopy(detector), PGConfig(gamma=0.7, k=6)).train()
    sampled = []

    def fixed_samples(scores, k):  # reproducible keep-sets, recorded for the check
        rng = np.random.default_rng(len(sampled))
        keep = rng.uniform(size=(k, scores.shape[0])) < scores.detach().numpy()[None, :]
        sampled.append(keep)
        return keep

    monkeypatch.setattr(pg, "sample_keep_sets", fixed_samples)
    seen = {}
    heads = model.detector.roi_heads
    hooks = [heads.box_predictor.register_forward_hook(lambda mod, args, out: seen.update(logits=out[0], reg=out[1])),
             heads.box_roi_pool.register_forward_hook(lambda mod, args, out: seen.update(pool=args)),
             model.detector.transform.register_forward_hook(lambda mod, args, out: seen.update(targets=out[1]))]
    images, targets = _batch(substrate)
    torch.manual_seed(0)
    losses = model.level_losses(images, targets)
    for hook in hooks:
        hook.remove()
    logits = seen["logits"]
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_policy"}
    grad_policy, = torch.autograd.grad(losses["loss_policy"].sum(), logits, retain_graph=True)

    # expected: rebuild every image's candidates, rewards, baseline and advantages independently
    features, proposals, shapes = seen["pool"]
    cands = heads.candidate_detections(logits.detach(), seen["reg"].detach(), proposals, shapes)
    targets_t = seen["targets"]
    expected = torch.zeros_like(logits)
    probs = F.softmax(logits.detach(), dim=1)
    offsets = np.cumsum([0] + [p.shape[0] for p in proposals])
    used = 0
    for i, c in enumerate(cands):
        n = c["scores"].numel()
        if n == 0:
            continue
        keep = sampled[used]
        used += 1
        nms = np.zeros(n, dtype=bool)
        nms[batched_nms(c["boxes"], c["scores"], c["labels"], 0.5)[:100].numpy()] = True
        rewards = [image_ap(c["boxes"].double(), c["scores"].double(), c["labels"], targets_t[i]["boxes"].double(),
                            targets_t[i]["labels"], row[None])[0] for row in keep]
        baseline = image_ap(c["boxes"].double(), c["scores"].double(), c["labels"], targets_t[i]["boxes"].double(),
                            targets_t[i]["labels"], nms[None])[0]
        for b in range(n):
            containing = [r for r, row in zip(rewards, keep) if row[b]]
            advantage = 0.0 if nms[b] or not containing else float(np.mean(containing)) - baseline
            row = int(c["logit_index"][b]) + int(offsets[i])
            onehot = F.one_hot(c["labels"][b], logits.shape[1]).float()
            expected[row] += advantage / logits.shape[0] * (probs[row] - onehot)  # eq. 11 without gamma
    assert used == len(sampled) > 0
    torch.testing.assert_close(grad_policy, expected, rtol=1e-4, atol=1e-7)

    # gamma scales the standard cross-entropy: the same batch and sampler seed without the wrapper
    torch.manual_seed(0)
    standard = model.detector.level_losses(images, targets)
    torch.testing.assert_close(losses["loss_classifier"], 0.7 * standard["loss_classifier"])
    torch.testing.assert_close(losses["loss_box_reg"], standard["loss_box_reg"])


@pytest.mark.parametrize("family", ["retinanet", "fcos"])
def test_sigmoid_heads(family, substrate):
    from detgym.models import build_detector

    torch.manual_seed(0)
    det = build_detector(family, "tiny", 10, image_size=48, score_thresh=0.005, fpn_channels=16, head_num_convs=1)
    images, _ = _batch(substrate, 2)
    # ground truth = each image's top eval-mode candidate: close to training-mode candidates (BatchNorm on batch
    # statistics moves them), so NMS and some samples score AP > 0 and advantages are nonzero
    with torch.no_grad():
        top = [c for c in det.candidates(images)]
    first = [int(torch.nonzero((c["boxes"][:, 2:] - c["boxes"][:, :2] > 0.5).all(1))[0]) for c in top]  # not flat
    targets = [{"boxes": c["boxes"][j:j + 1].clone(), "labels": c["labels"][j:j + 1].clone()}
               for c, j in zip(top, first)]
    model = PolicyGradientDetector(det.train(), PGConfig(gamma=0.5, k=4))
    losses = model.level_losses(images, targets)
    standard = det.level_losses(images, targets)  # no sampling in the dense losses: the same numbers
    torch.testing.assert_close(losses["classification"], 0.5 * standard["classification"])
    assert losses["loss_policy"].shape == (det.num_levels,)
    assert model.last_stats["nms_reward"] > 0 and model.last_stats["mean_abs_advantage"] > 0
    grad, = torch.autograd.grad(losses["loss_policy"].sum(), det.head.classification_head.cls_logits.weight)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_fine_tuning_through_the_trainer(substrate, detector):
    """Same trainer, same seed: PG fine-tuning is reproducible and changes the classifier."""
    runs = []
    for _ in range(2):
        model = PolicyGradientDetector(copy.deepcopy(detector), PGConfig())
        trainer = substrate.build_trainer(0, 5, iterations=3, model=model)
        results = trainer.fit(progress=False)
        runs.append([r.total for r in results])
        assert "loss_policy" in results[-1].parts
    assert runs[0] == runs[1]
    before = detector.roi_heads.box_predictor.cls_score.weight
    after = model.detector.roi_heads.box_predictor.cls_score.weight
    assert not torch.equal(before, after)
    stats = trainer.evaluate(substrate.val_set)  # eval mode: the wrapper is the detector
    assert 0.0 <= stats["AP"] <= 1.0


def test_pool_reward_is_coco_ap_over_the_batch():
    """reward="pool_ap": r(a) = B * (AP over the batch with image i's boxes a - with its NMS boxes), the other images
    with their NMS results, equal to pycocotools on the batch's images."""
    from tests.test_metrics_pool_ap import _pycocotools_ap, _split

    rng = np.random.default_rng(5)
    split = _split(rng, n=4, n_max=8)
    split["gt_crowd"][:] = False  # a detector's targets have no crowd boxes
    split["image_ids"] = np.arange(4)  # the batch's images are numbered in batch order
    n, n_max = split["scores"].shape
    data, sampled, nms_keeps = [], [], []
    for i in range(n):
        c, g0, g1 = split["counts"][i], split["gt_offsets"][i], split["gt_offsets"][i + 1]
        data.append((split["boxes"][i, :c], split["scores"][i, :c], split["labels"][i, :c], split["gt_boxes"][g0:g1],
                     split["gt_labels"][g0:g1]))
        nms_keeps.append(rng.random(c) < 0.5)
        sampled.append(rng.random((3, c)) < 0.6 if c else None)
    rewards = pg._pool_rewards(data, sampled, nms_keeps)
    pad = [np.r_[k, np.zeros(n_max - k.size, dtype=bool)] for k in nms_keeps]
    nms = {j: (pad[j], split["scores"][j]) for j in range(n)}
    checked = 0
    for i, (keep, (r, baseline)) in enumerate(zip(sampled, rewards)):
        if keep is None:
            continue
        assert baseline == 0.0
        ref = _pycocotools_ap(split, list(range(n)), nms)
        for row, got in zip(keep, r):
            kept = np.r_[row, np.zeros(n_max - row.size, dtype=bool)]
            want = _pycocotools_ap(split, list(range(n)), {**nms, i: (kept, split["scores"][i])})
            assert got == pytest.approx(n * (want - ref), abs=1e-9)
            checked += 1
    assert checked >= 6
    with pytest.raises(ValueError, match="reward must be one of"):
        PGConfig(reward="dataset_ap")


def test_pool_reward_fine_tunes(substrate, detector):
    """A Faster R-CNN batch with reward="pool_ap": finite losses, a policy term with nonzero advantages."""
    model = PolicyGradientDetector(copy.deepcopy(detector), PGConfig(reward="pool_ap")).train()
    images, targets = _batch(substrate)
    torch.manual_seed(0)
    losses = model.level_losses(images, targets)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert model.last_stats["nms_reward"] == 0.0 and model.last_stats["mean_abs_advantage"] > 0
    losses["loss_policy"].sum().backward()
