import math

import numpy as np
import pytest
import torch

from detgym.models import build_detector
from detgym.train import NonFiniteLossError, TrainConfig, Trainer, lr_factor


def _trainer(tiny_digits, family="fcos", **cfg):
    train, val = tiny_digits
    torch.manual_seed(0)
    model = build_detector(family, num_classes=10, image_size=96)
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
