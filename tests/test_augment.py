"""Tests of detgym.data.augment: paper 004's augmentation (colour jitter, SVHN colour policy, affine with boxes)."""

from __future__ import annotations

import math

import pytest
import torch

from detgym.data.augment import (
    COLOR_OPS,
    SVHN_COLOR_SUBPOLICIES,
    AugmentConfig,
    DetectionAugment,
    SubPolicy,
    SVHNColorPolicy,
    affine_matrix,
    transform_boxes,
)

GEOMETRY_ONLY = AugmentConfig(color_jitter_prob=0.0, svhn_policy_prob=0.0, affine_prob=1.0)


def _rect_image(H: int, W: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    x1, y1, x2, y2 = box
    img = torch.zeros(3, H, W)
    img[:, y1:y2, x1:x2] = 1.0
    return img


def _ink_box(img: torch.Tensor, level: float = 0.5) -> list[float]:
    ys, xs = (img[0] > level).nonzero(as_tuple=True)
    return [xs.min().item(), ys.min().item(), xs.max().item() + 1.0, ys.max().item() + 1.0]


def test_affine_matrix_known_transforms():
    # pure translation
    m = affine_matrix(100, 50, 0.0, 1.0, (7.0, -3.0))[0]
    assert torch.allclose(m, torch.tensor([[1, 0, 7], [0, 1, -3], [0, 0, 1]], dtype=torch.float64))
    # 90 degrees about the centre: the image centre stays, +x turns to -y (counter-clockwise on screen)
    m = affine_matrix(100, 100, 90.0)[0]
    p = m @ torch.tensor([60.0, 50.0, 1.0], dtype=torch.float64)
    assert torch.allclose(p, torch.tensor([50.0, 40.0, 1.0], dtype=torch.float64), atol=1e-9)
    # scale about the centre
    m = affine_matrix(100, 100, 0.0, 2.0)[0]
    assert torch.allclose(m @ torch.tensor([60.0, 50.0, 1.0], dtype=torch.float64),
                          torch.tensor([70.0, 50.0, 1.0], dtype=torch.float64))


def test_transform_boxes_uses_all_four_corners():
    box = torch.tensor([[40.0, 45.0, 60.0, 55.0]])
    m = affine_matrix(100, 100, 45.0)[0]
    out = transform_boxes(box, m)[0]
    # A 20 x 10 box turned by 45 degrees: enclosing square of side (20 + 10) / sqrt(2) about the centre.
    half = 15 / math.sqrt(2)
    assert torch.allclose(out, torch.tensor([50 - half, 50 - half, 50 + half, 50 + half]), atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_boxes_follow_the_pixels_under_random_affine(seed):
    """The transformed box encloses exactly the transformed ink (up to one pixel of interpolation)."""
    H, W = 64, 80
    box = (20, 18, 50, 40)
    img = _rect_image(H, W, box)
    t = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([4])}
    aug = DetectionAugment(GEOMETRY_ONLY.replace(rotation=10.0, translate=0.1, scale=(0.8, 1.2), shear=2.0,
                                                 fill=0.0))
    torch.manual_seed(seed)
    [out], [tt] = aug([img], [t])
    assert tt["boxes"].shape == (1, 4) and tt["labels"].tolist() == [4]
    # ink at half intensity lies within the box; the box is tight: its sides touch the ink within 1.5 px
    ink = torch.tensor(_ink_box(out))
    b = tt["boxes"][0]
    assert (ink[:2] >= b[:2] - 1.0).all() and (ink[2:] <= b[2:] + 1.0).all()
    assert (ink - b).abs().max() <= 1.5


def test_exact_translation_moves_pixels_and_boxes_by_the_same_amount():
    H, W = 40, 40
    box = (10, 12, 20, 30)
    img = _rect_image(H, W, box)
    t = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([1])}
    # translate only: rotation, shear 0, scale 1; with translate 0.25 the shift is drawn in [-10, 10] px
    aug = DetectionAugment(GEOMETRY_ONLY.replace(rotation=0.0, shear=0.0, scale=(1.0, 1.0), translate=0.25, fill=0.0))
    torch.manual_seed(5)
    [out], [tt] = aug([img], [t])
    b = tt["boxes"][0]
    dx, dy = b[0] - box[0], b[1] - box[1]
    assert torch.allclose(b, torch.tensor(box, dtype=torch.float32) + torch.stack([dx, dy, dx, dy]), atol=1e-4)
    ink = torch.tensor(_ink_box(out))
    assert (ink - b).abs().max() <= 1.0


