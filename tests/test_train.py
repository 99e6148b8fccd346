import math

import numpy as np
import pytest
import torch

from detgym._validation import check_choice, replace_fields
from detgym.models import build_detector
from detgym.train import (
    NonFiniteLossError,
    Recipe,
    TrainConfig,
    Trainer,
    backbone_trunk,
    get_recipe,
    lr_factor,
    predict_coco,
)


def _trainer(tiny_digits, family="fcos", res_fpn=False, **cfg):
    train, val = tiny_digits
    torch.manual_seed(0)
    model = build_detector(family, num_classes=10, image_size=96, res_fpn=res_fpn)
    config = TrainConfig(iterations=20, batch_size=2, warmup_iters=2, seed=3, **cfg)
    return Trainer(model, train, val, config)


def test_schedule_warmup_cosine_and_multistep():
    cfg = TrainConfig(iterations=100, warmup_iters=10, warmup_factor=0.1, min_lr_ratio=0.0)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(5, cfg) == pytest.approx(0.55)
    assert lr_factor(10, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.5)
    assert lr_factor(100, cfg) == pytest.approx(0.0, abs=1e-12)
    ms = cfg.replace(schedule="multistep", milestones=(0.5, 0.8), gamma=0.1)
    assert [lr_factor(i, ms) for i in (20, 50, 79, 80)] == pytest.approx([1.0, 0.1, 0.1, 0.01])