def test_degenerate_boxes_are_dropped_with_their_labels():
    H, W = 50, 50
    img = torch.rand(3, H, W)
    # boxes: one in the middle (kept), one at the very right edge (leaves the image under a right shift)
    boxes = torch.tensor([[20.0, 20.0, 30.0, 30.0], [46.0, 10.0, 50.0, 20.0]])
    t = {"boxes": boxes, "labels": torch.tensor([3, 7]), "iscrowd": torch.tensor([0, 0]), "image_id": 9}
    aug = DetectionAugment(GEOMETRY_ONLY)
    m = affine_matrix(W, H, 0.0, 1.0, (10.0, 0.0))[0]
    # Move the boxes the way the augmentation does for a fixed matrix.
    new, keep = aug._move_boxes(boxes, m, H, W)
    assert keep.tolist() == [True, False]
    from detgym.data.augment import _filter_target

    out = _filter_target(t, new, keep)
    assert out["labels"].tolist() == [3] and out["iscrowd"].tolist() == [0] and out["image_id"] == 9
    assert torch.allclose(out["boxes"], torch.tensor([[30.0, 20.0, 40.0, 30.0]]))
    # A big shift through the random pipeline drops boxes too, never leaving empty or out-of-image boxes.
    aug = DetectionAugment(GEOMETRY_ONLY.replace(translate=0.5))
    torch.manual_seed(0)
    imgs = [img.clone() for _ in range(16)]
    tgts = [{"boxes": boxes.clone(), "labels": torch.tensor([3, 7])} for _ in range(16)]
    _, outs = aug(imgs, tgts)
    n_left = [o["boxes"].shape[0] for o in outs]
    assert min(n_left) < 2
    for o in outs:
        b = o["boxes"]
        assert b.shape[0] == o["labels"].shape[0]
        assert ((b[:, 2] - b[:, 0]) >= 2).all() and ((b[:, 3] - b[:, 1]) >= 2).all()
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= W).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= H).all()


def test_no_horizontal_flip_by_default_and_flip_when_asked():
    assert AugmentConfig().flip_prob == 0.0
    H, W = 32, 48
    box = (4, 8, 14, 24)
    img = _rect_image(H, W, box)
    t = {"boxes": torch.tensor([box], dtype=torch.float32), "labels": torch.tensor([2])}
    no_geo = AugmentConfig(color_jitter_prob=0.0, svhn_policy_prob=0.0, affine_prob=0.0)
    aug = DetectionAugment(no_geo)
    for seed in range(10):
        torch.manual_seed(seed)
        [out], [tt] = aug([img], [t])
        assert torch.equal(out, img) and torch.equal(tt["boxes"], t["boxes"])
    # With the flag: a flip mirrors pixels exactly and boxes as x -> W - x.
    aug = DetectionAugment(no_geo.replace(flip_prob=1.0))
    [out], [tt] = aug([img], [t])
    assert torch.equal(out, img.flip(-1))
    assert tt["boxes"].tolist() == [[W - 14.0, 8.0, W - 4.0, 24.0]]
    assert DetectionAugment(flip=True).config.flip_prob == 0.5


def test_deterministic_under_a_seed_and_inputs_untouched():
    torch.manual_seed(123)
    imgs = [torch.rand(3, 48, 48) for _ in range(5)] + [torch.rand(3, 40, 56)]
    tgts = [{"boxes": torch.tensor([[5.0, 5.0, 30.0, 40.0]]), "labels": torch.tensor([1])} for _ in imgs]
    copies = [im.clone() for im in imgs]
    aug = DetectionAugment(AugmentConfig(color_jitter_prob=1.0, svhn_policy_prob=1.0, affine_prob=1.0))
    torch.manual_seed(7)
    a_imgs, a_t = aug(imgs, tgts)
    torch.manual_seed(7)
    b_imgs, b_t = aug(imgs, tgts)
    for x, y, s, t in zip(a_imgs, b_imgs, a_t, b_t):
        assert torch.equal(x, y) and torch.equal(s["boxes"], t["boxes"])
        assert x.min() >= 0 and x.max() <= 1
    assert all(torch.equal(a, b) for a, b in zip(imgs, copies))
    assert [tuple(x.shape) for x in a_imgs] == [tuple(x.shape) for x in imgs]
    # a generator gives the same result as the same seed on the global one
    g = torch.Generator().manual_seed(7)
    c_imgs, _ = aug(imgs, tgts, generator=g)
    assert all(torch.equal(x, y) for x, y in zip(a_imgs, c_imgs))
    # another seed differs
    torch.manual_seed(8)
    d_imgs, _ = aug(imgs, tgts)
    assert not all(torch.equal(x, y) for x, y in zip(a_imgs, d_imgs))
    # a batch tensor works too and gives a batch tensor back
    batch = torch.stack(imgs[:5])
    torch.manual_seed(7)
    out, _ = aug(batch, tgts[:5])
    assert isinstance(out, torch.Tensor) and out.shape == batch.shape