@pytest.mark.parametrize(
    "change, match",
    [({"optimizer": "adam"}, "optimizer"), ({"schedule": "poly"}, "schedule"), ({"batch_size": 0}, "batch_size"),
     ({"milestones": (1.5,)}, "milestones"), ({"lrr": 1.0}, "unknown")],
)
def test_config_rejects_bad_values(change, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig().replace(**change)


def test_choice_and_replace_messages_name_the_value_and_the_accepted_ones():
    with pytest.raises(ValueError, match=r"^TrainConfig\.optimizer must be one of 'adamw', 'sgd'; got 'adam'$"):
        TrainConfig(optimizer="adam")
    assert check_choice("family", "fcos", ("retinanet", "fcos")) == "fcos"
    with pytest.raises(ValueError, match=r"^family must be one of 'a', 'b'; got 3$"):
        check_choice("family", 3, ("a", "b"))
    with pytest.raises(ValueError, match=r"unknown TrainConfig field\(s\) \['lrr'\]; accepted: iterations, batch_size"):
        TrainConfig().replace(lrr=1.0)
    # Recipe.replace used to accept any name silently (dataclasses.replace raises TypeError only for some)
    recipe = get_recipe("fcos-tiny")
    with pytest.raises(ValueError, match=r"unknown Recipe field\(s\) \['nope'\]; accepted: family, backbone, "):
        recipe.replace(nope=1)
    assert recipe.replace(backbone="mobilenet").backbone == "mobilenet" and recipe.backbone == "tiny"
    assert isinstance(recipe.replace(image_size=64), Recipe)
    with pytest.raises(TypeError):
        replace_fields(TrainConfig, lr=1.0)


@pytest.mark.parametrize("family", ["retinanet", "fcos", "fasterrcnn"])
def test_step_returns_raw_per_level_losses_and_weights_scale_the_gradient(tiny_digits, family):
    a = _trainer(tiny_digits, family, lr=1e-3)
    b = _trainer(tiny_digits, family, lr=1e-3)
    w = np.linspace(0.5, 2.0, a.num_levels)
    ra, rb = a.step(), b.step(w)
    # the same batch and parameters: the raw losses agree, only the back-propagated total differs
    np.testing.assert_allclose(ra.level_losses, rb.level_losses, rtol=1e-6)
    assert ra.level_losses.shape == (a.num_levels,)
    assert ra.total == pytest.approx(ra.level_losses.sum(), rel=1e-5)
    assert rb.total == pytest.approx(float((w * rb.level_losses).sum()), rel=1e-5)
    np.testing.assert_allclose(sum(ra.parts.values()), ra.level_losses)
    assert ra.iteration == 1
    # different weights, different update
    pa = torch.cat([p.flatten() for p in a.model.parameters()])
    pb = torch.cat([p.flatten() for p in b.model.parameters()])
    assert not torch.allclose(pa, pb)


def test_training_is_reproducible_whatever_the_caller_draws(tiny_digits):
    a = _trainer(tiny_digits, "fasterrcnn")
    b = _trainer(tiny_digits, "fasterrcnn")
    la = [a.step().level_losses for _ in range(3)]
    lb = []
    for _ in range(3):
        torch.rand(1000)  # an agent drawing from the global generator must not change training
        lb.append(b.step().level_losses)
    np.testing.assert_array_equal(np.array(la), np.array(lb))


def test_checkpoint_resume_continues_identically(tiny_digits, tmp_path):
    a = _trainer(tiny_digits)
    a.step()
    a.save_checkpoint(tmp_path / "ckpt.pt")
    expected = [a.step().level_losses for _ in range(2)]
    b = _trainer(tiny_digits)
    b.load_checkpoint(tmp_path / "ckpt.pt")
    assert b.iteration == 1
    got = [b.step().level_losses for _ in range(2)]
    np.testing.assert_array_equal(np.array(expected), np.array(got))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary files left


def test_bad_weights_and_missing_checkpoint(tiny_digits, tmp_path):
    t = _trainer(tiny_digits)
    with pytest.raises(ValueError, match="shape"):
        t.step([1.0, 1.0])
    with pytest.raises(ValueError, match="finite"):
        t.step([math.nan] * t.num_levels)
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        t.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pt"):
        t.load_checkpoint(tmp_path / "bad.pt")


def test_nan_loss_raises_naming_the_iteration(tiny_digits):
    t = _trainer(tiny_digits)
    t.step()
    before = [p.detach().clone() for p in t.model.parameters()]
    real = t.model.level_losses

    def poisoned(images, targets):
        out = real(images, targets)
        key = next(iter(out))
        out[key] = out[key] * float("nan")
        return out

    t.model.level_losses = poisoned
    with pytest.raises(NonFiniteLossError, match="iteration 2"):
        t.step()
    assert all(torch.equal(p, q) for p, q in zip(before, t.model.parameters()))


def test_evaluate_returns_coco_stats(tiny_digits):
    t = _trainer(tiny_digits)
    t.step()
    stats = t.evaluate()
    assert set(stats) >= {"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100"}
    assert all(-1.0 <= v <= 1.0 for v in stats.values())
    results = t.predict()
    assert all(r["category_id"] in range(1, 11) and len(r["bbox"]) == 4 for r in results)


def test_backbone_learns_at_its_own_rate(tiny_digits):
    t = _trainer(tiny_digits, "fasterrcnn", backbone_lr_mult=0.5)
    head, body = t.optimizer.param_groups
    assert body["lr"] == pytest.approx(0.5 * head["lr"])
    body_ids = {id(p) for p in t.model.backbone.body.parameters()}
    assert {id(p) for p in body["params"]} == body_ids
    assert not body_ids & {id(p) for p in head["params"]}


def test_res_fpn_trains_fpn_and_blocks_at_the_full_rate(tiny_digits):
    # ResFPN names the whole FPN backbone `body`: the trunk is backbone.body.body, the FPN belongs to the head
    t = _trainer(tiny_digits, "fasterrcnn", res_fpn=True, backbone_lr_mult=0.5)
    backbone = t.model.backbone
    assert type(backbone).__name__ == "ResFPN"
    head, body = t.optimizer.param_groups
    assert body["lr"] == pytest.approx(0.5 * head["lr"])
    assert backbone_trunk(t.model) is backbone.body.body
    trunk_ids = {id(p) for p in backbone.body.body.parameters()}
    head_ids = {id(p) for p in head["params"]}
    assert {id(p) for p in body["params"]} == trunk_ids
    fpn_ids = {id(p) for p in backbone.body.fpn.parameters()}
    block_ids = {id(p) for p in backbone.blocks.parameters()}
    assert fpn_ids and block_ids and (fpn_ids | block_ids) <= head_ids
    assert head_ids | trunk_ids == {id(p) for p in t.model.parameters()}


def _reference_predict_coco(model, dataset, batch_size):
    """predict_coco as it was before the eval loop was shared with `detgym predict`."""
    model.eval()
    lookup = np.zeros(max(dataset.label_to_category_id) + 1, dtype=np.int64)
    for label, cat in dataset.label_to_category_id.items():
        lookup[label] = cat
    results = []
    with torch.inference_mode():
        for start in range(0, len(dataset), batch_size):
            idx = list(range(start, min(start + batch_size, len(dataset))))
            images, _ = dataset.batch(idx)
            for i, out in zip(idx, model(images)):
                boxes = out["boxes"].float().cpu().numpy()
                xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
                cats = lookup[out["labels"].cpu().numpy()]
                scores = out["scores"].float().cpu().numpy()
                results.extend(
                    {"image_id": int(dataset.image_ids[i]), "category_id": int(c), "bbox": [float(v) for v in b],
                     "score": float(s)} for b, c, s in zip(xywh, cats, scores)
                )
    model.train()
    return results


def test_predict_coco_is_unchanged_by_the_shared_eval_loop(tiny_digits):
    t = _trainer(tiny_digits, "retinanet")
    for _ in range(3):
        t.step()
    t.model.score_thresh = 0.0  # keep the untrained detector's low-score boxes: something to compare
    val = tiny_digits[1]
    expected = _reference_predict_coco(t.model, val, batch_size=5)
    assert len({r["image_id"] for r in expected}) == len(val)
    got = predict_coco(t.model, val, batch_size=5)
    assert got == expected
    assert t.model.training  # mode restored