def test_color_ops_and_svhn_policy():
    x = torch.rand(4, 3, 16, 16)
    m = torch.full((4,), 9, dtype=torch.long)
    sign = torch.ones(4)
    assert torch.allclose(COLOR_OPS["Invert"](x, m, sign), 1 - x)
    sol = COLOR_OPS["Solarize"](x, torch.full((4,), 5, dtype=torch.long), sign)
    thr = 1 - 5 / 9
    assert torch.allclose(sol, torch.where(x >= thr, 1 - x, x))
    post = COLOR_OPS["Posterize"](x, m, sign)  # m = 9 -> 4 bits: multiples of 16 / 255
    assert torch.allclose((post * 255 / 16) - (post * 255 / 16).round(), torch.zeros_like(post), atol=1e-4)
    ac = COLOR_OPS["AutoContrast"](x * 0.5 + 0.2, m, sign)
    assert torch.allclose(ac.amin(dim=(2, 3)), torch.zeros(4, 3), atol=1e-6)
    assert torch.allclose(ac.amax(dim=(2, 3)), torch.ones(4, 3), atol=1e-6)
    for name, op in COLOR_OPS.items():
        y = op(x.clone(), m, -sign)
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1, name
    # The default policy is colour-only (AutoAugment's SVHN policy without its geometric ops).
    assert all(name in COLOR_OPS for s in SVHN_COLOR_SUBPOLICIES for name, _, _ in s.ops)
    assert len(SVHN_COLOR_SUBPOLICIES) == 23
    always_invert = SVHNColorPolicy([SubPolicy((("Invert", 1.0, 0),))])
    assert torch.allclose(always_invert(x.clone()), 1 - x)
    only_first = torch.tensor([True, False, False, False])
    y = always_invert(x.clone(), apply=only_first)
    assert torch.allclose(y[0], 1 - x[0]) and torch.equal(y[1:], x[1:])


def test_color_jitter_keeps_boxes_and_changes_pixels():
    torch.manual_seed(0)
    img = torch.rand(3, 32, 32)
    t = {"boxes": torch.tensor([[1.0, 2.0, 10.0, 12.0]]), "labels": torch.tensor([5])}
    aug = DetectionAugment(AugmentConfig(color_jitter_prob=1.0, svhn_policy_prob=0.0, affine_prob=0.0))
    [out], [tt] = aug([img], [t])
    assert not torch.equal(out, img)
    assert torch.equal(tt["boxes"], t["boxes"]) and torch.equal(tt["labels"], t["labels"])


@pytest.mark.parametrize(
    "change, match",
    [({"affine_prob": 1.5}, "affine_prob"), ({"scale": (1.2, 0.8)}, "scale"), ({"hue": 0.7}, "hue"),
     ({"rotation": -1.0}, "rotation"), ({"nope": 1}, "unknown")],
)
def test_config_validation(change, match):
    with pytest.raises(ValueError, match=match):
        AugmentConfig().replace(**change)


def test_config_round_trip_and_subpolicy_validation():
    cfg = AugmentConfig(flip_prob=0.5, scale=(0.7, 1.3))
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="ShearX"):
        SubPolicy((("ShearX", 0.5, 3),))
    with pytest.raises(ValueError, match="magnitude"):
        SubPolicy((("Solarize", 0.5, 12),))
    with pytest.raises(ValueError, match="targets"):
        DetectionAugment()([torch.rand(3, 8, 8)], [])


def test_runs_inside_the_trainer_reproducibly(tiny_digits):
    from detgym.models import build_detector
    from detgym.train import TrainConfig, Trainer

    train, val = tiny_digits
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        model = build_detector("fasterrcnn", num_classes=10, image_size=96)
        tr = Trainer(model, train, val, TrainConfig(iterations=4, batch_size=2, warmup_iters=1, seed=1),
                     augment=DetectionAugment(AugmentConfig(color_jitter_prob=1.0, svhn_policy_prob=1.0,
                                                            affine_prob=1.0)))
        losses.append([tr.step().total for _ in range(2)])
    assert losses[0] == losses[1]
